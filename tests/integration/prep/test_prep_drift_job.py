"""Both engines' drift builds: the training window, each row's side of the drift, a post-drift test split."""

from __future__ import annotations

from functools import partial

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_duckdb_vs_spark import TRANSACTIONS

from services.prep.duckdb_job import prepare_with_duckdb
from services.prep.job import prepare_with_spark
from services.prep.rules import WEIGHT, recency_weight
from services.prep.spark import spark_session
from services.prep.synthetic import raw_transactions
from streamml.manifest import SPLITS
from streamml.specs import KAFKA_TIME

pytestmark = pytest.mark.integration
ROWS, OLD = 3000, 1800  # the first OLD rows landed before the drift point
T0, POINT = 1_765_000_000_000, 1_765_000_100_000  # Kafka times, ms


@pytest.fixture(scope="module")
def spark(tmp_path_factory):
    session = spark_session("local[2]", tmp_path_factory.mktemp("spark-state"))
    yield session
    session.stop()


@pytest.fixture(params=["spark", "duckdb"])
def prepare(request):
    if request.param == "duckdb":
        return prepare_with_duckdb
    return partial(prepare_with_spark, request.getfixturevalue("spark"))


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """Unique, valid keys; row i landed at T0 + i ms before the drift, at POINT + i - OLD ms after it."""
    table = raw_transactions(ROWS, seed=5, duplicate_share=0, bad_share=0)
    ms = np.where(np.arange(ROWS) < OLD, T0 + np.arange(ROWS), POINT + np.arange(ROWS) - OLD)
    table = table.append_column(KAFKA_TIME, pa.array(ms, pa.int64()).view(pa.timestamp("ms", tz="UTC")))
    path = tmp_path_factory.mktemp("raw") / "batch.parquet"
    pq.write_table(table, path)
    new_keys = set(table["tx_id"].to_pylist()[OLD:])
    return str(path), new_keys


def keys(out, split):
    return set(pq.read_table(out / split, columns=["tx_id"])["tx_id"].to_pylist())


def test_a_build_from_all_rows_counts_both_sides_and_tests_on_the_new_world_only(prepare, raw, tmp_path):
    path, new_keys = raw
    plain = prepare(TRANSACTIONS, [path], str(tmp_path / "plain"))
    result = prepare(TRANSACTIONS, [path], str(tmp_path / "all"), drift_point_ms=POINT)
    sides = result.drift_sides
    assert plain.drift_sides is None and sum(plain.rows.values()) == ROWS
    assert sides.after == len(new_keys) == ROWS - OLD
    assert sides.before + sides.test_left_out == OLD
    assert sides.test_left_out == len(keys(tmp_path / "plain", "test") - new_keys) > 0
    assert sum(result.rows.values()) == sides.before + sides.after
    test = keys(tmp_path / "all", "test")
    assert test == keys(tmp_path / "plain", "test") & new_keys and len(test) == result.rows["test"] > 0
    train = keys(tmp_path / "all", "train")
    assert train == keys(tmp_path / "plain", "train"), "train keeps both sides"
    assert train & new_keys and train - new_keys


def test_a_build_from_all_rows_with_a_half_life_weighs_each_row_by_its_recency(prepare, raw, tmp_path):
    path, new_keys = raw
    result = prepare(TRANSACTIONS, [path], str(tmp_path / "weighted"), drift_point_ms=POINT, half_life_s=50.0)
    assert result.schema.names[-1] == WEIGHT
    landed = pq.read_table(path, columns=["tx_id", KAFKA_TIME])
    landed_ms = dict(zip(landed["tx_id"].to_pylist(), landed[KAFKA_TIME].cast(pa.int64()).to_pylist(), strict=True))
    for split in SPLITS:
        table = pq.read_table(tmp_path / "weighted" / split, columns=["tx_id", WEIGHT])
        ids, weights = table["tx_id"].to_pylist(), table[WEIGHT].to_numpy()
        # A row landed 50 s before the drift weighs half a post-drift row, 75 s before 3/8; rows from the
        # drift on weigh 1.
        age_s = np.array([POINT - landed_ms[key] for key in ids]) / 1000
        assert weights == pytest.approx(recency_weight(age_s, 50.0), rel=1e-12), split
        assert ({key for key, weight in zip(ids, weights, strict=True) if weight == 1.0} == set(ids) & new_keys), split
    train = pq.read_table(tmp_path / "weighted" / "train", columns=[WEIGHT])[WEIGHT].to_numpy()
    assert 0.25 <= train.min() < 0.26 and train.max() == 1.0  # old rows landed 98.2 to 100 s before the drift
    assert recency_weight(np.array([-5.0, 0.0, 25.0, 50.0, 75.0, 100.0]), 50.0).tolist() == [
        1.0, 1.0, 0.75, 0.5, 0.375, 0.25]
    plain = prepare(TRANSACTIONS, [path], str(tmp_path / "unweighted"), drift_point_ms=POINT)
    assert WEIGHT not in plain.schema.names


def test_a_build_since_the_drift_reads_post_drift_rows_only(prepare, raw, tmp_path):
    path, new_keys = raw
    result = prepare(TRANSACTIONS, [path], str(tmp_path / "since"),
                                since_ms=POINT, drift_point_ms=POINT)
    assert (result.drift_sides.before, result.drift_sides.after, result.drift_sides.test_left_out) == (0, 1200, 0)
    assert sum(result.rows.values()) == ROWS - OLD
    assert set().union(*(keys(tmp_path / "since", split) for split in SPLITS)) == new_keys


def test_a_window_start_inside_the_old_world_keeps_the_rows_from_it_on(prepare, raw, tmp_path):
    path, new_keys = raw
    # last_rows: 2000 starts at the 2000th newest row: the last 800 old rows and the 1200 new ones.
    result = prepare(TRANSACTIONS, [path], str(tmp_path / "last"),
                                since_ms=T0 + OLD - 800, drift_point_ms=POINT)
    sides = result.drift_sides
    assert sides.after == 1200 and sides.before + sides.test_left_out == 800
    assert keys(tmp_path / "last", "test") <= new_keys


def test_a_later_build_keeps_the_drift_builds_window_and_marks_no_sides(prepare, raw, tmp_path):
    path, new_keys = raw
    result = prepare(TRANSACTIONS, [path], str(tmp_path / "later"), since_ms=POINT)
    assert result.drift_sides is None and sum(result.rows.values()) == ROWS - OLD
    assert set().union(*(keys(tmp_path / "later", split) for split in SPLITS)) == new_keys
