"""The two shipping engines, Spark and DuckDB, prepare the same rows, statistics and content hashes.

The main case lands the raw objects in the object store: DuckDB reads and
writes them there, as the prep service runs it; Spark reads the same bytes
from local files (its S3A path is covered by the prep service tests).
"""

from __future__ import annotations

import hashlib
import math
import uuid
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from services.prep import fit, rules
from services.prep.content import arrow_filesystem, content_sha256
from services.prep.duckdb_job import prepare_with_duckdb
from services.prep.job import prepare_with_spark
from services.prep.result import build_manifest
from services.prep.spark import spark_session
from services.prep.synthetic import raw_transactions, write_raw
from streamml.manifest import SPLITS, DatasetManifest, RawSource
from streamml.specs import KAFKA_TIME, DatasetSpec, parse_dataset_spec
from streamml.store import ObjectStore

pytestmark = pytest.mark.integration

TRANSACTIONS = parse_dataset_spec(
    {
        "name": "transactions",
        "key": "tx_id",
        "event_time": "ts",
        "label": "is_fraud",
        "fields": [
            {"name": "tx_id", "type": "string"},
            # nullable with the default nulls: drop, so rows without a time are dropped, not rejected
            {"name": "ts", "type": "timestamp", "nullable": True},
            {"name": "amount", "type": "float", "min": 0, "max": 100000},
            {"name": "hour", "type": "int", "min": 0, "max": 23},
            {"name": "distance_km", "type": "float", "min": 0, "nullable": True, "nulls": "impute"},
            {"name": "merchant_age_days", "type": "float", "min": 0, "nullable": True, "nulls": "keep"},
            {"name": "channel", "type": "category", "categories": ["web", "pos", "atm", "phone"]},
            {"name": "country", "type": "category", "nullable": True, "nulls": "impute"},
            {"name": "is_fraud", "type": "int", "min": 0, "max": 1},
        ],
        "prep": {
            "splits": {"train": 0.7, "validation": 0.15, "test": 0.15},
            "clip_quantiles": [0.01, 0.99],
            "category_min_count": 3,
        },
    }
)


@pytest.fixture(scope="module")
def spark(tmp_path_factory):
    session = spark_session("local[2]", tmp_path_factory.mktemp("spark-state"))
    yield session
    session.stop()


def prepare_both(spark, spec: DatasetSpec, raw_paths: list[str], root: Path, **window):
    by_spark = prepare_with_spark(spark, spec, raw_paths, str(root / "spark"), **window)
    by_duckdb = prepare_with_duckdb(spec, raw_paths, str(root / "duckdb"), **window)
    return by_spark, by_duckdb


def read_split(location: Path | str, split: str, key: str, s3=None) -> pa.Table:
    fs, folder = arrow_filesystem(str(location), s3)
    return pq.read_table(f"{folder}/{split}", filesystem=fs).sort_by(key)


@pytest.fixture(scope="module")
def landed(stack):
    """A bucket of this module's own in the test stack, and its S3 settings."""
    s3 = stack.settings(bucket=f"duckdb-{uuid.uuid4().hex[:10]}").s3
    return ObjectStore.connect(s3), s3


@pytest.fixture(scope="module")
def transactions(spark, landed, tmp_path_factory):
    """Spark on local files, DuckDB on the same bytes landed in the object store."""
    store, s3 = landed
    root = tmp_path_factory.mktemp("transactions")
    raw = raw_transactions(4000, seed=11)
    paths = write_raw(raw, root / "raw", files=3)
    uris = []
    for path in paths:
        key = f"raw/transactions/{Path(path).name}"
        store.put(key, Path(path).read_bytes())
        uris.append(f"s3a://{s3.bucket}/{key}")
    by_spark = prepare_with_spark(spark, TRANSACTIONS, paths, str(root / "spark"))
    out = f"s3a://{s3.bucket}/datasets/transactions/v1"
    by_duckdb = prepare_with_duckdb(TRANSACTIONS, uris, out, s3)
    return root, out, by_spark, by_duckdb


