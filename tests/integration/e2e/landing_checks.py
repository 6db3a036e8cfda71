"""What the end-to-end tests check in the object store after a loop."""

from __future__ import annotations

import io

import pyarrow.parquet as pq

from streamml.store import ObjectStore


def landed(store: ObjectStore) -> tuple[list[tuple[int, int]], list[str]]:
    """(partition, offset) and key of every landed transaction: each must appear once."""
    offsets, keys = [], []
    for key in store.list("raw/transactions/"):
        table = pq.read_table(io.BytesIO(store.get_bytes(key)), columns=["_partition", "_offset", "tx_id"])
        offsets += zip(table.column(0).to_pylist(), table.column(1).to_pylist())
        keys += table.column(2).to_pylist()
    return offsets, keys
