"""Recording decisions in the registry so that replays, crashes and races are harmless.

For one ``model.trained`` event the validator does, and may repeat after a crash::

    1. read_decision: a decision exists already -> go to 4, judge nothing
    2. read_champion, evaluate candidate and champion on the same split, decide;
       the champion moved meanwhile -> decide again against the new one
    3. record_decision: the first decision written for a version stands
    4. follow_decision: a promotion moves the pointer from the champion it was
       judged against to the version (compare-and-swap)
    5. send announcement(decision, pointer), then commit the offset

The decision is written before the pointer moves, and the pointer moves only
as a recorded decision says, so a crash at any point leaves them agreeing:
before 3 nothing is written and the version is judged again; between 3 and 4
the replay finds the decision and moves the pointer; after 4 it finds both and
announces again. The validator never points the champion at a version whose
decision is a rejection (a person can, with ``streamml models promote --force``).
Two validators judging one version (a redelivery during a rebalance) both
follow the decision recorded first.

Applications load whatever ``champion.json`` names when a ``model.promoted``
arrives; the event is the signal, the pointer is the truth.

``set_champion`` (``streamml/registry/champion.py``) is a compare-and-swap on the pointer's ETag: of two writers
that read the same pointer, one write succeeds and the other gets
``ChampionChanged``. Writing the version that is already champion succeeds
without a write, so step 4 can be replayed.
"""

from __future__ import annotations

from datetime import datetime

from services.validator.decide import Decision
from services.validator.policy import PromotionPolicy
from streamml.events import ModelPromoted, ModelRejected, stable_id
from streamml.registry.champion import ChampionChanged, WritableStore, set_champion
from streamml.registry.decisions import DecisionRecord, Evaluation, JudgedRows, read_decision
from streamml.registry.keys import decision_key, version_prefix
from streamml.registry.models import ChampionPointer, read_champion
from streamml.store import ObjectConflict

# The compare-and-swap of step 3 lives in the core package: `streamml models` and the console move the pointer too.
__all__ = ["ChampionChanged", "WritableStore", "announcement", "decision_record", "promoted_event",
           "record_decision", "rejected_event", "set_champion", "follow_decision", "announcement_id"]


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
    judged_on: JudgedRows | None = None,
) -> DecisionRecord:
    return DecisionRecord(
        model=model, version=version, promote=decision.promote, reasons=decision.reasons, notes=decision.notes,
        candidate=candidate, champion_version=champion_version, champion=champion,
        policy=policy.model_dump(mode="json"), actor=actor, time=time, judged_on=judged_on,
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


def follow_decision(store: WritableStore, record: DecisionRecord, *, actor: str, time: datetime) -> ChampionPointer | None:
    """Move the champion pointer as a recorded decision says; returns the pointer after it.

    A promotion moves the pointer from the champion it was judged against to
    the version. Nothing is written when the pointer names the version already
    (a replay), or when it moved on from that champion since the decision (a
    later promotion or a person's; with one partition per model, a promotion
    of another version happens only after this one was followed).
    """
    current, _ = read_champion(store, record.model)
    found = current.version if current is not None else None
    if not record.promote or found == record.version or found != record.champion_version:
        return current
    try:
        return set_champion(store, record.model, record.version, expected=found, actor=actor,
                            reason=record.summary, time=time)
    except ChampionChanged:  # another validator followed the same decision, or the pointer moved on
        return read_champion(store, record.model)[0]


def announcement_id(event: ModelPromoted | ModelRejected, pointer: ChampionPointer | None) -> str:
    """The same id each time one decision or one pointer move is announced (after a crash, by two validators)."""
    if isinstance(event, ModelRejected):
        return stable_id("model.rejected", event.model, event.version)
    return stable_id("model.promoted", event.model, event.version, pointer.time.isoformat() if pointer else "")


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
