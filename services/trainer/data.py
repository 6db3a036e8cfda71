"""Prepared splits as tensors, column by column.

A prepared split (see ``streamml.manifest``) holds numeric features already
standardised (float64), categorical features as int64 codes with 0 meaning
out-of-vocabulary, and the label column unchanged. Columns go from Arrow to
numpy to torch whole; nothing here loops over rows, because per-row Python
is what makes tabular training slow.

    layout = FeatureLayout.from_manifest(manifest, task="binary")
    train = tensors_from_table(read_parquet(paths_or_bytes, layout.columns), layout)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from services.trainer.spec import Task
from streamml.manifest import CategoryTransform, DatasetManifest, NumericTransform


@dataclass(frozen=True)
class FeatureLayout:
    """Which prepared columns feed the model, in which order, and what the label means."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    cardinalities: tuple[int, ...]  # codes per categorical, OOV (0) included
    label: str
    task: Task
    classes: tuple[Any, ...] | None = None  # multiclass: label value of each output

    @classmethod
    def from_manifest(cls, manifest: DatasetManifest, task: Task) -> FeatureLayout:
        """Numeric and categorical features in manifest order; ``with_classes`` adds multiclass labels."""
        if manifest.label is None:
            raise ValueError(
                f"dataset {manifest.dataset!r} has no label; set label in its dataset spec to train on it"
            )
        numeric, categorical, cardinalities = [], [], []
        for name in manifest.features:
            transform = manifest.transform.get(name)
            if isinstance(transform, NumericTransform):
                numeric.append(name)
            elif isinstance(transform, CategoryTransform):
                categorical.append(name)
                cardinalities.append(len(transform.vocabulary) + 1)
            else:
                raise ValueError(
                    f"feature {name!r} has no transform in the manifest of {manifest.dataset} v{manifest.version}"
                )
        return cls(tuple(numeric), tuple(categorical), tuple(cardinalities), manifest.label, task)

    @property
    def columns(self) -> list[str]:
        return [*self.numeric, *self.categorical, self.label]

    @property
    def outputs(self) -> int:
        if self.task != "multiclass":
            return 1
        if not self.classes or len(self.classes) < 2:
            raise ValueError(f"multiclass needs at least two label classes, got {self.classes}")
        return len(self.classes)

    def with_classes(self, table: pa.Table) -> FeatureLayout:
        """For multiclass, the classes are the sorted label values seen in the train split."""
        if self.task != "multiclass":
            return self
        values = pc.unique(table.column(self.label).drop_null()).to_pylist()
        return FeatureLayout(self.numeric, self.categorical, self.cardinalities, self.label, self.task,
                             tuple(sorted(values)))


@dataclass(frozen=True)
class TabularTensors:
    numeric: torch.Tensor  # [N, F] float32
    categorical: torch.Tensor  # [N, C] int64
    label: torch.Tensor  # [N] float32 (binary, regression) or int64 class index (multiclass)

    def __len__(self) -> int:
        return self.label.shape[0]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> TabularTensors:
        return TabularTensors(*(t.to(device, non_blocking=non_blocking) for t in self.tensors()))

    def pin_memory(self) -> TabularTensors:
        return TabularTensors(*(t.pin_memory() for t in self.tensors()))

    def take(self, index: torch.Tensor) -> TabularTensors:
        return TabularTensors(*(t[index] for t in self.tensors()))

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.numeric, self.categorical, self.label

    @property
    def nbytes(self) -> int:
        return sum(t.element_size() * t.nelement() for t in self.tensors())


def read_parquet(sources: Sequence[str | Path | bytes | pa.Table], columns: Sequence[str]) -> pa.Table:
    """One table from local Parquet files, Parquet bytes fetched elsewhere, or Arrow tables."""
    if not sources:
        raise ValueError("no Parquet sources given; a split needs at least one file")
    tables = []
    for source in sources:
        if isinstance(source, pa.Table):
            table = source.select(list(columns))
        elif isinstance(source, bytes | bytearray | memoryview):
            table = pq.read_table(pa.BufferReader(source), columns=list(columns))
        else:
            table = pq.read_table(source, columns=list(columns))
        tables.append(table)
    return pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]


