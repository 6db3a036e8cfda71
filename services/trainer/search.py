"""Several candidates per dataset version: the spec's ``search``, run with Optuna.

    outcome = run_search(spec, fit)      # fit(trial_spec, report) -> a result with .metrics
    outcome.best_spec, outcome.best_result, outcome.card()

Each trial is the spec with values drawn from ``search.space`` (TPE, seeded
with the spec's seed, so the same spec draws the same values). ``fit``
calls ``report(step, metric)`` after every epoch or boosting round; with
``pruning`` a trial whose metric trails the median of earlier trials at the
same step is stopped there (the first two trials always run to the end).
The best trial is the one with the best validation metric of the spec's
``early_stopping.metric``; its model is the candidate the validator judges.
A trial that fails is recorded with its error and the search goes on; a
stop request (SIGTERM) ends the search, and the redelivered event runs it
again from the first trial.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import optuna

from services.trainer.search_spec import Choice, Range
from services.trainer.spec import ModelSpec
from services.trainer.train import TrainingInterrupted, is_improvement

log = logging.getLogger("streamml.trainer")
optuna.logging.set_verbosity(optuna.logging.WARNING)  # each trial is logged here, as structured JSON

R = TypeVar("R")
Report = Callable[[int, float], None]
# Trials that always run to the end, so pruning has a median to compare with.
UNPRUNED_TRIALS = 2


@dataclass
class TrialRecord:
    number: int
    state: str  # complete, pruned, failed
    params: dict[str, Any]
    metrics: dict[str, float] | None = None  # validation metrics of a complete trial
    value: float | None = None  # the spec's metric: at the end, or where the trial was pruned
    steps: int = 0  # epochs or boosting rounds run
    seconds: float = 0.0
    error: str | None = None


@dataclass
class SearchOutcome(Generic[R]):
    spec: ModelSpec  # the spec that declared the search
    best_spec: ModelSpec
    best_result: R
    best_trial: int
    trials: list[TrialRecord] = field(default_factory=list)

    def card(self) -> dict[str, Any]:
        """The card's ``search``: every trial's parameters and metrics, and which one won."""
        search = self.spec.search
        return {
            "metric": self.spec.metric,
            "mode": self.spec.metric_mode,
            "trials_requested": search.trials,
            "timeout_s": search.timeout_s,
            "space": {path: distribution.model_dump(mode="json") for path, distribution in search.space.items()},
            "sampler": f"tpe (seed {self.spec.seed})",
            "pruner": "median" if search.pruning else "none",
            "best_trial": self.best_trial,
            "trials": [
                {key: value for key, value in vars(record).items() if value is not None or key == "metrics"}
                for record in self.trials
            ],
        }


def run_search(
    spec: ModelSpec,
    fit: Callable[[ModelSpec, Report], R],
    metrics_of: Callable[[R], dict[str, float]] = lambda result: result.metrics,
    context: dict | None = None,
) -> SearchOutcome[R]:
    if spec.search is None:
        raise ValueError(f"model {spec.name!r} declares no search")
    search = spec.search
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=UNPRUNED_TRIALS) if search.pruning
              else optuna.pruners.NopPruner())
    study = optuna.create_study(direction="maximize" if spec.metric_mode == "max" else "minimize",
                                sampler=optuna.samplers.TPESampler(seed=spec.seed), pruner=pruner)
    trials: list[TrialRecord] = []
    best: dict[str, Any] = {}

    def objective(trial: optuna.Trial) -> float:
        params = {path: _suggest(trial, path, distribution) for path, distribution in search.space.items()}
        record = TrialRecord(trial.number, "running", params)
        trials.append(record)
        started = time.perf_counter()

        def report(step: int, value: float) -> None:
            record.steps, record.value = step, value
            if math.isfinite(value):
                trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"{spec.metric} {value:.6g} at step {step} trails the median")

        try:
            result = fit(spec.trial(params), report)
        except optuna.TrialPruned:
            record.state = "pruned"
            raise
        except TrainingInterrupted:
            raise
        except Exception as error:  # noqa: BLE001 - one failed trial does not end the search
            record.state, record.error = "failed", f"{type(error).__name__}: {error}"
            log.warning("trial failed", extra={**(context or {}), "trial": trial.number, "params": params,
                                               "error": record.error})
            return math.nan  # Optuna records a NaN objective as a failed trial
        finally:
            record.seconds = time.perf_counter() - started
            if record.state != "running":
                log.info("trial", extra={**(context or {}), "trial": trial.number, "state": record.state,
                                         "params": params, "steps": record.steps})
        metrics = metrics_of(result)
        record.state, record.metrics, record.value = "complete", dict(metrics), metrics[spec.metric]
        log.info("trial", extra={**(context or {}), "trial": trial.number, "state": "complete", "params": params,
                                 "metrics": record.metrics, "seconds": round(record.seconds, 3)})
        if math.isfinite(record.value) and is_improvement(record.value, best.get("value"), spec.metric_mode):
            # Only the best model so far is kept in memory.
            best.update(value=record.value, trial=trial.number, spec=spec.trial(params), result=result)
        return record.value

    study.optimize(objective, n_trials=search.trials, timeout=search.timeout_s, catch=())
    if not best:
        summary = "; ".join(f"trial {t.number} {t.state}" + (f" ({t.error})" if t.error else "") for t in trials)
        raise ValueError(f"no trial of the search of model {spec.name!r} gave a finite {spec.metric}: {summary}")
    return SearchOutcome(spec, best["spec"], best["result"], best["trial"], trials)


def _suggest(trial: optuna.Trial, path: str, distribution: Range | Choice) -> Any:
    if isinstance(distribution, Choice):
        choices = distribution.choices
        if all(value is None or isinstance(value, bool | int | float | str) for value in choices):
            return trial.suggest_categorical(path, choices)
        # Optuna draws plain values only; lists (hidden widths) are drawn by position.
        return choices[trial.suggest_categorical(path, list(range(len(choices))))]
    if distribution.integers:
        return trial.suggest_int(path, distribution.low, distribution.high, log=distribution.log,
                                 step=int(distribution.step or 1))
    return trial.suggest_float(path, float(distribution.low), float(distribution.high), log=distribution.log,
                               step=distribution.step)
