"""The shadow phase's pure parts: the policy section, joining live answers with labels, the live rules."""

from datetime import UTC, datetime

import numpy as np
import pytest

from services.validator.live import Answers, join_live, judge_live
from services.validator.policy import PolicyError, model_problems, parse_policy

pytestmark = pytest.mark.unit
T0, T1 = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 0, 5, tzinfo=UTC)
RULES = [{"metric": "auc", "max_regression": 0.02}, {"max_disagreement": 0.3}, {"max_latency_p95_ms": 20}]


def shadow_policy(**overrides):
    section = {"min_predictions": 4, "max_duration_s": 600, "rules": RULES, **overrides}
    return parse_policy({"model": "fraud", "shadow": section}).shadow


def test_the_shadow_section_is_parsed_and_each_rule_names_one_kind():
    policy = shadow_policy()
    assert (policy.min_predictions, policy.max_duration_s) == (4, 600)
    assert [rule.metric for rule in policy.rules] == ["auc", None, None]
    with pytest.raises(PolicyError) as caught:
        parse_policy({"model": "fraud", "shadow": {"min_predictions": 0, "max_duration_s": 1, "rules": [
            {"metric": "auc"}, {"max_disagreement": 0.1, "max_latency_p95_ms": 5}, {"max_disagreement": 2}]}})
    problems = " | ".join(caught.value.problems)
    assert "shadow.min_predictions" in problems and "shadow.rules.0" in problems, problems
    assert "shadow.rules.1" in problems and "shadow.rules.2.max_disagreement" in problems, problems
    regression = parse_policy({"model": "fraud", "shadow": {"min_predictions": 1, "max_duration_s": 1, "rules": [
        {"metric": "auc", "max_regression": 0.1}, {"max_disagreement": 0.1}]}})
    found = model_problems(regression, "regression")
    assert any(p.startswith("shadow.rules[0].auc") for p in found), found
    assert any(p.startswith("shadow.rules[1].max_disagreement") for p in found), found


def test_only_requests_both_versions_answered_and_that_have_a_label_are_joined_once_each():
    champion = Answers(["a", "b", "c", "d", "a"], np.array([0.1, 0.2, 0.3, 0.4, 0.9]))
    shadow = Answers(["c", "a", "b", "e"], np.array([0.7, 0.5, 0.6, 0.8]), np.array([1.0, 2.0, 3.0, 4.0]))
    joined = join_live(champion, shadow, (["b", "a", "e", "d", "b"], [1, 0, 1, 0, 0]))
    # In feedback order; "a" counts once (its first answer), "c" has no label, "d" no shadow, "e" no champion.
    assert joined.rows == 2 and joined.labels == [1, 0]
    assert joined.champion.tolist() == [0.2, 0.1] and joined.shadow.tolist() == [0.6, 0.5]
    assert joined.latency_ms.tolist() == [3.0, 2.0]


def live(champion, shadow, labels, latency=None):
    ids = [str(i) for i in range(len(labels))]
    latency = np.full(len(labels), 5.0) if latency is None else np.asarray(latency, dtype=float)
    return join_live(Answers(ids, np.asarray(champion, float)), Answers(ids, np.asarray(shadow, float), latency),
                     (ids, labels))


def test_a_shadow_worse_live_fails_with_every_rule_and_its_live_value():
    labels = [1, 0, 1, 0, 1, 0]
    good, bad = [0.9, 0.1, 0.8, 0.2, 0.7, 0.3], [0.1, 0.9, 0.2, 0.8, 0.3, 0.7]
    decision, evidence = judge_live("binary", None, live(good, bad, labels, [5, 5, 5, 5, 5, 50]), shadow_policy(),
                                    started=T0, ended=T1, timed_out=False)
    assert not decision.promote and evidence.rows == 6
    reasons = " | ".join(decision.reasons)
    assert "live auc 0 vs champion 1: 1 worse (max_regression 0.02)" in reasons, reasons
    assert "live disagreement 1 > max_disagreement 0.3" in reasons, reasons
    assert "live latency p95 38.75 ms > max_latency_p95_ms 20" in reasons, reasons
    assert (evidence.candidate["auc"], evidence.champion["auc"], evidence.disagreement) == (0.0, 1.0, 1.0)


def test_a_shadow_as_good_live_is_promoted_with_the_values_in_notes():
    good = [0.9, 0.1, 0.8, 0.2, 0.7, 0.3]
    # Labels as an application may send a binary model's: booleans' text.
    decision, evidence = judge_live("binary", None, live(good, good, ["true", "false"] * 3), shadow_policy(),
                                    started=T0, ended=T1, timed_out=False)
    assert decision.promote and decision.reasons == [] and evidence.candidate["auc"] == 1.0
    notes = " | ".join(decision.notes)
    assert "judged on 6 labelled live requests" in notes and "live auc 1 vs champion 1: no worse" in notes


def test_too_little_evidence_by_the_deadline_is_a_rejection_with_that_reason():
    decision, evidence = judge_live("binary", None, live([0.9, 0.1], [0.9, 0.1], [1, 0]), shadow_policy(),
                                    started=T0, ended=T1, timed_out=True)
    assert not decision.promote and evidence.rows == 2
    assert decision.reasons == ["not enough live evidence: 2 labelled requests < min_predictions 4 within "
                                "max_duration_s 600 s"]
    assert any(note.startswith("live auc") for note in decision.notes)  # shown, not judged


def test_multiclass_disagreement_is_on_the_predicted_class_and_labels_are_class_values():
    champion = [[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.8, 0.1, 0.1]]
    shadow = [[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.8, 0.1, 0.1], [0.8, 0.1, 0.1]]
    decision, evidence = judge_live(
        "multiclass", ["low", "mid", "high"], live(champion, shadow, ["low", "mid", "high", "unknown"]),
        shadow_policy(min_predictions=3, rules=[{"max_disagreement": 0.3}]), started=T0, ended=T1, timed_out=False)
    assert evidence.rows == 3 and evidence.disagreement == pytest.approx(1 / 3)
    assert not decision.promote and "1 live labels could not be read" in " | ".join(decision.notes)
