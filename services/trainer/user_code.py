"""A model spec's own code: a torch module builder or a training function, named ``package.module:function``.

    architecture: {module: "fraud_models.residual:build", params: {width: 64, blocks: 2}}
    training: {entrypoint: "fraud_models.fit:fit", params: {epochs: 5}}

The code comes from the folder ``STREAMML_TRAINER_CODE_DIR`` (put first on
``sys.path``; ``streamml up --code DIR``) or from a package installed into the
trainer's image, and runs inside the trainer with the trainer's permissions.

``build(schema, params)`` returns a ``torch.nn.Module`` whose
``forward(numeric [N, F] float32, categorical [N, C] int64)`` answers raw
scores: ``[N]`` (binary logits, regression values) or ``[N, K]`` (multiclass
logits), like the built-in network; the trainer fits it with its own loop.
``fit(run)`` gets a ``FitRun`` and returns such a module itself.

Every failure of this code (an import error, a name that is not there, a
builder or entry point that raises, a forward that does not fit the data) is
a ``UserCodeError`` naming the model spec, so it reaches the dead-letter topic
as a permanent error instead of being retried or stopping the service.
"""

from __future__ import annotations

import hashlib
import importlib
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import torch
from pydantic import AfterValidator, Field
from torch import nn

from streamml.specs import Strict

if TYPE_CHECKING:
    import pyarrow as pa

    from services.trainer.data import FeatureLayout, TabularTensors
    from services.trainer.spec import ModelSpec
    from streamml.specs import DatasetSpec

REFERENCE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$")
# Rows of the dry forward that checks a module against the dataset: two, so batch normalisation works.
DRY_ROWS = 2


def _reference(value: str) -> str:
    if not REFERENCE.match(value):
        raise ValueError(f"{value!r} is not package.module:function, e.g. my_models.residual:build")
    return value


Reference = Annotated[str, AfterValidator(_reference)]


class CustomArchitecture(Strict):
    """``build(schema, params) -> torch.nn.Module``; the trainer's loop fits the module."""

    module: Reference = Field(description="package.module:function that builds the network")
    params: dict[str, Any] = Field(default_factory=dict, description="passed to the builder as is")


class CustomTraining(Strict):
    """``fit(run: FitRun) -> torch.nn.Module``; the function trains, the trainer publishes."""

    entrypoint: Reference = Field(description="package.module:function that trains the model")
    params: dict[str, Any] = Field(default_factory=dict, description="passed to the function as run.params")


class UserCodeError(ValueError):
    """The user code of a model spec failed; the message names the spec and the code."""

    def __init__(self, model: str, reference: str, problem: str):
        super().__init__(f"model spec {model!r}: {reference}: {problem}")

    @classmethod
    def combined(cls, messages: list[str]) -> UserCodeError:
        """One error for every failed spec of an event, each message whole."""
        error = cls.__new__(cls)
        ValueError.__init__(error, "; ".join(messages))
        return error


def add_code_dir(folder: Path) -> None:
    """Make the modules of ``folder`` importable, ahead of installed packages of the same name."""
    path = str(folder.resolve())
    if path not in sys.path:
        sys.path.insert(0, path)


def resolve(model: str, reference: str) -> Callable[..., Any]:
    """The function ``package.module:function`` names."""
    module_name, _, attribute = reference.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # noqa: BLE001 - any failure of the user's import is reported, not raised through
        raise UserCodeError(model, reference, f"cannot import {module_name}: {type(error).__name__}: {error}; "
                            "put it in the code folder (STREAMML_TRAINER_CODE_DIR) or install it into "
                            "the trainer's image") from error
    function = getattr(module, attribute, None)
    if not callable(function):
        raise UserCodeError(model, reference, f"{module_name} has no function {attribute!r}")
    return function


def build_module(model: str, architecture: CustomArchitecture, schema: FeatureLayout) -> nn.Module:
    """The user's network for ``schema``, checked by a forward pass over a tiny batch of its shape."""
    builder = resolve(model, architecture.module)
    try:
        net = builder(schema, dict(architecture.params))
    except Exception as error:  # noqa: BLE001
        raise UserCodeError(model, architecture.module, f"the builder raised {type(error).__name__}: {error}") \
            from error
    if not isinstance(net, nn.Module):
        raise UserCodeError(model, architecture.module,
                            f"the builder returned {type(net).__name__}, not a torch.nn.Module")
    check_forward(model, architecture.module, net, schema)
    return net


