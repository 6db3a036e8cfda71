"""A synthetic prepared dataset with a learnable signal, shaped exactly like prep's
output: for benchmarks, tests, and trying the trainer without a pipeline.

    manifest, splits = synthetic_dataset(100_000, task="binary", seed=1)
    splits["train"]  # pyarrow.Table: id, ts, num_0.., cat_0.., label
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from services.trainer.spec import Task
from streamml.manifest import (
    CategoryReference,
    CategoryTransform,
    DatasetManifest,
    FileEntry,
    NumericReference,
    NumericTransform,
)
from streamml.registry.keys import split_prefix

SPLIT_SHARES = {"train": 0.8, "validation": 0.1, "test": 0.1}
CLASSES = 3


def synthetic_dataset(
    rows: int,
    *,
    task: Task = "binary",
    numeric: int = 6,
    cardinalities: tuple[int, ...] = (12, 40),
    seed: int = 0,
    name: str = "synthetic",
) -> tuple[DatasetManifest, dict[str, pa.Table]]:
    """Rows split 80/10/10; ``cardinalities`` count codes including 0 (out of vocabulary)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, numeric))
    codes = np.zeros((rows, len(cardinalities)), dtype=np.int64)
    for i, n in enumerate(cardinalities):
        codes[:, i] = rng.integers(0, n, rows)
    signal = x @ rng.normal(0, 1, numeric)
    for i, n in enumerate(cardinalities):
        signal += rng.normal(0, 1, n)[codes[:, i]]
    if task == "binary":
        label = (rng.random(rows) < 1 / (1 + np.exp(-2 * signal))).astype(np.int64)
    elif task == "multiclass":
        label = np.digitize(signal + rng.normal(0, 0.3, rows), np.quantile(signal, [1 / 3, 2 / 3])).astype(np.int64)
    else:
        label = 3.0 * signal + rng.normal(0, 0.5, rows)

    columns = {
        "id": pa.array(np.arange(rows, dtype=np.int64)),
        "ts": pa.array(np.arange(rows, dtype=np.int64) * 1_000_000, type=pa.timestamp("us", tz="UTC")),
        **{f"num_{i}": pa.array(x[:, i]) for i in range(numeric)},
        **{f"cat_{i}": pa.array(codes[:, i]) for i in range(len(cardinalities))},
        "label": pa.array(label),
    }
    table = pa.table(columns)
    bounds = np.cumsum([0] + [round(rows * share) for share in SPLIT_SHARES.values()])
    bounds[-1] = rows
    splits = {split: table.slice(bounds[i], bounds[i + 1] - bounds[i]) for i, split in enumerate(SPLIT_SHARES)}
    return _manifest(name, splits, numeric, cardinalities), splits


def _manifest(name: str, splits: dict[str, pa.Table], numeric: int, cardinalities: tuple[int, ...]) -> DatasetManifest:
    train = splits["train"]
    transform: dict[str, NumericTransform | CategoryTransform] = {}
    reference: dict[str, NumericReference | CategoryReference] = {}
    for i in range(numeric):
        column = f"num_{i}"
        values = train.column(column).to_numpy()
        transform[column] = NumericTransform(mean=0.0, std=1.0)
        reference[column] = _numeric_reference(values)
    for i, n in enumerate(cardinalities):
        column = f"cat_{i}"
        vocabulary = [f"{column}_v{code}" for code in range(1, n)]
        transform[column] = CategoryTransform(vocabulary=vocabulary)
        counts = np.bincount(train.column(column).to_numpy(), minlength=n)
        shares = counts / max(train.num_rows, 1)
        frequencies = {value: float(shares[code + 1]) for code, value in enumerate(vocabulary)}
        reference[column] = CategoryReference(frequencies=frequencies, count=train.num_rows)
    return DatasetManifest(
        dataset=name,
        version=1,
        created=datetime.now(UTC),
        spec_fingerprint="synthetic",
        schema={field.name: str(field.type) for field in train.schema},
        key="id",
        event_time="ts",
        label="label",
        features=[*(f"num_{i}" for i in range(numeric)), *(f"cat_{i}" for i in range(len(cardinalities)))],
        files={
            split: [
                FileEntry(key=f"{split_prefix(name, 1, split)}part-0.parquet", rows=table.num_rows, sha256=_sha256(table))
            ]
            for split, table in splits.items()
        },
        rows={split: table.num_rows for split, table in splits.items()},
        content_sha256={split: _sha256(table) for split, table in splits.items()},
        transform=transform,
        reference=reference,
        label_reference=None,
        lineage=[],
        trigger="manual",
        code_version="synthetic",
        engine="synthetic",
    )


def _numeric_reference(values: np.ndarray) -> NumericReference:
    edges = np.quantile(values, np.linspace(0.1, 0.9, 9)) if values.size else np.zeros(0)
    bins = np.searchsorted(edges, values, side="right")
    fractions = np.bincount(bins, minlength=edges.size + 1) / max(values.size, 1)
    return NumericReference(
        edges=edges.tolist(),
        fractions=fractions.tolist(),
        count=int(values.size),
        mean=float(values.mean()) if values.size else 0.0,
        std=float(values.std()) if values.size else 0.0,
        sample=values[:200].tolist(),
    )


def _sha256(table: pa.Table) -> str:
    digest = hashlib.sha256()
    for column in table.columns:
        digest.update(column.to_numpy().tobytes())
    return digest.hexdigest()
