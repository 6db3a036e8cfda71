"""Prediction events in CloudEvents binary mode, built cheaply enough to log every prediction.

``streamml.events.encode`` validates a model and builds a CloudEvent object per
event (~200 µs here), which would cost more than the prediction itself. The
client already holds valid values, so this writes the same headers and JSON
body directly. ``prediction_batches`` turns a batch of the prediction log into
``PredictionBatch`` events, one msgspec encode and one Kafka message for up to
``MAX_BATCH_BYTES`` of predictions: per prediction that costs a few µs, where
one message per prediction cost a Kafka produce and a delivery report each,
which is what lets a server log every prediction at full rate. Readers split
them with ``streamml.prediction_events``.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from itertools import chain
from typing import Any, NamedTuple

import msgspec
import numpy as np

from streamml.events import SCHEMA_BASE, PredictionBatch

TYPE = PredictionBatch.ce_type().encode()
SCHEMA = (SCHEMA_BASE + PredictionBatch.schema_name()).encode()
# A batch's body stays well below the brokers' default message.max.bytes (1 MiB); a larger one is split.
MAX_BATCH_BYTES = 256 * 1024
Message = tuple[bytes, list[tuple[str, bytes]], bytes]
# One logged prediction: (request_id, record, output or None when it cannot be logged, flags,
# (version, feature names, time)); the last is shared by the records of one predict call.
Logged = tuple[str, Mapping[str, Any], "float | list[float] | None", Sequence[str], tuple[str, Sequence[str], str]]
# Feature values msgspec writes as json.dumps does after ``plain`` (NaN and infinities become null).
_PLAIN_TYPES = frozenset({str, int, float, bool, type(None)})
_ENCODER = msgspec.json.Encoder()


class Chunk(NamedTuple):
    """Items ``[previous chunk's end, end)`` of a batch: ``logged`` of them in ``message``, the rest unloggable."""

    end: int
    logged: int
    message: Message | None  # None when none of them can be logged


def timestamp(time: datetime) -> str:
    """RFC 3339 in UTC with a Z, as the JSON of a pydantic datetime reads."""
    return time.astimezone(UTC).isoformat().replace("+00:00", "Z")


def prediction_batches(source: bytes, model: str, batch: Sequence[Logged],
                       max_bytes: int = MAX_BATCH_BYTES) -> list[Chunk]:
    """``batch`` as PredictionBatch messages (key, headers, value), in order, each at most ``max_bytes``
    unless it holds a single prediction.

    Each prediction reads as a ``PredictionRecord`` body; ``flags`` is written
    only when there are some. A record whose output is None (NaN or infinite,
    see ``loggable_outputs``) is left out and counted in its chunk. A NaN or
    infinite feature value is written as null (missing).
    """
    documents: list[dict[str, Any] | None] = []
    for request_id, record, output, flags, (version, features, time) in batch:
        if output is None:
            documents.append(None)
            continue
        document = {"request_id": request_id, "model": model, "model_version": version,
                    "features": {name: record.get(name) for name in features}, "output": output, "time": time}
        if flags:
            document["flags"] = list(flags)
        documents.append(document)
    kept = [document for document in documents if document is not None]
    values: Iterable[Any] = chain.from_iterable(document["features"].values() for document in kept)
    if not _PLAIN_TYPES.issuperset(map(type, values)):  # numpy scalars, dates...: as plain() writes them
        for document in kept:
            document["features"] = {name: plain(value) for name, value in document["features"].items()}
    return _chunks(source, model, documents, 0, len(documents), max_bytes)


def _chunks(source: bytes, model: str, documents: list[dict[str, Any] | None], start: int, end: int,
            max_bytes: int) -> list[Chunk]:
    kept = [document for document in documents[start:end] if document is not None]
    if not kept:
        return [Chunk(end, 0, None)]
    body = _ENCODER.encode({"model": model, "predictions": kept})
    if len(body) > max_bytes and len(kept) > 1:
        middle = (start + end) // 2
        return (_chunks(source, model, documents, start, middle, max_bytes)
                + _chunks(source, model, documents, middle, end, max_bytes))
    key = model.encode()  # a model's predictions share a partition: one monitor replica judges them
    headers = [("ce_id", uuid.uuid4().hex.encode()), ("ce_source", source), ("ce_type", TYPE),
               ("ce_time", kept[-1]["time"].encode()), ("content-type", b"application/json"),
               ("ce_dataschema", SCHEMA), ("ce_partitionkey", key), ("ce_specversion", b"1.0")]
    return [Chunk(end, len(kept), (key, headers, body))]


def loggable_outputs(outputs: np.ndarray) -> list[float | list[float] | None]:
    """Each row of a model's output: a number or a list of class probabilities, None where JSON cannot
    carry it (NaN, inf)."""
    rows = np.asarray(outputs, dtype=np.float64)
    values = rows.tolist()
    finite = np.isfinite(rows)
    if not finite.all():
        good = finite.reshape(len(rows), -1).all(axis=1)
        values = [value if ok else None for value, ok in zip(values, good.tolist(), strict=True)]
    return values


def plain(value: Any) -> float | int | str | None:
    """A feature value as a prediction event carries it (NaN is a missing value)."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else value
    return str(value)
