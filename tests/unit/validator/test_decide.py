import pytest

from services.validator.decide import Decision, decide
from services.validator.policy import parse_policy
from streamml.registry.decisions import Evaluation, Latency, SliceEvaluation

pytestmark = pytest.mark.unit

POLICY = parse_policy({
    "model": "fraud",
    "min": {"auc": 0.80},
    "max": {"log_loss": 0.35},
    "max_regression": {"log_loss": 0.02},
    "min_improvement": {"auc": 0.01},
    "slices": [{"feature": "channel", "min": {"auc": 0.70}, "min_rows": 100}],
    "latency": {"p95_ms": 20, "batch_size": 256},
})


def evaluation(auc=0.90, log_loss=0.20, channel=None, p95=5.0, batch=256) -> Evaluation:
    channel = channel if channel is not None else {"web": (500, 0.88), "pos": (400, 0.91)}
    return Evaluation(
        rows=1000,
        metrics={"auc": auc, "log_loss": log_loss, "accuracy": 0.95},
        slices={"channel": {value: SliceEvaluation(rows=rows, metrics={"auc": score})
                            for value, (rows, score) in channel.items()}},
        latency=None if p95 is None else Latency(p50_ms=p95 / 2, p95_ms=p95, batch_size=batch, calls=50),
    )


def test_better_model_is_promoted_and_notes_say_why():
    decision = decide(evaluation(auc=0.90), evaluation(auc=0.87), POLICY)
    assert decision == Decision(promote=True, reasons=[], notes=decision.notes)
    assert "auc 0.9 >= floor 0.8" in decision.notes
    assert "auc 0.9 improves on champion 0.87 by 0.03 (min_improvement 0.01)" in decision.notes
    assert "latency p95 5 ms <= budget 20 ms at batch 256" in decision.notes
    assert decision.summary == "; ".join(decision.notes)


def test_worse_model_is_rejected_with_every_failed_rule():
    candidate = evaluation(auc=0.71, log_loss=0.40, channel={"web": (500, 0.65), "atm": (300, 0.72)}, p95=31.25)
    champion = evaluation(auc=0.86, log_loss=0.30)
    decision = decide(candidate, champion, POLICY)
    assert not decision.promote
    assert decision.reasons == [
        "auc 0.71 < floor 0.8",
        "log_loss 0.4 > ceiling 0.35",
        "auc 0.65 < floor 0.7 on channel=web (500 rows)",
        "latency p95 31.25 ms > budget 20 ms at batch 256",
        "auc 0.71 is 0.15 worse than champion 0.86 (min_improvement 0.01)",
        "log_loss 0.4 is 0.1 worse than champion 0.3 (max_regression 0.02)",
    ]
    assert "auc 0.72 >= floor 0.7 on channel=atm (300 rows)" in decision.notes
    assert decision.summary == "; ".join(decision.reasons)


def test_first_model_needs_only_the_absolute_rules():
    decision = decide(evaluation(auc=0.81), None, POLICY)
    assert decision.promote
    assert "no champion yet: max_regression and min_improvement do not apply" in decision.notes
    assert not decide(evaluation(auc=0.79), None, POLICY).promote


def test_regression_against_the_champion_on_a_lower_is_better_metric():
    policy = parse_policy({"model": "fraud", "max_regression": {"log_loss": 0.02}})
    assert decide(evaluation(log_loss=0.215), evaluation(log_loss=0.20), policy).promote
    assert decide(evaluation(log_loss=0.15), evaluation(log_loss=0.20), policy).promote
    rejected = decide(evaluation(log_loss=0.23), evaluation(log_loss=0.20), policy)
    assert rejected.reasons == ["log_loss 0.23 is 0.03 worse than champion 0.2 (max_regression 0.02)"]


def test_regression_on_a_higher_is_better_metric():
    policy = parse_policy({"model": "fraud", "max_regression": {"auc": 0.005}})
    assert decide(evaluation(auc=0.896), evaluation(auc=0.9), policy).promote
    assert decide(evaluation(auc=0.89), evaluation(auc=0.9), policy).reasons == [
        "auc 0.89 is 0.01 worse than champion 0.9 (max_regression 0.005)"]


def test_min_improvement_threshold_is_inclusive_despite_float_noise():
    policy = parse_policy({"model": "fraud", "min_improvement": {"auc": 0.01, "log_loss": 0.0}})
    # 0.82 - 0.81 is 0.009999999999999898 in floats.
    assert decide(evaluation(auc=0.82, log_loss=0.2), evaluation(auc=0.81, log_loss=0.2), policy).promote
    decision = decide(evaluation(auc=0.8295, log_loss=0.21), evaluation(auc=0.82, log_loss=0.2), policy)
    assert decision.reasons == [
        "auc 0.8295 improves on champion 0.82 by 0.0095 (min_improvement 0.01)",
        "log_loss 0.21 is 0.01 worse than champion 0.2 (min_improvement 0)",
    ]


