import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from streamml.events import (
    DataLanded, DriftDetected, DriftWindow, EventError, FeatureDrift, ModelPromoted, decode, encode, json_schemas,
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
