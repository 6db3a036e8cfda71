"""Prediction events in CloudEvents binary mode, built cheaply enough to log every prediction.

``streamml.events.encode`` validates a model and builds a CloudEvent object per
event (~200 µs here), which would cost more than the prediction itself. The
client already holds valid values, so this writes the same headers and JSON
body directly; ``streamml.events.decode`` reads both alike.
``prediction_message`` builds one event (~20 µs); ``prediction_messages``
builds a batch with one JSON encode for all its bodies (msgspec), a few µs
per event, which is what lets a server log every prediction at full rate.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from itertools import chain
from datetime import UTC, datetime
from typing import Any

import msgspec
import numpy as np

from streamml.events import SCHEMA_BASE, PredictionRecord

TYPE = PredictionRecord.ce_type().encode()
SCHEMA = (SCHEMA_BASE + PredictionRecord.schema_name()).encode()
Message = tuple[bytes, list[tuple[str, bytes]], bytes]
# One logged prediction: (request_id, record, output or None when it cannot be logged, flags,
# (version, feature names, time[, shadow call ms])); the last is shared by the records of one predict call,
# and its fourth member marks the answers of a version in shadow (``shadow.py``) with the time its call took.
Logged = tuple[str, Mapping[str, Any], "float | list[float] | None", Sequence[str], tuple]
# Feature values msgspec writes as json.dumps does after ``plain`` (NaN and infinities become null).
_PLAIN_TYPES = frozenset({str, int, float, bool, type(None)})
_ENCODER = msgspec.json.Encoder()


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


def prediction_messages(source: bytes, model: str, batch: Sequence[Logged]) -> list[Message | None]:
    """(key, headers, value) of each prediction of ``batch``, with one JSON encode for all the bodies.

    Each body reads as ``prediction_message`` writes it. A record whose output
    is None (NaN or infinite, see ``loggable_outputs``) gets None instead of a
    message. A NaN or infinite feature value is written as null (missing).
    """
    documents = []
    for request_id, record, output, flags, context in batch:
        if output is None:
            continue
        version, features, time = context[:3]
        document = {"request_id": request_id, "model": model, "model_version": version,
                    "features": {name: record.get(name) for name in features}, "output": output, "time": time}
        if flags:
            document["flags"] = list(flags)
        if len(context) > 3:
            document["shadow"], document["latency_ms"] = True, context[3]
        documents.append(document)
    values: Iterable[Any] = chain.from_iterable(document["features"].values() for document in documents)
    if not _PLAIN_TYPES.issuperset(map(type, values)):  # numpy scalars, dates...: as plain() writes them
        for document in documents:
            document["features"] = {name: plain(value) for name, value in document["features"].items()}
    bodies = iter(_ENCODER.encode_lines(documents).split(b"\n"))  # msgspec escapes newlines within strings
    key = model.encode()  # a model's predictions share a partition: one monitor replica judges them
    ids = uuid.uuid4().hex  # a CloudEvents id is unique per source: this batch's, and the event's place in it
    messages: list[Message | None] = []
    common, last_time = [], None
    for index, (_, _, output, _, context) in enumerate(batch):
        time = context[2]
        if output is None:
            messages.append(None)
            continue
        if time is not last_time:
            common = [("ce_source", source), ("ce_type", TYPE), ("ce_time", time.encode()),
                      ("content-type", b"application/json"), ("ce_dataschema", SCHEMA), ("ce_partitionkey", key),
                      ("ce_specversion", b"1.0")]
            last_time = time
        messages.append((key, [("ce_id", f"{ids}-{index}".encode()), *common], next(bodies)))
    return messages


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
