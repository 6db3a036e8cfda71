import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from streamml.events import (
    DataLanded, DriftDetected, DriftWindow, EventError, FeatureDrift, FeedbackRecord, ModelPromoted, PredictionRecord,
    decode, encode, json_schemas, stable_id,
)

pytestmark = pytest.mark.unit
SCHEMAS = Path(__file__).resolve().parents[3] / "schemas"


def landed() -> DataLanded:
    return DataLanded(dataset="tx", object_key="raw/tx/k.parquet", rows=10, bytes=999, topic="ingest.tx",
                      partition=2, first_offset=100, last_offset=109, schema_fingerprint="abc")


def test_binary_mode_round_trip_keys_by_dataset():
    message = encode(landed(), "/streamml/ingest")
    assert message.key == "tx"
    assert message.headers["ce_type"] == b"streamml.data.landed.v1"
    assert message.headers["ce_specversion"] == b"1.0"
    assert json.loads(message.value)["object_key"] == "raw/tx/k.parquet"
    event, attributes = decode(list(message.headers.items()), b"tx", message.value)
    assert event == landed()
    assert attributes["source"] == "/streamml/ingest"


def test_predictions_and_feedback_are_keyed_by_model_so_one_partition_holds_a_model():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    prediction = PredictionRecord(request_id="r1", model="fraud", model_version="v1", features={}, output=0.5, time=now)
    feedback = FeedbackRecord(request_id="r1", model="fraud", label=1, time=now)
    assert encode(prediction, "/app").key == encode(feedback, "/app").key == "fraud"


def test_an_announcement_sent_again_keeps_its_id():
    first = encode(landed(), "/streamml/ingest", stable_id("data.landed", "tx", 100))
    again = encode(landed(), "/streamml/ingest", stable_id("data.landed", "tx", 100))
    assert first.headers["ce_id"] == again.headers["ce_id"]
    assert stable_id("data.landed", "tx", 101) != stable_id("data.landed", "tx", 100)
    assert encode(landed(), "/s").headers["ce_id"] != encode(landed(), "/s").headers["ce_id"]


def test_nested_event_round_trip():
    drift = DriftDetected(model="fraud", dataset="tx", kind="covariate", severity="high",
                          window=DriftWindow(start=datetime(2026, 1, 1, tzinfo=UTC), end=datetime(2026, 1, 2, tzinfo=UTC), count=5000),
                          features=[FeatureDrift(feature="amount", test="psi", statistic=0.4, p_value=1e-9, effect_size=0.4)])
    message = encode(drift, "/streamml/monitor")
    assert decode(list(message.headers.items()), b"tx", message.value)[0] == drift


@pytest.mark.parametrize(
    "headers, value, reason",
    [
        ([], b"{}", "missing ce_type"),
        ([("ce_type", b"streamml.unknown.v1")], b"{}", "unknown event type"),
        (None, b"{}", "missing ce_type"),
    ],
)
def test_non_events_are_rejected_with_a_reason(headers, value, reason):
    with pytest.raises(EventError, match=reason):
        decode(headers, None, value)


def test_invalid_body_names_the_fields():
    message = encode(landed(), "/t")
    body = json.loads(message.value)
    body["rows"] = 0
    del body["topic"]
    with pytest.raises(EventError, match=r"rows: .*greater than or equal to 1.*topic: Field required"):
        decode(list(message.headers.items()), None, json.dumps(body).encode())


def test_checked_in_schemas_match_the_models():
    expected = json_schemas()
    on_disk = {p.name: json.loads(p.read_text()) for p in SCHEMAS.glob("*.json")}
    stale = sorted(name for name in expected.keys() | on_disk.keys() if expected.get(name) != on_disk.get(name))
    assert not stale, f"schemas/ is stale for {stale}: run `make schemas`"


def test_promotion_requires_actor_and_reason():
    with pytest.raises(Exception, match="actor"):
        ModelPromoted(model="m", version="1", artifact_prefix="models/m/1/", metrics={}, reason="better")
