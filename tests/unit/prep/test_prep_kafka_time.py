"""A dataset spec without event_time: each record's Kafka timestamp is its event time, and the manifest says so."""

from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from services.ingest.landing import META_COLUMNS
from services.prep.duckdb_job import prepare_with_duckdb
from services.prep.result import build_manifest
from streamml.specs import KAFKA_TIME, parse_dataset_spec

pytestmark = pytest.mark.unit

SPEC = parse_dataset_spec({
    "name": "cells", "key": "id", "label": "malignant",
    "fields": [{"name": "id", "type": "int"}, {"name": "radius", "type": "float"},
               {"name": "malignant", "type": "int", "min": 0, "max": 1}],
    "prep": {"splits": {"train": 1.0, "validation": 0.0, "test": 0.0}},
})


def test_the_latest_kafka_timestamp_wins_and_the_manifest_names_the_source(tmp_path):
    assert SPEC.event_time is None and SPEC.time_column == KAFKA_TIME
    assert KAFKA_TIME in META_COLUMNS.names  # the column ingest lands beside every record
    ms = lambda second: int(datetime(2026, 1, 1, 0, 0, second, tzinfo=UTC).timestamp() * 1000)  # noqa: E731
    raw = pa.table({
        "id": [1, 2, 1], "radius": [1.0, 2.0, 9.0], "malignant": [0, 1, 1],
        "_partition": pa.array([0, 0, 0], pa.int32()), "_offset": [0, 1, 2],
        KAFKA_TIME: pa.array([ms(1), ms(2), ms(3)], pa.int64()).view(pa.timestamp("ms", tz="UTC")),
    })
    pq.write_table(raw, tmp_path / "raw.parquet")

    result = prepare_with_duckdb(SPEC, [str(tmp_path / "raw.parquet")], str(tmp_path / "out"))

    train = pq.read_table(tmp_path / "out" / "train").sort_by("id")
    assert result.rows["train"] == 2 and train["malignant"].to_pylist() == [1, 1]  # id 1: the later record
    assert train[KAFKA_TIME].to_pylist()[0] == datetime(2026, 1, 1, 0, 0, 3, tzinfo=UTC)
    manifest = build_manifest(result, SPEC, version=1, lineage=[], trigger="rows", code_version="test")
    assert (manifest.event_time, manifest.event_time_source) == (KAFKA_TIME, "kafka_timestamp")
    assert manifest.features == ["radius"] and KAFKA_TIME in manifest.schema_
