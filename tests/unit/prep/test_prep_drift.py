"""When a drift build starts and which rows it reads: counts of Kafka times against the drift point."""

import io
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from memory_store import MemoryStore

from services.prep.builder import answered_before, kafka_times, kept_since
from services.prep.drift import drift_step, rows_since, window_since_ms
from streamml.manifest import DatasetManifest, DriftBuild
from streamml.registry.keys import dataset_manifest_key
from streamml.specs import KAFKA_TIME, DatasetSpec, DriftPolicy, LastRows, SpecError, parse_dataset_spec

pytestmark = pytest.mark.unit
POLICY = DriftPolicy(min_rows_after=100, max_wait_s=60)
# Two raw objects: Kafka times in ms, sorted as the builder keeps them.
TIMES = [np.array([0, 10, 20, 30], dtype=np.int64), np.array([30, 40, 50], dtype=np.int64)]


def test_rows_at_or_after_the_point_count_as_post_drift():
    assert rows_since(TIMES, 30) == 4  # both 30s
    assert rows_since(TIMES, 31) == 2
    assert rows_since(TIMES, 0) == 7
    assert rows_since(TIMES, 51) == 0
    assert rows_since([], 0) == 0


def test_the_build_waits_for_min_rows_after_then_starts():
    waiting = drift_step(99, waited_s=10, policy=POLICY)
    assert waiting.action == "wait" and "99 of min_rows_after 100" in waiting.reason
    ready = drift_step(100, waited_s=10, policy=POLICY)
    assert (ready.action, ready.waited_out) == ("build", False)


def test_after_max_wait_it_builds_with_fewer_rows_saying_so_or_gives_up_with_none():
    late = drift_step(5, waited_s=60, policy=POLICY)
    assert (late.action, late.waited_out) == ("build", True)
    assert "max_wait_s 60 ran out with 5 rows" in late.reason
    assert drift_step(0, waited_s=61, policy=POLICY).action == "give_up"
    assert drift_step(0, waited_s=59, policy=POLICY).action == "wait"


def test_training_windows():
    assert window_since_ms(DriftPolicy(window="since_drift"), 30, TIMES) == 30
    assert window_since_ms(DriftPolicy(window="all"), 30, TIMES) is None
    # The 3 newest rows are 50, 40, 30 (and the other 30 ties with the cut: kept too).
    assert window_since_ms(DriftPolicy(window=LastRows(last_rows=3)), 0, TIMES) == 30
    assert window_since_ms(DriftPolicy(window=LastRows(last_rows=1)), 0, TIMES) == 50
    assert window_since_ms(DriftPolicy(window=LastRows(last_rows=7)), 0, TIMES) is None
    assert window_since_ms(DriftPolicy(window=LastRows(last_rows=100)), 0, []) is None


def spec_with(on_drift):
    document = yaml.safe_load(open("examples/datasets/transactions.yaml"))
    document["prep"]["on_drift"] = on_drift
    return parse_dataset_spec(document, "transactions.yaml")


def test_the_spec_reads_on_drift():
    policy = spec_with({"min_rows_after": 500, "max_wait_s": 30, "window": {"last_rows": 8000}}).prep.on_drift
    assert (policy.min_rows_after, policy.max_wait_s, policy.window_name) == (500, 30, "last_rows:8000")
    assert spec_with({"window": "all"}).prep.on_drift.window_name == "all"
    assert DriftPolicy().window_name == "since_drift"
    # Window all weighs rows by recency, an hour's half-life unless the spec says otherwise; other windows do not.
    assert spec_with({"window": "all"}).prep.on_drift.recency_half_life_s == 3600
    assert spec_with({"window": "all", "half_life_s": 120}).prep.on_drift.recency_half_life_s == 120
    assert DriftPolicy().recency_half_life_s is None
    # Stored as JSON (ingest keeps the specs it enforces) and read back the same.
    spec = spec_with({"window": {"last_rows": 8000}})
    assert DatasetSpec.model_validate_json(spec.model_dump_json()) == spec


@pytest.mark.parametrize("on_drift, problem", [
    ({"min_rows_after": 0}, "prep.on_drift.min_rows_after: Input should be greater than or equal to 1"),
    ({"max_wait_s": 0}, "prep.on_drift.max_wait_s: Input should be greater than 0"),
    ({"window": "recent"}, "prep.on_drift.window: window 'recent' is not one of since_drift, all, {last_rows: N}"),
    ({"window": {"last_rows": 0}}, "prep.on_drift.window: window {'last_rows': 0} is not one of"),
    ({"window": {"rows": 10}}, "prep.on_drift.window: window {'rows': 10} is not one of"),
    ({"wait": 10}, "prep.on_drift.wait: Extra inputs are not permitted"),
    ({"window": "all", "half_life_s": 0}, "prep.on_drift.half_life_s: Input should be greater than 0"),
    ({"half_life_s": 60}, "prep.on_drift: half_life_s weighs the rows of window all, not of window since_drift"),
])
def test_a_bad_on_drift_is_refused_naming_the_setting(on_drift, problem):
    with pytest.raises(SpecError) as raised:
        spec_with(on_drift)
    assert len(raised.value.problems) == 1
    assert raised.value.problems[0].startswith(problem)


def test_a_raw_objects_kafka_times_are_read_sorted_and_a_batch_without_them_counts_as_old():
    def parquet(table):
        sink = io.BytesIO()
        pq.write_table(table, sink)
        data = sink.getvalue()
        return data, pq.read_metadata(pa.BufferReader(data))

    timed = pa.table({"id": [1, 2, 3], KAFKA_TIME: pa.array([30, 10, 20], pa.int64()).view(
        pa.timestamp("ms", tz="UTC"))})
    assert kafka_times(*parquet(timed)).tolist() == [10, 20, 30]
    assert kafka_times(*parquet(pa.table({"id": [1, 2]}))).tolist() == [0, 0]


def test_a_drift_is_answered_by_the_version_before_the_claimed_one_only_when_it_names_the_event():
    point = datetime(2026, 1, 1, tzinfo=UTC)
    drift = DriftBuild(event_id="e-1", model="m", kind="covariate", window_start=point, window_end=point, point=point,
                       training_window="since_drift", rows_before=0, rows_after=10, landed_rows_after=10)
    store = MemoryStore()
    for version, answers in ((1, None), (2, drift)):
        document = manifest(version, drift=answers).model_dump_json(by_alias=True).encode()
        store.put(dataset_manifest_key("tx", version), document)
    assert answered_before(store, "tx", 3, "e-1")
    assert not answered_before(store, "tx", 3, "e-2")
    assert not answered_before(store, "tx", 2, "e-1")  # v1 answers no drift
    assert not answered_before(store, "tx", 1, "e-1") and not answered_before(store, "tx", 5, "e-1")


def test_a_build_after_a_drift_build_keeps_its_window_start():
    assert kept_since(None) is None and kept_since(manifest(1)) is None
    since = datetime(2026, 1, 1, 0, 0, 1, 500_000, tzinfo=UTC)
    assert kept_since(manifest(1, rows_since=since)) == int(since.timestamp() * 1000)


def manifest(version: int, **update):
    return DatasetManifest(
        dataset="tx", version=version, created=datetime(2026, 1, 1, tzinfo=UTC), spec_fingerprint="f", schema={},
        key="id", event_time="ts", label=None, features=[], files={}, rows={}, content_sha256={}, transform={},
        reference={}, lineage=[], trigger="rows", code_version="test").model_copy(update=update)
