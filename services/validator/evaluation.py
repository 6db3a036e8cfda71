"""What the validator knows about one model version: its test-split metrics,
overall and per slice, and how fast it answers. ``decide`` judges these.

    evaluation = evaluate("binary", probabilities, labels,
                          slices={"channel": category_names(codes, vocabulary)},
                          latency=measure_latency(program, (numeric, categorical), batch_size=256))

The types (``Evaluation``, ``SliceEvaluation``, ``Latency``, ``MetricInterval``)
are part of the stored decision, so they live in ``streamml/registry/decisions.py``.
``intervals`` holds the 95% interval and standard error of each overall
metric: the monitor weighs the live metric's loss against both its own and
the test split's sampling error.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from services.validator.metrics import Task, slice_metrics, standard_errors, task_metrics
from streamml.registry.decisions import Evaluation, Latency, MetricInterval, SliceEvaluation

OUT_OF_VOCABULARY = "(other)"
# Two-sided 95% normal interval.
Z_95 = 1.959963984540054


def evaluate(
    task: Task,
    predictions: np.ndarray,
    labels: np.ndarray,
    slices: Mapping[str, np.ndarray] | None = None,
    latency: Latency | None = None,
    classes: Sequence[str] | None = None,
) -> Evaluation:
    """Metrics of ``predictions`` against ``labels``, overall and per value of each slice column;
    ``classes`` names a multiclass model's output columns (their text) in its per-class metrics."""
    by_slice = {
        feature: {
            value: SliceEvaluation(rows=rows, metrics=metrics)
            for value, (rows, metrics) in slice_metrics(task, predictions, labels, values, classes).items()
        }
        for feature, values in (slices or {}).items()
    }
    metrics = task_metrics(task, predictions, labels, classes)
    return Evaluation(
        rows=int(np.asarray(labels).shape[0]),
        metrics=metrics,
        intervals=intervals(metrics, standard_errors(task, predictions, labels, classes)),
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
    rounds: int = 5,
    warmup: int = 5,
    clock: Callable[[], float] = time.perf_counter,
) -> Latency:
    """Time ``predict(*batch)`` in ``rounds`` rounds of ``calls`` batches of ``batch_size`` rows.

    The result is the round with the lowest p95. Other work on the host only
    ever adds time to a call, so the least disturbed round is the best
    estimate of what the model itself costs; every round's p95 is recorded.
    Batches are cut before timing and wrap around when ``inputs`` has fewer
    rows than needed, so only the model is measured. ``inputs`` are arrays or
    tensors indexed by row (numeric, categorical).
    """
    if batch_size < 1 or calls < 1 or rounds < 1 or warmup < 0:
        raise ValueError(
            f"batch_size ({batch_size}), calls ({calls}) and rounds ({rounds}) must be >= 1, warmup ({warmup}) >= 0"
        )
    rows = len(inputs[0])
    if rows == 0:
        raise ValueError("no rows to measure latency on; the test split is empty")
    batches = []
    for call in range(warmup + calls):
        index = (np.arange(batch_size) + call * batch_size) % rows
        batches.append(tuple(array[index] for array in inputs))
    for batch in batches[:warmup]:
        predict(*batch)
    measured = []
    for _ in range(rounds):
        durations = []
        for batch in batches[warmup:]:
            start = clock()
            predict(*batch)
            durations.append((clock() - start) * 1000.0)
        measured.append(np.percentile(durations, [50, 95]))
    p50, p95 = min(measured, key=lambda percentiles: percentiles[1])
    return Latency(p50_ms=float(p50), p95_ms=float(p95), batch_size=batch_size, calls=calls,
                   round_p95_ms=[round(float(p[1]), 4) for p in measured])
