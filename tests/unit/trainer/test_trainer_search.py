"""A model spec's search: every trial recorded, pruning, failed trials, and the best trial as the candidate."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from services.trainer.candidates import train_candidate
from services.trainer.search import run_search
from services.trainer.spec import parse_model_spec
from services.trainer.train import TrainingInterrupted

pytestmark = pytest.mark.unit
SPACE_LR = {"optimiser.lr": {"low": 0.001, "high": 1.0, "log": True}}


def searched(search: dict, **overrides: object):
    return parse_model_spec({"name": "tiny", "dataset": "synthetic", "task": "binary", "seed": 4,
                             "search": search, **overrides})


def climbing(trial_spec, report):
    """A stand-in for training whose auc is the trial's lr, the same at every epoch."""
    for epoch in range(1, 6):
        report(epoch, trial_spec.optimiser.lr)
    return SimpleNamespace(metrics={"auc": trial_spec.optimiser.lr, "log_loss": 1 - trial_spec.optimiser.lr})


def test_the_best_trial_is_kept_and_every_trial_is_recorded():
    spec = searched({"trials": 8, "space": SPACE_LR, "pruning": False})
    outcome = run_search(spec, climbing)
    complete = [t for t in outcome.trials if t.state == "complete"]
    assert len(outcome.trials) == len(complete) == 8
    best = max(complete, key=lambda t: t.value)
    assert outcome.best_trial == best.number and outcome.best_spec.optimiser.lr == best.params["optimiser.lr"]
    assert outcome.best_result.metrics["auc"] == best.value and outcome.best_spec.search is None
    card = outcome.card()
    assert card["best_trial"] == best.number and card["pruner"] == "none" and len(card["trials"]) == 8
    assert all(set(t) >= {"number", "state", "params", "metrics", "value"} for t in card["trials"])
    # Seeded: the same spec draws the same trials.
    assert [t.params for t in run_search(spec, climbing).trials] == [t.params for t in outcome.trials]


def test_trials_that_trail_the_median_are_pruned_and_never_chosen():
    outcome = run_search(searched({"trials": 10, "space": SPACE_LR}), climbing)
    pruned = [t for t in outcome.trials if t.state == "pruned"]
    assert pruned, [(t.state, t.value) for t in outcome.trials]
    assert all(t.metrics is None and t.steps < 5 for t in pruned)
    best = next(t for t in outcome.trials if t.number == outcome.best_trial)
    assert best.state == "complete" and all(t.value < best.value for t in pruned)


def test_a_failing_trial_is_recorded_and_the_search_goes_on():
    def fragile(trial_spec, report):
        if trial_spec.optimiser.lr > 0.1:
            raise RuntimeError(f"diverged at lr {trial_spec.optimiser.lr}")
        return climbing(trial_spec, report)

    outcome = run_search(searched({"trials": 8, "space": SPACE_LR, "pruning": False}), fragile)
    failed = [t for t in outcome.trials if t.state == "failed"]
    assert failed and all("RuntimeError: diverged at lr" in t.error for t in failed)
    assert outcome.best_spec.optimiser.lr <= 0.1


def test_a_search_where_every_trial_fails_says_so():
    def broken(trial_spec, report):
        raise RuntimeError("no")

    with pytest.raises(ValueError, match=r"no trial of the search of model 'tiny' gave a finite auc: trial 0 failed"):
        run_search(searched({"trials": 2, "space": SPACE_LR}), broken)


def test_a_lightgbm_search_puts_every_trial_in_the_card_and_the_best_trials_spec_in_params(binary):
    spec = searched({"trials": 4, "space": {"lightgbm.num_leaves": {"low": 2, "high": 32},
                                            "lightgbm.learning_rate": {"low": 0.05, "high": 0.5, "log": True}}},
                    flavour="lightgbm", lightgbm={"num_boost_round": 30}, early_stopping={"patience": 5})
    files, card, summary = train_candidate(spec, binary.manifest, binary.layout, binary.train, binary.validation,
                                           device="cpu", threads=1, should_stop=lambda: False,
                                           model_version="d1-x", code_version="test")
    search = card["search"]
    assert len(search["trials"]) == 4 and summary["best_trial"] == search["best_trial"]
    best = search["trials"][search["best_trial"]]
    assert card["metrics"] == best["metrics"] and card["flavour"] == "lightgbm"
    assert card["params"]["lightgbm"]["num_leaves"] == best["params"]["lightgbm.num_leaves"]
    assert card["lightgbm"]["params"]["learning_rate"] == best["params"]["lightgbm.learning_rate"]
    assert card["params"]["search"] is None and "architecture" not in card["params"] and search["space"]["lightgbm.num_leaves"]["high"] == 32
    finished = [t["value"] for t in search["trials"] if t["state"] == "complete"]
    assert best["value"] == max(finished)
    assert [file.name for file in files] == ["model.lightgbm.txt", "card.json"]


def test_a_torch_search_draws_lists_of_widths_and_keeps_the_best_network(binary):
    spec = searched({"trials": 2, "space": {"architecture.hidden": {"choices": [[4], [16, 8]]}}, "pruning": False},
                    max_epochs=2, batch_size=256, early_stopping={"patience": None})
    files, card, _ = train_candidate(spec, binary.manifest, binary.layout, binary.train, binary.validation,
                                     device="cpu", threads=1, should_stop=lambda: False,
                                     model_version="d1-x", code_version="test")
    trials = card["search"]["trials"]
    best = trials[card["search"]["best_trial"]]
    assert {tuple(t["params"]["architecture.hidden"]) for t in trials} <= {(4,), (16, 8)}
    assert card["params"]["architecture"]["hidden"] == best["params"]["architecture.hidden"]
    assert card["flavour"] == "torch" and len(card["history"]) == 2
    assert [file.name for file in files] == ["model.pt2", "state_dict.pt", "card.json"]


def test_a_stop_request_ends_the_search_instead_of_failing_a_trial(binary):
    spec = searched({"trials": 3, "space": {"lightgbm.num_leaves": {"low": 2, "high": 8}}},
                    flavour="lightgbm", lightgbm={"num_boost_round": 20})
    with pytest.raises(TrainingInterrupted):
        train_candidate(spec, binary.manifest, binary.layout, binary.train, binary.validation, device="cpu",
                        threads=1, should_stop=lambda: True, model_version="d1-x", code_version="test")
