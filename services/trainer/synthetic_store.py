"""A synthetic prepared dataset version committed to the object store the way prep
commits one (split files first, manifest last), to try or measure the trainer
service without ingest and prep.

    manifest, splits = write_synthetic_version(store, "payments", version=1, rows=100_000)
    producer.send_now(DatasetReady.of(manifest, "manual"))
"""

from __future__ import annotations

import hashlib
import io

import pyarrow as pa
import pyarrow.parquet as pq

from services.trainer.spec import Task
from services.trainer.synthetic import synthetic_dataset
from streamml.manifest import DatasetManifest, FileEntry
from streamml.registry.keys import dataset_manifest_key, split_prefix
from streamml.store import ObjectStore


def write_synthetic_version(
    store: ObjectStore, dataset: str, version: int, rows: int, *, task: Task = "binary", seed: int = 0
) -> tuple[DatasetManifest, dict[str, pa.Table]]:
    synthetic, splits = synthetic_dataset(rows, task=task, seed=seed, name=dataset)
    return commit_version(store, synthetic.model_copy(update={"version": version}), splits), splits


def commit_version(store: ObjectStore, manifest: DatasetManifest, splits: dict[str, pa.Table]) -> DatasetManifest:
    """One Parquet file per split, then the manifest naming them (last); returns that manifest."""
    files = {}
    for split, table in splits.items():
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        data = buffer.getvalue()
        key = f"{split_prefix(manifest.dataset, manifest.version, split)}part-00000.parquet"
        store.put(key, data)
        files[split] = [FileEntry(key=key, rows=table.num_rows, sha256=hashlib.sha256(data).hexdigest())]
    manifest = manifest.model_copy(update={"files": files})
    store.put(dataset_manifest_key(manifest.dataset, manifest.version), manifest.model_dump_json(by_alias=True).encode())
    return manifest