def tensors_from_table(table: pa.Table, layout: FeatureLayout) -> TabularTensors:
    missing = [name for name in layout.columns if name not in table.column_names]
    if missing:
        raise ValueError(f"prepared split lacks columns {missing}; it has {table.column_names}")
    rows = table.num_rows
    numeric = np.empty((rows, len(layout.numeric)), dtype=np.float32)
    for i, name in enumerate(layout.numeric):
        numeric[:, i] = _numeric_column(table.column(name), name)
    categorical = np.empty((rows, len(layout.categorical)), dtype=np.int64)
    for i, (name, cardinality) in enumerate(zip(layout.categorical, layout.cardinalities, strict=True)):
        categorical[:, i] = _category_column(table.column(name), name, cardinality)
    label = _label_column(table.column(layout.label), layout)
    return TabularTensors(torch.from_numpy(numeric), torch.from_numpy(categorical), torch.from_numpy(label))


def _numeric_column(column: pa.ChunkedArray, name: str) -> np.ndarray:
    if not (pa.types.is_floating(column.type) or pa.types.is_integer(column.type)):
        raise ValueError(f"numeric feature {name!r} has type {column.type}; prep writes float64")
    # A null left by prep (nulls: keep) becomes the standardised mean, 0.0, which is
    # also what the manifest's transform gives a null without an impute value.
    return pc.fill_null(column, 0.0).to_numpy().astype(np.float32, copy=False)


def _category_column(column: pa.ChunkedArray, name: str, cardinality: int) -> np.ndarray:
    if not pa.types.is_integer(column.type):
        raise ValueError(f"categorical feature {name!r} has type {column.type}; prep writes int64 codes")
    codes = pc.fill_null(column, 0).to_numpy().astype(np.int64, copy=False)
    if codes.size and (codes.min() < 0 or codes.max() >= cardinality):
        raise ValueError(
            f"categorical feature {name!r} has codes in [{codes.min()}, {codes.max()}] but its vocabulary "
            f"allows 0..{cardinality - 1}; the split and the manifest come from different versions"
        )
    return codes


def _label_column(column: pa.ChunkedArray, layout: FeatureLayout) -> np.ndarray:
    if column.null_count:
        raise ValueError(f"label {layout.label!r} has {column.null_count} nulls; prep must drop unlabelled rows")
    if layout.task == "multiclass":
        index = pc.index_in(column, value_set=pa.array(layout.classes, type=column.type))
        if index.null_count:
            unknown = pc.unique(pc.filter(column, pc.is_null(index))).to_pylist()[:5]
            raise ValueError(
                f"label {layout.label!r} has values {unknown} not among the train classes {list(layout.classes)}"
            )
        return index.to_numpy().astype(np.int64)
    if pa.types.is_boolean(column.type):
        column = pc.cast(column, pa.int8())
    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        raise ValueError(f"label {layout.label!r} has type {column.type}; {layout.task} needs a number")
    values = column.to_numpy().astype(np.float32)
    if layout.task == "binary" and not np.isin(values, (0.0, 1.0)).all():
        seen = np.unique(values)[:5].tolist()
        raise ValueError(f"binary label {layout.label!r} must be 0 or 1, found {seen}")
    return values


def row_weights(table: pa.Table, column: str) -> torch.Tensor:
    """A split's per-row training weights (the manifest's ``weight`` column): finite, >= 0, not all 0."""
    if column not in table.column_names:
        raise ValueError(f"the manifest names weight column {column!r}, which the prepared split lacks")
    values = table.column(column)
    if values.null_count:
        raise ValueError(f"weight column {column!r} has {values.null_count} nulls; prep writes one weight per row")
    weights = values.to_numpy().astype(np.float64)
    if weights.size and (not np.isfinite(weights).all() or weights.min() < 0 or weights.sum() <= 0):
        raise ValueError(f"weight column {column!r} must hold finite weights >= 0, not all 0; it spans "
                         f"[{weights.min()}, {weights.max()}]")
    return torch.from_numpy(weights)
