"""Synthetic model traffic with known distributions and known drift, for tests, benchmarks and demos."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from services.monitor.monitor import FeedbackBatch, PredictionBatch
from services.monitor.performance import PerformanceBaseline, window_metric
from services.monitor.reference import MonitorReference, category_reference, numeric_reference
from streamml.classes import class_texts

NUMERIC = ("amount", "hour", "distance_km", "age", "score_a", "score_b")
CATEGORY = ("channel", "country")
CHANNELS = np.array(["web", "pos", "atm", "phone"])
CHANNEL_SHARES = np.array([0.5, 0.3, 0.15, 0.05])
COUNTRIES = np.array([f"c{k:02d}" for k in range(20)])
COUNTRY_SHARES = (1 / np.arange(1, 21)) / (1 / np.arange(1, 21)).sum()
WEIGHTS = {"amount": 0.8, "hour": -0.3, "distance_km": 0.6, "age": -0.4, "score_a": 1.0, "score_b": 0.5}


@dataclass(frozen=True)
class Traffic:
    features: dict[str, np.ndarray]
    outputs: np.ndarray
    labels: np.ndarray


def features(rng: np.random.Generator, n: int, shift: float | np.ndarray = 0.0, channel_shares=CHANNEL_SHARES) -> dict:
    """Raw features; ``shift`` moves score_a's mean (in its standard deviations), per row when an array."""
    distance = rng.exponential(10.0, n)
    distance[rng.random(n) < 0.02] = np.nan
    return {
        "amount": rng.lognormal(3.0, 1.0, n),
        "hour": rng.integers(0, 24, n).astype(np.float64),
        "distance_km": distance,
        "age": rng.normal(40.0, 10.0, n),
        "score_a": rng.normal(0.0, 1.0, n) + shift,
        "score_b": rng.uniform(0.0, 1.0, n),
        "channel": CHANNELS[rng.choice(CHANNELS.size, n, p=channel_shares)],
        "country": COUNTRIES[rng.choice(COUNTRIES.size, n, p=COUNTRY_SHARES)],
    }


def model_probability(columns: dict) -> np.ndarray:
    """The deployed model: a fixed logistic function of the (unshifted-scale) features."""
    z = (
        WEIGHTS["amount"] * (np.log(columns["amount"]) - 3.0)
        + WEIGHTS["hour"] * (columns["hour"] - 11.5) / 7.0
        + WEIGHTS["distance_km"] * (np.nan_to_num(columns["distance_km"], nan=10.0) - 10.0) / 10.0
        + WEIGHTS["age"] * (columns["age"] - 40.0) / 10.0
        + WEIGHTS["score_a"] * columns["score_a"]
        + WEIGHTS["score_b"] * (columns["score_b"] - 0.5) * 3.0
        + np.where(columns["channel"] == "atm", 0.7, 0.0)
        - 0.8
    )
    return 1.0 / (1.0 + np.exp(-z))


def traffic(rng: np.random.Generator, n: int, shift=0.0, flipped=False, channel_shares=CHANNEL_SHARES) -> Traffic:
    """Features, model outputs and true labels; ``flipped`` inverts the label relation (concept drift)."""
    columns = features(rng, n, shift, channel_shares)
    p = model_probability(columns)
    truth = 1.0 - p if flipped else p
    return Traffic(columns, p, (rng.random(n) < truth).astype(np.float64))


def training_reference(seed: int = 1, rows: int = 200_000) -> tuple[MonitorReference, PerformanceBaseline]:
    """References cut from a 'train split', the baseline AUC from a separate 'test split'."""
    rng = np.random.default_rng(seed)
    train = traffic(rng, rows)
    test = traffic(rng, 50_000)
    refs = {
        name: numeric_reference(train.features[name], seed=seed)
        if name in NUMERIC
        else category_reference(train.features[name])
        for name in (*NUMERIC, *CATEGORY)
    }
    reference = MonitorReference(
        model="fraud",
        dataset="transactions",
        dataset_version=3,
        features=refs,
        prediction=numeric_reference(train.outputs, seed=seed),
    )
    auc, error = window_metric("binary", "auc", test.outputs, test.labels)
    return reference, PerformanceBaseline(task="binary", metric="auc", value=auc, standard_error=error)


def multiclass_traffic(rng: np.random.Generator, n: int, classes: list | None = None) -> Traffic:
    """Three-class traffic: the deployed model's class probabilities ``[(1-p)^2, 2p(1-p), p^2]`` of the binary
    model's ``p``, and a true class drawn from them (``classes``' values, default the integers 0, 1, 2)."""
    columns = features(rng, n)
    p = model_probability(columns)
    outputs = np.stack([(1 - p) ** 2, 2 * p * (1 - p), p**2], axis=1)
    drawn = (rng.random(n)[:, None] > np.cumsum(outputs, axis=1)).sum(axis=1).clip(0, 2)
    return Traffic(columns, outputs, np.asarray(classes or [0, 1, 2], dtype=object)[drawn])


def multiclass_reference(classes: list, seed: int = 1, rows: int = 50_000) -> tuple[MonitorReference, PerformanceBaseline]:
    """The binary reference's features for a three-class model of ``classes``, its log-loss from a test split."""
    reference, _ = training_reference(seed, rows)
    test = multiclass_traffic(np.random.default_rng(seed + 1), 20_000)
    loss, error = window_metric("multiclass", "log_loss", test.outputs, test.labels.astype(np.float64))
    reference = reference.model_copy(update={"prediction": None, "classes": class_texts(classes)})
    return reference, PerformanceBaseline(task="multiclass", metric="log_loss", value=loss, standard_error=error,
                                          classes=reference.classes)


def prediction_batch(data: Traffic, first_id: int, times: np.ndarray) -> PredictionBatch:
    return PredictionBatch(
        request_ids=_ids(first_id, len(data.outputs)), times=times, features=data.features, outputs=data.outputs
    )


def feedback_batch(data: Traffic, first_id: int, times: np.ndarray) -> FeedbackBatch:
    return FeedbackBatch(request_ids=_ids(first_id, data.labels.size), labels=data.labels, times=times)


def _ids(first: int, n: int) -> pa.Array:
    return pa.array(np.arange(first, first + n)).cast(pa.string())
