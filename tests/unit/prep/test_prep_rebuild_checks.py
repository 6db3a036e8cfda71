"""What a rebuild decides without an engine: which lineage objects are usable, what it lands again, what differs."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest
from memory_store import MemoryStore

from services.prep.rebuild import RebuildError, Relanding, check_lineage, compare, prepare_again, rebuildable
from streamml.manifest import CategoryTransform, DatasetManifest, NumericTransform, RawSource
from streamml.registry.keys import rebuild_prefix
from streamml.specs import parse_dataset_spec

pytestmark = pytest.mark.unit
SPEC = parse_dataset_spec({
    "name": "tx", "key": "id", "label": "y",
    "fields": [{"name": "id", "type": "string"}, {"name": "amount", "type": "float", "nulls": "impute"},
               {"name": "y", "type": "int"}],
    "prep": {"clip_quantiles": [0.01, 0.99], "on_drift": {"window": {"last_rows": 500}}},
})


def raw(n: int, data: bytes | None) -> RawSource:
    return RawSource(key=f"raw/tx/date=2026-12-07/ingest.tx/p00000/{n:020d}-{n + 9:020d}.parquet", topic="ingest.tx",
                     partition=0, first_offset=n, last_offset=n + 9, rows=10,
                     sha256=hashlib.sha256(data).hexdigest() if data is not None else None)


def manifest(lineage: list[RawSource], spec=SPEC, **changes) -> DatasetManifest:
    fields = dict(
        dataset="tx", version=3, created=datetime(2026, 12, 7, tzinfo=UTC), spec_fingerprint=SPEC.fingerprint(),
        schema={"id": "string", "amount": "double", "y": "int64"}, key="id", event_time="_kafka_time",
        event_time_source="kafka_timestamp", label="y", features=["amount"], files={},
        rows={"train": 8, "validation": 1, "test": 1}, content_sha256={"train": "a", "validation": "b", "test": "c"},
        transform={"amount": NumericTransform(mean=1.5, std=0.25, impute=1.0)}, reference={}, lineage=lineage,
        trigger="rows", code_version="1.0", engine="duckdb", spec=spec,
    )
    return DatasetManifest(**(fields | changes))


def test_a_manifest_keeps_the_whole_spec_and_each_raw_objects_sha256():
    stored = manifest([raw(0, b"x")])
    again = DatasetManifest.model_validate_json(stored.model_dump_json(by_alias=True))
    assert again == stored
    assert again.spec.prep.clip_quantiles == (0.01, 0.99) and again.spec.prep.on_drift.window_name == "last_rows:500"
    assert again.lineage[0].sha256 == hashlib.sha256(b"x").hexdigest()


def test_a_version_without_its_spec_cannot_be_rebuilt_and_says_why():
    with pytest.raises(RebuildError, match="tx v3 was built before manifests recorded the spec"):
        rebuildable(manifest([raw(0, b"x")], spec=None))
    with pytest.raises(RebuildError, match="tx v3 was built before"):
        prepare_again(MemoryStore(), None, manifest([raw(0, b"x")], spec=None), [], "rebuilds/tx/v3/a/", lambda: None)


def test_lost_and_changed_objects_are_named_and_landed_again_without_overwriting_anything():
    store = MemoryStore()
    kept, lost, changed, old, gone = raw(0, b"kept"), raw(10, b"lost"), raw(20, b"before"), raw(30, None), raw(40, b"z")
    store.put(kept.key, b"kept")
    store.put(changed.key, b"after")
    store.put(old.key, b"not parquet")
    prefix = rebuild_prefix("tx", 3, "20261207T120000-abcd0123")
    landed: list[tuple[str, str]] = []

    def reland(source: RawSource, key: str) -> Relanding:
        landed.append((source.key, key))
        if source is gone:
            return Relanding(key, problem="the partition starts at offset 45 now")
        data = {lost.key: b"lost", changed.key: b"before", old.key: b"old"}[source.key]
        store.create(key, data)
        return Relanding(key, sha256=hashlib.sha256(data).hexdigest())

    checks = check_lineage(store, manifest([kept, lost, changed, old, gone]), prefix, reland)

    assert [check.state for check in checks] == ["ok", "lost", "changed", "changed", "lost"]
    assert landed == [(lost.key, lost.key), (changed.key, prefix + changed.key), (old.key, prefix + old.key),
                      (gone.key, gone.key)]
    assert store.get_bytes(changed.key) == b"after", "a changed object was overwritten"
    assert checks[1].read_from == lost.key and "the same bytes as recorded" in checks[1].detail
    assert checks[2].read_from == prefix + changed.key and "left as it is" in checks[2].detail
    assert "no longer readable Parquet" in checks[3].detail
    assert checks[4].read_from is None and "starts at offset 45" in checks[4].detail
    with pytest.raises(RebuildError, match=f"1 raw object.*{gone.key}"):
        prepare_again(store, None, manifest([kept, lost, changed, old, gone]), checks, prefix, lambda: None)


def test_without_a_broker_lost_objects_are_named_and_not_landed():
    checks = check_lineage(MemoryStore(), manifest([raw(0, b"x")]), "rebuilds/tx/v3/a/", None)
    assert checks[0].state == "lost" and checks[0].read_from is None and "not landed again" in checks[0].detail


def test_identical_manifests_have_no_difference_and_any_changed_statistic_or_hash_is_named():
    stored = manifest([raw(0, b"x")])
    rebuilt = stored.model_copy(update={"created": datetime(2027, 1, 1, tzinfo=UTC), "code_version": "2.0",
                                        "files": {"train": []}, "engine_reason": "rebuild"})
    assert compare(stored, rebuilt) == []

    differs = rebuilt.model_copy(update={
        "transform": {"amount": NumericTransform(mean=1.5 + 2**-40, std=0.25, impute=1.0)},
        "content_sha256": {"train": "a", "validation": "B", "test": "c"},
        "rows": {"train": 8, "validation": 1, "test": 2},
    })
    found = {difference.path: difference for difference in compare(stored, differs)}
    assert set(found) == {"transform.amount.mean", "content_sha256.validation", "rows.test"}
    assert str(found["rows.test"]) == "rows.test: stored 1, rebuilt 2"
    vocabulary = rebuilt.model_copy(update={"transform": {"amount": CategoryTransform(vocabulary=["a"])}})
    assert "transform.amount.kind" in {d.path for d in compare(stored, vocabulary)}


def test_an_object_of_an_older_version_without_a_sha256_is_checked_by_its_rows():
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    def parquet(rows: int) -> bytes:
        sink = io.BytesIO()
        pq.write_table(pa.table({"id": [str(i) for i in range(rows)]}), sink)
        return sink.getvalue()

    store = MemoryStore()
    same, fewer = raw(0, None), raw(10, None)
    store.put(same.key, parquet(10))
    store.put(fewer.key, parquet(7))
    checks = check_lineage(store, manifest([same, fewer]), "rebuilds/tx/v3/a/", None)
    assert checks[0].state == "unverified" and checks[0].read_from == same.key
    assert checks[1].state == "changed" and "7 rows where the version recorded 10" in checks[1].detail
