"""Model specs: how the trainer builds and fits a model for one dataset.

A model spec is a YAML file next to the dataset specs; the trainer trains
every spec whose ``dataset`` names the dataset of a ``dataset.ready`` event.
Example (``examples/models/transactions.yaml``)::

    name: fraud
    dataset: transactions
    task: binary
    architecture:
      embedding: {rule: fastai, max_dim: 16}
      hidden: [64, 64]
      dropout: 0.1
      normalisation: batch
    optimiser: {name: adamw, lr: 0.002, weight_decay: 0.0001}
    schedule: {kind: cosine}
    batch_size: 1024
    max_epochs: 20
    early_stopping: {metric: auc, patience: 3}
    seed: 7
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, model_validator

from services.trainer.gbm_spec import LightGBMOptions
from services.trainer.search_spec import Search, put_path
from services.trainer.user_code import CustomArchitecture, CustomTraining
from streamml.specs import NAME, DatasetSpec, SpecError, load_folder, read_yaml

Task = Literal["binary", "multiclass", "regression"]
# torch: the built-in tabular network; lightgbm: gradient-boosted trees (``gbm_spec.py``).
Flavour = Literal["torch", "lightgbm"]
# Settings of the torch network only; a lightgbm spec that sets one is told so.
TORCH_ONLY = ("architecture", "training", "optimiser", "schedule", "batch_size", "max_epochs", "min_steps")

# Validation metrics computed for each task, with the direction that is better.
TASK_METRICS: dict[str, dict[str, Literal["min", "max"]]] = {
    "binary": {"auc": "max", "log_loss": "min", "accuracy": "max"},
    "multiclass": {"accuracy": "max", "log_loss": "min"},
    "regression": {"rmse": "min", "mae": "min"},
}
DEFAULT_METRIC = {"binary": "auc", "multiclass": "log_loss", "regression": "rmse"}


class Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EmbeddingRule(Strict):
    """Width of the embedding of a categorical feature with ``n`` codes (OOV included).

    ``fastai``: ``round(1.6 * n ** 0.56)``, a rule of thumb that grows slowly
    with the vocabulary; ``fixed``: ``dim`` for every feature. Both are capped
    at ``max_dim`` and never exceed ``n``.
    """

    rule: Literal["fastai", "fixed"] = "fastai"
    dim: int | None = Field(None, ge=1, description="width for rule fixed")
    max_dim: int = Field(32, ge=1)

    @model_validator(mode="after")
    def _dim_matches_rule(self) -> EmbeddingRule:
        if self.rule == "fixed" and self.dim is None:
            raise ValueError("rule fixed needs dim, e.g. {rule: fixed, dim: 8}")
        if self.rule == "fastai" and self.dim is not None:
            raise ValueError("dim applies to rule fixed only; remove it or set rule: fixed")
        return self

    def width(self, cardinality: int) -> int:
        wanted = self.dim if self.rule == "fixed" else round(1.6 * cardinality**0.56)
        return max(1, min(wanted, self.max_dim, cardinality))


class Architecture(Strict):
    embedding: EmbeddingRule = EmbeddingRule()
    hidden: list[int] = Field(default_factory=lambda: [64, 64], description="MLP hidden widths; [] is linear")
    dropout: float = Field(0.0, ge=0, lt=1)
    normalisation: Literal["none", "batch", "layer"] = "none"

    @model_validator(mode="after")
    def _positive_widths(self) -> Architecture:
        bad = [width for width in self.hidden if width < 1]
        if bad:
            raise ValueError(f"hidden widths must be >= 1, got {bad}")
        return self


def _architecture_kind(value: object) -> str:
    """``{module: ...}`` names the user's own network; anything else configures the built-in one."""
    if isinstance(value, CustomArchitecture) or isinstance(value, dict) and "module" in value:
        return "custom"
    return "built_in"


ARCHITECTURE_KINDS = ("built_in", "custom")
AnyArchitecture = Annotated[
    Annotated[Architecture, Tag("built_in")] | Annotated[CustomArchitecture, Tag("custom")],
    Discriminator(_architecture_kind),
]


class Optimiser(Strict):
    name: Literal["adam", "adamw", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0, le=10)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd only")


class Schedule(Strict):
    """Learning rate per epoch: constant, cosine decay to zero at max_epochs, or steps."""

    kind: Literal["none", "cosine", "step"] = "none"
    step_epochs: int = Field(10, ge=1, description="step: multiply lr by gamma every this many epochs")
    gamma: float = Field(0.1, gt=0, le=1)


