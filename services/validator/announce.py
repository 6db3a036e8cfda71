"""Which event a validator sends once it has judged a version.

Normally its own decision. Two validators can judge the same version at once
(a redelivery during a rebalance); the one whose decision was recorded first
announces it. The other announces only a pointer move of its own that the
recorded decision does not announce (a rejection), so every move of the
champion pointer is announced exactly once.
"""

from __future__ import annotations

from services.validator.promote import promoted_event, rejected_event
from streamml.events import ModelPromoted, ModelRejected
from streamml.registry.decisions import DecisionRecord
from streamml.registry.models import ChampionPointer


def after_judging(
    mine: DecisionRecord, standing: DecisionRecord, pointer: ChampionPointer | None, wrote: bool
) -> ModelPromoted | ModelRejected | None:
    """``pointer``: the champion after a promote decision; ``wrote``: whether this validator wrote it."""
    if standing is mine:
        if not mine.promote:
            return rejected_event(mine)
        if pointer is None:
            raise ValueError(f"decision to promote {mine.model} {mine.version} came without a champion pointer")
        return promoted_event(mine, pointer)
    if wrote and pointer is not None and not standing.promote:
        return promoted_event(mine, pointer)
    return None
