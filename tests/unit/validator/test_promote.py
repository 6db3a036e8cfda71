import threading
from datetime import UTC, datetime, timedelta

import pytest

from services.validator.decide import decide
from services.validator.policy import parse_policy
from services.validator.promote import announcement, announcement_id, decision_record, follow_decision, record_decision
from streamml.registry.champion import ChampionChanged, rollback, set_champion
from streamml.events import ModelPromoted, ModelRejected
from streamml.registry.decisions import DecisionRecord, Evaluation, read_decision
from streamml.registry.keys import RegistryError
from streamml.registry.models import read_champion
from streamml.registry.shadow import ShadowState, end_shadow, read_shadow, start_shadow

pytestmark = pytest.mark.unit
NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
KEY = "models/fraud/champion.json"


def promote(store, version, expected, actor="validator-0"):
    return set_champion(store, "fraud", version, expected=expected, actor=actor, reason="better", time=NOW)


def test_first_promotion_creates_the_pointer_and_the_next_replaces_it(memory_store):
    first = promote(memory_store, "v1", expected=None)
    assert (first.version, first.previous) == ("v1", None)
    second = promote(memory_store, "v2", expected="v1")
    assert (second.version, second.previous) == ("v2", "v1")
    pointer, etag = read_champion(memory_store, "fraud")
    assert pointer == second and etag == memory_store.objects[KEY][1]


def test_a_decision_against_a_stale_champion_is_refused(memory_store):
    promote(memory_store, "v1", expected=None)
    with pytest.raises(ChampionChanged) as caught:
        promote(memory_store, "v3", expected=None)
    assert (caught.value.expected, caught.value.found) == (None, "v1")
    assert "re-read the champion and decide again" in str(caught.value)
    assert read_champion(memory_store, "fraud")[0].version == "v1"


def test_replaying_a_promotion_writes_nothing(memory_store):
    promote(memory_store, "v1", expected=None)
    writes = len(memory_store.writes)
    # The crash came after the pointer was written: the replay expects the old champion.
    assert promote(memory_store, "v1", expected=None).version == "v1"
    assert len(memory_store.writes) == writes


