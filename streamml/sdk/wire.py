"""Prediction events in CloudEvents binary mode, built cheaply enough to log every prediction.

``streamml.events.encode`` validates a model and builds a CloudEvent object per
event (~200 µs here), which would cost more than the prediction itself. The
client already holds valid values, so this writes the same JSON directly, in
two steps. ``encode_predictions`` writes the body of each prediction of one
predict call, with one msgspec call for all of them, on the request path: a
few µs per prediction. ``prediction_batches`` joins the bodies the prediction
log buffered into ``PredictionBatch`` events, one Kafka message for up to
``MAX_BATCH_BYTES``, with no Python work per prediction left: the log's
sender thread then barely competes with the request path for the GIL (when
it encoded the batches itself, it held the GIL for a millisecond at a time
and the server answered a third fewer requests). Readers split the batches
with ``streamml.prediction_events``.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

import msgspec
import numpy as np

from streamml.events import SCHEMA_BASE, PredictionBatch

TYPE = PredictionBatch.ce_type().encode()
SCHEMA = (SCHEMA_BASE + PredictionBatch.schema_name()).encode()
# A batch's body stays well below the brokers' default message.max.bytes (1 MiB); a larger one is split.
MAX_BATCH_BYTES = 256 * 1024
SMALL_OUTPUT = 256  # outputs of up to this many rows are checked for NaN without numpy (see loggable_outputs)
Message = tuple[bytes, list[tuple[str, bytes]], bytes]


class Chunk(NamedTuple):
    """Bodies ``[previous chunk's end, end)`` of a batch: ``logged`` of them in ``message``, the rest None."""

    end: int
    logged: int
    message: Message | None  # None when none of them can be logged


def timestamp(time: datetime) -> str:
    """RFC 3339 in UTC with a Z, as the JSON of a pydantic datetime reads."""
    return time.astimezone(UTC).isoformat().replace("+00:00", "Z")


def encode_predictions(
    model: str,
    version: str,
    features: Sequence[str],
    time: datetime,
    request_ids: Sequence[str],
    records: Sequence[Mapping[str, Any]],
    outputs: Sequence[float | list[float] | None],
    flags: Mapping[int, Sequence[str]],
    shadow_latency_ms: float | None = None,
) -> list[bytes | None]:
    """The ``PredictionRecord`` body of each prediction of one predict call; None where the output is None.

    ``time``: when the call was made, in UTC (msgspec writes it as ``timestamp``
    would, for a fraction of its cost); ``outputs`` from ``loggable_outputs`` (None: NaN
    or infinite, which JSON cannot carry); ``flags``: record index ->
    ``feature:rule`` of each rule of the dataset spec it breaks, written only
    when there are some. A NaN or infinite feature value is written as null
    (missing), numpy scalars, dates and the like as ``plain`` makes them.
    ``shadow_latency_ms``: the call was a version in shadow's (``shadow.py``),
    which took this long; its predictions are marked ``shadow``.
    """
    documents = []
    wanted = frozenset(features)
    for index, (request_id, record, output) in enumerate(zip(request_ids, records, outputs, strict=True)):
        if output is None:
            continue
        # A dict of exactly the features is written as it is: copying it cost a third of the encoding.
        logged = (record if type(record) is dict and record.keys() == wanted
                  else {name: record.get(name) for name in features})
        document = {"request_id": request_id, "model": model, "model_version": version,
                    "features": logged, "output": output, "time": time}
        if index in flags:
            document["flags"] = list(flags[index])
        if shadow_latency_ms is not None:
            document["shadow"], document["latency_ms"] = True, shadow_latency_ms
        documents.append(document)
    bodies = iter(_ENCODER.encode_lines(documents).split(b"\n"))  # msgspec escapes newlines within strings
    return [None if output is None else next(bodies) for output in outputs]


def prediction_batches(source: bytes, model: str, bodies: Sequence[bytes | None],
                       max_bytes: int = MAX_BATCH_BYTES) -> list[Chunk]:
    """``bodies`` (from ``encode_predictions``; None: not loggable) as PredictionBatch messages (key, headers,
    value), in order, each at most ``max_bytes`` unless it holds a single prediction."""
    head = b'{"model":' + _ENCODER.encode(model) + b',"predictions":['
    room = max_bytes - len(head) - len(b"]}")
    chunks: list[Chunk] = []
    kept: list[bytes] = []
    size = 0
    for index, body in enumerate(bodies):
        if body is None:
            continue
        if kept and size + len(body) > room:
            chunks.append(Chunk(index, len(kept), _message(source, model, head, kept)))
            kept, size = [], 0
        kept.append(body)
        size += len(body) + 1  # and its comma
    chunks.append(Chunk(len(bodies), len(kept), _message(source, model, head, kept) if kept else None))
    return chunks


def _message(source: bytes, model: str, head: bytes, bodies: list[bytes]) -> Message:
    key = model.encode()  # a model's predictions share a partition: one monitor replica judges them
    headers = [("ce_id", uuid.uuid4().hex.encode()), ("ce_source", source), ("ce_type", TYPE),
               ("ce_time", timestamp(datetime.now(UTC)).encode()), ("content-type", b"application/json"),
               ("ce_dataschema", SCHEMA), ("ce_partitionkey", key), ("ce_specversion", b"1.0")]
    return key, headers, head + b",".join(bodies) + b"]}"


def loggable_outputs(outputs: np.ndarray) -> list[float | list[float] | None]:
    """Each row of a model's output: a number or a list of class probabilities, None where JSON cannot
    carry it (NaN, inf)."""
    values = outputs.tolist()
    if outputs.ndim == 1 and len(values) <= SMALL_OUTPUT:
        # On a server, right after the model ran, each numpy call on a few values costs some 5 µs:
        # 17 µs for the numpy path below against 3 µs for this one, on a one-row request.
        if all(map(math.isfinite, values)):
            return values
        return [value if math.isfinite(value) else None for value in values]
    finite = np.isfinite(outputs)
    if not finite.all():
        good = finite.reshape(len(values), -1).all(axis=1)
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


# Writes str, int, float, bool and None itself (NaN and infinities as null, as ``plain`` does), the rest
# (numpy scalars, dates...) through ``plain``: checking each value's type first cost as much as the encoding.
_ENCODER = msgspec.json.Encoder(enc_hook=plain)