def test_numbers_get_the_digits_that_tell_them_apart():
    policy = parse_policy({"model": "fraud", "min": {"auc": 0.8}})
    assert decide(evaluation(auc=0.79999), None, policy).reasons == ["auc 0.79999 < floor 0.8"]


def test_slices_below_min_rows_or_undefined_are_noted_not_judged():
    candidate = evaluation(channel={"web": (500, 0.9), "atm": (40, 0.1), "phone": (300, float("nan"))})
    decision = decide(candidate, None, POLICY)
    assert decision.promote
    assert "channel=atm not judged: 40 rows < min_rows 100" in decision.notes
    assert "auc is undefined on channel=phone (300 rows): not judged" in decision.notes


def test_missing_slice_metrics_fail():
    candidate = Evaluation(rows=10, metrics={"auc": 0.9, "log_loss": 0.1},
                           latency=Latency(p50_ms=1, p95_ms=1, batch_size=256, calls=5))
    assert decide(candidate, None, POLICY).reasons == [
        "slice metrics for channel were not computed; the policy has rules for them"]


@pytest.mark.parametrize(("p95", "batch", "reason"), [
    (None, 256, "latency was not measured; the budget is p95 20 ms at batch 256"),
    (5.0, 64, "latency was measured at batch 64; the budget is for batch 256"),
    (20.5, 256, "latency p95 20.5 ms > budget 20 ms at batch 256"),
])
def test_latency_budget(p95, batch, reason):
    assert decide(evaluation(p95=p95, batch=batch), None, POLICY).reasons == [reason]


def test_latency_exactly_at_budget_passes():
    assert decide(evaluation(p95=20.0), None, POLICY).promote


def test_undefined_or_missing_metrics_fail_rather_than_pass():
    policy = parse_policy({"model": "fraud", "min": {"auc": 0.8}, "max": {"rmse": 1.0},
                           "max_regression": {"accuracy": 0.01}})
    candidate = Evaluation(rows=5, metrics={"auc": float("nan"), "accuracy": 0.9})
    champion = Evaluation(rows=5, metrics={"auc": 0.9})
    assert decide(candidate, champion, policy).reasons == [
        "auc is undefined on the test split",
        "rmse is not among the candidate's metrics (it has: accuracy, auc)",
        "cannot compare accuracy with the champion: candidate has 0.9, champion has none",
    ]


def test_a_policy_without_rules_promotes_anything():
    assert decide(Evaluation(rows=0, metrics={}), None, parse_policy({"model": "fraud"})).promote


def test_evaluation_stores_undefined_metrics_as_null_and_round_trips():
    original = evaluation(auc=float("nan"), channel={"web": (3, float("nan"))})
    assert original.metrics["auc"] is None
    assert original.slices["channel"]["web"].metrics["auc"] is None
    text = original.model_dump_json()
    assert "NaN" not in text
    assert Evaluation.model_validate_json(text) == original


def multiclass(recalls: dict[str, float | None], accuracy=0.8) -> Evaluation:
    return Evaluation(rows=900, metrics={"accuracy": accuracy, "log_loss": 0.5,
                                         **{f"recall[{name}]": value for name, value in recalls.items()}})


def test_recall_per_class_is_judged_on_every_class_and_names_the_one_that_fails():
    policy = parse_policy({"model": "grade", "min": {"recall_per_class": 0.6},
                           "max_regression": {"recall_per_class": 0.05}})
    champion = multiclass({"low": 0.8, "mid": 0.7, "high": 0.9})
    good = decide(multiclass({"low": 0.82, "mid": 0.66, "high": 0.88}), champion, policy)
    assert good.promote and "recall[mid] 0.66 >= floor 0.6" in good.notes
    assert "recall[high] 0.88 is 0.02 worse than champion 0.9 (max_regression 0.05)" in good.notes
    bad = decide(multiclass({"low": 0.9, "mid": 0.4, "high": 0.95}, accuracy=0.85), champion, policy)
    assert bad.reasons == ["recall[mid] 0.4 < floor 0.6",
                           "recall[mid] 0.4 is 0.3 worse than champion 0.7 (max_regression 0.05)"]


def test_a_class_without_test_rows_is_not_judged_but_an_unmeasured_recall_fails():
    policy = parse_policy({"model": "grade", "min": {"recall_per_class": 0.6},
                           "min_improvement": {"recall_per_class": 0.0}})
    candidate = multiclass({"low": 0.8, "mid": float("nan"), "high": 0.9})
    decision = decide(candidate, multiclass({"low": 0.7, "mid": 0.7, "high": 0.9}), policy)
    assert decision.promote
    assert "recall[mid] is undefined on the test split: not judged" in decision.notes
    assert "recall[mid] not compared with the champion: candidate has none, champion has 0.7" in decision.notes
    unmeasured = decide(Evaluation(rows=9, metrics={"accuracy": 0.8}), Evaluation(rows=9, metrics={}), policy)
    assert unmeasured.reasons == [
        "recall_per_class is not among the candidate's metrics (it has: accuracy)",
        "cannot compare recall_per_class with the champion: candidate has none, champion has none"]
