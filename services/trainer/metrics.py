"""Validation metrics from raw model scores, in float64 numpy, once per epoch.

Binary: ``auc``, ``log_loss``, ``accuracy`` (at probability 0.5); multiclass:
``accuracy``, ``log_loss``; regression: ``rmse``, ``mae``. Names match
``services.trainer.spec.TASK_METRICS``.
"""

from __future__ import annotations

import numpy as np

from services.trainer.spec import Task


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve: the chance that a random positive outranks a random
    negative, ties counting half (Mann-Whitney U with average ranks). NaN when the
    labels hold a single class, because the area is then undefined."""
    positive = labels.astype(bool)
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    # 1-based average rank of each distinct score: tied scores share the mean of their ranks.
    upper = np.cumsum(counts)
    average_rank = upper - (counts - 1) / 2.0
    rank_sum = average_rank[inverse][positive].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def binary_log_loss(logits: np.ndarray, labels: np.ndarray) -> float:
    # log(1 + e^s) - y*s is the cross-entropy of sigmoid(s), stable for large |s|.
    return float(np.mean(np.logaddexp(0.0, logits) - labels * logits))


def multiclass_log_loss(logits: np.ndarray, labels: np.ndarray) -> float:
    top = logits.max(axis=1, keepdims=True)
    log_norm = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    return float(np.mean(log_norm - logits[np.arange(labels.size), labels]))


def validation_metrics(task: Task, scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    scores = scores.astype(np.float64, copy=False)
    if task == "binary":
        labels = labels.astype(np.float64, copy=False)
        return {
            "auc": auc(scores, labels),
            "log_loss": binary_log_loss(scores, labels),
            "accuracy": float(np.mean((scores > 0) == (labels > 0.5))),
        }
    if task == "multiclass":
        labels = labels.astype(np.int64, copy=False)
        return {
            "accuracy": float(np.mean(scores.argmax(axis=1) == labels)),
            "log_loss": multiclass_log_loss(scores, labels),
        }
    errors = scores - labels.astype(np.float64, copy=False)
    return {"rmse": float(np.sqrt(np.mean(errors**2))), "mae": float(np.mean(np.abs(errors)))}
