import itertools

import numpy as np
import pytest

from services.validator.evaluation import OUT_OF_VOCABULARY, category_names, evaluate, measure_latency
from services.validator.metrics import task_metrics

pytestmark = pytest.mark.unit


def test_evaluate_collects_overall_and_slice_metrics():
    rng = np.random.default_rng(11)
    labels = rng.integers(0, 2, 300)
    scores = rng.random(300) * 0.5 + labels * 0.4
    codes = rng.integers(0, 3, 300)
    result = evaluate("binary", scores, labels, slices={"channel": category_names(codes, ["web", "pos"])})
    assert result.rows == 300
    assert result.metrics == task_metrics("binary", scores, labels)
    channel = result.slices["channel"]
    assert sorted(channel) == sorted([OUT_OF_VOCABULARY, "web", "pos"])
    assert channel["pos"].rows == int((codes == 2).sum())
    pos = codes == 2
    assert channel["pos"].metrics["auc"] == pytest.approx(task_metrics("binary", scores[pos], labels[pos])["auc"])
    assert sum(item.rows for item in channel.values()) == 300


def test_category_names_reject_codes_from_another_vocabulary():
    with pytest.raises(ValueError, match=r"codes span \[0, 3\] but the vocabulary allows 0..2"):
        category_names(np.array([0, 3]), ["web", "pos"])


def test_latency_times_only_the_model_on_full_batches_after_warmup():
    ticks = itertools.count()
    clock = lambda: next(ticks) * 0.001  # every clock read advances 1 ms  # noqa: E731
    seen = []

    def predict(numeric, categorical):
        seen.append((numeric.shape, categorical.shape, numeric[0, 0]))
        if len(seen) == 3 + 10:  # the last call is slow: 4 extra clock reads
            for _ in range(4):
                clock()

    numeric = np.arange(10, dtype=np.float32).reshape(5, 2)
    categorical = np.zeros((5, 1), dtype=np.int64)
    latency = measure_latency(predict, (numeric, categorical), batch_size=8, calls=10, warmup=3, clock=clock)
    assert len(seen) == 13
    assert all(numeric_shape == (8, 2) and categorical_shape == (8, 1) for numeric_shape, categorical_shape, _ in seen)
    # Batches wrap around the 5 rows: the second starts at row 8 % 5 = 3.
    assert seen[1][2] == numeric[3, 0]
    assert latency.calls == 10 and latency.batch_size == 8
    assert latency.p50_ms == pytest.approx(1.0)
    assert latency.p95_ms == pytest.approx(np.percentile([1.0] * 9 + [5.0], 95))


def test_latency_needs_rows():
    with pytest.raises(ValueError, match="no rows"):
        measure_latency(lambda *a: None, (np.zeros((0, 2)),), batch_size=4)


def test_evaluate_records_the_sampling_error_of_each_defined_metric():
    rng = np.random.default_rng(12)
    labels = rng.integers(0, 2, 2_000)
    scores = np.clip(rng.random(2_000) * 0.6 + labels * 0.3, 0, 1)
    result = evaluate("binary", scores, labels)
    auc = result.intervals["auc"]
    assert auc.method == "delong" and 0 < auc.standard_error < 0.02
    assert auc.low < result.metrics["auc"] < auc.high
    assert auc.high - auc.low == pytest.approx(2 * 1.96 * auc.standard_error, rel=1e-3)
    assert set(result.intervals) == {"auc", "log_loss", "accuracy"}
    one_class = evaluate("binary", scores, np.ones(2_000))
    assert one_class.metrics["auc"] is None and "auc" not in one_class.intervals
    assert type(result).model_validate_json(result.model_dump_json()) == result
