"""Prediction batches built by the SDK's fast path read exactly like events built by streamml.events.encode,
and every reader of predictions.<model> splits them with the one shared decoder."""

from datetime import UTC, datetime, timedelta, timezone

import msgspec
import numpy as np
import pytest

from services.monitor.records import FeatureLayout, decode_predictions
from streamml.events import PredictionBatch, PredictionRecord, decode, encode
from streamml.prediction_events import prediction_bodies, prediction_records
from streamml.sdk.wire import encode_predictions, loggable_outputs, plain, prediction_batches, timestamp

pytestmark = pytest.mark.unit
WHEN = datetime(2024, 6, 1, 12, 30, 5, 123456, tzinfo=UTC)


def logged(records, outputs, flags=None, features=("amount", "hour", "channel", "device"), version="v2"):
    """The bodies of one predict call's records, with request ids req-0, req-1..."""
    ids = [f"req-{i}" for i in range(len(records))]
    return encode_predictions("fraud", version, features, WHEN, ids, records, outputs,
                              {i: flag for i, flag in enumerate(flags or []) if flag})


def test_a_batch_decodes_to_the_event_encode_would_have_sent():
    features = {"amount": 12.5, "hour": 3, "channel": "web", "device": None}
    sent = datetime.now(UTC)
    [(end, count, (key, headers, value))] = prediction_batches(b"/streamml/app", "fraud",
                                                               logged([features], [[0.25, 0.75]]))
    assert (end, count) == (1, 1)
    event, attributes = decode(headers, key, value)
    record = PredictionRecord(request_id="req-0", model="fraud", model_version="v2", features=features,
                              output=[0.25, 0.75], time=WHEN)
    assert event == PredictionBatch(model="fraud", predictions=[record])
    reference = encode(event, "/streamml/app")
    assert key.decode() == reference.key and sorted(name for name, _ in headers) == sorted(reference.headers)
    assert attributes["source"] == "/streamml/app" and attributes["partitionkey"] == "fraud"
    assert sent <= attributes["time"] <= datetime.now(UTC)  # when the batch was sent; each prediction has its own
    assert prediction_records(headers, key, value) == [record]


def test_timestamps_are_utc_with_a_z_whatever_the_zone():
    assert timestamp(WHEN) == "2024-06-01T12:30:05.123456Z"
    assert timestamp(WHEN.astimezone(timezone(timedelta(hours=2)))) == "2024-06-01T12:30:05.123456Z"


def test_feature_values_and_outputs_become_plain_json_values():
    assert plain(np.int64(3)) == 3 and type(plain(np.int64(3))) is int
    assert plain(float("nan")) is None and plain(np.float32(1.5)) == 1.5
    assert plain(None) is None and plain("web") == "web" and plain([1]) == "[1]"
    assert loggable_outputs(np.array([0.25, 0.5], dtype=np.float32)) == [0.25, 0.5]
    assert loggable_outputs(np.array([[0.2, 0.8], [np.nan, 1.0]])) == [[0.2, 0.8], None]
    assert loggable_outputs(np.array([np.inf, 0.5])) == [None, 0.5]
    many = np.full(1000, 0.5, dtype=np.float32)  # past SMALL_OUTPUT: numpy finds the NaN
    many[[3, 999]] = [np.nan, -np.inf]
    assert loggable_outputs(many) == [0.5] * 3 + [None] + [0.5] * 995 + [None]


def test_a_prediction_carries_its_call_time_as_timestamp_writes_it():
    for when in (WHEN, WHEN.replace(microsecond=0)):
        [body] = encode_predictions("fraud", "v1", ("amount",), when, ["r1"], [{"amount": 1.0}], [0.5], {})
        assert msgspec.json.decode(body)["time"] == timestamp(when)


def test_each_prediction_of_a_batch_reads_as_its_own_prediction_event():
    features = ("amount", "hour", "channel", "device")
    records = [{"amount": 12.5, "hour": 3, "channel": "web", "device": None, "extra": 1},
               {"amount": float("nan"), "hour": 4, "channel": 'line\nbreak "quoted"'},  # device not sent
               {"amount": np.float32(1.5), "hour": np.int64(7), "channel": "app", "device": "ios"}]
    outputs = [[0.25, 0.75], [0.5, 0.5], [0.1, 0.9]]
    flags = [(), ("hour:max",), ()]
    for size in (2, 3):  # plain values only, and with numpy values among them
        batch = logged(records[:size], outputs[:size], flags[:size])
        [(end, count, (key, headers, value))] = prediction_batches(b"/streamml/app", "fraud", batch)
        assert (end, count) == (size, size)
        read = prediction_records(headers, key, value)
        for i, (record, output, flag, event) in enumerate(zip(records, outputs, flags, read, strict=False)):
            assert event == PredictionRecord(request_id=f"req-{i}", model="fraud", model_version="v2",
                                             features={name: plain(record.get(name)) for name in features},
                                             output=output, time=WHEN, flags=list(flag))
        bodies = prediction_bodies(dict(headers)["ce_type"].decode(), value)
        assert bodies == batch and [PredictionRecord.model_validate_json(body) for body in bodies] == read
        assert [b"flags" in body for body in bodies] == [bool(flag) for flag in flags[:size]]


def test_a_batch_leaves_out_what_cannot_be_logged_and_the_monitor_reads_the_rest():
    context_features = ("amount", "channel")
    batch = logged([{"amount": 1.0, "channel": "web"}, {"amount": 2.0, "channel": "web"}, {"amount": 3.0}],
                   [0.5, None, 0.25], [(), (), ("amount:max",)], features=context_features, version="v1")
    [(end, count, (_, headers, value))] = prediction_batches(b"/s", "fraud", batch)
    assert (end, count) == (3, 2)
    bodies = prediction_bodies(dict(headers)["ce_type"].decode(), value)
    decoded = decode_predictions(bodies, FeatureLayout(("amount",), ("channel",)), "fraud")
    assert decoded.rejected == {} and decoded.request_ids.to_pylist() == ["req-0", "req-2"]
    assert decoded.outputs.tolist() == [0.5, 0.25] and decoded.flagged == {"amount:max": 1}
    assert batch[1] is None and prediction_batches(b"/s", "fraud", batch[1:2]) == [(1, 0, None)]


def test_a_batch_past_the_size_limit_is_split_in_order_and_covers_every_item():
    batch = logged([{"amount": float(i), "hour": i, "channel": "web" * 20} for i in range(40)],
                   [0.5 if i % 7 else None for i in range(40)])
    chunks = prediction_batches(b"/s", "fraud", batch, max_bytes=2_000)
    assert [chunk.end for chunk in chunks] == sorted({chunk.end for chunk in chunks})
    assert len(chunks) > 1 and chunks[-1].end == 40
    assert all(len(chunk.message[2]) <= 2_000 for chunk in chunks if chunk.message)
    ids = [event.request_id for chunk in chunks if chunk.message
           for event in prediction_records(chunk.message[1], chunk.message[0], chunk.message[2])]
    assert ids == [f"req-{i}" for i in range(40) if i % 7]
    assert sum(chunk.logged for chunk in chunks) == len(ids)
