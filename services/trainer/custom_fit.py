"""Training by the user's own function (``training.entrypoint``), published like the trainer's own runs.

    result = fit_with_entrypoint(spec, layout, tables, train_data, validation_data,
                                 device="auto", checkpoint=handle, on_epoch=print, should_stop=stopping.is_set)

The function gets a ``FitRun`` and returns a module with the built-in
network's contract (raw scores from ``numeric, categorical``). The trainer
checks it with a dry forward pass and computes the validation metrics itself
on what it returned, so the card and the validator judge the model that is
exported, never numbers the function reported.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import pyarrow as pa
import torch
from torch import nn

from services.trainer.data import FeatureLayout, TabularTensors
from services.trainer.metrics import validation_metrics
from services.trainer.spec import ModelSpec
from services.trainer.train import (
    Device,
    EpochReport,
    TrainingInterrupted,
    TrainResult,
    _rng_scope,
    describe_device,
    predict_scores,
    resolve_device,
)
from services.trainer.user_code import Checkpoint, EpochLog, FitRun, UserCodeError, check_forward, resolve


def fit_with_entrypoint(
    spec: ModelSpec,
    layout: FeatureLayout,
    tables: dict[str, pa.Table],
    train_data: TabularTensors,
    validation_data: TabularTensors,
    *,
    device: Device = "auto",
    checkpoint: Checkpoint,
    on_epoch: Callable[[EpochReport], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> TrainResult:
    assert spec.training is not None
    reference = spec.training.entrypoint
    fit = resolve(spec.name, reference)
    target = resolve_device(device)
    reports: list[EpochReport] = []
    clock = [time.perf_counter()]

    def report(entry: EpochLog) -> None:
        now = time.perf_counter()
        seconds, clock[0] = now - clock[0], now
        value = entry.metrics.get(spec.metric, math.nan)
        reports.append(EpochReport(entry.epoch, entry.train_loss, entry.metrics, value, False, None, seconds,
                                   len(train_data) / seconds if seconds > 0 else 0.0))
        if on_epoch is not None:
            on_epoch(reports[-1])

    run = FitRun(schema=layout, train=train_data, validation=validation_data, tables=tables,
                 params=dict(spec.training.params), device=target, seed=spec.seed, checkpoint=checkpoint,
                 should_stop=should_stop, on_log=report)
    started = time.perf_counter()
    with _rng_scope(target):
        torch.manual_seed(spec.seed)
        try:
            net = fit(run)
        except TrainingInterrupted:
            raise
        except Exception as error:  # noqa: BLE001 - the user's failure, told as such
            raise UserCodeError(spec.name, reference, f"the training function raised {type(error).__name__}: "
                                f"{error}") from error
    seconds = time.perf_counter() - started
    if should_stop():
        # It may have returned early because it was asked to stop: that is no finished model.
        raise TrainingInterrupted(len(reports))
    if not isinstance(net, nn.Module):
        raise UserCodeError(spec.name, reference,
                            f"the training function returned {type(net).__name__}, not a torch.nn.Module")
    net = net.cpu().eval()
    check_forward(spec.name, reference, net, layout)
    metrics = validation_metrics(spec.task, predict_scores(net, validation_data, torch.device("cpu")),
                                 validation_data.label.numpy())
    return TrainResult(
        net=net,
        metrics=metrics,
        best_epoch=reports[-1].epoch if reports else 0,
        epochs=len(reports),
        stopped_early=False,
        history=reports,
        device=describe_device(target),
        train_seconds=seconds,
    )
