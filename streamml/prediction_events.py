"""Reading ``predictions.<model>``: the one decoder every reader of the topic uses.

The topic carries two event types: ``PredictionRecord`` (one prediction per
message; what applications on older SDKs send) and ``PredictionBatch``
(many predictions of one model per message; what the SDK sends). Readers
that work on columns (the monitor) take the raw JSON body of each prediction,
split out of a batch without parsing the predictions themselves::

    bodies = prediction_bodies(ce_type, message.value())   # one PredictionRecord body per prediction

Readers that want typed events (tools, tests) take ``prediction_records``.
"""

from __future__ import annotations

import msgspec

from streamml.events import EventError, PredictionBatch, PredictionRecord, decode

RECORD_TYPE = PredictionRecord.ce_type()
BATCH_TYPE = PredictionBatch.ce_type()
PREDICTION_TYPES = (RECORD_TYPE, BATCH_TYPE)


class _Batch(msgspec.Struct):
    """A PredictionBatch body with each prediction left as its raw JSON (checked later, with the rest)."""

    predictions: list[msgspec.Raw]


_BATCH = msgspec.json.Decoder(_Batch)


def prediction_bodies(ce_type: str | None, value: bytes | None) -> list[bytes]:
    """The JSON body of each prediction that a message of ``ce_type`` with body ``value`` carries.

    Each body reads as a ``PredictionRecord`` event's; it is not validated here.
    Raises EventError for another event type or a batch that cannot be split."""
    if ce_type == RECORD_TYPE:
        return [value or b""]
    if ce_type != BATCH_TYPE:
        raise EventError(f"found ce_type {ce_type!r}; predictions.<model> carries {RECORD_TYPE} or "
                         f"{BATCH_TYPE} events")
    try:
        batch = _BATCH.decode(value or b"")
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        raise EventError(f"{BATCH_TYPE} body is not a batch of predictions: {error}") from None
    if not batch.predictions:
        raise EventError(f"{BATCH_TYPE} body carries no predictions")
    return [bytes(raw) for raw in batch.predictions]


def prediction_records(headers: list[tuple[str, bytes]] | None, key: bytes | None,
                       value: bytes | None) -> list[PredictionRecord]:
    """The predictions of one message, validated; EventError for anything else."""
    event, _ = decode(headers, key, value)
    if isinstance(event, PredictionRecord):
        return [event]
    if isinstance(event, PredictionBatch):
        return list(event.predictions)
    raise EventError(f"found ce_type {event.ce_type()!r}; predictions.<model> carries {RECORD_TYPE} or "
                     f"{BATCH_TYPE} events")
