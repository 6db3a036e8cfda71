"""What ``streamml init`` writes: a dataset spec, a model spec and a policy, guessed from a sample.

Pure functions on a pyarrow table, so each guess is unit-tested without a file:

    profile = profile_table(table)                  # one ColumnProfile per column
    roles = guess_roles(profile)                    # key, label, event time, each with the reason
    baseline = fit_baseline(table, roles, profile)  # a linear model's metrics on a holdout of the sample

A guess is never silent: every line ``init`` writes from one carries a
``# review:`` comment saying what it saw.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streamml.specs import NAME

MAX_CATEGORIES = 20  # more distinct strings than this is free text, not a category
KEY_NAMES = re.compile(r"^(id|key|uuid|.*_id|.*_key)$")
LABEL_NAMES = ("label", "target", "y", "class", "outcome", "diagnosis", "churn", "fraud")
TIME_NAMES = re.compile(r"(time|date|ts$|_at$|timestamp)")
# The validator measures on prep's test split, the baseline on its own holdout: floors sit this many standard errors
# of the difference of the two below the baseline. A starter policy must stop a model clearly worse than the baseline
# and never reject a good one by chance: a model exactly as good fails about 1 time in 700 at 3 (one-sided).
FLOOR_STANDARD_ERRORS = 3.0


class StarterError(ValueError):
    """The sample cannot be described by a spec; the message names the column and the fix."""


@dataclass(frozen=True)
class ColumnProfile:
    name: str
    type: str  # a spec field type
    rows: int
    nulls: int
    distinct: int
    low: float | None = None
    high: float | None = None
    values: list[str] = field(default_factory=list)  # categories, or the two values of a 0/1 column

    @property
    def unique(self) -> bool:
        return self.nulls == 0 and self.distinct == self.rows

    def seen(self) -> str:
        parts = []
        if self.low is not None:
            parts.append(f"seen {self.low:g} .. {self.high:g}")
        parts.append(f"{self.distinct} distinct")
        if self.nulls:
            parts.append(f"{self.nulls / self.rows:.0%} null")
        return ", ".join(parts)


@dataclass(frozen=True)
class Roles:
    key: str
    label: str | None
    event_time: str | None
    why: dict[str, str]  # role -> why it was guessed


@dataclass(frozen=True)
class Baseline:
    task: str
    metrics: dict[str, float]
    errors: dict[str, float]  # standard error of each metric on the holdout
    holdout_rows: int
    # The log-loss of always predicting the label's frequencies in the fit part: what a model that learnt nothing
    # scores (None for regression).
    no_skill_log_loss: float | None = None


def profile_table(table: pa.Table) -> list[ColumnProfile]:
    """Each column's spec type, nulls, distinct values, range and categories."""
    profiles = []
    for name in table.column_names:
        if not re.match(NAME, name):
            suggestion = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_") or "field"
            raise StarterError(f"column {name!r} cannot be a field name (lower-case letters, digits and _, starting "
                               f"with a letter); rename it in the file, e.g. to {suggestion!r}")
        profiles.append(_profile(name, table.column(name)))
    return profiles