def check_forward(model: str, reference: str, net: nn.Module, schema: FeatureLayout) -> None:
    """A forward pass over zeros shaped like the dataset; the scores must have the task's shape."""
    numeric = torch.zeros(DRY_ROWS, len(schema.numeric))
    categorical = torch.zeros(DRY_ROWS, len(schema.categorical), dtype=torch.int64)
    expected = (DRY_ROWS,) if schema.outputs == 1 else (DRY_ROWS, schema.outputs)
    was_training = net.training
    try:
        with torch.no_grad():
            scores = net.eval()(numeric, categorical)
    except Exception as error:  # noqa: BLE001
        raise UserCodeError(
            model, reference,
            f"forward(numeric [N, {len(schema.numeric)}] float32, categorical [N, {len(schema.categorical)}] int64) "
            f"raised {type(error).__name__}: {error}") from error
    finally:
        net.train(was_training)
    shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else None
    if shape != expected:
        answered = f"shape {list(shape)}" if shape is not None else type(scores).__name__
        raise UserCodeError(model, reference, f"forward must answer a tensor of shape {list(expected)} "
                            f"(task {schema.task}, N = {DRY_ROWS}), it answered {answered}")


def declared_schema(dataset: DatasetSpec, task: str) -> FeatureLayout:
    """The schema a dataset spec promises before prep has seen data: its features in declared order
    (prep keeps it), each category with its declared values plus the out-of-vocabulary code (2 codes
    when it declares none; the real vocabulary comes from the data), and for multiclass the label's
    declared categories (2 classes when it declares none)."""
    from services.trainer.data import FeatureLayout

    numeric = [f.name for f in dataset.features if f.type in ("int", "float", "bool")]
    categories = [f for f in dataset.features if f.type == "category"]
    label = dataset.field(dataset.label) if dataset.label is not None else None
    classes = None
    if task == "multiclass":
        declared = label.categories if label is not None and label.categories else None
        classes = tuple(declared) if declared and len(declared) >= 2 else ("a", "b")
    return FeatureLayout(tuple(numeric), tuple(f.name for f in categories),
                         tuple(len(f.categories or ["?"]) + 1 for f in categories),
                         dataset.label or "", task, classes)


def check_against_dataset(spec: ModelSpec, dataset: DatasetSpec) -> list[str]:
    """What keeps the spec's own code from training on ``dataset``: imports, and a dry forward of its module."""
    try:
        for reference in spec.code_references:
            resolve(spec.name, reference)
        if isinstance(spec.architecture, CustomArchitecture):
            build_module(spec.name, spec.architecture, declared_schema(dataset, spec.task))
    except UserCodeError as error:
        return [str(error)]
    return []


def code_digest(references: list[str]) -> dict[str, Any]:
    """sha256 over the source files of the top-level packages the references live in, so a card names the code.

    Modules must be imported already (``resolve``). Files are hashed by their path relative to the
    package's folder and their bytes, in sorted order: the same code gives the same digest anywhere.
    """
    roots: dict[str, Path] = {}
    for reference in references:
        top = reference.partition(":")[0].split(".")[0]
        origin = getattr(sys.modules.get(top), "__file__", None)
        if origin is None:
            raise ValueError(f"{top} has no source file to hash (a namespace package?); give it an __init__.py")
        path = Path(origin)
        roots[top] = path.parent if path.name == "__init__.py" else path
    digest = hashlib.sha256()
    files = []
    for top, root in sorted(roots.items()):
        sources = sorted(root.rglob("*.py")) if root.is_dir() else [root]
        for source in sources:
            name = f"{top}/{source.relative_to(root).as_posix()}" if root.is_dir() else source.name
            content = source.read_bytes()
            digest.update(f"{name}\0{len(content)}\0".encode())
            digest.update(content)
            files.append(name)
    return {"references": references, "packages": {top: str(root) for top, root in sorted(roots.items())},
            "files": files, "sha256": digest.hexdigest()}


# -- what a training function gets ---------------------------------------------------


@dataclass(frozen=True)
class EpochLog:
    epoch: int
    train_loss: float
    metrics: dict[str, float]


@dataclass
class FitRun:
    """Everything a training function gets from the trainer.

    ``train``/``validation`` are the prepared splits as tensors (``numeric``,
    ``categorical``, ``label``) and ``tables`` the same splits as Arrow tables.
    ``checkpoint.save(state)`` stores a dict of tensors and plain values,
    ``checkpoint.load()`` returns the last one (None on a fresh run): a run that
    restarts after a crash continues from there. ``log(epoch, train_loss,
    metrics)`` records progress in the logs, metrics and card. ``should_stop()``
    turns true when the trainer is asked to stop; return or raise then.
    """

    schema: FeatureLayout
    train: TabularTensors
    validation: TabularTensors
    tables: dict[str, pa.Table]
    params: dict[str, Any]
    device: torch.device
    seed: int
    checkpoint: Checkpoint
    should_stop: Callable[[], bool]
    on_log: Callable[[EpochLog], None] = lambda entry: None
    history: list[EpochLog] = field(default_factory=list)

    def log(self, epoch: int, train_loss: float, metrics: dict[str, float] | None = None) -> None:
        entry = EpochLog(int(epoch), float(train_loss), {name: float(v) for name, v in (metrics or {}).items()})
        self.history.append(entry)
        self.on_log(entry)


@dataclass(frozen=True)
class Checkpoint:
    """The run's checkpoint in the registry; ``save`` and ``load`` go through the caller's functions."""

    save: Callable[[dict[str, Any]], None]
    load: Callable[[], dict[str, Any] | None]