def test_two_validators_racing_from_the_same_pointer_cannot_both_win(memory_store):
    promote(memory_store, "v1", expected=None)
    both_read = threading.Barrier(2, timeout=5)
    memory_store.before_write = lambda key: both_read.wait() if key == KEY else None
    outcomes = {}

    def contender(version):
        try:
            outcomes[version] = promote(memory_store, version, expected="v1", actor=f"validator-{version}")
        except ChampionChanged as error:
            outcomes[version] = error

    threads = [threading.Thread(target=contender, args=(v,)) for v in ("v2", "v3")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    winners = [v for v, outcome in outcomes.items() if not isinstance(outcome, ChampionChanged)]
    losers = [outcome for outcome in outcomes.values() if isinstance(outcome, ChampionChanged)]
    assert len(winners) == 1 and len(losers) == 1
    assert losers[0].found == winners[0]
    pointer, _ = read_champion(memory_store, "fraud")
    assert (pointer.version, pointer.previous) == (winners[0], "v1")


def test_rollback_goes_to_the_previous_champion(memory_store):
    with pytest.raises(RegistryError, match="no champion to roll back to"):
        rollback(memory_store, "fraud", actor="ops", reason="bad", time=NOW)
    promote(memory_store, "v1", expected=None)
    with pytest.raises(RegistryError, match="no previous champion"):
        rollback(memory_store, "fraud", actor="ops", reason="bad", time=NOW)
    promote(memory_store, "v2", expected="v1")
    pointer = rollback(memory_store, "fraud", actor="ops", reason="v2 misbehaves", time=NOW)
    assert (pointer.version, pointer.previous, pointer.actor) == ("v1", "v2", "ops")


def test_a_corrupt_pointer_is_reported_with_its_key(memory_store):
    memory_store.create(KEY, b'{"version": "a/b"}')
    with pytest.raises(RegistryError, match="models/fraud/champion.json is not a champion pointer"):
        read_champion(memory_store, "fraud")


def record(version="v2", promote_it=True, champion_version="v1"):
    policy = parse_policy({"model": "fraud", "min": {"auc": 0.8 if promote_it else 0.95}})
    candidate = Evaluation(rows=100, metrics={"auc": 0.9, "log_loss": float("nan")})
    decision = decide(candidate, None, policy)
    return decision_record(decision, model="fraud", version=version, candidate=candidate,
                           champion_version=champion_version, champion=None, policy=policy,
                           actor="validator-0", time=NOW)


def test_the_first_recorded_decision_stands(memory_store):
    assert read_decision(memory_store, "fraud", "v2") is None
    first = record_decision(memory_store, record(promote_it=False))
    assert read_decision(memory_store, "fraud", "v2") == first
    again = record_decision(memory_store, record(promote_it=True))
    assert again == first and not again.promote
    assert "models/fraud/v2/decision.json" in memory_store.objects


def test_announcement_of_a_rejection_lists_reasons_and_defined_metrics():
    rejected = record(promote_it=False)
    event = announcement(rejected, champion=None)
    assert isinstance(event, ModelRejected)
    assert event.reasons == ["auc 0.9 < floor 0.95"]
    assert event.metrics == {"auc": 0.9}  # the undefined log_loss is left out
    assert event.champion == "v1"


def test_announcement_of_a_promotion_only_while_it_is_still_champion(memory_store):
    promote(memory_store, "v1", expected=None)
    pointer = promote(memory_store, "v2", expected="v1")
    event = announcement(record("v2"), pointer)
    assert isinstance(event, ModelPromoted)
    assert (event.version, event.previous_champion, event.artifact_prefix) == ("v2", "v1", "models/fraud/v2/")
    newer = promote(memory_store, "v3", expected="v2")
    assert announcement(record("v2"), newer) is None


class Crash(BaseException):
    """The process dies here (BaseException: nothing on the way catches it)."""


def judge_and_commit(store, decision: DecisionRecord):
    """What the validator does once it has decided: record, follow, announce."""
    standing = record_decision(store, decision)
    pointer = follow_decision(store, standing, actor="validator-0", time=NOW)
    return announcement(standing, pointer), pointer


def replay(store, second_opinion: DecisionRecord):
    """The redelivered event: a recorded decision is followed; without one the version is judged again,
    and the second judgement may differ (another policy since the restart, a noisy latency)."""
    recorded = read_decision(store, "fraud", "v2")
    if recorded is None:
        return judge_and_commit(store, second_opinion)
    pointer = follow_decision(store, recorded, actor="validator-1", time=NOW)
    return announcement(recorded, pointer), pointer


@pytest.mark.parametrize("crash_before_write", [1, 2, 3])
@pytest.mark.parametrize("first_promotes", [True, False])
def test_a_crash_at_any_write_leaves_the_decision_and_the_pointer_agreeing(memory_store, crash_before_write,
                                                                            first_promotes):
    promote(memory_store, "v1", expected=None)
    writes = []

    def crash(key):
        writes.append(key)
        if len(writes) == crash_before_write:
            raise Crash

    memory_store.before_write = crash
    try:
        judge_and_commit(memory_store, record(promote_it=first_promotes))
    except Crash:
        pass
    memory_store.before_write = lambda key: None
    event, pointer = replay(memory_store, record(promote_it=not first_promotes))

    decision = read_decision(memory_store, "fraud", "v2")
    champion, _ = read_champion(memory_store, "fraud")
    assert (champion.version == "v2") == decision.promote
    assert champion == pointer
    assert isinstance(event, ModelPromoted if decision.promote else ModelRejected)
    if decision.promote:
        assert (champion.previous, event.previous_champion) == ("v1", "v1")


def test_two_validators_on_one_version_follow_the_decision_recorded_first(memory_store):
    promote(memory_store, "v1", expected=None)
    first, _ = judge_and_commit(memory_store, record(promote_it=True))
    second, pointer = judge_and_commit(memory_store, record(promote_it=False))
    assert isinstance(first, ModelPromoted) and second == first
    assert read_decision(memory_store, "fraud", "v2").promote and pointer.version == "v2"
    assert announcement_id(first, pointer) == announcement_id(second, pointer)


def test_a_promotion_followed_after_the_champion_moved_on_writes_nothing(memory_store):
    promote(memory_store, "v1", expected=None)
    record_decision(memory_store, record(promote_it=True))
    promote(memory_store, "v3", expected="v1", actor="ana@host")  # a person, before the decision was followed
    writes = len(memory_store.writes)
    pointer = follow_decision(memory_store, read_decision(memory_store, "fraud", "v2"), actor="validator-0", time=NOW)
    assert pointer.version == "v3" and len(memory_store.writes) == writes
    assert announcement(record(promote_it=True), pointer) is None


def shadow_state(version, actor):
    return ShadowState(model="fraud", version=version, champion_version="v1", started=NOW,
                       deadline=NOW + timedelta(seconds=60), offsets={"predictions.fraud": {0: 5}},
                       offline=record(version), actor=actor)


def test_of_two_validators_starting_one_shadow_the_first_stands_and_a_leftover_is_replaced(memory_store):
    first = start_shadow(memory_store, shadow_state("v2", "validator-0"))
    assert start_shadow(memory_store, shadow_state("v2", "validator-1")) == first
    assert read_shadow(memory_store, "fraud").actor == "validator-0"
    # A shadow of another version, left behind by a validator that decided it and stopped before ending it.
    later = start_shadow(memory_store, shadow_state("v3", "validator-1"))
    assert read_shadow(memory_store, "fraud") == later
    end_shadow(memory_store, "fraud", "v2")  # not v2's any more: stays
    assert read_shadow(memory_store, "fraud") == later
    end_shadow(memory_store, "fraud", "v3")
    end_shadow(memory_store, "fraud", "v3")
    assert read_shadow(memory_store, "fraud") is None