def _profile(name: str, column: pa.ChunkedArray) -> ColumnProfile:
    rows, nulls = len(column), column.null_count
    kind = column.type
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        return ColumnProfile(name, "timestamp", rows, nulls, pc.count_distinct(column).as_py())
    if pa.types.is_boolean(kind):
        return ColumnProfile(name, "bool", rows, nulls, pc.count_distinct(column).as_py())
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        values = column.drop_null().to_numpy().astype(np.float64)
        finite = values[np.isfinite(values)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (None, None)
        distinct = len(np.unique(finite))
        seen = [f"{v:g}" for v in np.unique(finite)] if distinct <= 2 else []
        return ColumnProfile(name, "int" if pa.types.is_integer(kind) else "float", rows, nulls, distinct, low, high,
                             seen)
    text = pc.cast(column, pa.string())
    distinct_values = sorted(v for v in pc.unique(text.drop_null()).to_pylist())
    if _timestamps(text):
        return ColumnProfile(name, "timestamp", rows, nulls, len(distinct_values))
    if len(distinct_values) <= MAX_CATEGORIES and len(distinct_values) < max(2, (rows - nulls) / 2):
        return ColumnProfile(name, "category", rows, nulls, len(distinct_values), values=distinct_values)
    return ColumnProfile(name, "string", rows, nulls, len(distinct_values))


def _timestamps(text: pa.ChunkedArray) -> bool:
    """Whether every present value reads as an ISO 8601 time with a zone, as ingest requires."""
    present = text.drop_null()
    if len(present) == 0:
        return False
    try:
        pc.strptime(present, format="%Y-%m-%dT%H:%M:%S%z", unit="us")
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return True


def guess_roles(profiles: list[ColumnProfile]) -> Roles:
    why = {}
    by_name = {p.name: p for p in profiles}
    keys = [p for p in profiles if p.unique and p.type in ("int", "string")]
    named = [p for p in keys if KEY_NAMES.match(p.name)]
    if named:
        key, why["key"] = named[0].name, "named like an id and unique in the sample"
    elif keys:
        key, why["key"] = keys[0].name, "the first column unique in the sample"
    else:
        raise StarterError("no column is unique and free of nulls in the sample, so none can be the key that "
                           "identifies a record (and dedupes it); add an id column to your records")
    times = [p for p in profiles if p.type == "timestamp" and p.nulls == 0]
    timed = [p for p in times if TIME_NAMES.search(p.name)] or times
    event_time = timed[0].name if timed else None
    why["event_time"] = ("a timestamp column without nulls" if event_time else
                         "no timestamp column: each record's Kafka timestamp will be its event time")
    candidates = [p for p in profiles if p.name not in (key, event_time) and p.type != "string"]
    labelled = [p for p in candidates if p.name in LABEL_NAMES or p.name.startswith(("is_", "has_"))]
    if labelled:
        label, why["label"] = labelled[0].name, "named like a label"
    elif candidates:
        label, why["label"] = candidates[-1].name, "the last column that can be learnt"
    else:
        label, why["label"] = None, "no column can be learnt"
    if label is not None and by_name[label].nulls:
        why["label"] += f"; {by_name[label].nulls} rows have no label and will be dropped"
    return Roles(key, label, event_time, why)


def task_for(label: ColumnProfile) -> str:
    """binary for 0/1 and booleans, multiclass for categories and small sets of integers, else regression."""
    if label.type == "bool" or (label.type in ("int", "float") and label.values and set(label.values) <= {"0", "1"}
                                and label.distinct == 2):
        return "binary"
    if label.type in ("category", "string") or (label.type == "int" and label.distinct <= MAX_CATEGORIES):
        return "multiclass"
    return "regression"


# -- the baseline ----------------------------------------------------------------------------


def fit_baseline(table: pa.Table, roles: Roles, profiles: list[ColumnProfile], seed: int = 7) -> Baseline:
    """A linear model (logistic, softmax or ridge) on 80% of the sample, measured on the other 20%."""
    from services.validator.metrics import log_loss, standard_errors, task_metrics

    by_name = {p.name: p for p in profiles}
    label = by_name[roles.label]
    task = task_for(label)
    present = np.asarray(pc.is_valid(table.column(roles.label)).to_numpy(zero_copy_only=False))
    features = [p for p in profiles if p.name not in (roles.key, roles.label, roles.event_time)
                and p.type in ("int", "float", "bool", "category")]
    x = _design(table, features)[present]
    raw = table.column(roles.label).to_numpy(zero_copy_only=False)[present]
    order = np.random.default_rng(seed).permutation(len(x))
    cut = int(len(order) * 0.8)
    if cut < 10 or len(order) - cut < 10:
        raise StarterError(f"the sample has {len(order)} labelled rows; a baseline needs at least 50")
    fit, held = order[:cut], order[cut:]
    no_skill = None
    if task == "binary":
        y = raw.astype(np.float64)
        predictions = _sigmoid(x[held] @ _logistic(x[fit], y[fit]))
        labels = y[held]
        no_skill = log_loss(np.full(len(held), y[fit].mean()), labels)
    elif task == "multiclass":
        classes, y = np.unique(raw.astype(str), return_inverse=True)
        predictions = _softmax(x[held] @ _softmax_regression(x[fit], y[fit], len(classes)))
        labels = y[held]
        frequencies = np.bincount(y[fit], minlength=len(classes)) / len(fit)
        no_skill = log_loss(np.tile(frequencies, (len(held), 1)), labels)
    else:
        y = raw.astype(np.float64)
        predictions = x[held] @ _ridge(x[fit], y[fit])
        labels = y[held]
    metrics = task_metrics(task, predictions, labels)
    return Baseline(task, metrics, standard_errors(task, predictions, labels), len(held), no_skill)


def _design(table: pa.Table, features: list[ColumnProfile]) -> np.ndarray:
    """Standardised numbers (nulls at the mean) and one-hot categories, plus an intercept."""
    columns = [np.ones(table.num_rows)]
    for feature in features:
        column = table.column(feature.name)
        if feature.type == "category":
            values = np.asarray(pc.cast(column, pa.string()).to_pylist(), dtype=object)
            columns.extend((values == value).astype(np.float64) for value in feature.values)
            continue
        values = np.asarray(pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
        values = np.where(np.isfinite(values), values, np.nan)
        mean = np.nanmean(values) if np.isfinite(values).any() else 0.0
        std = np.nanstd(values) or 1.0
        columns.append(np.nan_to_num((values - mean) / std, nan=0.0))
    return np.column_stack(columns)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0) -> np.ndarray:
    """L2-regularised logistic regression by Newton's method (a few steps converge on a sample)."""
    w = np.zeros(x.shape[1])
    for _ in range(25):
        p = _sigmoid(x @ w)
        gradient = x.T @ (p - y) + l2 * w
        hessian = (x * (p * (1 - p))[:, None]).T @ x + l2 * np.eye(x.shape[1])
        w -= np.linalg.solve(hessian, gradient)
    return w


def _softmax_regression(x: np.ndarray, y: np.ndarray, classes: int, l2: float = 1e-3) -> np.ndarray:
    w = np.zeros((x.shape[1], classes))
    target = np.eye(classes)[y]
    for _ in range(300):
        w -= 0.5 * (x.T @ (_softmax(x @ w) - target) / len(x) + l2 * w)
    return w


def _ridge(x: np.ndarray, y: np.ndarray, l2: float = 1.0) -> np.ndarray:
    return np.linalg.solve(x.T @ x + l2 * np.eye(x.shape[1]), x.T @ y)


# -- what init writes -------------------------------------------------------------------------


def bounds(baseline: Baseline, test_rows: int) -> tuple[dict[str, float], dict[str, float]]:
    """Floors and ceilings a model must meet.

    The task's ranking metric (AUC, accuracy, RMSE) must reach the baseline's less FLOOR_STANDARD_ERRORS standard
    errors of the difference between two estimates: the baseline's on its holdout and the model's on a test split of
    ``test_rows`` other rows (its error scaled from the holdout's by size). Log-loss only has to
    beat a model that learnt nothing: one confidently wrong row moves it far more than its standard error says, so a
    ceiling taken from the baseline rejects good models on small test splits.
    """
    metric, side = {"binary": ("auc", "min"), "multiclass": ("accuracy", "min"),
                    "regression": ("rmse", "max")}[baseline.task]
    scale = math.sqrt(baseline.holdout_rows / max(test_rows, 1))
    floors, ceilings = {}, {}
    value, error = baseline.metrics.get(metric), baseline.errors.get(metric)
    if value is not None and not math.isnan(value) and error is not None and not math.isnan(error):
        margin = FLOOR_STANDARD_ERRORS * error * math.sqrt(1 + scale**2)
        if side == "min":
            floors[metric] = max(0.0, math.floor((value - margin) * 100) / 100)
        else:
            ceilings[metric] = _round_up(value + margin)
    if baseline.no_skill_log_loss is not None and baseline.no_skill_log_loss > 0:
        ceilings["log_loss"] = _round_down(baseline.no_skill_log_loss)
    return floors, ceilings


def _round_up(value: float) -> float:
    factor = _three_digits(value)
    return math.ceil(value * factor) / factor


def _round_down(value: float) -> float:
    factor = _three_digits(value)
    return math.floor(value * factor) / factor


def _three_digits(value: float) -> int:
    """The power of ten that keeps three significant digits of ``value`` (none after a large number's point)."""
    digits = 2 - int(math.floor(math.log10(abs(value)))) if value else 2
    return 10 ** max(digits, 0)


def splits_for(rows: int) -> dict[str, float]:
    """Bigger validation and test splits for small data, so their metrics mean something."""
    return {"train": 0.6, "validation": 0.2, "test": 0.2} if rows < 10_000 else {"train": 0.8, "validation": 0.1,
                                                                                  "test": 0.1}


def yaml_value(value: Any) -> str:
    import yaml

    return yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False).strip().removesuffix(
        "...").strip()