class EarlyStopping(Strict):
    """Which validation metric selects the best epoch, and when to stop looking."""

    metric: str | None = Field(None, description="default: auc (binary), log_loss (multiclass), rmse (regression)")
    patience: int | None = Field(5, ge=1, description="epochs without improvement before stopping; null: never")
    mode: Literal["min", "max"] | None = Field(None, description="default: the metric's better direction")


class ModelSpec(Strict):
    name: str = Field(pattern=NAME, description="model name in the registry")
    dataset: str = Field(pattern=NAME)
    task: Task
    architecture: AnyArchitecture = Architecture()
    training: CustomTraining | None = Field(None, description="the user's own training function; see user_code")
    optimiser: Optimiser = Optimiser()
    schedule: Schedule = Schedule()
    batch_size: int = Field(1024, ge=1)
    max_epochs: int = Field(20, ge=1)
    min_steps: int | None = Field(
        None, ge=1, description="optimiser steps a run may take at least: a smaller train split (a drift retrain "
        "on a short window) trains more epochs, up to ceil(min_steps / batches per epoch); early stopping still "
        "applies. null: max_epochs whatever the rows")
    early_stopping: EarlyStopping = EarlyStopping()
    seed: int = Field(0, ge=0, lt=2**63)
    flavour: Flavour = Field("torch", description="torch (the tabular network) or lightgbm")
    lightgbm: LightGBMOptions | None = Field(None, description="flavour lightgbm: its parameters")
    search: Search | None = Field(None, description="several trials per dataset version; the best is the candidate")

    @model_validator(mode="after")
    def _one_way_to_train(self) -> ModelSpec:
        if self.training is not None and "architecture" in self.model_fields_set:
            raise ValueError("training.entrypoint builds and fits the model itself, so architecture is not "
                             "used; remove architecture, or remove training to fit it with the trainer's loop")
        if self.training is not None and self.min_steps is not None:
            raise ValueError("min_steps sets the epochs of the trainer's loop, and training.entrypoint runs its "
                             "own; remove min_steps, or remove training to fit it with the trainer's loop")
        return self

    @model_validator(mode="after")
    def _metric_fits_task(self) -> ModelSpec:
        metrics = TASK_METRICS[self.task]
        stopping = self.early_stopping
        if stopping.metric is not None and stopping.metric not in metrics:
            raise ValueError(
                f"early_stopping.metric {stopping.metric!r} is not computed for task {self.task}; "
                f"use one of {sorted(metrics)}"
            )
        if stopping.mode is not None and stopping.mode != metrics[self.metric]:
            # The opposite direction would select the worst epoch.
            raise ValueError(
                f"early_stopping.mode {stopping.mode!r} contradicts {self.metric}, "
                f"whose better direction is {metrics[self.metric]}; use mode: {metrics[self.metric]}"
            )
        return self

    @model_validator(mode="after")
    def _flavour_settings(self) -> ModelSpec:
        if self.flavour == "lightgbm":
            torch_only = [name for name in TORCH_ONLY if name in self.model_fields_set]
            if torch_only:
                raise ValueError(f"{', '.join(torch_only)} {'applies' if len(torch_only) == 1 else 'apply'} to "
                                 "flavour torch only; remove it from this lightgbm spec (its settings go under "
                                 "lightgbm:, its rounds are lightgbm.num_boost_round)")
        elif self.lightgbm is not None:
            raise ValueError("lightgbm settings apply to flavour lightgbm only; add flavour: lightgbm or remove them")
        if self.search is not None and self.training is not None:
            raise ValueError("search runs trials of the trainer's own loop; a training function runs its own, "
                             "so remove search or training")
        if self.search is not None:
            self.search_problems()
        return self

    @property
    def gbm(self) -> LightGBMOptions:
        """The LightGBM parameters (the defaults when the spec gives none)."""
        return self.lightgbm or LightGBMOptions()

    def trial(self, values: dict[str, object]) -> ModelSpec:
        """This spec with the searched ``values`` (dotted path -> value) put in and no search: one trial."""
        document = self.model_dump(mode="json", exclude_unset=True, exclude={"search"})
        for path, value in values.items():
            document = put_path(document, path, value)
        return ModelSpec.model_validate(document)

    def search_problems(self) -> None:
        """Every end of every searched range and every choice must make a valid spec."""
        problems = []
        for path, distribution in self.search.space.items():
            for value in distribution.ends():
                try:
                    self.trial({path: value})
                except (ValueError, ValidationError) as error:
                    found = _problems(error) if isinstance(error, ValidationError) else [str(error)]
                    problems.append(f"search.space.{path} = {value!r} makes an invalid spec: {'; '.join(found)}")
                    break
        if problems:
            raise ValueError("; ".join(problems))

    def epochs_for(self, train_rows: int) -> int:
        """The epoch limit of a run on ``train_rows`` rows: max_epochs, or more where min_steps needs them.

        Epochs are a budget in passes over the data, so a train split a quarter the size gets a quarter
        of the optimiser steps: too few to fit what the full split fits in max_epochs."""
        if self.min_steps is None:
            return self.max_epochs
        batches = max(1, math.ceil(train_rows / self.batch_size))
        return max(self.max_epochs, math.ceil(self.min_steps / batches))

    @property
    def metric(self) -> str:
        """The validation metric that selects the best epoch."""
        return self.early_stopping.metric or DEFAULT_METRIC[self.task]

    @property
    def metric_mode(self) -> Literal["min", "max"]:
        return TASK_METRICS[self.task][self.metric]

    @property
    def code_references(self) -> list[str]:
        """The user's functions this spec runs, ``package.module:function``; [] for the built-in model."""
        references = [self.architecture.module] if isinstance(self.architecture, CustomArchitecture) else []
        return references + ([self.training.entrypoint] if self.training is not None else [])

    def fingerprint(self) -> str:
        """Stable hash of everything that changes training; a checkpoint resumes only the same spec."""
        document = self.model_dump(mode="json")
        # Fields added later count only when set, so the specs written before keep their versions.
        for name, default in (("training", None), ("flavour", "torch"), ("lightgbm", None), ("search", None),
                              ("min_steps", None)):
            if document[name] == default:
                del document[name]
        canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _problems(error: ValidationError) -> list[str]:
    lines = []
    for item in error.errors(include_url=False):
        message = re.sub(r"^Value error, ", "", item["msg"])
        if isinstance(item["input"], str | int | float) and item["type"] != "extra_forbidden":
            message += f" (got {item['input']!r})"
        # Checks across fields name their fields in the message itself.
        # The tag of the architecture's kind (built_in, custom) is not a field the user wrote.
        where = ".".join(str(part) for part in item["loc"] if part not in ARCHITECTURE_KINDS)
        lines.append(f"{where}: {message}" if where else message)
    return lines