def test_both_engines_count_the_same_fates_and_every_row_is_accounted_for(transactions):
    _, _, by_spark, by_duckdb = transactions
    assert by_spark.counts == by_duckdb.counts
    assert by_spark.rows == by_duckdb.rows
    assert (by_spark.engine, by_duckdb.engine) == ("spark", "duckdb")
    counts = by_spark.counts
    assert counts.input == 4000
    kept = sum(by_spark.rows.values())
    assert counts.input == counts.rejected + counts.duplicates + counts.null_dropped + kept
    # The synthetic data breaks each of these rules, so each count must show it.
    broken = ("amount.min", "amount.max", "amount.null", "hour.max", "channel.category", "is_fraud.max")
    for violation in broken:
        assert counts.violations[violation] > 0, violation
    assert counts.duplicates > 0 and counts.null_dropped > 0
    assert all(by_spark.rows[split] > 0 for split in SPLITS)


def test_both_engines_write_the_same_rows_per_split(transactions, landed):
    root, out, _, _ = transactions
    for split in SPLITS:
        spark_rows = read_split(root / "spark", split, "tx_id")
        duckdb_rows = read_split(out, split, "tx_id", landed[1])
        assert spark_rows.schema.names == duckdb_rows.schema.names
        assert spark_rows["tx_id"].equals(duckdb_rows["tx_id"])
        for name in spark_rows.schema.names:
            left, right = spark_rows[name], duckdb_rows[name]
            if pa.types.is_floating(left.type):
                assert left.null_count == right.null_count == 0, name
                np.testing.assert_allclose(left.to_numpy(), right.to_numpy(), rtol=0, atol=1e-9, err_msg=name)
            else:
                assert left.cast(right.type).equals(right), name


def test_categories_unseen_in_train_encode_as_zero_in_both_engines(transactions, landed):
    root, out, by_spark, by_duckdb = transactions
    vocabulary = by_spark.transform["country"].vocabulary
    assert vocabulary == by_duckdb.transform["country"].vocabulary
    raw = pq.read_table(root / "raw", columns=["tx_id", "country"])
    rare = {key for key, country in zip(raw["tx_id"].to_pylist(), raw["country"].to_pylist(), strict=True)
            if country is not None and country not in vocabulary}
    unseen = 0
    for split in ("validation", "test"):
        rows = read_split(out, split, "tx_id", landed[1])
        encoded = dict(zip(rows["tx_id"].to_pylist(), rows["country"].to_pylist(), strict=True))
        unseen += sum(1 for key in rare & encoded.keys() if encoded[key] == 0)
    assert unseen > 0, "no category outside the train vocabulary reached validation or test"


def test_both_engines_fit_the_same_statistics(transactions):
    _, _, by_spark, by_duckdb = transactions
    assert by_spark.transform == by_duckdb.transform
    assert by_spark.reference == by_duckdb.reference
    assert by_spark.label_reference == by_duckdb.label_reference


def test_both_engines_agree_on_content_hashes_and_the_hashes_match_the_files(transactions, landed):
    root, _, by_spark, by_duckdb = transactions
    store, _ = landed
    assert by_spark.content_sha256 == by_duckdb.content_sha256
    schema = rules.prepared_schema(TRANSACTIONS)
    for split in SPLITS:
        recomputed = content_sha256(read_split(root / "spark", split, "tx_id"), schema, "tx_id")
        assert recomputed == by_spark.content_sha256[split]
        for result, read in ((by_spark, lambda key: Path(key).read_bytes()), (by_duckdb, store.get_bytes)):
            entries = result.files[split]
            assert sum(entry.rows for entry in entries) == result.rows[split]
            for entry in entries:
                assert hashlib.sha256(read(entry.key)).hexdigest() == entry.sha256
    # The store holds the splits' Parquet objects and nothing else (no folder markers).
    assert all(key.endswith(".parquet") for key in store.list("datasets/transactions/v1/"))


