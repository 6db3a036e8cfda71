"""What the validator knows about one model version: its test-split metrics,
overall and per slice, and how fast it answers. ``decide`` judges these.

    evaluation = evaluate("binary", probabilities, labels,
                          slices={"channel": category_names(codes, vocabulary)},
                          latency=measure_latency(program, (numeric, categorical), batch_size=256))

An undefined metric (NaN: AUC of a one-class slice) is stored as ``None`` so
``decision.json`` stays standard JSON. ``intervals`` holds the 95% interval
and standard error of each overall metric: the monitor weighs the live
metric's loss against both its own and the test split's sampling error.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.validator.metrics import Task, slice_metrics, standard_errors, task_metrics

OUT_OF_VOCABULARY = "(other)"
# Two-sided 95% normal interval.
Z_95 = 1.959963984540054


class Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _nan_to_none(metrics: dict[str, float | None]) -> dict[str, float | None]:
    return {name: None if value is None or math.isnan(value) else value for name, value in metrics.items()}


class SliceEvaluation(Strict):
    rows: int = Field(ge=0)
    metrics: dict[str, float | None]

    undefined_is_none = field_validator("metrics")(_nan_to_none)


class Latency(Strict):
    p50_ms: float = Field(ge=0)
    p95_ms: float = Field(ge=0)
    batch_size: int = Field(ge=1)
    calls: int = Field(ge=1)


class MetricInterval(Strict):
    """A metric's sampling error on the test split and its 95% normal interval."""

    standard_error: float = Field(ge=0)
    low: float
    high: float
    method: Literal["delong", "mean", "delta"] = Field(
        description="delong: AUC; mean: a mean of per-row losses; delta: RMSE from the squared errors' mean"
    )


class Evaluation(Strict):
    rows: int = Field(ge=0, description="test rows the metrics come from")
    metrics: dict[str, float | None]
    intervals: dict[str, MetricInterval] = Field(
        default_factory=dict, description="metric -> its sampling error; absent where the metric is undefined"
    )
    slices: dict[str, dict[str, SliceEvaluation]] = Field(
        default_factory=dict, description="feature -> value -> metrics of the rows with that value"
    )
    latency: Latency | None = None

    undefined_is_none = field_validator("metrics")(_nan_to_none)


def evaluate(
    task: Task,
    predictions: np.ndarray,
    labels: np.ndarray,
    slices: Mapping[str, np.ndarray] | None = None,
    latency: Latency | None = None,
) -> Evaluation:
    """Metrics of ``predictions`` against ``labels``, overall and per value of each slice column."""
    by_slice = {
        feature: {
            value: SliceEvaluation(rows=rows, metrics=metrics)
            for value, (rows, metrics) in slice_metrics(task, predictions, labels, values).items()
        }
        for feature, values in (slices or {}).items()
    }
    metrics = task_metrics(task, predictions, labels)
    return Evaluation(
        rows=int(np.asarray(labels).shape[0]),
        metrics=metrics,
        intervals=intervals(metrics, standard_errors(task, predictions, labels)),
        slices=by_slice,
        latency=latency,
    )


def intervals(metrics: Mapping[str, float], errors: Mapping[str, float]) -> dict[str, MetricInterval]:
    """95% intervals of the defined metrics that have a defined standard error."""
    methods = {"auc": "delong", "rmse": "delta"}
    return {
        name: MetricInterval(
            standard_error=error, low=value - Z_95 * error, high=value + Z_95 * error, method=methods.get(name, "mean")
        )
        for name, value in metrics.items()
        if not math.isnan(value) and not math.isnan(error := errors.get(name, math.nan))
    }


def category_names(codes: np.ndarray, vocabulary: Sequence[str]) -> np.ndarray:
    """Category codes of a prepared split (0 = out of vocabulary) as their names, for readable slices."""
    names = np.array([OUT_OF_VOCABULARY, *vocabulary], dtype=object)
    codes = np.asarray(codes, dtype=np.int64)
    if codes.size and (codes.min() < 0 or codes.max() >= names.size):
        raise ValueError(
            f"codes span [{codes.min()}, {codes.max()}] but the vocabulary allows 0..{names.size - 1}; "
            "the split and the transform come from different dataset versions"
        )
    return names[codes]


def measure_latency(
    predict: Callable[..., Any],
    inputs: Sequence[Any],
    batch_size: int,
    *,
    calls: int = 50,
    warmup: int = 5,
    clock: Callable[[], float] = time.perf_counter,
) -> Latency:
    """Time ``predict(*batch)`` on ``calls`` batches of ``batch_size`` rows cut from ``inputs``.

    Batches are cut before timing and wrap around when ``inputs`` has fewer
    rows than needed, so only the model is measured. ``inputs`` are arrays or
    tensors indexed by row (numeric, categorical).
    """
    if batch_size < 1 or calls < 1 or warmup < 0:
        raise ValueError(f"batch_size ({batch_size}) and calls ({calls}) must be >= 1, warmup ({warmup}) >= 0")
    rows = len(inputs[0])
    if rows == 0:
        raise ValueError("no rows to measure latency on; the test split is empty")
    batches = []
    for call in range(warmup + calls):
        index = (np.arange(batch_size) + call * batch_size) % rows
        batches.append(tuple(array[index] for array in inputs))
    durations = []
    for call, batch in enumerate(batches):
        start = clock()
        predict(*batch)
        if call >= warmup:
            durations.append((clock() - start) * 1000.0)
    p50, p95 = np.percentile(durations, [50, 95])
    return Latency(p50_ms=float(p50), p95_ms=float(p95), batch_size=batch_size, calls=calls)
