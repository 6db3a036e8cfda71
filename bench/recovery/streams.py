"""Synthetic worlds with a known drift, and the dataset spec, model spec and policy of each.

Every stream has four numeric features and one category:

    x1, x2, x3, x4 ~ normal(0, 1)       segment in a/b/c (50/30/20%)

except where its drift moves them. From the drift row on:

| stream | task | before | from the drift on |
|---|---|---|---|
| concept_binary | binary | y ~ Bernoulli(sigmoid(3 z)), z = 1.2 x1 - 0.9 x2 + 0.6 x3 + segment | z' = -1.2 x1 + 0.9 x2 + 0.6 x3 + segment: the boundary turns, features unchanged |
| covariate_binary | binary | x1 ~ uniform(-2, 1), x2 = g(x1) + normal(0, 1), y ~ Bernoulli(sigmoid(3 (x2 - g(x1)))), g = 2 sin(1.5 x1) | x1 ~ uniform(1, 4): the same truth where the model never saw data |
| concept_multiclass | multiclass (classes 0, 1, 2) | y ~ softmax(3 s), s_k = x1 cos(2 pi k / 3) + x2 sin(2 pi k / 3) | each class takes the next one's region: y' = (y + 1) mod 3 |
| regression_target | regression | y = 3 x1 - 2 x2 + x3 + segment + normal(0, 1) | y' = -x1 + 2 x2 + 2 x3 - segment + normal(0, 1) |

In each the best reachable accuracy (or RMSE) is the same before and after
the drift, so a retrain on the new world can come back to the old level.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

SEGMENTS = np.array(["a", "b", "c"])
SEGMENT_SHARES = [0.5, 0.3, 0.2]
SEGMENT_EFFECT = {"a": 0.5, "b": -0.5, "c": 0.0}
FEATURES = ("x1", "x2", "x3", "x4", "segment")

Columns = dict[str, np.ndarray]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _base(rng: np.random.Generator, count: int) -> Columns:
    columns = {name: rng.standard_normal(count) for name in ("x1", "x2", "x3", "x4")}
    columns["segment"] = rng.choice(SEGMENTS, size=count, p=SEGMENT_SHARES)
    return columns


def _segment_effect(columns: Columns) -> np.ndarray:
    return np.select([columns["segment"] == name for name in SEGMENT_EFFECT], list(SEGMENT_EFFECT.values()), 0.0)


def concept_binary(rng: np.random.Generator, count: int, drifted: bool) -> Columns:
    columns = _base(rng, count)
    turn = -1.0 if drifted else 1.0
    z = turn * (1.2 * columns["x1"] - 0.9 * columns["x2"]) + 0.6 * columns["x3"] + _segment_effect(columns)
    columns["y"] = (rng.random(count) < _sigmoid(3.0 * z)).astype(np.int64)
    return columns


def _curve(x1: np.ndarray) -> np.ndarray:
    return 2.0 * np.sin(1.5 * x1)


def covariate_binary(rng: np.random.Generator, count: int, drifted: bool) -> Columns:
    columns = _base(rng, count)
    columns["x1"] = rng.uniform(1.0, 4.0, count) if drifted else rng.uniform(-2.0, 1.0, count)
    margin = columns["x2"]  # standard normal: the distance from the curve, the same on both sides of the drift
    columns["x2"] = _curve(columns["x1"]) + margin
    columns["y"] = (rng.random(count) < _sigmoid(3.0 * margin)).astype(np.int64)
    return columns


def concept_multiclass(rng: np.random.Generator, count: int, drifted: bool) -> Columns:
    columns = _base(rng, count)
    angles = 2 * np.pi * np.arange(3) / 3
    scores = 3.0 * (np.outer(columns["x1"], np.cos(angles)) + np.outer(columns["x2"], np.sin(angles)))
    probabilities = np.exp(scores - scores.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    y = (rng.random((count, 1)) > probabilities.cumsum(axis=1)).sum(axis=1)
    columns["y"] = ((y + 1) % 3 if drifted else y).astype(np.int64)
    return columns


def regression_target(rng: np.random.Generator, count: int, drifted: bool) -> Columns:
    columns = _base(rng, count)
    x1, x2, x3, segment = columns["x1"], columns["x2"], columns["x3"], _segment_effect(columns)
    mean = (-x1 + 2 * x2 + 2 * x3 - segment) if drifted else (3 * x1 - 2 * x2 + x3 + segment)
    columns["y"] = mean + rng.standard_normal(count)
    return columns


@dataclass(frozen=True)
class Stream:
    name: str  # the dataset's and the model's name
    task: str
    kind: str  # what drifts, in words
    world: Callable[[np.random.Generator, int, bool], Columns]

    @property
    def metric(self) -> str:
        return "rmse" if self.task == "regression" else "accuracy"

    def rows(self, rng: np.random.Generator, first_row: int, count: int, drifted: bool) -> tuple[list[dict], list]:
        """``count`` records (features and key, as an application has them) and their labels."""
        columns = self.world(rng, count, drifted)
        labels = columns.pop("y").tolist()
        lists = {name: columns[name].tolist() for name in FEATURES}
        records = [{"row_id": f"{self.name}-{first_row + i}", **{name: lists[name][i] for name in FEATURES}}
                   for i in range(count)]
        return records, labels


STREAMS = {
    stream.name: stream
    for stream in (
        Stream("concept_binary", "binary", "abrupt concept drift: the boundary turns", concept_binary),
        Stream("covariate_binary", "binary", "abrupt covariate drift: x1 moves to where no row was", covariate_binary),
        Stream("concept_multiclass", "multiclass", "abrupt concept drift: classes swap regions", concept_multiclass),
        Stream("regression_target", "regression", "abrupt drift of the target's dependence", regression_target),
    )
}


def dataset_spec(stream: Stream, min_rows_after: int) -> str:
    label = ("{name: y, type: float}" if stream.task == "regression"
             else f"{{name: y, type: int, min: 0, max: {2 if stream.task == 'multiclass' else 1}}}")
    return f"""\