def test_every_key_is_in_the_split_its_hash_assigns_and_in_one_split_only(transactions):
    root, _, _, _ = transactions
    seen: set[str] = set()
    for split in SPLITS:
        keys = read_split(root / "spark", split, "tx_id")["tx_id"].to_pylist()
        assert {rules.split_of(key, TRANSACTIONS.prep.splits) for key in keys} == {split}
        assert seen.isdisjoint(keys) and len(set(keys)) == len(keys)
        seen.update(keys)


def test_prepared_features_are_what_the_manifest_transform_computes(transactions):
    """Train/serve consistency: applying the manifest to a raw record gives the prepared value."""
    root, _, by_spark, _ = transactions
    raw = pq.read_table(root / "raw")
    prepared = read_split(root / "spark", "train", "tx_id")
    by_key = {row["tx_id"]: row for row in prepared.slice(0, 300).to_pylist()}
    checked = 0
    # Keys sent once: their raw values are exactly what prep saw.
    sent = pc.value_counts(raw["tx_id"])
    once = pc.equal(pc.struct_field(sent, "counts"), 1)
    singles = set(pc.filter(pc.struct_field(sent, "values"), once).to_pylist())
    for record in raw.to_pylist():
        if record["tx_id"] not in by_key or record["tx_id"] not in singles:
            continue
        row = by_key[record["tx_id"]]
        for field in TRANSACTIONS.features:
            value = record[field.name]
            if isinstance(value, float) and math.isnan(value):
                value = None
            expected = by_spark.transform[field.name].apply(value)
            # Same IEEE operations in the same order: equal to the last bit.
            assert row[field.name] == expected, (record["tx_id"], field.name)
        checked += 1
    assert checked > 100


def test_the_result_assembles_into_a_manifest(transactions):
    _, _, by_spark, _ = transactions
    source = {"topic": "ingest.transactions", "partition": 0, "first_offset": 0, "last_offset": 3999}
    lineage = [RawSource(key="raw/x.parquet", rows=4000, **source)]
    manifest = build_manifest(
        by_spark, TRANSACTIONS, version=1, lineage=lineage, trigger="data.landed", code_version="test"
    )
    again = DatasetManifest.model_validate_json(manifest.model_dump_json(by_alias=True))
    assert again == manifest
    assert manifest.rows == by_spark.rows and manifest.engine == "spark"
    assert list(manifest.schema_) == rules.prepared_schema(TRANSACTIONS).names
    assert manifest.features == [field.name for field in TRANSACTIONS.features]


SMALL = parse_dataset_spec(
    {
        "name": "small",
        "key": "id",
        "event_time": "ts",
        "label": "y",
        "fields": [
            {"name": "id", "type": "string"},
            {"name": "ts", "type": "timestamp"},
            {"name": "x", "type": "float", "min": 0, "nullable": True, "nulls": "impute"},
            {"name": "c", "type": "category", "categories": ["a", "b", "c"], "nullable": True,
             "nulls": "keep"},
            {"name": "y", "type": "int", "min": 0, "max": 1},
        ],
        "prep": {"splits": {"train": 1.0, "validation": 0.0, "test": 0.0}, "category_min_count": 2},
    }
)
SMALL_ROWS = [  # id, ts (hours), x, c, y
    ("k1", 1, 1.0, "a", 0),
    ("k1", 3, 3.0, "b", 1),  # later: wins
    ("k2", 2, 5.0, "a", 0),
    ("k2", 2, 7.0, "a", 0),  # same time, greater x: wins
    ("k3", 1, 2.0, "a", 0),  # wins: the later version is invalid
    ("k3", 5, -1.0, "a", 0),  # x < min: rejected
    ("k4", 1, None, None, 0),  # x imputed, c kept null -> 0
    ("k5", 1, 4.0, "c", 1),  # "c" seen once: below the floor -> 0
    ("k6", 1, 6.0, "b", 0),
    ("k7", 1, 8.0, "a", 2),  # y > max: rejected
    ("k8", 2, math.nan, "a", 0),  # NaN counts as null: imputed
    ("k9", None, 1.0, "a", 0),  # no event time: rejected
]


