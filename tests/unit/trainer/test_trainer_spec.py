from pathlib import Path

import pytest
import yaml

from services.trainer.spec import (
    EmbeddingRule,
    load_model_spec,
    load_model_specs,
    parse_model_spec,
    specs_for_dataset,
)
from streamml.specs import SpecError, load_dataset_spec

pytestmark = pytest.mark.unit
EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
MINIMAL = {"name": "fraud", "dataset": "transactions", "task": "binary"}


def problems_of(document: dict) -> str:
    with pytest.raises(SpecError) as caught:
        parse_model_spec(document, "model.yaml")
    return "\n".join(caught.value.problems)


def test_example_model_spec_targets_the_example_dataset_label():
    spec = load_model_spec(EXAMPLES / "models" / "transactions.yaml")
    dataset = load_dataset_spec(EXAMPLES / "datasets" / "transactions.yaml")
    assert spec.dataset == dataset.name
    assert dataset.label == "is_fraud" and spec.task == "binary"
    assert (spec.metric, spec.metric_mode) == ("auc", "max")


def test_defaults_pick_the_natural_metric_and_direction_per_task():
    assert (parse_model_spec({**MINIMAL, "task": "regression"}).metric_mode) == "min"
    assert parse_model_spec({**MINIMAL, "task": "regression"}).metric == "rmse"
    assert parse_model_spec({**MINIMAL, "task": "multiclass"}).metric == "log_loss"


@pytest.mark.parametrize(
    ("change", "field", "bad"),
    [
        ({"architecture": {"dropout": 1.5}}, "architecture.dropout", "1"),
        ({"architecture": {"normalisation": "group"}}, "architecture.normalisation", "'group'"),
        ({"architecture": {"hidden": [64, 0]}}, "architecture", "[0]"),
        ({"optimiser": {"name": "rmsprop"}}, "optimiser.name", "'rmsprop'"),
        ({"optimiser": {"lr": 0}}, "optimiser.lr", "0"),
        ({"schedule": {"kind": "linear"}}, "schedule.kind", "'linear'"),
        ({"batch_size": 0}, "batch_size", "1"),
        ({"early_stopping": {"patience": 0}}, "early_stopping.patience", "1"),
        ({"early_stopping": {"mode": "up"}}, "early_stopping.mode", "'up'"),
        ({"task": "ranking"}, "task", "'ranking'"),
        ({"architecture": {"embedding": {"rule": "fixed"}}}, "architecture.embedding", "dim"),
        ({"optimizer": {"lr": 0.1}}, "optimizer", "Extra inputs"),
    ],
)
def test_errors_name_the_field_and_the_bad_value(change, field, bad):
    problems = problems_of({**MINIMAL, **change})
    assert problems.startswith(f"{field}: ") or f"\n{field}: " in problems, problems
    assert bad in problems


def test_metric_must_be_one_the_task_computes():
    problems = problems_of({**MINIMAL, "early_stopping": {"metric": "rmse"}})
    assert "early_stopping.metric 'rmse'" in problems and "auc" in problems


def test_mode_contradicting_the_metric_is_rejected():
    problems = problems_of({**MINIMAL, "early_stopping": {"metric": "log_loss", "mode": "max"}})
    assert "early_stopping.mode 'max'" in problems and "use mode: min" in problems


def test_embedding_widths_follow_the_rule_within_bounds():
    fastai = EmbeddingRule(max_dim=16)
    assert [fastai.width(n) for n in (2, 5, 50, 10_000)] == [2, 4, 14, 16]
    fixed = EmbeddingRule(rule="fixed", dim=8)
    assert [fixed.width(n) for n in (3, 100)] == [3, 8]


def test_fingerprint_changes_with_training_parameters_only_when_they_change():
    spec = parse_model_spec(MINIMAL)
    assert spec.fingerprint() == parse_model_spec(dict(MINIMAL)).fingerprint()
    assert spec.fingerprint() != parse_model_spec({**MINIMAL, "seed": 1}).fingerprint()


def test_folder_loading_reports_every_bad_file_and_groups_by_dataset(tmp_path):
    (tmp_path / "a.yaml").write_text(yaml.safe_dump({**MINIMAL, "name": "a"}))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump({**MINIMAL, "name": "b", "dataset": "other"}))
    assert [s.name for s in specs_for_dataset(load_model_specs(tmp_path), "transactions")] == ["a"]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({**MINIMAL, "name": "a", "seed": -1}))
    (tmp_path / "d.yml").write_text("name: [unclosed")
    with pytest.raises(SpecError) as caught:
        load_model_specs(tmp_path)
    problems = caught.value.problems
    assert any(line.startswith("c.yaml: seed:") for line in problems)
    assert any(line.startswith("d.yml: not valid YAML") for line in problems)


# -- flavour lightgbm and search ----------------------------------------------------


def test_a_spec_without_flavour_or_search_keeps_the_fingerprint_it_had_before_they_existed():
    # The value before training, flavour, lightgbm and search were added: versions already trained keep their names.
    assert parse_model_spec(MINIMAL).fingerprint() == "41fa1340972e2f4f"
    assert parse_model_spec({**MINIMAL, "flavour": "lightgbm"}).fingerprint() != "41fa1340972e2f4f"


