"""The trainer service: ``dataset.ready`` -> a model version per model spec -> ``model.trained``.

For each model spec of the announced dataset, in this order:

1. the version name follows from the dataset version and the spec
   (``d<N>-<fingerprint>``); if that version is committed already, its
   ``model.trained`` is sent again and nothing is trained;
2. the train and validation splits are read from the object store and trained
   on (GPU when there is one) while the consumer keeps polling, so a long run
   does not cost the member its place in the group; after every epoch a
   checkpoint goes to ``models/<name>/<version>/checkpoints/last.pt``;
3. the portable program, the weights and the card are written under this
   attempt's folder, then the version's ``manifest.json`` is created (only if
   absent), naming them with their sha256; ``model.trained`` is sent and the
   event committed.

A crash leaves the event uncommitted: it is redelivered and training resumes
from the last checkpoint. SIGTERM stops after the running epoch's checkpoint,
without committing, with the same effect.

A ``flavour: lightgbm`` spec, or a spec with a ``search``, trains through
``candidates.py`` instead of step 2's loop: no checkpoints, so a stopped run
starts over when the event is redelivered.
"""

from __future__ import annotations

import importlib
import logging
import time
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from services.trainer import progress
from services.trainer.candidates import train_candidate, version_files
from services.trainer.cpus import available_cpus
from services.trainer.data import FeatureLayout, tensors_from_table
from services.trainer.prepared import TRAINING_SPLITS, read_manifest, read_splits
from services.trainer.publish import (
    committed_card,
    model_version,
    publish_version,
    trained_event,
    trained_id,
)
from services.trainer.spec import ModelSpec, load_model_specs, specs_for_dataset
from services.trainer.train import (
    TrainingInterrupted,
    _check_resumable,
    checkpoint_bytes,
    describe_device,
    load_checkpoint,
    resolve_device,
    train,
)
from streamml import code_version
from streamml.events import DatasetReady, Event
from streamml.registry.keys import checkpoint_key
from streamml.service import EventService, StartupError, run
from streamml.settings import Group, ServiceSettings
from streamml.specs import SpecError
from streamml.store import ObjectNotFound

log = logging.getLogger("streamml.trainer")

GROUP = "streamml-trainer"
INPUT_TOPICS = ["dataset.ready"]


class TrainerOptions(Group):
    models_dir: Path = Field(Path("models"), description="folder of model spec YAML files")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when torch sees a GPU, else cpu")
    checkpoint_every_epoch: bool = Field(True, description="store a checkpoint after every epoch, to resume from")
    cpu_threads: int | None = Field(
        None, ge=1, le=1024, description="torch CPU threads; unset: the CPUs this process may use (cgroup quota included)"
    )


class TrainerSettings(ServiceSettings):
    trainer: TrainerOptions = TrainerOptions()


