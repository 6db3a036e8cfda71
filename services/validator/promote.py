"""Recording decisions in the registry so that replays and races are harmless.

For one ``model.trained`` event the validator does, and may repeat after a crash::

    1. read_decision: a decision exists already -> go to 5, judge nothing
    2. read_champion, evaluate candidate and champion on the same split, decide
    3. promote only: set_champion(expected=<champion read in 2>)
         ChampionChanged -> another promotion won meanwhile: back to 2
    4. record_decision (the first decision written for a version wins)
    5. send announcement(record, champion), then commit the offset

Applications load whatever ``champion.json`` names when a ``model.promoted``
arrives; the event is the signal, the pointer is the truth.

``set_champion`` is a compare-and-swap on the pointer's ETag: of two writers
that read the same pointer, one write succeeds and the other gets
``ChampionChanged``. Writing the version that is already champion succeeds
without a write, so step 3 can be replayed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from services.validator.decide import Decision
from services.validator.policy import PromotionPolicy
from streamml.events import ModelPromoted, ModelRejected
from streamml.registry.decisions import DecisionRecord, Evaluation, read_decision
from streamml.registry.keys import RegistryError, champion_key, decision_key, version_prefix
from streamml.registry.models import ChampionPointer, read_champion
from streamml.store import ObjectConflict, ReadableStore


class WritableStore(ReadableStore, Protocol):
    """What writing the registry needs from ``streamml.store.ObjectStore``."""

    def create(self, key: str, data: bytes) -> str: ...

    def replace(self, key: str, data: bytes, etag: str) -> str: ...


class ChampionChanged(Exception):
    """The champion is not the one the decision was made against; decide again."""

    def __init__(self, model: str, expected: str | None, found: str | None):
        super().__init__(
            f"champion of {model!r} is {found or 'unset'}, not {expected or 'unset'} as when the decision "
            "was made; re-read the champion and decide again"
        )
        self.model = model
        self.expected = expected
        self.found = found


def set_champion(
    store: WritableStore,
    model: str,
    version: str,
    *,
    expected: str | None,
    actor: str,
    reason: str,
    time: datetime,
) -> ChampionPointer:
    """Point the champion at ``version`` if it still is ``expected`` (None: no champion yet)."""
    current, etag = read_champion(store, model)
    if current is not None and current.version == version:
        return current  # a replay of a promotion that already happened
    found = current.version if current is not None else None
    if found != expected:
        raise ChampionChanged(model, expected, found)
    pointer = ChampionPointer(version=version, previous=found, actor=actor, reason=reason, time=time)
    key = champion_key(model)
    try:
        if etag is None:
            store.create(key, pointer.to_bytes())
        else:
            store.replace(key, pointer.to_bytes(), etag)
    except ObjectConflict:
        winner, _ = read_champion(store, model)
        raise ChampionChanged(model, expected, winner.version if winner else None) from None
    return pointer


def rollback(store: WritableStore, model: str, *, actor: str, reason: str, time: datetime) -> ChampionPointer:
    """Make the champion's predecessor champion again."""
    current, _ = read_champion(store, model)
    if current is None or current.previous is None:
        raise RegistryError(
            f"model {model!r} has {'no champion' if current is None else 'no previous champion'} to roll back to; "
            "promote a version by name instead"
        )
    return set_champion(store, model, current.previous, expected=current.version, actor=actor, reason=reason, time=time)


def decision_record(
    decision: Decision,
    *,
    model: str,
    version: str,
    candidate: Evaluation,
    champion_version: str | None,
    champion: Evaluation | None,
    policy: PromotionPolicy,
    actor: str,
    time: datetime,
) -> DecisionRecord:
    return DecisionRecord(
        model=model, version=version, promote=decision.promote, reasons=decision.reasons, notes=decision.notes,
        candidate=candidate, champion_version=champion_version, champion=champion,
        policy=policy.model_dump(mode="json"), actor=actor, time=time,
    )


def record_decision(store: WritableStore, record: DecisionRecord) -> DecisionRecord:
    """Write ``record`` unless a decision for the version exists; returns the one that stands."""
    key = decision_key(record.model, record.version)
    try:
        store.create(key, record.model_dump_json(indent=2).encode())
    except ObjectConflict:
        existing = read_decision(store, record.model, record.version)
        if existing is None:  # deleted between the two calls: a person asked for a new judgement
            return record_decision(store, record)
        return existing
    return record


def replace_decision(store: WritableStore, record: DecisionRecord, etag: str) -> DecisionRecord:
    """Write ``record`` over the version's decision read with ``etag`` (a judgement asked for again,
    see ``DecisionRecord.replacing``); returns the decision that stands: another judgement that
    replaced the same decision first wins."""
    try:
        store.replace(decision_key(record.model, record.version), record.model_dump_json(indent=2).encode(), etag)
    except ObjectConflict:
        return read_decision(store, record.model, record.version) or record
    return record


def _defined(metrics: dict[str, float | None]) -> dict[str, float]:
    return {name: value for name, value in metrics.items() if value is not None}


def promoted_event(record: DecisionRecord, pointer: ChampionPointer) -> ModelPromoted:
    return ModelPromoted(
        model=record.model,
        version=record.version,
        artifact_prefix=version_prefix(record.model, record.version),
        metrics=_defined(record.candidate.metrics),
        previous_champion=pointer.previous,
        actor=pointer.actor,
        reason=pointer.reason,
    )


def rejected_event(record: DecisionRecord) -> ModelRejected:
    return ModelRejected(
        model=record.model,
        version=record.version,
        reasons=record.reasons,
        metrics=_defined(record.candidate.metrics),
        champion=record.champion_version,
    )


def announcement(record: DecisionRecord, champion: ChampionPointer | None) -> ModelPromoted | ModelRejected | None:
    """The event to send for a recorded decision, given the champion now.

    None for a promotion that a later one superseded: announcing it again
    would move applications back to an older version.
    """
    if not record.promote:
        return rejected_event(record)
    if champion is None or champion.version != record.version:
        return None
    return promoted_event(record, champion)
