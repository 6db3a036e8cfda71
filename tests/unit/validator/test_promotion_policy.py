from pathlib import Path

import pytest

from services.validator.policy import PolicyError, load_policies, load_policy, model_problems, parse_policy

pytestmark = pytest.mark.unit
EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "policies" / "transactions.yaml"


def problems_of(document: object) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        parse_policy(document)
    return caught.value.problems


def test_example_policy_loads_with_every_rule_kind():
    policy = load_policy(EXAMPLE)
    assert policy.model == "fraud"
    assert policy.min["auc"] == 0.80 and policy.max["log_loss"] == 0.35
    assert policy.min_improvement and policy.max_regression
    assert [s.feature for s in policy.slices] == ["channel"]
    assert policy.latency is not None and policy.latency.batch_size == 256


def test_policy_is_frozen():
    policy = parse_policy({"model": "fraud", "min": {"auc": 0.8}})
    with pytest.raises(ValueError):
        policy.model = "other"


def test_a_single_slice_mapping_is_accepted():
    policy = parse_policy({"model": "fraud", "slices": {"feature": "channel", "min": {"auc": 0.7}}})
    assert policy.slices[0].feature == "channel" and policy.slices[0].min == {"auc": 0.7}


def test_unknown_metric_and_unknown_key_name_the_field():
    problems = problems_of({"model": "fraud", "min": {"aucc": 0.8}, "ceiling": {"rmse": 1}})
    assert any(p.startswith("min.aucc") and "'aucc'" in p for p in problems)
    assert any(p.startswith("ceiling") for p in problems)


def test_bounds_in_the_wrong_direction_are_rejected_with_the_fix():
    problems = problems_of({"model": "fraud", "min": {"rmse": 1.0, "auc": 1.5}, "max": {"accuracy": 0.9, "mae": -1}})
    assert "min.rmse: rmse is better when lower, so a floor does not guard it; put it under max" in problems
    assert "min.auc: 1.5 is outside [0, 1], where auc lies" in problems
    assert any(p.startswith("max.accuracy:") and "put it under min" in p for p in problems)
    assert any(p.startswith("max.mae:") and "negative" in p for p in problems)


def test_champion_distances_must_not_be_negative():
    problems = problems_of({"model": "fraud", "max_regression": {"auc": -0.1}, "min_improvement": {"rmse": -1}})
    assert any(p.startswith("max_regression.auc: -0.1 is negative") for p in problems)
    assert any(p.startswith("min_improvement.rmse: -1") for p in problems)


def test_slice_problems_name_the_slice_index():
    problems = problems_of({"model": "fraud", "slices": [
        {"feature": "channel", "min": {"auc": 0.7}},
        {"feature": "country", "max": {"auc": 0.9}},
        {"feature": "hour"},
        {"feature": "Bad-Name", "min": {"auc": 0.5}, "min_rows": 0},
    ]})
    assert any(p.startswith("slices.1.max.auc:") for p in problems)
    assert any(p.startswith("slices.2.min/max:") and "'hour'" in p for p in problems)
    assert any(p.startswith("slices.3.feature") for p in problems)
    assert any(p.startswith("slices.3.min_rows") for p in problems)


def test_a_feature_sliced_twice_is_rejected():
    problems = problems_of({"model": "fraud", "slices": [
        {"feature": "channel", "min": {"auc": 0.7}}, {"feature": "channel", "max": {"log_loss": 0.6}}]})
    assert problems == ["slices: feature 'channel' appears twice; merge its rules"]


def test_latency_budget_must_be_positive():
    problems = problems_of({"model": "fraud", "latency": {"p95_ms": 0, "batch_size": 0}})
    assert any(p.startswith("latency.p95_ms") for p in problems)
    assert any(p.startswith("latency.batch_size") for p in problems)


def test_not_a_mapping_and_missing_model():
    assert "mapping" in problems_of(["model", "fraud"])[0]
    assert any(p.startswith("model:") for p in problems_of({"min": {"auc": 0.5}}))


def test_folder_reports_bad_files_and_duplicate_models(tmp_path):
    (tmp_path / "a.yaml").write_text(EXAMPLE.read_text())
    (tmp_path / "b.yml").write_text("model: fraud\n")
    (tmp_path / "c.yaml").write_text("model: churn\nmin: {rmse: 2}\n")
    (tmp_path / "d.yaml").write_text("model: [unclosed\n")
    with pytest.raises(PolicyError) as caught:
        load_policies(tmp_path)
    problems = caught.value.problems
    assert "b.yml: the policy of model 'fraud' is declared twice" in problems
    assert any(p.startswith("c.yaml: min.rmse") for p in problems)
    assert any(p.startswith("d.yaml: not valid YAML") for p in problems)
    (tmp_path / "b.yml").unlink()
    (tmp_path / "c.yaml").write_text("model: churn\nmax: {rmse: 2}\n")
    (tmp_path / "d.yaml").unlink()
    assert sorted(load_policies(tmp_path)) == ["churn", "fraud"]


def test_recall_per_class_is_a_multiclass_floor_in_the_unit_interval():
    policy = parse_policy({"model": "grade", "min": {"recall_per_class": 0.5}, "max_regression": {"recall_per_class": 0.1}})
    assert model_problems(policy, "multiclass") == []
    assert model_problems(policy, "binary") == [
        "min.recall_per_class: a binary model is judged on auc, log_loss, accuracy, never recall_per_class",
        "max_regression.recall_per_class: a binary model is judged on auc, log_loss, accuracy, never recall_per_class"]
    assert "min.recall_per_class: 1.5 is outside [0, 1], where recall_per_class lies" in problems_of(
        {"model": "grade", "min": {"recall_per_class": 1.5}})
