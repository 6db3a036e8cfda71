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
from services.trainer.custom_fit import fit_with_entrypoint
from services.trainer.data import FeatureLayout, tensors_from_table
from services.trainer.prepared import read_manifest, read_training_splits
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
from services.trainer.user_code import Checkpoint, UserCodeError, add_code_dir, code_digest, resolve
from streamml import code_version
from streamml.events import DatasetReady, Event
from streamml.faults import transient_dependency
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
    code_dir: Path | None = Field(
        None, description="folder of Python modules that model specs name (architecture.module, "
        "training.entrypoint); put first on the import path. The trainer runs this code with its own permissions")
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
        self._load_user_code(options.code_dir)
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

    def _load_user_code(self, code_dir: Path | None) -> None:
        """Import the code the specs name. A failure is kept per spec, not raised: the other specs train,
        and each dataset.ready of a broken spec goes to the dead-letter topic with the reason (no crash loop)."""
        if code_dir is not None:
            if not code_dir.is_dir():
                raise StartupError(f"STREAMML_TRAINER_CODE_DIR={str(code_dir)!r}: not a folder; give the folder "
                                   "of the Python modules your model specs name")
            add_code_dir(code_dir)
        self.user_code: dict[str, dict[str, Any]] = {}
        self.user_code_errors: dict[str, UserCodeError] = {}
        for name, spec in self.specs.items():
            if not spec.code_references:
                continue
            try:
                for reference in spec.code_references:
                    resolve(name, reference)
                self.user_code[name] = code_digest(spec.code_references)
            except (UserCodeError, ValueError, OSError) as error:
                self.user_code_errors[name] = error if isinstance(error, UserCodeError) else UserCodeError(
                    name, ", ".join(spec.code_references), f"cannot hash its code: {error}")
                log.error("the code of a model spec cannot be loaded; its datasets go to the dead-letter topic",
                          extra={"model": name, "reason": str(self.user_code_errors[name])})

    def handle_event(self, event: Event, context: dict) -> None:
        assert isinstance(event, DatasetReady)
        context = {**context, "dataset": event.dataset, "dataset_version": event.version}
        specs = specs_for_dataset(self.specs, event.dataset)
        if not specs:
            log.info("no model spec trains on this dataset", extra=context)
            return
        failures = []
        for spec in specs:
            code = self.user_code.get(spec.name)
            version = model_version(spec, event.version, code["sha256"] if code else None)
            try:
                if spec.name in self.user_code_errors:
                    raise self.user_code_errors[spec.name]
                self._train_version(spec, event, version, {**context, "model": spec.name, "version": version})
            except UserCodeError as error:
                # The other specs of the dataset still train; the event then goes to the dead-letter topic.
                progress.RUNS.labels(spec.name, "user_code_failed").inc()
                log.error("the model spec's own code failed", extra={**context, "model": spec.name,
                                                                     "reason": str(error)})
                failures.append(str(error))
        if failures:
            raise UserCodeError.combined(failures)

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
        tables, train_weights = read_training_splits(self.store, manifest, layout.columns)
        layout = layout.with_classes(tables["train"])
        train_data = tensors_from_table(tables["train"], layout)
        validation_data = tensors_from_table(tables["validation"], layout)
        if spec.flavour == "torch" and spec.search is None:
            files, card, summary = self._train_network(spec, manifest, layout, tables, train_data,
                                                       validation_data, version, context, train_weights)
        else:
            # Gradient-boosted trees, or a search: no checkpoint per epoch, a stopped run starts over.
            log.info("training", extra={**context, "flavour": spec.flavour, "search": spec.search is not None,
                                        "rows": {"train": len(train_data), "validation": len(validation_data)}})
            if self.stopping.is_set():
                raise TrainingInterrupted(0)
            try:
                files, card, summary = train_candidate(
                    spec, manifest, layout, train_data, validation_data, device=self.settings.trainer.device,
                    threads=self.cpu_threads, should_stop=self.stopping.is_set, model_version=version,
                    code_version=self.code_version, user_code=self.user_code.get(spec.name), context=context,
                    train_weights=train_weights)
            except TrainingInterrupted:
                raise
            except Exception as error:
                # A search over the spec's own module: its failure is the spec's error.
                _blame_user_code(spec, error, "training failed")
                raise

        if not publish_version(self.store, spec.name, version, files):
            progress.RUNS.labels(spec.name, "lost_race").inc()
            log.info("another trainer committed this version first; announcing its card", extra=context)
            return committed_card(self.store, spec.name, version)
        progress.RUNS.labels(spec.name, "trained").inc()
        progress.TRAINING_SECONDS.labels(spec.name).observe(time.monotonic() - started)
        log.info("trained", extra={**context, **summary})
        return card

    def _train_network(self, spec, manifest, layout, tables, train_data, validation_data, version, context,
                       train_weights=None):
        """A torch network (built in, or the spec's own module or training function), resumed from this
        version's checkpoint when there is one."""
        checkpoint = self._resume_point(spec, version, len(train_data), context)
        resumed_from = checkpoint["epoch"] if checkpoint is not None else 0
        max_epochs = spec.epochs_for(len(train_data))
        progress.run_started(spec.name, max_epochs, resumed_from)
        log.info("training", extra={**context, "rows": {"train": len(train_data), "validation": len(validation_data)},
                                    "weight_column": manifest.weight,
                                    "resumed_from_epoch": resumed_from, "max_epochs": max_epochs})
        try:
            if self.stopping.is_set():  # asked to stop while reading the data: start no epoch
                raise TrainingInterrupted(resumed_from)
            result = self._fit(spec, version, layout, tables, train_data, validation_data, checkpoint, context,
                               train_weights)
        except TrainingInterrupted as stop:
            progress.RUNS.labels(spec.name, "interrupted").inc()
            log.info("training stopped on request; the event stays uncommitted and resumes from the checkpoint",
                     extra={**context, "epoch": stop.epoch})
            raise
        except Exception as error:
            # The user's module failed inside the trainer's loop (a backward it cannot do, an op torch refuses).
            _blame_user_code(spec, error, "training failed")
            raise
        try:
            files, card = version_files(spec, manifest, layout, result, version, self.code_version,
                                        user_code=self.user_code.get(spec.name))
        except Exception as error:
            _blame_user_code(spec, error, "the trained module cannot be exported (torch.export, then TorchScript)")
            raise
        summary = {"metrics": result.metrics, "best_epoch": result.best_epoch, "epochs": result.epochs,
                   "device": result.device, "training_seconds": round(result.train_seconds, 3),
                   "samples_per_s": round(result.samples_per_s)}
        return files, card, summary

    def _fit(self, spec, version, layout, tables, train_data, validation_data, checkpoint, context,
             train_weights=None):
        """The trainer's loop (rows weighed by ``train_weights`` when the version has them), or the spec's own
        training function, which finds any weight column in ``tables``."""
        max_epochs = spec.epochs_for(len(train_data))
        on_epoch = lambda report: progress.epoch_finished(spec.name, max_epochs, report, context)  # noqa: E731
        if spec.training is not None:
            return fit_with_entrypoint(
                spec, layout, tables, train_data, validation_data, device=self.settings.trainer.device,
                checkpoint=self._entrypoint_checkpoint(spec, version, len(train_data)),
                on_epoch=on_epoch, should_stop=self.stopping.is_set)
        return train(spec, layout, train_data, validation_data, device=self.settings.trainer.device,
                     on_epoch=on_epoch, on_checkpoint=self._checkpoint_writer(spec.name, version),
                     resume_from=checkpoint, should_stop=self.stopping.is_set, train_weights=train_weights)

    def _checkpoint_writer(self, model: str, version: str):
        if not self.settings.trainer.checkpoint_every_epoch:
            return None
        key = checkpoint_key(model, version)
        return lambda checkpoint: self.store.put(key, checkpoint_bytes(checkpoint))

    def _entrypoint_checkpoint(self, spec: ModelSpec, version: str, train_rows: int) -> Checkpoint:
        """The checkpoint a training function saves and loads: its own state, kept with what it belongs to."""
        key = checkpoint_key(spec.name, version)

        def save(state: dict[str, Any]) -> None:
            self.store.put(key, checkpoint_bytes({"format": "entrypoint", "spec_fingerprint": spec.fingerprint(),
                                                  "train_rows": train_rows, "state": state}))

        def load() -> dict[str, Any] | None:
            try:
                checkpoint = load_checkpoint(self.store.get_bytes(key))
            except ObjectNotFound:
                return None
            mine = (checkpoint.get("format"), checkpoint.get("spec_fingerprint"), checkpoint.get("train_rows"))
            return checkpoint["state"] if mine == ("entrypoint", spec.fingerprint(), train_rows) else None

        return Checkpoint(save=save, load=load)

    def _resume_point(self, spec: ModelSpec, version: str, train_rows: int, context: dict) -> dict | None:
        """The stored checkpoint of this version, if it can resume this run (the trainer's own loop)."""
        if spec.training is not None:
            return None  # the training function reads its own checkpoint
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


def _blame_user_code(spec: ModelSpec, error: Exception, what: str) -> None:
    """Raises a failure of a spec with code of its own as that spec's error (a permanent one, for the DLQ);
    returns for the trainer's own failures and transient ones, which the caller raises as they are."""
    if not spec.code_references or isinstance(error, UserCodeError) or transient_dependency(error):
        return
    raise UserCodeError(spec.name, ", ".join(spec.code_references), f"{what}: {type(error).__name__}: {error}") \
        from error


def main() -> None:
    run(TrainerService, TrainerSettings)
