"""What the end-to-end tests check in the object store after a loop."""

from __future__ import annotations

import io

import pyarrow.parquet as pq

from streamml.store import ObjectStore


def landed_offsets(store: ObjectStore, dataset: str = "transactions") -> list[tuple[int, int]]:
    """(partition, offset) of every record landed for ``dataset``: each must appear once."""
    offsets = []
    for key in store.list(f"raw/{dataset}/"):
        table = pq.read_table(io.BytesIO(store.get_bytes(key)), columns=["_partition", "_offset"])
        offsets += zip(table.column(0).to_pylist(), table.column(1).to_pylist())
    return offsets
