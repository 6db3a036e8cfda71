"""Moving the champion pointer: ``models/<name>/champion.json``, by compare-and-swap.

Three places move it: the validator (a promotion it decided), ``streamml models
promote|rollback`` and the console's promote and rollback buttons. They all
go through ``set_champion``, a compare-and-swap on the pointer's ETag: of two
writers that read the same pointer, one write succeeds and the other gets
``ChampionChanged``. Writing the version that is already champion succeeds
without a write, so a promotion can be replayed.

A person's promotion records who asked and why, and returns the
``model.promoted`` event to send, so applications follow it like any other::

    event = promote_by_hand(store, "fraud", "v7", force=False, actor="ana@host", reason="hotfix", time=now)
    producer.send_now(event)
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from streamml.events import ModelPromoted
from streamml.registry.decisions import read_decision
from streamml.registry.keys import RegistryError, champion_key, model_manifest_key, version_prefix
from streamml.registry.models import ChampionPointer, is_committed, read_card, read_champion
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


class ManualPromotionRefused(Exception):
    """The version was never approved and the person did not force it; ``verdict`` says what the validator said."""

    def __init__(self, model: str, version: str, verdict: str) -> None:
        super().__init__(f"version {version!r} of {model!r} {verdict}; pass --force to promote it anyway")
        self.verdict = verdict


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


def version_metrics(store: ReadableStore, model: str, version: str) -> dict[str, float]:
    """The validator's test metrics when it judged the version, else the card's validation metrics."""
    decision = read_decision(store, model, version)
    if decision is not None:
        metrics = decision.candidate.metrics
    else:
        metrics = read_card(store, model, version).get("metrics") or {}
    return {name: float(value) for name, value in metrics.items() if isinstance(value, int | float)}


def _require_committed(store: ReadableStore, model: str, version: str) -> None:
    if not is_committed(store, model, version):
        raise RegistryError(
            f"model {model!r} has no committed version {version!r} ({model_manifest_key(model, version)} "
            "is missing); `streamml models show` lists its versions"
        )


def promote_by_hand(
    store: WritableStore, model: str, version: str, *, force: bool, actor: str, reason: str, time: datetime
) -> ModelPromoted:
    """Make ``version`` champion; without ``force`` only a version the validator approved.

    Promoting the version that is champion already writes nothing and returns
    its announcement again, which is how a lost event is re-sent.
    """
    _require_committed(store, model, version)
    decision = read_decision(store, model, version)
    current, _ = read_champion(store, model)
    already = current is not None and current.version == version
    if not force and not already and (decision is None or not decision.promote):
        verdict = f"was rejected: {decision.summary}" if decision else "was never judged by the validator"
        raise ManualPromotionRefused(model, version, verdict)
    if already:
        pointer = current
    else:
        pointer = set_champion(store, model, version, expected=current.version if current else None,
                               actor=actor, reason=reason, time=time)
    return _announcement(store, model, pointer)


def roll_back(store: WritableStore, model: str, *, actor: str, reason: str, time: datetime) -> ModelPromoted:
    """Make the champion's predecessor champion again, and return its announcement."""
    pointer = rollback(store, model, actor=actor, reason=reason, time=time)
    return _announcement(store, model, pointer)


def _announcement(store: ReadableStore, model: str, pointer: ChampionPointer) -> ModelPromoted:
    return ModelPromoted(
        model=model,
        version=pointer.version,
        artifact_prefix=version_prefix(model, pointer.version),
        metrics=version_metrics(store, model, pointer.version),
        previous_champion=pointer.previous,
        actor=pointer.actor,
        reason=pointer.reason,
    )
