"""A dataset version's test split as model inputs and labels.

Prepared split files hold numeric features standardised (float64) and
category features as int64 codes (0: out of vocabulary), as prep wrote them
with the manifest's transform; labels are unchanged. Nulls left by prep take
the value the trainer gives them: 0.0 (the standardised mean) and code 0.

    split = read_test_split(store, manifest)
    labels = labels_for(card, split.labels)
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from services.validator.evaluation import category_names
from streamml.manifest import DatasetManifest
from streamml.registry.decisions import JudgedRows
from streamml.sdk.preprocess import Features, FeatureTransform


@dataclass(frozen=True)
class TestSplit:
    __test__ = False  # not a pytest test class

    dataset: str
    version: int
    features: Features  # in ``transform``, the manifest's
    labels: np.ndarray  # the label column as prep wrote it
    transform: FeatureTransform

    def __len__(self) -> int:
        return len(self.labels)

    def slices(self, features: Iterable[str]) -> dict[str, np.ndarray]:
        """Category names per row for each of ``features`` that is a category feature here."""
        found = {}
        for name in features:
            if name in self.transform.categorical:
                codes = self.features.categorical[:, self.transform.categorical.index(name)]
                found[name] = category_names(codes, self.transform.transforms[name].vocabulary)
        return found


def read_test_split(store: Any, manifest: DatasetManifest) -> TestSplit:
    entries = manifest.files.get("test", [])
    if not entries:
        raise ValueError(
            f"dataset {manifest.dataset} v{manifest.version} has no test files; "
            "models are judged on the test split, so give the dataset spec a test share"
        )
    columns = [*manifest.features, manifest.label] if manifest.label else []
    tables = [pq.read_table(io.BytesIO(store.get_bytes(entry.key)), columns=columns) for entry in entries]
    return split_from_table(pa.concat_tables(tables, promote_options="permissive"), manifest)


def split_from_table(table: pa.Table, manifest: DatasetManifest) -> TestSplit:
    if manifest.label is None:
        raise ValueError(f"dataset {manifest.dataset!r} has no label, so no model trained on it can be judged")
    transform = FeatureTransform.from_manifest(manifest)
    missing = [name for name in [*transform.features, manifest.label] if name not in table.column_names]
    if missing:
        raise ValueError(f"test split of {manifest.dataset} v{manifest.version} lacks columns {missing}")
    numeric = np.empty((table.num_rows, len(transform.numeric)), dtype=np.float32)
    for i, name in enumerate(transform.numeric):
        numeric[:, i] = pc.fill_null(table.column(name), 0.0).to_numpy()
    categorical = np.empty((table.num_rows, len(transform.categorical)), dtype=np.int64)
    for i, name in enumerate(transform.categorical):
        categorical[:, i] = pc.fill_null(table.column(name), 0).to_numpy()
    label = table.column(manifest.label)
    if label.null_count:
        raise ValueError(f"label {manifest.label!r} has {label.null_count} nulls in the test split")
    return TestSplit(
        dataset=manifest.dataset,
        version=manifest.version,
        features=Features(numeric, categorical),
        labels=label.to_numpy(zero_copy_only=False),
        transform=transform,
    )


def labels_for(card: Mapping[str, Any], labels: np.ndarray) -> np.ndarray:
    """Labels in the form a model's outputs are scored against: class indices for multiclass."""
    task = card.get("task")
    if task == "multiclass":
        classes: Sequence[Any] = (card.get("outputs") or {}).get("classes") or []
        index = {value: i for i, value in enumerate(classes)}
        unknown = sorted({str(value) for value in labels.tolist() if value not in index})
        if unknown:
            raise ValueError(f"test labels {unknown[:5]} are not among the model's classes {list(classes)}")
        return np.array([index[value] for value in labels.tolist()], dtype=np.int64)
    if task in ("binary", "regression"):
        return labels.astype(np.float64)
    raise ValueError(f"model card task {task!r} is not binary, multiclass or regression")


def judged_rows(manifest: DatasetManifest, rows: int) -> JudgedRows:
    """What judging on ``manifest``'s test split means: a drift build's holds post-drift rows only (prep)."""
    drift = manifest.drift
    return JudgedRows(dataset=manifest.dataset, dataset_version=manifest.version, rows=rows,
                      after_drift=drift is not None, drift_event=drift.event_id if drift else None,
                      drift_point=drift.point if drift else None)