def test_both_engines_apply_the_documented_rules_to_a_known_case(spark, tmp_path):
    hour = 3_600_000_000
    columns = list(zip(*SMALL_ROWS, strict=True))
    times = [None if t is None else t * hour for t in columns[1]]
    raw = pa.table(
        {
            "id": pa.array(columns[0]),
            "ts": pa.array(times, pa.timestamp("us", tz="UTC")),
            "x": pa.array(columns[2], pa.float64()),
            "c": pa.array(columns[3], pa.string()),
            "y": pa.array(columns[4], pa.int64()),
        }
    )
    paths = write_raw(raw, tmp_path / "raw", files=2)
    survivors = {"k1": 3.0, "k2": 7.0, "k3": 2.0, "k4": None, "k5": 4.0, "k6": 6.0, "k8": None}
    present = np.array([v for v in survivors.values() if v is not None])
    processed = np.array([np.median(present) if v is None else v for v in survivors.values()])
    mean, std = processed.mean(), processed.std()
    expected_x = (processed - mean) / std
    expected_c = {"k1": 2, "k2": 1, "k3": 1, "k4": 0, "k5": 0, "k6": 2, "k8": 1}

    by_spark, by_duckdb = prepare_both(spark, SMALL, paths, tmp_path)
    for result, out in ((by_spark, tmp_path / "spark"), (by_duckdb, tmp_path / "duckdb")):
        assert result.counts.input == 12
        assert result.counts.rejected == 3
        assert result.counts.violations["x.min"] == result.counts.violations["y.max"] == 1
        assert result.counts.violations["ts.null"] == 1
        assert result.counts.duplicates == 2
        assert result.rows == {"train": 7, "validation": 0, "test": 0}
        assert result.transform["c"].vocabulary == ["a", "b"]
        assert result.transform["x"].impute == float(np.median(present))
        assert result.transform["x"].mean == pytest.approx(mean)
        assert result.transform["x"].std == pytest.approx(std)
        assert result.reference["c"].frequencies == pytest.approx({"a": 3 / 6, "b": 2 / 6, "c": 1 / 6})
        assert result.label_reference.frequencies == pytest.approx({"0": 5 / 7, "1": 2 / 7})
        train = read_split(out, "train", "id")
        assert train["id"].to_pylist() == list(survivors)
        assert train["ts"].cast(pa.int64()).to_pylist() == [t * hour for t in (3, 2, 1, 1, 1, 1, 2)]
        np.testing.assert_allclose(train["x"].to_numpy(), expected_x, rtol=0, atol=1e-12)
        assert dict(zip(train["id"].to_pylist(), train["c"].to_pylist(), strict=True)) == expected_c
        assert train["y"].to_pylist() == [1, 0, 0, 0, 1, 0, 0]
        for split in ("validation", "test"):
            assert read_split(out, split, "id").num_rows == 0


def test_unpreparable_input_fails_with_the_reason(spark, tmp_path):
    paths = write_raw(raw_transactions(50, seed=1), tmp_path / "raw")
    no_train = {"train": 0.0, "validation": 0.5, "test": 0.5}
    spec = TRANSACTIONS.model_copy(update={"prep": TRANSACTIONS.prep.model_copy(update={"splits": no_train})})
    for engine in (partial(prepare_with_spark, spark), prepare_with_duckdb):
        with pytest.raises(rules.PrepError, match="train split is empty"):
            engine(spec, paths, str(tmp_path / "out"))
        with pytest.raises(rules.PrepError, match="no raw files"):
            engine(TRANSACTIONS, [], str(tmp_path / "out"))




