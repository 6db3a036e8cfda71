"""One model version being served, replaceable while requests are in flight.

A ``ModelSlot`` holds an immutable ``ModelSnapshot`` (version, model,
transform, input rules). ``predict`` takes the snapshot once and uses only it, so a call
never mixes the transform of one version with the model of another, and a
call that started before a swap finishes on the version it started with. No
lock is held while a model runs: reading the snapshot is one reference read,
and ``swap`` replaces that reference in one assignment. The old model is
freed when its last in-flight call returns::

    slot = ModelSlot("fraud")
    slot.swap(ModelSnapshot("20240601-1", program, FeatureTransform.from_card(card)))
    result = slot.predict(records)        # result.version says which model answered
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from streamml.sdk.input_checks import InputRules
from streamml.sdk.preprocess import FeatureTransform

# The portable program: (numeric [N, F] float32, categorical [N, C] int64) -> predictions.
Model = Callable[[Any, Any], Any]


class NoModelLoaded(RuntimeError):
    """Predict was called before any model version was put in the slot."""


@dataclass(frozen=True)
class Prediction:
    version: str
    output: np.ndarray  # [N] (binary probability, regression value) or [N, K] (class probabilities)


@dataclass(frozen=True)
class ModelSnapshot:
    version: str
    model: Model
    transform: FeatureTransform
    rules: InputRules | None = None  # the dataset spec's rules for the inputs; None: not stored, not checked

    def predict(self, records: Sequence[Mapping[str, Any]]) -> Prediction:
        numeric, categorical = self.transform.apply(records).tensors()
        # inference_mode is per thread, and skips autograd bookkeeping the exported program would do.
        with torch.inference_mode():
            output = self.model(numeric, categorical)
        return Prediction(self.version, np.asarray(output))


class ModelSlot:
    def __init__(self, name: str, initial: ModelSnapshot | None = None):
        self.name = name
        self._snapshot = initial
        # Serialises writers only, so swap can return exactly the snapshot it replaced.
        self._swap_lock = threading.Lock()

    @property
    def ready(self) -> bool:
        return self._snapshot is not None

    def current(self) -> ModelSnapshot:
        snapshot = self._snapshot
        if snapshot is None:
            raise NoModelLoaded(
                f"no version of model {self.name!r} is loaded yet; wait until the slot is ready "
                "(a model is promoted and loaded) before predicting"
            )
        return snapshot

    def swap(self, new: ModelSnapshot) -> ModelSnapshot | None:
        """Serve ``new`` from now on; returns the snapshot it replaced."""
        if not isinstance(new, ModelSnapshot):
            raise TypeError(f"swap takes a ModelSnapshot, got {type(new).__name__}")
        with self._swap_lock:
            previous, self._snapshot = self._snapshot, new
        return previous

    def predict(self, records: Sequence[Mapping[str, Any]]) -> Prediction:
        return self.current().predict(records)
