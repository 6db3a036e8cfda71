"""The portable program of a model version: what the trainer exports and applications load.

It runs without streamml's training code, taking ``numeric [N, F] float32``
and ``categorical [N, C] int64`` in the order the model card lists, whatever
the flavour that trained it:

- torch: a ``torch.export`` archive with a dynamic batch dimension, or
  TorchScript where export failed;
- lightgbm: LightGBM's own text model format (no pickle), whose features are
  the numeric columns then the category codes.

The card names its file (``artifacts.portable``) and its format
(``artifacts.format``); the SDK, the inference server and the validator all
load it here, so every flavour answers through the same callable::

    predict = load_program(data, card["artifacts"]["format"])
    outputs = predict(numeric, categorical)
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch

from streamml.registry.keys import RegistryError

Format = Literal["torch.export", "torchscript", "lightgbm"]
FORMAT_FILES: dict[str, str] = {"torch.export": "model.pt2", "torchscript": "model.torchscript.pt",
                                "lightgbm": "model.lightgbm.txt"}
# The model flavour (what trained it) each format belongs to.
FLAVOURS: dict[str, str] = {"torch.export": "torch", "torchscript": "torch", "lightgbm": "lightgbm"}

Program = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def load_program(data: bytes, format: str) -> Program:
    """The callable ``(numeric, categorical) -> predictions`` stored in ``data``, on the CPU."""
    if format == "torch.export":
        return _exported_program(data)
    if format == "torchscript":
        # TorchScript is deprecated, which is why the trainer writes it only as the fallback.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(io.BytesIO(data), map_location="cpu").eval()
    if format == "lightgbm":
        return _lightgbm_program(data)
    raise RegistryError(f"portable format {format!r} is unknown; the card must name one of {list(FORMAT_FILES)}")


def _exported_program(data: bytes) -> Program:
    # The module torch.export makes checks every call's inputs against the program's shapes and
    # dtypes in Python: 220 against 140 µs for a one-row call of the trainer's MLP, more than the
    # model's own compute. Its inputs always come from the FeatureTransform of the same card, and
    # the loader runs it once on them before serving it (load_version's warm-up), so a program
    # that does not fit its card is refused there, with torch's own shape error.
    module = torch.export.load(io.BytesIO(data)).module(check_guards=False)
    module.validate_inputs = False
    return module


def _lightgbm_program(data: bytes) -> Program:
    import lightgbm  # only applications that serve a lightgbm model need it

    booster = lightgbm.Booster(model_str=data.decode())

    def predict(numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        features = np.hstack([np.asarray(numeric, dtype=np.float64), np.asarray(categorical, dtype=np.float64)])
        # One thread per call: the server predicts on one worker thread per core already, and
        # OpenMP's start-up would cost a one-row request more than its trees do.
        return torch.from_numpy(booster.predict(features, num_threads=1).astype(np.float32))

    return predict