def test_a_lightgbm_spec_takes_its_parameters_and_refuses_the_networks():
    spec = parse_model_spec({**MINIMAL, "flavour": "lightgbm", "lightgbm": {"num_leaves": 15}})
    assert spec.gbm.num_leaves == 15 and spec.gbm.num_boost_round == 200
    assert parse_model_spec({**MINIMAL, "flavour": "lightgbm"}).gbm.num_leaves == 31
    assert "architecture, batch_size apply to flavour torch only" in problems_of(
        {**MINIMAL, "flavour": "lightgbm", "architecture": {"hidden": [8]}, "batch_size": 8})
    assert "lightgbm settings apply to flavour lightgbm only" in problems_of({**MINIMAL, "lightgbm": {}})
    assert "lightgbm.objective: Extra inputs are not permitted" in problems_of(
        {**MINIMAL, "flavour": "lightgbm", "lightgbm": {"objective": "huber"}})
    assert "flavour: Input should be 'torch' or 'lightgbm'" in problems_of({**MINIMAL, "flavour": "xgboost"})


@pytest.mark.parametrize("space, problem", [
    ({"task": {"choices": ["regression"]}}, "task cannot be searched"),
    ({"early_stopping.metric": {"choices": ["log_loss"]}}, "early_stopping.metric cannot be searched"),
    ({"Optimiser lr": {"low": 0.1, "high": 1.0}}, "'Optimiser lr' is not a dotted path"),
    ({"optimiser.lr": {"low": 1.0, "high": 0.1}}, "optimiser.lr: value: low 1.0 is greater than high 0.1"),
    ({"optimiser.lr": {"low": 0.0, "high": 0.1, "log": True}}, "log: true needs low > 0"),
    ({"optimiser.lr": {"low": 0.1}}, "optimiser.lr: high: Field required"),
    ({"optimiser.lr": {"low": -1.0, "high": 0.1}},
     "search.space.optimiser.lr = -1.0 makes an invalid spec: optimiser.lr: Input should be greater than 0"),
    ({"architecture.hidden": {"choices": [[8], [0]]}}, "architecture.hidden = [0] makes an invalid spec"),
    ({"lightgbm.num_leaves": {"low": 4, "high": 8}}, "lightgbm settings apply to flavour lightgbm only"),
])
def test_a_search_space_that_cannot_make_valid_trials_is_refused_naming_the_path(space, problem):
    assert problem in problems_of({**MINIMAL, "search": {"trials": 3, "space": space}})


def test_a_trial_is_the_spec_with_the_drawn_values_and_no_search():
    spec = parse_model_spec({**MINIMAL, "optimiser": {"name": "sgd"},
                             "search": {"trials": 3, "space": {"optimiser.lr": {"low": 0.01, "high": 0.1}}}})
    trial = spec.trial({"optimiser.lr": 0.05, "architecture.hidden": [8]})
    assert (trial.optimiser.name, trial.optimiser.lr, trial.architecture.hidden) == ("sgd", 0.05, [8])
    assert trial.search is None and spec.search.trials == 3


def test_a_training_function_takes_neither_the_lightgbm_flavour_nor_a_search():
    training = {"training": {"entrypoint": "fraud_models.fit:fit"}}
    assert "training applies to flavour torch only" in problems_of({**MINIMAL, **training, "flavour": "lightgbm"})
    assert "search runs trials of the trainer's own loop" in problems_of(
        {**MINIMAL, **training, "search": {"trials": 2, "space": {"seed": {"low": 1, "high": 9}}}})


def test_min_steps_gives_a_small_train_split_more_epochs_and_a_large_one_max_epochs():
    spec = parse_model_spec({**MINIMAL, "batch_size": 500, "max_epochs": 20, "min_steps": 1000})
    assert spec.epochs_for(25_000) == 20  # 50 batches: 20 epochs take the 1,000 steps; max_epochs rules
    assert spec.epochs_for(6_400) == 77  # 13 batches: 77 epochs for 1,000 steps
    assert spec.epochs_for(10) == 1000  # one batch per epoch
    assert parse_model_spec({**MINIMAL, "max_epochs": 20}).epochs_for(10) == 20  # unset: max_epochs only
    assert parse_model_spec({**MINIMAL, "min_steps": 5}).fingerprint() != parse_model_spec(MINIMAL).fingerprint()
    assert "min_steps: Input should be greater than or equal to 1 (got 0)" in problems_of({**MINIMAL, "min_steps": 0})


def test_min_steps_belongs_to_the_trainers_loop():
    assert "min_steps applies to flavour torch only" in problems_of({**MINIMAL, "flavour": "lightgbm", "min_steps": 9})
    assert "min_steps sets the epochs of the trainer's loop" in problems_of(
        {**MINIMAL, "training": {"entrypoint": "fraud_models.fit:fit"}, "min_steps": 9})