OTHER_TYPES = parse_dataset_spec(
    {
        "name": "other_types",
        "key": "id",
        "event_time": "ts",
        "label": "price",
        "fields": [
            {"name": "id", "type": "int"},
            {"name": "ts", "type": "timestamp"},
            {"name": "member", "type": "bool", "nullable": True, "nulls": "impute"},
            {"name": "rooms", "type": "int", "min": 1},
            {"name": "note", "type": "string", "required": False},
            {"name": "price", "type": "float", "min": 0},
        ],
        "prep": {"splits": {"train": 0.6, "validation": 0.2, "test": 0.2}, "clip_quantiles": [0.05, 0.95]},
    }
)


def test_int_keys_bool_features_and_a_float_label_agree_across_engines(spark, tmp_path):
    rng = np.random.default_rng(3)
    rows = 600
    ids = rng.integers(0, 450, rows)  # repeats: later versions of the same id
    member = pa.array(rng.random(rows) < 0.3, mask=rng.random(rows) < 0.1)
    raw = pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "ts": pa.array(rng.integers(0, 10**12, rows), pa.timestamp("us", tz="UTC")),
            "member": member,
            # Floats for an int field: whole numbers convert, 2.5 is a type violation.
            "rooms": pa.array(np.where(rng.random(rows) < 0.05, 2.5, rng.integers(0, 6, rows)), pa.float64()),
            "note": pa.array(["x"] * rows),
            "price": pa.array(rng.lognormal(5, 1, rows)),
        }
    )
    paths = write_raw(raw, tmp_path / "raw", files=2)
    by_spark, by_duckdb = prepare_both(spark, OTHER_TYPES, paths, tmp_path)
    assert by_spark.counts == by_duckdb.counts
    assert by_spark.counts.violations["rooms.type"] > 0 and by_spark.counts.violations["rooms.min"] > 0
    assert by_spark.content_sha256 == by_duckdb.content_sha256
    assert by_spark.transform == by_duckdb.transform
    assert by_spark.reference == by_duckdb.reference
    assert by_spark.label_reference == by_duckdb.label_reference
    assert by_spark.label_reference.kind == "numeric" and len(by_spark.label_reference.fractions) == 10
    assert by_spark.transform["member"].impute in (0.0, 1.0)
    train = read_split(tmp_path / "spark", "train", "id")
    assert train.schema.names == ["id", "ts", "member", "rooms", "price"]  # the string field is left out
    assert {rules.split_of(key, OTHER_TYPES.prep.splits) for key in train["id"].to_pylist()} == {"train"}


def test_quantiles_from_bounded_samples_agree_across_engines_and_stay_near_the_exact_ones(spark, tmp_path,
                                                                                          monkeypatch):
    """With more train values than QUANTILE_SAMPLE, both engines cut the reference from the same sample
    (nullable columns take their own non-null rows) and the edges move from the exact deciles by
    about the documented rank error, no more."""
    raw = raw_transactions(4000, seed=12)
    paths = write_raw(raw, tmp_path / "raw", files=3)
    exact = prepare_with_duckdb(TRANSACTIONS, paths, str(tmp_path / "exact"))
    monkeypatch.setattr(fit, "QUANTILE_SAMPLE", 600)
    by_spark, by_duckdb = prepare_both(spark, TRANSACTIONS, paths, tmp_path)
    assert by_spark.reference == by_duckdb.reference
    assert by_spark.transform == by_duckdb.transform
    assert by_spark.content_sha256 == by_duckdb.content_sha256

    train_keys = set(read_split(tmp_path / "duckdb", "train", "tx_id")["tx_id"].to_pylist())
    assert len(train_keys) > 2 * fit.QUANTILE_SAMPLE  # the sample really is a sample
    moved = 0
    # Re-sent versions of a key copy these two columns, so each train key has one value of each.
    for name in ("distance_km", "merchant_age_days"):
        sampled, exact_edges = by_spark.reference[name].edges, exact.reference[name].edges
        moved += sampled != exact_edges
        per_key = dict(zip(raw["tx_id"].to_pylist()[::-1], raw[name].to_pylist()[::-1], strict=True))
        values = np.sort([v for key, v in per_key.items() if key in train_keys and v is not None and v == v])
        for edge, probability in zip(sampled, fit.REFERENCE_QUANTILES, strict=False):
            rank = np.searchsorted(values, edge) / values.size
            # Five standard deviations of a sample quantile's rank (plus the few keys whose only
            # version was rejected): never reached by chance.
            assert abs(rank - probability) < 5 * math.sqrt(probability * (1 - probability) / fit.QUANTILE_SAMPLE) + 0.01
    assert moved, "every edge came out exact: the sample was not used"