def parse_model_spec(document: object, source: str = "<model spec>") -> ModelSpec:
    if not isinstance(document, dict):
        raise SpecError(source, ["the model spec must be a mapping with name, dataset, task"])
    try:
        return ModelSpec.model_validate(document)
    except ValidationError as error:
        raise SpecError(source, _problems(error)) from None


def load_model_spec(path: Path) -> ModelSpec:
    return parse_model_spec(read_yaml(path), str(path))


def load_model_specs(folder: Path) -> dict[str, ModelSpec]:
    """All model specs of a folder by model name; every bad file is reported."""
    return load_folder(folder, load_model_spec, lambda spec: spec.name, "model specs", "model")


def dataset_problems(spec: ModelSpec, datasets: dict[str, DatasetSpec]) -> list[str]:
    """What keeps ``spec`` from training on its dataset as declared: a missing dataset or label, or a
    label whose type the task cannot learn (the trainer would fail on the first dataset version)."""
    dataset = datasets.get(spec.dataset)
    if dataset is None:
        return [f"dataset: {spec.dataset!r} is not among the dataset specs (they declare: "
                f"{', '.join(sorted(datasets)) or 'none'})"]
    if dataset.label is None:
        return [f"dataset: {spec.dataset!r} declares no label, so there is nothing to learn; set its label"]
    label = dataset.field(dataset.label)
    if spec.task == "binary":
        zero_one = label.type == "bool" or (
            label.type == "int" and label.min is not None and label.max is not None and 0 <= label.min <= label.max <= 1)
        if not zero_one:
            fix = "use task: multiclass" if label.type in ("category", "string") else (
                "give the label min: 0 and max: 1" if label.type == "int" else "use task: regression")
            return [f"task: binary learns a label of 0 and 1, and {dataset.label!r} is {label.type}"
                    f"{f' in [{label.min:g}, {label.max:g}]' if label.min is not None and label.max is not None else ''}"
                    f"; {fix}"]
    if spec.task == "regression" and label.type not in ("int", "float", "bool"):
        return [f"task: regression learns a number, and {dataset.label!r} is {label.type}; use task: multiclass"]
    return []


def specs_for_dataset(specs: dict[str, ModelSpec], dataset: str) -> list[ModelSpec]:
    return [spec for name, spec in sorted(specs.items()) if spec.dataset == dataset]
