import math

import numpy as np
import pytest

from services.validator.metrics import (
    accuracy,
    auc,
    delong_standard_error,
    log_loss,
    mae,
    rmse,
    slice_metrics,
    standard_errors,
    task_metrics,
)

pytestmark = pytest.mark.unit


def pairwise_auc(scores, labels):
    positives, negatives = scores[labels == 1], scores[labels == 0]
    wins = (positives[:, None] > negatives[None, :]).sum() + 0.5 * (positives[:, None] == negatives[None, :]).sum()
    return wins / (positives.size * negatives.size)


def test_auc_matches_the_pairwise_definition_with_ties():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 400)
    scores = np.round(rng.random(400) * 0.5 + labels * 0.3, 2)  # rounding makes many ties
    assert auc(scores, labels) == pytest.approx(pairwise_auc(scores, labels), abs=1e-12)
    assert auc(labels.astype(float), labels) == 1.0
    assert auc(1.0 - labels, labels) == 0.0
    assert math.isnan(auc(scores, np.ones(400)))


def test_binary_log_loss_and_accuracy():
    p = np.array([0.9, 0.2, 0.6, 0.4])
    y = np.array([1, 0, 0, 1])
    expected = -np.mean([np.log(0.9), np.log(0.8), np.log(0.4), np.log(0.4)])
    assert log_loss(p, y) == pytest.approx(expected)
    assert accuracy(p, y) == 0.5
    # A certain mistake costs a large, finite loss rather than infinity.
    assert 30 < log_loss(np.array([0.0]), np.array([1])) < 40


def test_multiclass_metrics_from_probabilities():
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.4, 0.3]])
    y = np.array([0, 2, 0])
    metrics = task_metrics("multiclass", p, y)
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    assert metrics["log_loss"] == pytest.approx(-np.mean(np.log([0.7, 0.8, 0.3])))
    # Class 0: one of its two rows predicted as it; class 1 has no rows; class 2 its one row.
    assert metrics["recall[0]"] == 0.5 and math.isnan(metrics["recall[1]"]) and metrics["recall[2]"] == 1.0


def test_the_recall_of_each_class_is_named_by_its_text_and_has_the_error_of_a_share():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 3, 3_000)
    # The model finds class "low" nine times in ten, "mid" half the time, "high" always.
    found = rng.random(3_000) < np.array([0.9, 0.5, 1.0])[labels]
    guess = np.where(found, labels, (labels + 1) % 3)
    p = np.full((3_000, 3), 0.1)
    p[np.arange(3_000), guess] = 0.8
    classes = ["low", "mid", "high"]
    metrics = task_metrics("multiclass", p, labels, classes)
    assert [key for key in metrics if key.startswith("recall")] == ["recall[low]", "recall[mid]", "recall[high]"]
    for position, name in enumerate(classes):
        assert metrics[f"recall[{name}]"] == pytest.approx(np.mean(guess[labels == position] == position))
    errors = standard_errors("multiclass", p, labels, classes)
    rows = np.bincount(labels)
    share = metrics["recall[mid]"]
    assert errors["recall[mid]"] == pytest.approx(math.sqrt(share * (1 - share) / (rows[1] - 1)))
    assert errors["recall[high]"] == 0.0  # found every time: no spread
    with pytest.raises(ValueError, match="3 class probabilities but names 2 classes"):
        task_metrics("multiclass", p, labels, ["low", "mid"])


def test_regression_metrics():
    predicted, actual = np.array([1.0, 2.0, 4.0]), np.array([1.0, 3.0, 2.0])
    assert rmse(predicted, actual) == pytest.approx(math.sqrt(5 / 3))
    assert mae(predicted, actual) == pytest.approx(1.0)
    assert task_metrics("regression", predicted, actual) == {"rmse": rmse(predicted, actual), "mae": 1.0}


def test_shape_mismatch_is_explained():
    with pytest.raises(ValueError, match=r"binary predictions must have shape \[N\] with N = 3 labels, got \[3, 2\]"):
        task_metrics("binary", np.zeros((3, 2)), np.zeros(3))


def test_validator_agrees_with_the_trainer_on_the_same_model():
    from services.trainer.metrics import validation_metrics

    rng = np.random.default_rng(5)
    logits = rng.normal(size=1000)
    labels = (rng.random(1000) < 1 / (1 + np.exp(-2 * logits))).astype(float)
    trainer = validation_metrics("binary", logits, labels)
    mine = task_metrics("binary", 1 / (1 + np.exp(-logits)), labels)
    assert mine == pytest.approx(trainer, rel=1e-9)


def test_slice_metrics_equal_the_metrics_of_each_subset():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, 600)
    scores = rng.random(600) * 0.6 + labels * 0.2
    channel = rng.choice(np.array(["web", "pos", "atm"], dtype=object), 600)
    channel[:5] = "phone"
    labels[:5] = 1  # a slice with one class: AUC undefined
    by_value = slice_metrics("binary", scores, labels, channel)
    assert sorted(by_value) == ["atm", "phone", "pos", "web"]
    for value, (rows, metrics) in by_value.items():
        mask = channel == value
        assert rows == mask.sum()
        expected = task_metrics("binary", scores[mask], labels[mask])
        assert metrics.keys() == expected.keys()
        for name in metrics:
            assert metrics[name] == pytest.approx(expected[name], nan_ok=True)
    assert math.isnan(by_value["phone"][1]["auc"])


def test_slice_column_must_match_rows():
    with pytest.raises(ValueError, match="slice column has 2 values for 3 rows"):
        slice_metrics("regression", np.zeros(3), np.zeros(3), np.array(["a", "b"]))


def test_delong_standard_error_matches_its_pairwise_definition():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.random(300) * 0.6 + labels * 0.3, 2)  # with ties
    positives, negatives = scores[labels == 1], scores[labels == 0]
    wins = (positives[:, None] > negatives[None, :]) + 0.5 * (positives[:, None] == negatives[None, :])
    v10, v01 = wins.mean(axis=1), wins.mean(axis=0)
    expected = np.sqrt(v10.var(ddof=1) / positives.size + v01.var(ddof=1) / negatives.size)
    assert delong_standard_error(scores, labels) == pytest.approx(expected, rel=1e-12)
    assert math.isnan(delong_standard_error(scores[:3], np.array([1, 0, 0])))


def test_the_auc_standard_error_is_the_spread_of_the_auc_over_test_splits():
    rng = np.random.default_rng(6)

    def split(n):
        labels = rng.integers(0, 2, n)
        return rng.normal(0, 1, n) + 0.8 * labels, labels

    aucs = [auc(*split(2_000)) for _ in range(300)]
    errors = [standard_errors("binary", *split(2_000))["auc"] for _ in range(20)]
    assert np.mean(errors) == pytest.approx(np.std(aucs, ddof=1), rel=0.15)


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_every_metric_has_a_standard_error(task):
    rng = np.random.default_rng(7)
    if task == "multiclass":
        labels = rng.integers(0, 3, 500)
        predictions = rng.dirichlet(np.ones(3), 500)
    else:
        labels = rng.integers(0, 2, 500).astype(float) if task == "binary" else rng.normal(0, 1, 500)
        predictions = rng.random(500) if task == "binary" else labels + rng.normal(0, 0.5, 500)
    errors = standard_errors(task, predictions, labels)
    assert set(errors) == set(task_metrics(task, predictions, labels))
    assert task != "multiclass" or {"recall[0]", "recall[1]", "recall[2]"} <= set(errors)
    assert all(0 < error < 0.1 for error in errors.values())