def test_spark_fits_the_reference_without_gathering_a_column_into_one_row(spark, tmp_path, monkeypatch):
    """An aggregate that collects a column's values into one array makes one row as large as the
    column: memory grows with the dataset, and Spark refuses rows over about 2 GB."""
    from pyspark.sql import functions

    def gathered(column, *args):
        raise AssertionError(f"column {column!r} gathered into one row: memory grows with the dataset")

    for name in ("collect_list", "collect_set", "array_agg"):
        if hasattr(functions, name):
            monkeypatch.setattr(functions, name, gathered)
    paths = write_raw(raw_transactions(800, seed=5), tmp_path / "raw", files=2)
    result = prepare_with_spark(spark, TRANSACTIONS, paths, str(tmp_path / "spark"))
    assert result.reference["distance_km"].edges


T0, POINT = 1_765_000_000_000, 1_765_000_100_000  # Kafka times, ms


def test_both_engines_read_the_same_window_and_count_the_same_drift_sides(spark, tmp_path):
    """Training windows and a drift point over rows with bad values, nulls and keys re-sent on both
    sides of the drift, exact copies landed again after it, and rows without a Kafka time (which count
    as landed at time 0)."""
    raw = raw_transactions(3000, seed=7)
    rng = np.random.default_rng(7)
    # Re-sent versions come last in raw_transactions: with sorted times many land after the drift.
    ms = T0 + np.sort(rng.integers(0, 200_000, raw.num_rows))
    copies = raw.slice(0, 60)  # landed before the drift, then again, unchanged, after it
    raw = pa.concat_tables([raw, copies])
    ms = np.concatenate([ms, np.full(copies.num_rows, POINT + 50_000)])
    no_time = rng.random(raw.num_rows) < 0.01
    raw = raw.append_column(KAFKA_TIME, pa.array(ms, pa.int64(), mask=no_time).cast(pa.timestamp("ms", tz="UTC")))
    paths = write_raw(raw, tmp_path / "raw", files=2)
    windows = [{"drift_point_ms": POINT}, {"since_ms": T0 + 50_000, "drift_point_ms": POINT},
               {"since_ms": POINT, "drift_point_ms": POINT}, {"since_ms": T0 + 150_000}]
    for number, window in enumerate(windows):
        by_spark, by_duckdb = prepare_both(spark, TRANSACTIONS, paths, tmp_path / str(number), **window)
        assert by_spark.counts == by_duckdb.counts, window
        assert by_spark.rows == by_duckdb.rows, window
        assert by_spark.drift_sides == by_duckdb.drift_sides, window
        assert by_spark.content_sha256 == by_duckdb.content_sha256, window
        assert by_spark.transform == by_duckdb.transform, window
        assert by_spark.reference == by_duckdb.reference, window
        assert by_spark.label_reference == by_duckdb.label_reference, window
        landed_since = int(((ms >= window.get("since_ms", 0)) & ~no_time).sum()) if "since_ms" in window else len(ms)
        assert by_spark.counts.input == landed_since, window
        sides = by_duckdb.drift_sides
        if "drift_point_ms" in window:
            assert sides.after > 0 and sum(by_duckdb.rows.values()) == sides.before + sides.after, window
            assert (sides.test_left_out > 0) == (window.get("since_ms", 0) < POINT), window
        else:
            assert sides is None

