"""A lightgbm spec, or a spec with a search: train the candidate, and the files of its version.

The built-in torch network without a search keeps its own path in the
service (checkpoints and resume per epoch); everything else comes here:

    files, card, summary = train_candidate(spec, manifest, layout, train_data, validation_data,
                                           device="cpu", threads=2, should_stop=stopping.is_set,
                                           model_version=version, code_version=code)

With a search every trial's parameters and metrics go in the card's
``search``, and the card's ``params`` are the best trial's spec.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import torch

from services.trainer.artifact import card_common, export_portable, model_card, state_dict_bytes
from services.trainer.data import FeatureLayout, TabularTensors
from services.trainer.gbm import BoostedResult, export_lightgbm, lightgbm_card_fields, train_lightgbm
from services.trainer.publish import VersionFile
from services.trainer.search import Report, run_search
from services.trainer.spec import ModelSpec
from services.trainer.train import Device, TrainResult, train
from streamml.manifest import DatasetManifest
from streamml.registry.keys import CARD_FILE, STATE_DICT_FILE


def train_candidate(
    spec: ModelSpec,
    manifest: DatasetManifest,
    layout: FeatureLayout,
    train_data: TabularTensors,
    validation_data: TabularTensors,
    *,
    device: Device,
    threads: int,
    should_stop: Callable[[], bool],
    model_version: str,
    code_version: str,
    user_code: dict[str, Any] | None = None,
    context: dict | None = None,
    train_weights: torch.Tensor | None = None,
) -> tuple[list[VersionFile], dict[str, Any], dict[str, Any]]:
    """The version's files, its card, and what to log of the training; ``train_weights`` weighs the train
    rows in every flavour."""

    def fit(trial_spec: ModelSpec, report: Report | None) -> TrainResult | BoostedResult:
        if trial_spec.flavour == "lightgbm":
            return train_lightgbm(trial_spec, layout, train_data, validation_data, threads=threads,
                                  on_round=report, should_stop=should_stop, train_weights=train_weights)
        on_epoch = (lambda epoch: report(epoch.epoch, epoch.metric)) if report is not None else None
        return train(trial_spec, layout, train_data, validation_data, device=device, on_epoch=on_epoch,
                     should_stop=should_stop, train_weights=train_weights)

    search = None
    if spec.search is not None:
        search = run_search(spec, fit, context=context)
        trained, result = search.best_spec, search.best_result
    else:
        trained, result = spec, fit(spec, None)
    files, card = version_files(trained, manifest, layout, result, model_version, code_version, user_code,
                                search.card() if search is not None else None)
    summary = {"flavour": trained.flavour, "metrics": result.metrics, "device": result.device,
               "training_seconds": round(result.train_seconds, 3)}
    if search is not None:
        summary["best_trial"] = search.best_trial
        summary["trials"] = {state: sum(t.state == state for t in search.trials)
                             for state in ("complete", "pruned", "failed")}
    return files, card, summary


def version_files(
    spec: ModelSpec,
    manifest: DatasetManifest,
    layout: FeatureLayout,
    result: TrainResult | BoostedResult,
    model_version: str,
    code_version: str,
    user_code: dict[str, Any] | None = None,
    search: dict[str, Any] | None = None,
) -> tuple[list[VersionFile], dict[str, Any]]:
    """The portable program, the torch weights (torch only) and the card of a trained model."""
    if isinstance(result, BoostedResult):
        portable = export_lightgbm(result)
        card = {**card_common(spec=spec, manifest=manifest, layout=layout, portable=portable,
                              model_version=model_version, code_version=code_version),
                **lightgbm_card_fields(spec, result)}
        files = [VersionFile(portable.filename, portable.data)]
    else:
        portable = export_portable(result.net, layout)
        card = model_card(spec=spec, manifest=manifest, layout=layout, result=result, portable=portable,
                          model_version=model_version, code_version=code_version, user_code=user_code)
        files = [VersionFile(portable.filename, portable.data), VersionFile(STATE_DICT_FILE, state_dict_bytes(result.net))]
    if search is not None:
        card["search"] = search
    return [*files, VersionFile(CARD_FILE, json.dumps(card, indent=2).encode())], card
