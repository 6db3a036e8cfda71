"""The training loop: shuffled index-sliced batches, one validation pass per epoch,
early stopping on the spec's metric, and a checkpoint after every epoch.

    result = train(spec, layout, train_data, validation_data, device="auto",
                   on_epoch=print, on_checkpoint=lambda c: store(checkpoint_bytes(c)))

Batches are slices of a per-epoch permutation applied to whole tensors:
per-sample ``Dataset``/``DataLoader`` pipelines are several times slower for
tabular data. Inside an epoch nothing waits for the device (the loss is summed
on the device and read once per epoch), so the loop costs little more than the
bare forward/backward/step. On CUDA the forward pass runs under bf16 autocast
and the data stays on the GPU when it fits; on CPU the run is deterministic:
the same spec and data give the same model, and a run resumed from the
checkpoint of epoch k gives the same model as one that never stopped.
"""

from __future__ import annotations

import contextlib
import io
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from services.trainer.data import FeatureLayout, TabularTensors
from services.trainer.metrics import validation_metrics
from services.trainer.model import build_network
from services.trainer.spec import ModelSpec, Optimiser, Schedule

Device = Literal["auto", "cpu", "cuda"]
CHECKPOINT_FORMAT = 1
EVAL_CHUNK_ROWS = 65_536
# Share of free GPU memory the data may take before batches stream from host memory.
RESIDENT_SHARE = 0.5


@dataclass(frozen=True)
class EpochReport:
    epoch: int  # 1-based
    train_loss: float
    metrics: dict[str, float]  # validation metrics
    metric: float  # the spec's selection metric, one of ``metrics``
    improved: bool
    lr: float | None  # None: a training function that did not say
    seconds: float  # training part of the epoch, validation excluded
    samples_per_s: float


@dataclass
class TrainResult:
    net: nn.Module  # weights of the best epoch, on CPU, in eval mode
    metrics: dict[str, float]  # validation metrics of the best epoch
    best_epoch: int
    epochs: int
    stopped_early: bool
    history: list[EpochReport]
    device: str
    train_seconds: float

    @property
    def samples_per_s(self) -> float:
        samples = sum(report.samples_per_s * report.seconds for report in self.history)
        return samples / self.train_seconds if self.train_seconds > 0 else 0.0


class TrainingInterrupted(Exception):
    """``should_stop`` asked to stop; the checkpoint of ``epoch`` resumes the run."""

    def __init__(self, epoch: int):
        super().__init__(f"training stopped on request after epoch {epoch}; resume from its checkpoint")
        self.epoch = epoch


def train(
    spec: ModelSpec,
    layout: FeatureLayout,
    train_data: TabularTensors,
    validation_data: TabularTensors,
    *,
    device: Device = "auto",
    on_epoch: Callable[[EpochReport], None] | None = None,
    on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
    resume_from: dict[str, Any] | bytes | None = None,
    should_stop: Callable[[], bool] | None = None,
    train_weights: torch.Tensor | None = None,
) -> TrainResult:
    """``train_weights`` (one per train row, from ``data.row_weights``) weighs each row's loss; without
    them every row weighs the same."""
    if len(train_data) == 0 or len(validation_data) == 0:
        raise ValueError(
            f"training needs rows in both splits, got train={len(train_data)} validation={len(validation_data)}"
        )
    if train_weights is not None and train_weights.shape != (len(train_data),):
        raise ValueError(f"train_weights has shape {list(train_weights.shape)}; give one weight per train row "
                         f"({len(train_data)})")
    target = resolve_device(device)
    checkpoint = load_checkpoint(resume_from) if isinstance(resume_from, bytes) else resume_from
    if checkpoint is not None:
        _check_resumable(checkpoint, spec, len(train_data))
    with _rng_scope(target), _deterministic(target):
        return _fit(
            spec, layout, train_data, validation_data, target, on_epoch, on_checkpoint, checkpoint, should_stop,
            train_weights,
        )


