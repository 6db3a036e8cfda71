"""After judging, every move of the champion pointer is announced once, even when two validators judged one version."""

from datetime import UTC, datetime

import pytest

from services.validator.announce import after_judging
from services.validator.decide import Decision
from services.validator.policy import PromotionPolicy
from services.validator.promote import decision_record
from streamml.events import ModelPromoted, ModelRejected
from streamml.registry.decisions import DecisionRecord, Evaluation
from streamml.registry.models import ChampionPointer

pytestmark = pytest.mark.unit
T = datetime(2024, 6, 1, tzinfo=UTC)
POINTER = ChampionPointer(version="v2", previous="v1", actor="validator@a", reason="auc 0.9 >= floor 0.8", time=T)


def record(promote: bool, actor: str = "validator@a") -> DecisionRecord:
    decision = Decision(promote=promote, reasons=[] if promote else ["latency p95 30 ms > budget 20 ms"], notes=[])
    return decision_record(decision, model="fraud", version="v2", candidate=Evaluation(rows=5, metrics={"auc": 0.9}),
                           champion_version="v1", champion=None, policy=PromotionPolicy(model="fraud"),
                           actor=actor, time=T)


def test_a_recorded_decision_of_mine_is_announced_as_it_is():
    promote = record(True)
    event = after_judging(promote, promote, POINTER, wrote=True)
    assert isinstance(event, ModelPromoted) and (event.version, event.previous_champion) == ("v2", "v1")
    reject = record(False)
    event = after_judging(reject, reject, None, wrote=False)
    assert isinstance(event, ModelRejected) and event.reasons == ["latency p95 30 ms > budget 20 ms"]


def test_a_promotion_replayed_after_a_crash_is_announced_with_the_pointer_written_before():
    promote = record(True)
    assert isinstance(after_judging(promote, promote, POINTER, wrote=False), ModelPromoted)


def test_when_another_validator_recorded_first_it_announces_unless_only_my_write_moved_the_pointer():
    mine, theirs_promote, theirs_reject = record(True), record(True, "validator@b"), record(False, "validator@b")
    # They promoted too: their announcement covers the one pointer move.
    assert after_judging(mine, theirs_promote, POINTER, wrote=True) is None
    # They rejected (say, on latency) after my write moved the pointer: my move is announced by me.
    event = after_judging(mine, theirs_reject, POINTER, wrote=True)
    assert isinstance(event, ModelPromoted) and event.version == "v2"
    # I rejected, or did not write: nothing of mine to announce.
    assert after_judging(record(False), theirs_promote, None, wrote=False) is None
    assert after_judging(mine, theirs_reject, POINTER, wrote=False) is None