class TrainerService(EventService[TrainerSettings]):
    name = "trainer"
    group = GROUP
    accepts = (DatasetReady,)
    # One event per poll: training takes minutes, and events fetched behind it
    # would only wait (and be rewound by work_while_polling).
    max_batch = 1
    # Training stopped on SIGTERM: the event stays uncommitted and resumes from the checkpoint after the restart.
    interrupts = (TrainingInterrupted,)

    def input_topics(self) -> list[str]:
        return [self.settings.kafka.topic(name) for name in INPUT_TOPICS]

    def load(self) -> None:
        options = self.settings.trainer
        try:
            self.specs: dict[str, ModelSpec] = load_model_specs(options.models_dir)
        except SpecError as error:
            problems = "; ".join(error.problems)
            raise StartupError(f"STREAMML_TRAINER_MODELS_DIR={str(options.models_dir)!r}: {problems}") from None
        try:
            device = resolve_device(options.device)
        except ValueError as error:
            raise StartupError(f"STREAMML_TRAINER_DEVICE={options.device}: {error}") from None
        # The first optimiser step and torch.export import torch._dynamo (and sympy): seconds,
        # better spent here, before the service is ready, than in the first event's latency.
        importlib.import_module("torch._dynamo")
        self.cpu_threads = options.cpu_threads or available_cpus()
        torch.set_num_threads(self.cpu_threads)
        self.code_version = code_version()
        super().load()
        log.info(
            "model specs loaded",
            extra={"models": {name: spec.dataset for name, spec in self.specs.items()},
                   "device": describe_device(device), "code_version": self.code_version},
        )
        if not self.specs:
            log.warning(f"no model spec in STREAMML_TRAINER_MODELS_DIR={str(options.models_dir)!r}: "
                        "every dataset.ready is committed without training; add specs and restart")

    def handle_event(self, event: Event, context: dict) -> None:
        assert isinstance(event, DatasetReady)
        context = {**context, "dataset": event.dataset, "dataset_version": event.version}
        specs = specs_for_dataset(self.specs, event.dataset)
        if not specs:
            log.info("no model spec trains on this dataset", extra=context)
            return
        for spec in specs:
            version = model_version(spec, event.version)
            self._train_version(spec, event, version, {**context, "model": spec.name, "version": version})

    def _train_version(self, spec: ModelSpec, event: DatasetReady, version: str, context: dict) -> None:
        card = committed_card(self.store, spec.name, version)
        if card is not None:
            progress.RUNS.labels(spec.name, "already_trained").inc()
            log.info("trained before; announcing it again", extra=context)
        else:
            # Polls every 0.1 s, so the announcement follows the commit without waiting out a long poll.
            card = self.consumer.work_while_polling(lambda: self._train(spec, event, version, context), heartbeat_s=0.1)
        self.producer.send(trained_event(card), event_id=trained_id(spec.name, version))

    def _train(self, spec: ModelSpec, event: DatasetReady, version: str, context: dict) -> dict[str, Any]:
        """Runs in a worker thread; returns the card of the committed version."""
        # OpenMP's thread count is per thread: one set in the main thread does not reach this one.
        torch.set_num_threads(self.cpu_threads)
        started = time.monotonic()
        manifest = read_manifest(self.store, event.manifest_key, event.dataset, event.version)
        layout = FeatureLayout.from_manifest(manifest, spec.task)
        tables = read_splits(self.store, manifest, TRAINING_SPLITS, layout.columns)
        layout = layout.with_classes(tables["train"])
        train_data = tensors_from_table(tables["train"], layout)
        validation_data = tensors_from_table(tables["validation"], layout)
        if spec.flavour == "torch" and spec.search is None:
            files, card, summary = self._train_network(spec, manifest, layout, train_data, validation_data,
                                                       version, context)
        else:
            # Gradient-boosted trees, or a search: no checkpoint per epoch, a stopped run starts over.
            log.info("training", extra={**context, "flavour": spec.flavour, "search": spec.search is not None,
                                        "rows": {"train": len(train_data), "validation": len(validation_data)}})
            if self.stopping.is_set():
                raise TrainingInterrupted(0)
            files, card, summary = train_candidate(
                spec, manifest, layout, train_data, validation_data, device=self.settings.trainer.device,
                threads=self.cpu_threads, should_stop=self.stopping.is_set, model_version=version,
                code_version=self.code_version, context=context)

        if not publish_version(self.store, spec.name, version, files):
            progress.RUNS.labels(spec.name, "lost_race").inc()
            log.info("another trainer committed this version first; announcing its card", extra=context)
            return committed_card(self.store, spec.name, version)
        progress.RUNS.labels(spec.name, "trained").inc()
        progress.TRAINING_SECONDS.labels(spec.name).observe(time.monotonic() - started)
        log.info("trained", extra={**context, **summary})
        return card

    def _train_network(self, spec, manifest, layout, train_data, validation_data, version, context):
        """The built-in torch network, resumed from this version's checkpoint when there is one."""
        checkpoint = self._resume_point(spec, version, len(train_data), context)
        resumed_from = checkpoint["epoch"] if checkpoint is not None else 0
        progress.run_started(spec.name, spec.max_epochs, resumed_from)
        log.info("training", extra={**context, "rows": {"train": len(train_data), "validation": len(validation_data)},
                                    "resumed_from_epoch": resumed_from, "max_epochs": spec.max_epochs})
        try:
            if self.stopping.is_set():  # asked to stop while reading the data: start no epoch
                raise TrainingInterrupted(resumed_from)
            result = train(
                spec, layout, train_data, validation_data,
                device=self.settings.trainer.device,
                on_epoch=lambda report: progress.epoch_finished(spec.name, spec.max_epochs, report, context),
                on_checkpoint=self._checkpoint_writer(spec.name, version),
                resume_from=checkpoint,
                should_stop=self.stopping.is_set,
            )
        except TrainingInterrupted as stop:
            progress.RUNS.labels(spec.name, "interrupted").inc()
            log.info("training stopped on request; the event stays uncommitted and resumes from the checkpoint",
                     extra={**context, "epoch": stop.epoch})
            raise
        files, card = version_files(spec, manifest, layout, result, version, self.code_version)
        summary = {"metrics": result.metrics, "best_epoch": result.best_epoch, "epochs": result.epochs,
                   "device": result.device, "training_seconds": round(result.train_seconds, 3),
                   "samples_per_s": round(result.samples_per_s)}
        return files, card, summary

    def _checkpoint_writer(self, model: str, version: str):
        if not self.settings.trainer.checkpoint_every_epoch:
            return None
        key = checkpoint_key(model, version)
        return lambda checkpoint: self.store.put(key, checkpoint_bytes(checkpoint))

    def _resume_point(self, spec: ModelSpec, version: str, train_rows: int, context: dict) -> dict | None:
        """The stored checkpoint of this version, if it can resume this run."""
        key = checkpoint_key(spec.name, version)
        try:
            data = self.store.get_bytes(key)
        except ObjectNotFound:
            return None
        try:
            checkpoint = load_checkpoint(data)
            # train() makes the same check, but failing it there could not be told apart from bad data.
            _check_resumable(checkpoint, spec, train_rows)
        except Exception as error:  # noqa: BLE001 - any unusable checkpoint means starting over
            log.warning("checkpoint cannot resume this run; training from scratch",
                        extra={**context, "checkpoint": key, "reason": f"{type(error).__name__}: {error}"})
            return None
        log.info("resuming from checkpoint",
                 extra={**context, "checkpoint": key, "epoch": checkpoint["epoch"], "next_epoch": checkpoint["epoch"] + 1})
        return checkpoint


def main() -> None:
    run(TrainerService, TrainerSettings)