def _fit(spec, layout, train_data, validation_data, device, on_epoch, on_checkpoint, checkpoint, should_stop,
         train_weights=None):
    torch.manual_seed(spec.seed)
    net = build_network(spec, layout).to(device)
    optimiser = build_optimiser(net, spec.optimiser)
    max_epochs = spec.epochs_for(len(train_data))
    scheduler = build_scheduler(optimiser, spec.schedule, max_epochs)
    permutation = torch.Generator().manual_seed(spec.seed)
    state = _Progress()
    if checkpoint is not None:
        state = _restore(checkpoint, net, optimiser, scheduler, permutation, device)

    train_data, resident = _place(train_data, validation_data, device)
    validation_on_device = validation_data.to(device) if resident else validation_data
    validation_labels = validation_data.label.numpy()
    # Weighted: each row's loss times its weight relative to the mean weight, so the loss keeps its scale
    # and a batch of old rows moves the model less than one of new rows (normalising per batch would not).
    weights = None if train_weights is None else (train_weights / train_weights.mean()).float()
    if weights is not None and resident:
        weights = weights.to(device)
    loss_fn = loss_for(spec.task, per_row=weights is not None)
    bounds = batch_bounds(len(train_data), spec.batch_size)
    autocast = _autocast(device)

    while state.epoch < max_epochs and not state.stopped(spec):
        lr = optimiser.param_groups[0]["lr"]
        started = time.perf_counter()
        order = torch.randperm(len(train_data), generator=permutation)
        if resident:
            order = order.to(device)
        loss = _train_epoch(net, optimiser, loss_fn, train_data, order, bounds, device, resident, autocast, weights)
        seconds = time.perf_counter() - started
        scores = predict_scores(net, validation_on_device, device)
        metrics = validation_metrics(spec.task, scores, validation_labels)
        if scheduler is not None:
            scheduler.step()
        state.epoch += 1
        state.train_seconds += seconds
        improved = state.record(metrics, spec, net)
        report = EpochReport(state.epoch, loss, metrics, metrics[spec.metric], improved, lr, seconds,
                             len(train_data) / seconds)
        state.history.append(report)
        if on_epoch is not None:
            on_epoch(report)
        if on_checkpoint is not None:
            on_checkpoint(_checkpoint(spec, len(train_data), state, net, optimiser, scheduler, permutation, device))
        if should_stop is not None and should_stop() and state.epoch < max_epochs and not state.stopped(spec):
            raise TrainingInterrupted(state.epoch)

    net.load_state_dict(state.best_net)
    return TrainResult(
        net=net.cpu().eval(),
        metrics=state.best_metrics,
        best_epoch=state.best_epoch,
        epochs=state.epoch,
        stopped_early=state.stopped(spec) and state.epoch < max_epochs,
        history=state.history,
        device=describe_device(device),
        train_seconds=state.train_seconds,
    )


def _train_epoch(net, optimiser, loss_fn, data, order, bounds, device, resident, autocast, weights=None) -> float:
    net.train()
    total = torch.zeros((), device=device)
    for start, stop in bounds:
        index = order[start:stop]
        if resident:
            numeric, categorical, label = data.numeric[index], data.categorical[index], data.label[index]
        else:
            batch = data.take(index).pin_memory().to(device, non_blocking=True)
            numeric, categorical, label = batch.tensors()
        with autocast:
            scores = net(numeric, categorical)
        loss = loss_fn(scores.float(), label)
        if weights is not None:
            loss = (loss * weights[index].to(device, non_blocking=True)).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        # Summed on the device: reading the loss per batch would wait for the GPU every step.
        total.add_(loss.detach(), alpha=stop - start)
    return total.item() / len(order)


@torch.inference_mode()
def predict_scores(net: nn.Module, data: TabularTensors, device: torch.device) -> np.ndarray:
    """Raw scores in float32 (no autocast), so metrics match the exported model."""
    net.eval()
    chunks = []
    for start in range(0, len(data), EVAL_CHUNK_ROWS):
        numeric = data.numeric[start : start + EVAL_CHUNK_ROWS].to(device, non_blocking=True)
        categorical = data.categorical[start : start + EVAL_CHUNK_ROWS].to(device, non_blocking=True)
        chunks.append(net(numeric, categorical).float())
    return torch.cat(chunks).cpu().numpy()


# -- pieces the loop is made of ---------------------------------------------------


def resolve_device(device: Device) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device cuda was asked for but torch {torch.__version__} sees no GPU; use device auto or cpu"
        )
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device {device!r} is not one of auto, cpu, cuda")
    return torch.device(device)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def build_optimiser(net: nn.Module, options: Optimiser) -> torch.optim.Optimizer:
    if options.name == "adam":
        return torch.optim.Adam(net.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    if options.name == "adamw":
        return torch.optim.AdamW(net.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    return torch.optim.SGD(net.parameters(), lr=options.lr, weight_decay=options.weight_decay,
                           momentum=options.momentum)


def build_scheduler(optimiser: torch.optim.Optimizer, schedule: Schedule, max_epochs: int):
    """Stepped once per epoch, so a checkpoint between epochs captures it exactly."""
    if schedule.kind == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max_epochs)
    if schedule.kind == "step":
        return torch.optim.lr_scheduler.StepLR(optimiser, step_size=schedule.step_epochs, gamma=schedule.gamma)
    return None


def loss_for(task: str, per_row: bool = False) -> nn.Module:
    """The task's loss, averaged over the batch, or with ``per_row`` one value per row (to weigh)."""
    reduction = "none" if per_row else "mean"
    if task == "binary":
        return nn.BCEWithLogitsLoss(reduction=reduction)
    if task == "multiclass":
        return nn.CrossEntropyLoss(reduction=reduction)
    return nn.MSELoss(reduction=reduction)


def batch_bounds(rows: int, batch_size: int) -> list[tuple[int, int]]:
    bounds = [(start, min(start + batch_size, rows)) for start in range(0, rows, batch_size)]
    # A last batch of one row has no variance for batch normalisation; it joins the batch before.
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], rows)]
    return bounds


