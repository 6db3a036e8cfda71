"""Training progress as Prometheus metrics and one structured log line per epoch."""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram

from services.trainer.train import EpochReport

log = logging.getLogger("streamml.trainer")

EPOCH = Gauge("streamml_trainer_epoch", "Last finished epoch of the current or latest run", ["model"])
MAX_EPOCHS = Gauge("streamml_trainer_max_epochs", "Epoch limit of the current or latest run", ["model"])
RESUMED_FROM = Gauge(
    "streamml_trainer_resumed_from_epoch", "Checkpoint epoch the current or latest run resumed from (0: none)", ["model"]
)
TRAIN_LOSS = Gauge("streamml_trainer_train_loss", "Mean training loss of the last epoch", ["model"])
VALIDATION = Gauge("streamml_trainer_validation_metric", "Validation metric after the last epoch", ["model", "metric"])
SAMPLES_PER_S = Gauge("streamml_trainer_samples_per_second", "Training throughput of the last epoch", ["model"])
RUNS = Counter(
    "streamml_trainer_runs_total",
    "dataset.ready handled per model: trained, already_trained, interrupted, lost_race, user_code_failed",
    ["model", "outcome"],
)
TRAINING_SECONDS = Histogram(
    "streamml_trainer_training_seconds",
    "Wall time from reading the dataset to committing the version",
    ["model"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400),
)


def run_started(model: str, max_epochs: int, resumed_from: int) -> None:
    MAX_EPOCHS.labels(model).set(max_epochs)
    RESUMED_FROM.labels(model).set(resumed_from)
    EPOCH.labels(model).set(resumed_from)


def epoch_finished(model: str, max_epochs: int, report: EpochReport, context: dict) -> None:
    EPOCH.labels(model).set(report.epoch)
    TRAIN_LOSS.labels(model).set(report.train_loss)
    SAMPLES_PER_S.labels(model).set(report.samples_per_s)
    for name, value in report.metrics.items():
        VALIDATION.labels(model, name).set(value)
    log.info(
        "epoch",
        extra={
            **context,
            "epoch": report.epoch,
            "max_epochs": max_epochs,
            "train_loss": round(report.train_loss, 6),
            "validation": {name: round(value, 6) for name, value in report.metrics.items()},
            "improved": report.improved,
            "lr": report.lr,
            "seconds": round(report.seconds, 3),
            "samples_per_s": round(report.samples_per_s),
        },
    )
