"""Prediction events built by the SDK's fast path read exactly like ones built by streamml.events.encode."""

import json
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest

from streamml.events import PredictionRecord, decode, encode
from streamml.sdk.wire import plain, plain_output, prediction_message, timestamp

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
    assert plain_output(np.float32(0.25)) == 0.25 and plain_output(np.array([0.2, 0.8])) == [0.2, 0.8]


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
