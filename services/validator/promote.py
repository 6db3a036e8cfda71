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

``set_champion`` (``streamml/registry/champion.py``) is a compare-and-swap on
the pointer's ETag: of two writers that read the same pointer, one write
succeeds and the other gets ``ChampionChanged``. Writing the version that is
already champion succeeds without a write, so step 3 can be replayed.
"""

from __future__ import annotations

from datetime import datetime

from services.validator.decide import Decision
from services.validator.policy import PromotionPolicy
from streamml.events import ModelPromoted, ModelRejected
from streamml.registry.champion import ChampionChanged, WritableStore, set_champion
from streamml.registry.decisions import DecisionRecord, Evaluation, read_decision
from streamml.registry.keys import decision_key, version_prefix
from streamml.registry.models import ChampionPointer
from streamml.store import ObjectConflict

# The compare-and-swap of step 3 lives in the core package: `streamml models` and the console move the pointer too.
__all__ = ["ChampionChanged", "WritableStore", "announcement", "decision_record", "promoted_event",
           "record_decision", "rejected_event", "set_champion"]


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
