"""Test-split metrics from a model's predictions, in float64 numpy.

Predictions are what a portable model answers: P(label = 1) ``[N]`` for
binary, class probabilities ``[N, K]`` for multiclass (labels are class
indices), the predicted value ``[N]`` for regression. Binary gives ``auc``,
``log_loss`` and ``accuracy`` (at probability 0.5), multiclass ``accuracy``,
``log_loss`` and the recall of each class (``recall[<class>]``: the share of
its rows predicted as it, named by the class's text), regression ``rmse`` and
``mae``. A metric that is undefined on the rows given (AUC of one class, the
recall of a class without rows, anything of no rows) is NaN.

``standard_errors`` gives the sampling error of each metric on the rows
given (DeLong for AUC, the error of the mean for per-row losses, the delta
method for RMSE), so whoever compares live traffic with a test metric knows
how exact it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from scipy import stats

from streamml.classes import per_class_name

Task = Literal["binary", "multiclass", "regression"]
# Probabilities are clipped so one confident mistake costs a large, finite loss.
EPSILON = 1e-15


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """The chance that a random positive outranks a random negative, ties counting half."""
    positive = np.asarray(labels).astype(bool)
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    # 1-based average rank of each distinct score (Mann-Whitney U).
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0
    rank_sum = average_rank[inverse.reshape(-1)][positive].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def log_loss(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood: binary from P(1) ``[N]``, multiclass from ``[N, K]``."""
    if labels.size == 0:
        return float("nan")
    if probabilities.ndim == 2:
        chosen = probabilities[np.arange(labels.size), labels.astype(np.int64)]
        return float(-np.mean(np.log(np.clip(chosen, EPSILON, 1.0))))
    p = np.clip(probabilities, EPSILON, 1 - EPSILON)
    y = labels.astype(np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    if labels.size == 0:
        return float("nan")
    if predictions.ndim == 2:
        return float(np.mean(predictions.argmax(axis=1) == labels))
    return float(np.mean((predictions > 0.5) == (labels > 0.5)))


def class_recalls(probabilities: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per output column: the recall of that class (NaN without rows) and its standard error
    (NaN below two rows), from class probabilities ``[N, K]`` and class indices."""
    classes = probabilities.shape[1]
    labels = np.asarray(labels).astype(np.int64)
    hits = probabilities.argmax(axis=1) == labels
    rows = np.bincount(labels, minlength=classes).astype(np.float64)
    found = np.bincount(labels, weights=hits.astype(np.float64), minlength=classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(rows > 0, found / rows, np.nan)
        # The error of a mean of 0/1 hits with the sample (n - 1) variance, as the other metrics.
        error = np.where(rows > 1, np.sqrt(recall * (1 - recall) / (rows - 1)), np.nan)
    return recall, error


def _per_class(values: np.ndarray, classes: Sequence[str] | None) -> dict[str, float]:
    names = classes if classes is not None else [str(i) for i in range(values.size)]
    if len(names) != values.size:
        raise ValueError(f"the model gives {values.size} class probabilities but names {len(names)} classes")
    return {per_class_name("recall_per_class", name): float(value) for name, value in zip(names, values, strict=True)}


def rmse(predictions: np.ndarray, labels: np.ndarray) -> float:
    return float(np.sqrt(np.mean((predictions - labels) ** 2))) if labels.size else float("nan")


def mae(predictions: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.abs(predictions - labels))) if labels.size else float("nan")


def task_metrics(
    task: Task, predictions: np.ndarray, labels: np.ndarray, classes: Sequence[str] | None = None
) -> dict[str, float]:
    """The task's metrics; ``classes`` names the output columns of a multiclass model (the class text,
    ``streamml.classes.class_texts``), else they are named by position."""
    predictions = np.asarray(predictions, dtype=np.float64)
    labels = np.asarray(labels)
    expected_ndim = 2 if task == "multiclass" else 1
    if predictions.ndim != expected_ndim or predictions.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{task} predictions must have shape {'[N, K]' if expected_ndim == 2 else '[N]'} with N = "
            f"{labels.shape[0]} labels, got {list(predictions.shape)}"
        )
    if task == "binary":
        return {"auc": auc(predictions, labels), "log_loss": log_loss(predictions, labels),
                "accuracy": accuracy(predictions, labels)}
    if task == "multiclass":
        return {"accuracy": accuracy(predictions, labels), "log_loss": log_loss(predictions, labels),
                **_per_class(class_recalls(predictions, labels)[0], classes)}
    labels = labels.astype(np.float64)
    return {"rmse": rmse(predictions, labels), "mae": mae(predictions, labels)}


def slice_metrics(
    task: Task, predictions: np.ndarray, labels: np.ndarray, values: np.ndarray, classes: Sequence[str] | None = None
) -> dict[str, tuple[int, dict[str, float]]]:
    """Per distinct value of ``values`` (one per row): its row count and its metrics."""
    values = np.asarray(values)
    if values.shape[0] != labels.shape[0]:
        raise ValueError(f"slice column has {values.shape[0]} values for {labels.shape[0]} rows")
    distinct, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    # Rows grouped by value in one sort rather than one scan per value.
    groups = np.split(np.argsort(inverse.reshape(-1), kind="stable"), np.cumsum(counts)[:-1])
    predictions = np.asarray(predictions)
    labels = np.asarray(labels)
    return {
        str(value): (int(rows.size), task_metrics(task, predictions[rows], labels[rows], classes))
        for value, rows in zip(distinct.tolist(), groups, strict=True)
    }


def delong_standard_error(scores: np.ndarray, labels: np.ndarray) -> float:
    """DeLong's standard error of the AUC (ties counting half); NaN with fewer than two of either class."""
    positive = np.asarray(labels).astype(bool).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    pos, neg = scores[positive], scores[~positive]
    m, n = pos.size, neg.size
    if m < 2 or n < 2:
        return float("nan")
    ranks = stats.rankdata(np.concatenate([pos, neg]))
    # Per positive: the share of negatives it outranks; per negative: the share of positives that outrank it.
    wins_of_positives = (ranks[:m] - stats.rankdata(pos)) / n
    losses_of_negatives = 1.0 - (ranks[m:] - stats.rankdata(neg)) / m
    variance = wins_of_positives.var(ddof=1) / m + losses_of_negatives.var(ddof=1) / n
    return float(np.sqrt(variance))


def standard_errors(
    task: Task, predictions: np.ndarray, labels: np.ndarray, classes: Sequence[str] | None = None
) -> dict[str, float]:
    """The sampling error of each metric ``task_metrics`` gives on these rows (NaN where undefined)."""
    predictions = np.asarray(predictions, dtype=np.float64)
    labels = np.asarray(labels)
    n = labels.shape[0]

    def of_mean(values: np.ndarray) -> float:
        return float(values.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")

    if task == "regression":
        squared = (predictions - labels.astype(np.float64)) ** 2
        root = np.sqrt(squared.mean()) if n else float("nan")
        # Delta method: d sqrt(m) = dm / (2 sqrt(m)).
        rmse_error = of_mean(squared) / (2 * root) if n > 1 and root > 0 else float("nan")
        return {"rmse": rmse_error, "mae": of_mean(np.sqrt(squared))}
    if task == "multiclass":
        chosen = predictions[np.arange(n), labels.astype(np.int64)]
        hits = (predictions.argmax(axis=1) == labels).astype(np.float64)
        return {"accuracy": of_mean(hits), "log_loss": of_mean(-np.log(np.clip(chosen, EPSILON, 1.0))),
                **_per_class(class_recalls(predictions, labels)[1], classes)}
    p = np.clip(predictions, EPSILON, 1 - EPSILON)
    y = labels.astype(np.float64)
    hits = ((predictions > 0.5) == (y > 0.5)).astype(np.float64)
    return {
        "auc": delong_standard_error(predictions, labels),
        "log_loss": of_mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))),
        "accuracy": of_mean(hits),
    }
