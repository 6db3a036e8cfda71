"""Promotions by hand: approval or --force, who and why recorded, the same compare-and-swap, rollback."""

import json
from datetime import UTC, datetime

import pytest

from services.validator.decide import Decision
from services.validator.policy import PromotionPolicy
from services.validator.promote import decision_record, record_decision
from streamml.registry.champion import (
    ChampionChanged,
    ManualPromotionRefused,
    promote_by_hand,
    roll_back,
    set_champion,
)
from streamml.registry.decisions import Evaluation
from streamml.registry.keys import RegistryError
from streamml.registry.models import VersionManifest, read_champion

pytestmark = pytest.mark.unit
T = datetime(2024, 6, 1, tzinfo=UTC)


def committed(store, *versions: str) -> None:
    for version in versions:
        card = json.dumps({"metrics": {"auc": 0.8, "note": "x"}}).encode()
        prefix = f"models/fraud/{version}/attempts/a1/"
        store.create(prefix + "card.json", card)
        store.create(f"models/fraud/{version}/manifest.json",
                     VersionManifest.of("fraud", version, prefix, {"card.json": card}, T).to_bytes())


def judged(store, version: str, promote: bool) -> None:
    decision = Decision(promote=promote, reasons=[] if promote else ["auc 0.7 < floor 0.8"], notes=["ok"])
    record_decision(store, decision_record(
        decision, model="fraud", version=version, candidate=Evaluation(rows=10, metrics={"auc": 0.91, "rmse": None}),
        champion_version=None, champion=None, policy=PromotionPolicy(model="fraud"), actor="validator@x", time=T))


def test_an_unjudged_or_rejected_version_needs_force(memory_store):
    committed(memory_store, "v1", "v2")
    judged(memory_store, "v2", promote=False)
    with pytest.raises(ManualPromotionRefused, match="never judged by the validator; pass --force"):
        promote_by_hand(memory_store, "fraud", "v1", force=False, actor="ana@h", reason="r", time=T)
    with pytest.raises(ManualPromotionRefused, match=r"was rejected: auc 0.7 < floor 0.8; pass --force"):
        promote_by_hand(memory_store, "fraud", "v2", force=False, actor="ana@h", reason="r", time=T)
    assert read_champion(memory_store, "fraud") == (None, None)


def test_forcing_records_who_and_why_and_announces_with_the_known_metrics(memory_store):
    committed(memory_store, "v1", "v2")
    judged(memory_store, "v2", promote=False)
    first = promote_by_hand(memory_store, "fraud", "v1", force=True, actor="ana@h", reason="bootstrap", time=T)
    assert (first.version, first.previous_champion, first.actor, first.reason) == ("v1", None, "ana@h", "bootstrap")
    assert first.metrics == {"auc": 0.8}  # the card's validation metrics: v1 was never judged
    second = promote_by_hand(memory_store, "fraud", "v2", force=True, actor="bo@h", reason="hotfix", time=T)
    assert (second.version, second.previous_champion) == ("v2", "v1")
    assert second.metrics == {"auc": 0.91}  # the validator's test metrics
    pointer, _ = read_champion(memory_store, "fraud")
    assert (pointer.version, pointer.previous, pointer.actor, pointer.reason) == ("v2", "v1", "bo@h", "hotfix")


def test_an_approved_version_needs_no_force_and_re_promoting_the_champion_only_announces(memory_store):
    committed(memory_store, "v1")
    judged(memory_store, "v1", promote=True)
    event = promote_by_hand(memory_store, "fraud", "v1", force=False, actor="ana@h", reason="go", time=T)
    writes = len(memory_store.writes)
    again = promote_by_hand(memory_store, "fraud", "v1", force=False, actor="bo@h", reason="resend", time=T)
    assert len(memory_store.writes) == writes  # nothing written
    assert again == event  # the same announcement: who and why of the write that happened


def test_a_version_that_is_not_committed_cannot_be_promoted(memory_store):
    memory_store.create("models/fraud/v1/card.json", b"{}")  # no manifest.json: incomplete
    with pytest.raises(RegistryError, match="no committed version 'v1'"):
        promote_by_hand(memory_store, "fraud", "v1", force=True, actor="a", reason="r", time=T)


def test_a_concurrent_change_makes_the_manual_promotion_fail_without_writing(memory_store):
    committed(memory_store, "v1", "v2", "v3")
    set_champion(memory_store, "fraud", "v1", expected=None, actor="a", reason="r", time=T)
    # Another writer moves the pointer between our read and our write.
    memory_store.before_write = lambda key: (
        setattr(memory_store, "before_write", lambda key: None),
        set_champion(memory_store, "fraud", "v3", expected="v1", actor="other", reason="r", time=T),
    )
    with pytest.raises(ChampionChanged, match="champion of 'fraud' is v3, not v1"):
        promote_by_hand(memory_store, "fraud", "v2", force=True, actor="a", reason="r", time=T)
    assert read_champion(memory_store, "fraud")[0].version == "v3"


def test_rollback_returns_to_the_predecessor_and_announces_it(memory_store):
    committed(memory_store, "v1", "v2")
    promote_by_hand(memory_store, "fraud", "v1", force=True, actor="a", reason="r", time=T)
    promote_by_hand(memory_store, "fraud", "v2", force=True, actor="a", reason="r", time=T)
    event = roll_back(memory_store, "fraud", actor="ops@h", reason="false positives", time=T)
    assert (event.version, event.previous_champion) == ("v1", "v2")
    assert (event.actor, event.reason) == ("ops@h", "false positives")
    assert read_champion(memory_store, "fraud")[0].version == "v1"
