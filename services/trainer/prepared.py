"""A committed dataset version read from the object store: its manifest and the
Parquet files of its splits, checked against what the manifest says of them.

    manifest = read_manifest(store, event.manifest_key, event.dataset, event.version)
    tables, train_weights = read_training_splits(store, manifest, columns)
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pyarrow as pa
import torch

from services.trainer.data import read_parquet, row_weights
from streamml.manifest import DatasetManifest
from streamml.registry.datasets import manifest_at
from streamml.store import ObjectStore

TRAINING_SPLITS = ("train", "validation")


def read_manifest(store: ObjectStore, key: str, dataset: str, version: int) -> DatasetManifest:
    """The manifest a ``dataset.ready`` names, checked to be the version it announced."""
    manifest = manifest_at(store, key)
    if (manifest.dataset, manifest.version) != (dataset, version):
        raise ValueError(
            f"{key} describes {manifest.dataset} v{manifest.version}, but the event announced {dataset} v{version}"
        )
    return manifest


def read_splits(
    store: ObjectStore, manifest: DatasetManifest, splits: Sequence[str], columns: Sequence[str]
) -> dict[str, pa.Table]:
    """``columns`` of each split, its files verified by row count and sha256."""
    tables = {}
    for split in splits:
        entries = manifest.files.get(split) or []
        if not entries:
            raise ValueError(
                f"{manifest.dataset} v{manifest.version} has no {split} files; the trainer needs {list(splits)}"
            )
        sources = []
        for entry in entries:
            data = store.get_bytes(entry.key)
            digest = hashlib.sha256(data).hexdigest()
            if digest != entry.sha256:
                raise ValueError(
                    f"{entry.key} has sha256 {digest}, but the manifest of {manifest.dataset} v{manifest.version} "
                    f"says {entry.sha256}: the file changed after the version was committed"
                )
            sources.append(data)
        table = read_parquet(sources, columns)
        expected = sum(entry.rows for entry in entries)
        if table.num_rows != expected:
            raise ValueError(
                f"the {split} split of {manifest.dataset} v{manifest.version} has {table.num_rows} rows, "
                f"its manifest says {expected}"
            )
        tables[split] = table
    return tables


def read_training_splits(
    store: ObjectStore, manifest: DatasetManifest, columns: Sequence[str]
) -> tuple[dict[str, pa.Table], torch.Tensor | None]:
    """``read_splits`` of the training splits, and the train rows' weights when the manifest names a
    weight column (a drift build of window all), else None: every row weighs the same."""
    weight = [manifest.weight] if manifest.weight else []
    tables = read_splits(store, manifest, TRAINING_SPLITS, [*columns, *weight])
    return tables, row_weights(tables["train"], manifest.weight) if manifest.weight else None
