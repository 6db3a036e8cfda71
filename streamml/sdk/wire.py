"""Prediction events in CloudEvents binary mode, built cheaply enough to log every prediction.

``streamml.events.encode`` validates a model and builds a CloudEvent object per
event (~200 µs here), which would cost more than the prediction itself. The
client already holds valid values, so this writes the same headers and JSON
body directly (~20 µs); ``streamml.events.decode`` reads both alike.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from streamml.events import SCHEMA_BASE, PredictionRecord

TYPE = PredictionRecord.ce_type().encode()
SCHEMA = (SCHEMA_BASE + PredictionRecord.schema_name()).encode()
Message = tuple[bytes, list[tuple[str, bytes]], bytes]


def timestamp(time: datetime) -> str:
    """RFC 3339 in UTC with a Z, as the JSON of a pydantic datetime reads."""
    return time.astimezone(UTC).isoformat().replace("+00:00", "Z")


def prediction_message(
    source: bytes,
    request_id: str,
    model: str,
    version: str,
    features: dict[str, float | int | str | None],
    output: float | list[float],
    time: str,
    flags: Sequence[str] = (),
) -> Message:
    """(key, headers, value) of one PredictionRecord; ``time`` from ``timestamp``.

    ``flags`` (``feature:rule`` of each rule of the dataset spec the inputs
    break) is written only when there are some, so a clean record reads as
    it did before the field existed. Raises ValueError for a NaN or infinite
    number, which JSON cannot carry.
    """
    document = {"request_id": request_id, "model": model, "model_version": version, "features": features,
                "output": output, "time": time}
    if flags:
        document["flags"] = list(flags)
    body = json.dumps(document, allow_nan=False).encode()
    key = model.encode()  # a model's predictions share a partition: one monitor replica judges them
    headers = [
        ("ce_id", str(uuid.uuid4()).encode()),
        ("ce_source", source),
        ("ce_type", TYPE),
        ("ce_time", time.encode()),
        ("content-type", b"application/json"),
        ("ce_dataschema", SCHEMA),
        ("ce_partitionkey", key),
        ("ce_specversion", b"1.0"),
    ]
    return key, headers, body


def plain(value: Any) -> float | int | str | None:
    """A feature value as a prediction event carries it (NaN is a missing value)."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else value
    return str(value)


def plain_output(value: Any) -> float | list[float]:
    """One row of a model's output: a number, or a list of class probabilities."""
    array = np.asarray(value, dtype=np.float64)
    return float(array) if array.ndim == 0 else array.tolist()
