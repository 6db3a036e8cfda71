"""Evaluating a loaded model version on a test split.

A version trained on another dataset version than the split's (typically
the champion) sees the split's inputs re-expressed in its own transform, so
both models answer for the same rows:

    evaluation = evaluate_version(champion, split, slices=["channel"])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from services.validator.evaluation import evaluate, measure_latency
from services.validator.testsplit import TestSplit, labels_for
from streamml.classes import class_texts
from streamml.registry.decisions import Evaluation
from streamml.sdk.loader import LoadedVersion
from streamml.sdk.preprocess import Features

CHUNK_ROWS = 65_536


def trained_on(loaded: LoadedVersion) -> tuple[str | None, int | None]:
    dataset = loaded.card.get("dataset") or {}
    return dataset.get("name"), dataset.get("version")


def inputs_for(loaded: LoadedVersion, split: TestSplit) -> Features:
    """The split's inputs in the transform ``loaded`` was trained with."""
    if trained_on(loaded) == (split.dataset, split.version):
        return split.features
    return loaded.snapshot.transform.recode(split.features, source=split.transform)


def predict_all(loaded: LoadedVersion, features: Features) -> np.ndarray:
    numeric, categorical = features.tensors()
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(features), CHUNK_ROWS):
            stop = start + CHUNK_ROWS
            outputs.append(np.asarray(loaded.snapshot.model(numeric[start:stop], categorical[start:stop])))
    return np.concatenate(outputs) if outputs else np.zeros(0)


def evaluate_version(
    loaded: LoadedVersion,
    split: TestSplit,
    *,
    slices: Sequence[str] = (),
    latency_batch: int | None = None,
    latency_calls: int = 50,
    latency_rounds: int = 5,
) -> Evaluation:
    """Test metrics of ``loaded``, overall and per slice; latency of one call when ``latency_batch`` is set."""
    if len(split) == 0:
        raise ValueError(f"the test split of {split.dataset} v{split.version} is empty; nothing to judge on")
    features = inputs_for(loaded, split)
    predictions = predict_all(loaded, features)
    latency = None
    if latency_batch is not None:
        with torch.inference_mode():
            latency = measure_latency(
                loaded.snapshot.model, features.tensors(), latency_batch, calls=latency_calls, rounds=latency_rounds
            )
    return evaluate(
        loaded.card["task"],
        predictions,
        labels_for(loaded.card, split.labels),
        slices=split.slices(slices),
        latency=latency,
        classes=class_texts(classes) if (classes := (loaded.card.get("outputs") or {}).get("classes")) else None,
    )