def is_improvement(value: float, best: float | None, mode: Literal["min", "max"]) -> bool:
    if best is None:
        return True
    if math.isnan(value):
        return False
    if math.isnan(best):
        return True
    return value > best if mode == "max" else value < best


def _place(train_data: TabularTensors, validation_data: TabularTensors, device: torch.device):
    """Data on the device when it fits (no copy per batch); else pinned host memory
    whose batches are copied asynchronously."""
    if device.type == "cpu":
        return train_data, True
    free, _ = torch.cuda.mem_get_info(device)
    if train_data.nbytes + validation_data.nbytes <= RESIDENT_SHARE * free:
        return train_data.to(device), True
    return train_data.pin_memory(), False


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def _rng_scope(device: torch.device) -> Iterator[None]:
    """Seeding inside leaves the caller's random state as it was."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


@contextlib.contextmanager
def _deterministic(device: torch.device) -> Iterator[None]:
    # Cheap on CPU; on CUDA it would need a cuBLAS workspace setting and slower kernels.
    if device.type != "cpu":
        yield
        return
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


# -- progress and checkpoints ------------------------------------------------------


@dataclass
class _Progress:
    epoch: int = 0
    best_metric: float | None = None
    best_epoch: int = 0
    best_metrics: dict[str, float] | None = None
    best_net: dict[str, torch.Tensor] | None = None
    epochs_since_best: int = 0
    train_seconds: float = 0.0
    history: list[EpochReport] | None = None

    def __post_init__(self) -> None:
        self.history = self.history or []

    def record(self, metrics: dict[str, float], spec: ModelSpec, net: nn.Module) -> bool:
        value = metrics[spec.metric]
        if is_improvement(value, self.best_metric, spec.metric_mode):
            self.best_metric, self.best_epoch, self.best_metrics = value, self.epoch, metrics
            self.best_net = _cpu_copy(net.state_dict())
            self.epochs_since_best = 0
            return True
        self.epochs_since_best += 1
        return False

    def stopped(self, spec: ModelSpec) -> bool:
        patience = spec.early_stopping.patience
        return patience is not None and self.epochs_since_best >= patience


def _checkpoint(spec, train_rows, state: _Progress, net, optimiser, scheduler, permutation, device) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT,
        "spec_fingerprint": spec.fingerprint(),
        "train_rows": train_rows,
        "epoch": state.epoch,
        "net": _cpu_copy(net.state_dict()),
        "optimiser": _cpu_copy(optimiser.state_dict()),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "best": {
            "metric": state.best_metric,
            "epoch": state.best_epoch,
            "metrics": state.best_metrics,
            "net": state.best_net,
        },
        "epochs_since_best": state.epochs_since_best,
        "train_seconds": state.train_seconds,
        "history": [asdict(report) for report in state.history],
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "permutation": permutation.get_state(),
        },
    }


def _restore(checkpoint, net, optimiser, scheduler, permutation, device) -> _Progress:
    net.load_state_dict(checkpoint["net"])
    optimiser.load_state_dict(checkpoint["optimiser"])
    if scheduler is not None:
        scheduler.load_state_dict(checkpoint["scheduler"])
    rng = checkpoint["rng"]
    torch.set_rng_state(rng["torch"])
    if device.type == "cuda" and rng["cuda"] is not None:
        torch.cuda.set_rng_state(rng["cuda"], device)
    permutation.set_state(rng["permutation"])
    best = checkpoint["best"]
    return _Progress(
        epoch=checkpoint["epoch"],
        best_metric=best["metric"],
        best_epoch=best["epoch"],
        best_metrics=best["metrics"],
        best_net=best["net"],
        epochs_since_best=checkpoint["epochs_since_best"],
        train_seconds=checkpoint["train_seconds"],
        history=[EpochReport(**report) for report in checkpoint["history"]],
    )


def _check_resumable(checkpoint: dict[str, Any], spec: ModelSpec, train_rows: int) -> None:
    if checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"checkpoint format {checkpoint.get('format')!r} is not {CHECKPOINT_FORMAT}; train from scratch"
        )
    if checkpoint["spec_fingerprint"] != spec.fingerprint():
        raise ValueError(
            f"checkpoint was written for spec {checkpoint['spec_fingerprint']}, not {spec.fingerprint()} "
            f"of model {spec.name!r}; the spec changed since, so train from scratch"
        )
    if checkpoint["train_rows"] != train_rows:
        raise ValueError(
            f"checkpoint was written for {checkpoint['train_rows']} train rows, this split has {train_rows}; "
            "it belongs to another dataset version"
        )


def checkpoint_bytes(checkpoint: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    return buffer.getvalue()


def load_checkpoint(data: bytes) -> dict[str, Any]:
    # weights_only: a checkpoint holds tensors and plain values, never code to run.
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _cpu_copy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {key: _cpu_copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_cpu_copy(item) for item in value]
    return value
