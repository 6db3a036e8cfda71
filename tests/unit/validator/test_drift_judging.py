"""A candidate built for a drift is judged on post-drift rows, and the decision says which and how many."""

from datetime import UTC, datetime

import pytest
from test_decide import POLICY, evaluation

from services.validator.decide import decide
from services.validator.policy import PolicyError, parse_policy
from services.validator.testsplit import judged_rows
from streamml.manifest import DriftBuild
from streamml.registry.decisions import JudgedRows

pytestmark = pytest.mark.unit
POINT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DRIFT = DriftBuild(event_id="e-1", model="fraud", kind="performance", window_start=POINT, window_end=POINT,
                   point=POINT, training_window="since_drift", rows_before=0, rows_after=3000, landed_rows_after=3000)


def test_the_test_split_of_a_drift_build_is_post_drift_rows_and_names_the_drift(manifest_of):
    judged = judged_rows(manifest_of().model_copy(update={"drift": DRIFT}), rows=300)
    assert judged == JudgedRows(dataset="tx", dataset_version=3, rows=300, after_drift=True, drift_event="e-1",
                                drift_point=POINT)
    assert judged.text == "test split of tx v3, 300 rows, all landed after the drift at 2026-03-01 12:00:00 (event e-1)"
    plain = judged_rows(manifest_of(), rows=300)
    assert (plain.after_drift, plain.drift_event, plain.text) == (False, None, "test split of tx v3, 300 rows")


def test_too_few_post_drift_rows_reject_a_drift_candidate():
    policy = POLICY.model_copy(update={"min_rows_after_drift": 500})
    few = JudgedRows(dataset="tx", dataset_version=3, rows=300, after_drift=True, drift_event="e-1", drift_point=POINT)
    decision = decide(evaluation(auc=0.90), evaluation(auc=0.87), policy, few)
    assert not decision.promote
    assert decision.reasons == ["300 post-drift test rows < min_rows_after_drift 500"]
    enough = few.model_copy(update={"rows": 500})
    decision = decide(evaluation(auc=0.90), evaluation(auc=0.87), policy, enough)
    assert decision.promote and "500 post-drift test rows >= min_rows_after_drift 500" in decision.notes


def test_the_minimum_applies_to_drift_candidates_only_and_the_count_is_noted_without_one():
    policy = POLICY.model_copy(update={"min_rows_after_drift": 500})
    plain = JudgedRows(dataset="tx", dataset_version=3, rows=300, after_drift=False)
    assert decide(evaluation(auc=0.90), evaluation(auc=0.87), policy, plain).promote
    drift = plain.model_copy(update={"after_drift": True, "drift_event": "e-1", "drift_point": POINT})
    assert "judged on 300 post-drift test rows" in decide(evaluation(auc=0.90), evaluation(auc=0.87), POLICY,
                                                          drift).notes


def test_min_rows_after_drift_is_validated_naming_the_field():
    assert parse_policy({"model": "fraud", "min_rows_after_drift": 200}).min_rows_after_drift == 200
    for bad in (0, -5, "many"):
        with pytest.raises(PolicyError) as caught:
            parse_policy({"model": "fraud", "min_rows_after_drift": bad})
        assert len(caught.value.problems) == 1 and caught.value.problems[0].startswith("min_rows_after_drift: ")
