"""Promotions a person asks for: promoting a named version, and rolling back.

Both go through the same compare-and-swap on the champion pointer as the
validator, record who asked and why in ``champion.json``, and return the
``model.promoted`` event to send, so applications follow them like any other
promotion::

    event = promote_by_hand(store, "fraud", "v7", force=False, actor="ana@host", reason="hotfix", time=now)
    producer.send_now(event)
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services.validator.promote import ChampionChanged, WritableStore, rollback, set_champion
from streamml.events import ModelPromoted
from streamml.registry.decisions import read_decision
from streamml.registry.keys import RegistryError, model_manifest_key, version_prefix
from streamml.registry.models import is_committed, read_card, read_champion

__all__ = ["ChampionChanged", "ManualPromotionRefused", "promote_by_hand", "roll_back", "version_metrics"]


class ManualPromotionRefused(Exception):
    """The version was never approved and --force was not given."""


def version_metrics(store: Any, model: str, version: str) -> dict[str, float]:
    """The validator's test metrics when it judged the version, else the card's validation metrics."""
    decision = read_decision(store, model, version)
    if decision is not None:
        metrics = decision.candidate.metrics
    else:
        metrics = read_card(store, model, version).get("metrics") or {}
    return {name: float(value) for name, value in metrics.items() if isinstance(value, int | float)}


def _require_committed(store: Any, model: str, version: str) -> None:
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
        raise ManualPromotionRefused(
            f"version {version!r} of {model!r} {verdict}; pass --force to promote it anyway"
        )
    if already:
        pointer = current
    else:
        pointer = set_champion(store, model, version, expected=current.version if current else None,
                               actor=actor, reason=reason, time=time)
    return _announcement(store, model, pointer)


def roll_back(store: WritableStore, model: str, *, actor: str, reason: str, time: datetime) -> ModelPromoted:
    """Make the champion's predecessor champion again."""
    pointer = rollback(store, model, actor=actor, reason=reason, time=time)
    return _announcement(store, model, pointer)


def _announcement(store: Any, model: str, pointer: Any) -> ModelPromoted:
    return ModelPromoted(
        model=model,
        version=pointer.version,
        artifact_prefix=version_prefix(model, pointer.version),
        metrics=version_metrics(store, model, pointer.version),
        previous_champion=pointer.previous,
        actor=pointer.actor,
        reason=pointer.reason,
    )
