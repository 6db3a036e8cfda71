import itertools

import numpy as np
import pytest

from services.trainer.metrics import auc, binary_log_loss, multiclass_log_loss, validation_metrics

pytestmark = pytest.mark.unit


def pairwise_auc(scores, labels):
    """Every (positive, negative) pair: 1 when the positive scores higher, 1/2 on a tie."""
    positives = scores[labels == 1]
    negatives = scores[labels == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(positives, negatives))
    return wins / (len(positives) * len(negatives))


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_brute_force_pairs_including_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 300)
    # Rounding makes many ties, within and across classes.
    scores = np.round(rng.normal(labels * 0.7, 1.0), 1)
    assert auc(scores, labels) == pytest.approx(pairwise_auc(scores, labels), abs=1e-12)


def test_auc_extremes_and_undefined_case():
    labels = np.array([0, 0, 1, 1])
    assert auc(np.array([0.1, 0.2, 0.3, 0.4]), labels) == 1.0
    assert auc(np.array([0.4, 0.3, 0.2, 0.1]), labels) == 0.0
    assert auc(np.full(4, 0.5), labels) == 0.5
    assert np.isnan(auc(np.array([0.1, 0.2]), np.array([1, 1])))


def test_log_losses_equal_the_definition():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, 50)
    labels = rng.integers(0, 2, 50)
    p = 1 / (1 + np.exp(-logits))
    expected = -np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p))
    assert binary_log_loss(logits, labels) == pytest.approx(expected, rel=1e-10)
    # Stable where the naive formula overflows.
    assert binary_log_loss(np.array([1000.0, -1000.0]), np.array([0, 1])) == pytest.approx(1000.0)

    scores = rng.normal(0, 2, (40, 3))
    classes = rng.integers(0, 3, 40)
    softmax = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    expected = -np.mean(np.log(softmax[np.arange(40), classes]))
    assert multiclass_log_loss(scores, classes) == pytest.approx(expected, rel=1e-10)


def test_metrics_per_task():
    binary = validation_metrics("binary", np.array([-2.0, 1.0, 3.0, -1.0]), np.array([0, 1, 0, 0]))
    assert set(binary) == {"auc", "log_loss", "accuracy"}
    assert binary["accuracy"] == 0.75 and binary["auc"] == pytest.approx(2 / 3)
    multiclass = validation_metrics("multiclass", np.array([[2.0, 0, 0], [0, 0, 1.0]]), np.array([0, 1]))
    assert multiclass["accuracy"] == 0.5
    regression = validation_metrics("regression", np.array([1.0, 2.0, 3.0]), np.array([1.0, 4.0, 3.0]))
    assert regression == pytest.approx({"rmse": np.sqrt(4 / 3), "mae": 2 / 3})
