"""Model quality on labelled live predictions: per-prediction errors and windowed metrics.

Outputs are what applications log: a probability (binary), class
probabilities (multiclass, one column per class) or a value (regression).
Metric names and directions match the validator's test metrics, so a window's
value compares directly with the promoted model's.

Per-prediction errors feed the change detector; each is bounded below by 0
and rises when the model gets worse: binary (p - y)^2 (Brier), multiclass
1 - p(true class), regression |y - prediction|.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.monitor.reference import ClassTexts, category_text
from streamml.classes import class_of, family, value_text

Task = Literal["binary", "multiclass", "regression"]

# Per-class metrics (``recall_per_class``) are watched per class, as ``recall[<class>]`` (streamml.classes).
METRICS: dict[str, dict[str, Literal["min", "max"]]] = {
    "binary": {"auc": "max", "log_loss": "min", "accuracy": "max"},
    "multiclass": {"accuracy": "max", "log_loss": "min", "recall_per_class": "max"},
    "regression": {"rmse": "min", "mae": "min"},
}
DEFAULT_METRIC: dict[str, str] = {"binary": "auc", "multiclass": "log_loss", "regression": "rmse"}
TRUE_TEXT = ("1", "1.0", "true", "yes")
FALSE_TEXT = ("0", "0.0", "false", "no")
EPS = 1e-15


class MetricBaseline(BaseModel):
    """The validator's test value of one metric and its sampling error (null: unknown, taken as exact)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    value: float
    standard_error: float | None = Field(None, ge=0)


class PerformanceBaseline(BaseModel):
    """The promoted model's task, the metric watched and its test value (null: detector only), and the
    other metrics watched beside it (those the promotion policy names)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task: Task
    metric: str
    value: float | None = None
    standard_error: float | None = Field(None, ge=0)
    """Sampling error of ``value`` from the finite test split (null: unknown, taken as exact)."""
    classes: ClassTexts = None
    """Multiclass: class text per output column (``reference.class_texts``), to read labels."""
    others: dict[str, MetricBaseline] = Field(default_factory=dict)
    """Further metrics judged on every label window like ``metric``, with the validator's test values."""

    @model_validator(mode="after")
    def _metric_fits_task(self) -> PerformanceBaseline:
        for metric in (self.metric, *self.others):
            if family(metric) not in METRICS[self.task]:
                raise ValueError(
                    f"metric {metric!r} is not computed for task {self.task}; use one of {sorted(METRICS[self.task])}"
                )
        return self

    @property
    def better(self) -> Literal["min", "max"]:
        return METRICS[self.task][self.metric]

    def better_of(self, metric: str) -> Literal["min", "max"]:
        return METRICS[self.task][family(metric)]


def encode_labels(task: Task, labels: np.ndarray | pa.Array | list, classes: list[str] | None = None) -> np.ndarray:
    """Labels as float64: 0/1 (binary), class index (multiclass) or value (regression)."""
    if task == "multiclass":
        text = _label_texts(labels)
        if classes is None:
            return np.asarray([float(value) for value in text])
        index = class_index(classes)
        unknown = sorted({str(value) for value in text if value not in index})
        if unknown:
            raise ValueError(f"labels {unknown[:5]} are not among the model's classes {classes}")
        return np.asarray([index[value] for value in text], dtype=np.float64)
    if isinstance(labels, (pa.Array, pa.ChunkedArray)) and pa.types.is_string(labels.type):
        labels = labels.to_pylist()
    array = np.asarray(labels)
    if array.dtype.kind in "OUS":
        array = np.asarray([_number(value) for value in array.tolist()], dtype=np.float64)
    return array.astype(np.float64)


def class_index(classes: list[str]) -> dict[str, int]:
    """Label text -> output column. Boolean classes also read 1/0 and True/False: a label ``true`` sent
    through a client that types labels as numbers arrives as 1.0."""
    index = {name: position for position, name in enumerate(classes)}
    if set(classes) == {"false", "true"}:
        for true, false in (("1", "0"), ("True", "False"), ("TRUE", "FALSE")):
            index[true], index[false] = index["true"], index["false"]
    return index


def _label_texts(labels: np.ndarray | pa.Array | list) -> list[str | None]:
    if isinstance(labels, list):
        return [value_text(value) for value in labels]  # may mix types (labels validated one by one)
    return category_text(labels).to_pylist()


def _number(value: object) -> float:
    text = str(value).strip().lower()
    if text in TRUE_TEXT:
        return 1.0
    if text in FALSE_TEXT:
        return 0.0
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"label {value!r} is not a number nor true/false") from None


def prediction_errors(task: Task, outputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    if task == "binary":
        return (outputs - labels) ** 2
    if task == "multiclass":
        return 1.0 - outputs[np.arange(labels.size), labels.astype(np.int64)]
    return np.abs(outputs - labels)


def window_metric(
    task: Task, metric: str, outputs: np.ndarray, labels: np.ndarray, classes: list[str] | None = None
) -> tuple[float, float]:
    """The metric over one window and its standard error (NaN when undefined, e.g. AUC of one class).

    ``recall[<class>]``: the share of the class's labelled rows predicted as it; ``classes`` (the output
    column of each class text) finds its column, else the class text is the column number. A class the
    model does not have is undefined."""
    n = labels.size
    if n == 0:
        return math.nan, math.nan
    if family(metric) == "recall_per_class":
        name = class_of(metric)
        names = classes if classes is not None else [str(column) for column in range(outputs.shape[1])]
        if name not in names:
            return math.nan, math.nan
        column = names.index(name)
        rows = labels.astype(np.int64) == column
        if not rows.any():
            return math.nan, math.nan
        return _mean_and_error((outputs[rows].argmax(axis=1) == column).astype(np.float64))
    if metric == "auc":
        return auc_with_error(outputs, labels)
    if metric == "accuracy":
        hits = (outputs > 0.5) == (labels > 0.5) if task == "binary" else outputs.argmax(axis=1) == labels
        return _mean_and_error(hits.astype(np.float64))
    if metric == "log_loss":
        if task == "binary":
            p = np.clip(outputs, EPS, 1 - EPS)
            losses = -(labels * np.log(p) + (1 - labels) * np.log(1 - p))
        else:
            losses = -np.log(np.clip(outputs[np.arange(n), labels.astype(np.int64)], EPS, 1.0))
        return _mean_and_error(losses)
    errors = outputs - labels
    if metric == "mae":
        return _mean_and_error(np.abs(errors))
    if metric == "rmse":
        mse, mse_error = _mean_and_error(errors**2)
        rmse = math.sqrt(mse)
        # Delta method: d sqrt(m) = dm / (2 sqrt(m)).
        return rmse, mse_error / (2 * rmse) if rmse > 0 else 0.0
    raise ValueError(f"unknown metric {metric!r} for task {task}")


def _mean_and_error(values: np.ndarray) -> tuple[float, float]:
    n = values.size
    spread = float(values.std(ddof=1)) if n > 1 else math.nan
    return float(values.mean()), spread / math.sqrt(n)


def auc_with_error(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """ROC AUC (ties count half) and its Hanley-McNeil standard error."""
    positive = labels > 0.5
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan, math.nan
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0
    rank_sum = average_rank[inverse][positive].sum()
    area = float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
    q1, q2 = area / (2 - area), 2 * area * area / (1 + area)
    variance = (area * (1 - area) + (n_pos - 1) * (q1 - area**2) + (n_neg - 1) * (q2 - area**2)) / (n_pos * n_neg)
    return area, math.sqrt(max(variance, 0.0))
