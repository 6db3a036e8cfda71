"""The portable program of a model version: what the trainer exports and applications load.

It runs without streamml's training code: a ``torch.export`` archive with a
dynamic batch dimension, or TorchScript where export failed, taking
``numeric [N, F] float32`` and ``categorical [N, C] int64`` in the order the
model card lists. The card names its file (``artifacts.portable``) and its
format (``artifacts.format``)::

    predict = load_program(data, card["artifacts"]["format"])
    outputs = predict(numeric, categorical)
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from typing import Literal

import torch

from streamml.registry.keys import RegistryError

Format = Literal["torch.export", "torchscript"]
FORMAT_FILES: dict[str, str] = {"torch.export": "model.pt2", "torchscript": "model.torchscript.pt"}

Program = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def load_program(data: bytes, format: str) -> Program:
    """The callable ``(numeric, categorical) -> predictions`` stored in ``data``, on the CPU."""
    if format == "torch.export":
        return torch.export.load(io.BytesIO(data)).module()
    if format == "torchscript":
        # TorchScript is deprecated, which is why the trainer writes it only as the fallback.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(io.BytesIO(data), map_location="cpu").eval()
    raise RegistryError(f"portable format {format!r} is unknown; the card must name one of {list(FORMAT_FILES)}")