# {stream.kind} (bench/recovery/streams.py)
name: {stream.name}
key: row_id
label: y
fields:
  - {{name: row_id, type: string}}
  - {{name: x1, type: float}}
  - {{name: x2, type: float}}
  - {{name: x3, type: float}}
  - {{name: x4, type: float}}
  - {{name: segment, type: category, categories: [a, b, c]}}
  - {label}
prep:
  splits: {{train: 0.8, validation: 0.1, test: 0.1}}
  # Out of reach: the bench builds version 1 itself (as `streamml prep run` does), so every
  # retrain within a run is the drift's.
  min_new_rows: 100000000
  max_staleness_s: 86400
  on_drift: {{min_rows_after: {min_rows_after}, max_wait_s: 300, window: since_drift}}
"""


def model_spec(stream: Stream) -> str:
    metric = {"binary": "log_loss", "multiclass": "log_loss", "regression": "rmse"}[stream.task]
    return f"""\
name: {stream.name}
dataset: {stream.name}
task: {stream.task}
architecture: {{hidden: [64, 64], dropout: 0.0}}
optimiser: {{name: adamw, lr: 0.003, weight_decay: 0.0001}}
schedule: {{kind: cosine}}
batch_size: 512
max_epochs: 20
# About the steps 20 epochs take on the first version (24,000 train rows, 47 batches): a drift retrain on a
# fifth of the rows trains more epochs instead of a fifth of the steps.
min_steps: 1000
early_stopping: {{metric: {metric}, patience: 5}}
seed: 7
"""


POLICY_RULES = {
    # Floors well under what each world allows, so the first champion passes; a drift candidate
    # must also be no worse than the champion on the post-drift test rows.
    "binary": "min: {accuracy: 0.7}\nmax: {log_loss: 0.6}\nmax_regression: {accuracy: 0.01}",
    "multiclass": "min: {accuracy: 0.6}\nmax: {log_loss: 0.9}\nmax_regression: {accuracy: 0.01}",
    "regression": "max: {rmse: 2.0, mae: 1.6}\nmax_regression: {rmse: 0.05}",
}


def policy(stream: Stream) -> str:
    return f"""\
model: {stream.name}
{POLICY_RULES[stream.task]}
# Roomy: the bench shares two cores with the whole stack.
latency: {{p95_ms: 200, batch_size: 64}}
min_rows_after_drift: 300
"""
