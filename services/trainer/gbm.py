"""The lightgbm flavour: gradient-boosted trees on the prepared splits, with LightGBM.

    result = train_lightgbm(spec, layout, train_data, validation_data, threads=2)
    portable = export_lightgbm(result)     # LightGBM's own text model format: no pickle

The model sees what the torch network sees: the standardised numeric
features, then the category codes (0: out of vocabulary), which LightGBM
splits on as categories. Boosting stops after ``early_stopping.patience``
rounds without improvement of the spec's metric on the validation split, and
the model keeps the best round's trees. The metrics in the card are computed
from the raw scores by the same code as the torch flavour's (``metrics.py``),
so both flavours' cards compare. A run has no checkpoint: stopped (SIGTERM),
it starts over when the event is redelivered, as boosting takes seconds to
minutes on tables this trainer prepares.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightgbm
import numpy as np
import torch

from services.trainer.artifact import PortableModel
from services.trainer.data import FeatureLayout, TabularTensors
from services.trainer.metrics import validation_metrics
from services.trainer.spec import ModelSpec
from services.trainer.train import TrainingInterrupted

# The spec's metric as LightGBM names it, and how to turn LightGBM's value into the spec's.
LIGHTGBM_METRICS: dict[str, dict[str, tuple[str, Callable[[float], float]]]] = {
    "binary": {"auc": ("auc", float), "log_loss": ("binary_logloss", float),
               "accuracy": ("binary_error", lambda error: 1.0 - error)},
    "multiclass": {"accuracy": ("multi_error", lambda error: 1.0 - error), "log_loss": ("multi_logloss", float)},
    "regression": {"rmse": ("rmse", float), "mae": ("l1", float)},
}
OBJECTIVES = {"binary": "binary", "multiclass": "multiclass", "regression": "regression"}


@dataclass
class BoostedResult:
    booster: lightgbm.Booster  # holds the best round's trees only
    metrics: dict[str, float]  # validation metrics of the best round
    best_round: int
    rounds: int
    stopped_early: bool
    history: list[dict[str, Any]]  # {"round", "metrics": {spec metric: value}} per round
    params: dict[str, Any]  # everything handed to lightgbm.train
    train_seconds: float
    train_rows: int
    threads: int

    @property
    def leaves(self) -> int:
        """Leaves of all trees: a tree model's learnt values."""
        return sum(tree["num_leaves"] for tree in self.booster.dump_model()["tree_info"])

    @property
    def device(self) -> str:
        return f"cpu ({self.threads} threads, lightgbm)"

    @property
    def samples_per_s(self) -> float:
        return self.train_rows * self.rounds / self.train_seconds if self.train_seconds > 0 else 0.0


def features(data: TabularTensors) -> np.ndarray:
    """numeric [N, F] and category codes [N, C] side by side, as the portable model takes them."""
    return np.hstack([data.numeric.numpy().astype(np.float64), data.categorical.numpy().astype(np.float64)])


def lightgbm_params(spec: ModelSpec, layout: FeatureLayout, threads: int) -> dict[str, Any]:
    params: dict[str, Any] = {
        **spec.gbm.params(),
        "objective": OBJECTIVES[spec.task],
        "metric": LIGHTGBM_METRICS[spec.task][spec.metric][0],
        "seed": spec.seed,
        "deterministic": True,
        "force_row_wise": True,  # the choice LightGBM would time at start; fixed, so runs repeat exactly
        "num_threads": threads,
        "verbosity": -1,
    }
    if spec.task == "multiclass":
        params["num_class"] = layout.outputs
    return params


def train_lightgbm(
    spec: ModelSpec,
    layout: FeatureLayout,
    train_data: TabularTensors,
    validation_data: TabularTensors,
    *,
    threads: int,
    on_round: Callable[[int, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    train_weights: torch.Tensor | None = None,
) -> BoostedResult:
    """Boost up to ``lightgbm.num_boost_round`` rounds; ``on_round(round, metric)`` after each (1-based)."""
    if spec.flavour != "lightgbm":
        raise ValueError(f"model {spec.name!r} has flavour {spec.flavour}, not lightgbm")
    if len(train_data) == 0 or len(validation_data) == 0:
        raise ValueError(
            f"training needs rows in both splits, got train={len(train_data)} validation={len(validation_data)}"
        )
    params = lightgbm_params(spec, layout, threads)
    categorical = list(range(len(layout.numeric), len(layout.numeric) + len(layout.categorical)))
    names = [*layout.numeric, *layout.categorical]
    # Row weights (a drift build of window all: recency) weigh each row's gradient, as in the torch loop.
    weight = None if train_weights is None else train_weights.numpy()
    train_set = lightgbm.Dataset(features(train_data), train_data.label.numpy(), weight=weight, feature_name=names,
                                 categorical_feature=categorical, free_raw_data=True)
    validation_set = lightgbm.Dataset(features(validation_data), validation_data.label.numpy(), reference=train_set)
    to_spec = LIGHTGBM_METRICS[spec.task][spec.metric][1]
    values: list[float] = []

    def after_round(env: lightgbm.callback.CallbackEnv) -> None:
        value = to_spec(env.evaluation_result_list[0][2])
        values.append(value)
        if on_round is not None:
            on_round(env.iteration + 1, value)
        if should_stop is not None and should_stop():
            raise TrainingInterrupted(0)

    callbacks = [after_round]
    if spec.early_stopping.patience is not None:
        callbacks.append(lightgbm.early_stopping(spec.early_stopping.patience, first_metric_only=True, verbose=False))
    started = time.perf_counter()
    booster = lightgbm.train(params, train_set, num_boost_round=spec.gbm.num_boost_round,
                             valid_sets=[validation_set], valid_names=["validation"], callbacks=callbacks)
    seconds = time.perf_counter() - started
    best = booster.best_iteration or booster.current_iteration()
    # Only the best round's trees are kept: the saved model is what was validated.
    booster = lightgbm.Booster(model_str=booster.model_to_string(num_iteration=best))
    scores = booster.predict(features(validation_data), raw_score=True)
    metrics = validation_metrics(spec.task, np.asarray(scores), validation_data.label.numpy())
    return BoostedResult(
        booster=booster, metrics=metrics, best_round=best, rounds=len(values),
        stopped_early=len(values) < spec.gbm.num_boost_round,
        history=[{"round": i, "metrics": {spec.metric: value}} for i, value in enumerate(values, start=1)],
        params=params, train_seconds=seconds, train_rows=len(train_data), threads=threads,
    )


def export_lightgbm(result: BoostedResult) -> PortableModel:
    """LightGBM's text model: readable, portable, loaded without pickle (``streamml.portable``)."""
    return PortableModel("lightgbm", result.booster.model_to_string().encode())


def lightgbm_card_fields(spec: ModelSpec, result: BoostedResult) -> dict[str, Any]:
    """What the card of a lightgbm version says of its training, beside what every card says."""
    return {
        "flavour": "lightgbm",
        "metrics": dict(result.metrics),
        "metrics_split": "validation",
        "selection": {"metric": spec.metric, "mode": spec.metric_mode, "best_round": result.best_round, "rounds": result.rounds,
                      "stopped_early": result.stopped_early},
        "rounds": result.history,
        "lightgbm": {"version": lightgbm.__version__, "params": result.params, "trees": result.booster.num_trees()},
        "parameter_count": result.leaves,
        "device": result.device,
        "training_seconds": result.train_seconds,
        "samples_per_s": result.samples_per_s,
    }
