"""A small synthetic prepared dataset and spec shared by the trainer's unit tests."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from services.trainer.data import FeatureLayout, TabularTensors, tensors_from_table
from services.trainer.spec import ModelSpec, parse_model_spec
from services.trainer.synthetic import synthetic_dataset
from streamml.manifest import DatasetManifest

# Other work shares the machine; results must not depend on the thread count either.
torch.set_num_threads(1)


@dataclass(frozen=True)
class Prepared:
    manifest: DatasetManifest
    layout: FeatureLayout
    train: TabularTensors
    validation: TabularTensors


def prepared(task: str = "binary", rows: int = 4000, seed: int = 3) -> Prepared:
    manifest, splits = synthetic_dataset(rows, task=task, seed=seed)
    layout = FeatureLayout.from_manifest(manifest, task).with_classes(splits["train"])
    return Prepared(
        manifest,
        layout,
        tensors_from_table(splits["train"], layout),
        tensors_from_table(splits["validation"], layout),
    )


def spec(task: str = "binary", **overrides: object) -> ModelSpec:
    document = {
        "name": "tiny",
        "dataset": "synthetic",
        "task": task,
        "architecture": {"hidden": [16, 8], "dropout": 0.2, "normalisation": "batch"},
        "optimiser": {"name": "adamw", "lr": 0.01},
        "schedule": {"kind": "cosine"},
        "batch_size": 128,
        "max_epochs": 3,
        "early_stopping": {"patience": None},
        "seed": 11,
    }
    document.update(overrides)
    return parse_model_spec(document)


@pytest.fixture(scope="session")
def make_prepared():
    return prepared


@pytest.fixture(scope="session")
def make_spec():
    return spec


@pytest.fixture(scope="session")
def binary() -> Prepared:
    return prepared("binary")
