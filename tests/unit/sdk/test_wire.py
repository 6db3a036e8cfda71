"""Prediction events built by the SDK's fast path read exactly like ones built by streamml.events.encode."""

import json
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest

from streamml.events import PredictionRecord, decode, encode
from streamml.sdk.wire import loggable_outputs, plain, prediction_message, prediction_messages, timestamp

pytestmark = pytest.mark.unit
WHEN = datetime(2024, 6, 1, 12, 30, 5, 123456, tzinfo=UTC)


def test_a_fast_message_decodes_to_the_event_encode_would_have_sent():
    features = {"amount": 12.5, "hour": 3, "channel": "web", "device": None}
    key, headers, value = prediction_message(b"/streamml/app", "req-1", "fraud", "v2", features, [0.25, 0.75],
                                             timestamp(WHEN))
    event, attributes = decode(headers, key, value)
    expected = PredictionRecord(request_id="req-1", model="fraud", model_version="v2", features=features,
                                output=[0.25, 0.75], time=WHEN)
    assert event == expected
    reference = encode(expected, "/streamml/app")
    assert key.decode() == reference.key and sorted(name for name, _ in headers) == sorted(reference.headers)
    assert attributes["source"] == "/streamml/app" and attributes["partitionkey"] == "fraud"
    assert attributes["time"] == WHEN


def test_timestamps_are_utc_with_a_z_whatever_the_zone():
    assert timestamp(WHEN) == "2024-06-01T12:30:05.123456Z"
    assert timestamp(WHEN.astimezone(timezone(timedelta(hours=2)))) == "2024-06-01T12:30:05.123456Z"


def test_json_cannot_carry_nan_so_such_an_output_is_refused():
    with pytest.raises(ValueError):
        prediction_message(b"/s", "r", "fraud", "v1", {}, float("nan"), timestamp(WHEN))


def test_feature_values_and_outputs_become_plain_json_values():
    assert plain(np.int64(3)) == 3 and type(plain(np.int64(3))) is int
    assert plain(float("nan")) is None and plain(np.float32(1.5)) == 1.5
    assert plain(None) is None and plain("web") == "web" and plain([1]) == "[1]"
    assert loggable_outputs(np.array([0.25, 0.5], dtype=np.float32)) == [0.25, 0.5]
    assert loggable_outputs(np.array([[0.2, 0.8], [np.nan, 1.0]])) == [[0.2, 0.8], None]
    assert loggable_outputs(np.array([np.inf, 0.5])) == [None, 0.5]


def test_a_batch_encodes_each_prediction_as_one_message_would():
    when = timestamp(WHEN)
    features = ("amount", "hour", "channel", "device")
    records = [{"amount": 12.5, "hour": 3, "channel": "web", "device": None, "extra": 1},
               {"amount": float("nan"), "hour": 4, "channel": 'line\nbreak "quoted"'},  # device not sent
               {"amount": np.float32(1.5), "hour": np.int64(7), "channel": "app", "device": "ios"}]
    outputs = [[0.25, 0.75], [0.5, 0.5], [0.1, 0.9]]
    flags = [(), ("hour:max",), ()]
    batch = [(f"req-{i}", record, output, flag, ("v2", features, when))
             for i, (record, output, flag) in enumerate(zip(records, outputs, flags, strict=True))]
    for fast in (batch[:2], batch):  # plain values only, and with numpy values among them
        messages = prediction_messages(b"/streamml/app", "fraud", fast)
        assert len(messages) == len(fast)
        for (request_id, record, output, flag, _), (key, headers, value) in zip(fast, messages, strict=True):
            one = prediction_message(b"/streamml/app", request_id, "fraud", "v2",
                                     {name: plain(record.get(name)) for name in features}, output, when, flag)
            assert key == one[0] and json.loads(value) == json.loads(one[2])
            assert [h for h in headers if h[0] != "ce_id"] == [h for h in one[1] if h[0] != "ce_id"]
        assert len({dict(headers)["ce_id"] for _, headers, _ in messages}) == len(fast)


def test_a_batch_skips_what_cannot_be_logged_and_the_monitor_reads_the_rest():
    from services.monitor.records import FeatureLayout, decode_predictions

    context = ("v1", ("amount", "channel"), timestamp(WHEN))
    batch = [("r1", {"amount": 1.0, "channel": "web"}, 0.5, (), context),
             ("r2", {"amount": 2.0, "channel": "web"}, None, (), context),
             ("r3", {"amount": 3.0}, 0.25, ("amount:max",), context)]
    messages = prediction_messages(b"/s", "fraud", batch)
    assert messages[1] is None
    event, _ = decode(messages[2][1], messages[2][0], messages[2][2])
    assert event.flags == ["amount:max"] and event.features == {"amount": 3.0, "channel": None}
    decoded = decode_predictions([messages[0][2], messages[2][2]], FeatureLayout(("amount",), ("channel",)), "fraud")
    assert decoded.rejected == {} and decoded.request_ids.to_pylist() == ["r1", "r3"]
    assert decoded.outputs.tolist() == [0.5, 0.25]


def test_flags_are_written_only_when_there_are_some_and_the_monitor_reads_both():
    from services.monitor.records import FeatureLayout, decode_predictions

    features = {"amount": 12.5, "channel": "web"}
    _, headers, flagged = prediction_message(b"/s", "r1", "fraud", "v1", features, 0.5, timestamp(WHEN),
                                             ("amount:max", "channel:category"))
    _, _, clean = prediction_message(b"/s", "r2", "fraud", "v1", features, 0.5, timestamp(WHEN))
    assert "flags" not in json.loads(clean)
    event, _ = decode(headers, b"fraud", flagged)
    assert event.flags == ["amount:max", "channel:category"]
    layout = FeatureLayout(("amount",), ("channel",))
    decoded = decode_predictions([flagged, clean], layout, "fraud")  # the fast path
    assert decoded.rejected == {} and decoded.request_ids.to_pylist() == ["r1", "r2"]
    decoded = decode_predictions([flagged, b"{}", clean], layout, "fraud")  # one by one, past a bad record
    assert list(decoded.rejected) == [1] and decoded.request_ids.to_pylist() == ["r1", "r2"]
