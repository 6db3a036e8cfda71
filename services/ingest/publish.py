"""``streamml publish DATASET FILE``: send a CSV, JSON Lines or Parquet file to
the dataset's ingest topic, keyed by its key field.

Rows are checked with the same rules the ingest service applies, so what is
reported as rejected here is what would land in ``dlq.ingest`` there.

The file is streamed: read, checked and sent ``BATCH_ROWS`` rows at a time
(Parquet by record batches, CSV by blocks, JSON Lines by lines), so memory
stays bounded whatever the file's size (``bench/publish`` measures it). CSV
columns take the types the spec declares rather than types guessed from the
first block, which a later block could contradict.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from services.ingest.records import decode_batch
from streamml.kafka import EventProducer
from streamml.settings import KafkaSettings
from streamml.specs import ARROW_TYPES, DatasetSpec

BATCH_ROWS = 5_000
CSV_BLOCK_BYTES = 1 << 20
REPORTED = 20  # rejected rows whose reason is kept; the rest are counted


class PublishError(Exception):
    pass


@dataclass
class PublishSummary:
    records: int = 0
    bytes: int = 0
    seconds: float = 0.0
    rejected: int = 0
    reasons: list[tuple[int, str]] = field(default_factory=list)  # (row, reason) of the first REPORTED rejected


def read_batches(path: Path, spec: DatasetSpec, rows: int = BATCH_ROWS) -> Iterator[list[bytes]]:
    """One compact JSON object per row of ``path`` (by suffix: .csv, .jsonl/.ndjson/.json, .parquet),
    at most ``rows`` at a time."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return _json_lines(path, rows)
    if suffix == ".csv":
        return _csv_batches(path, spec, rows)
    if suffix in (".parquet", ".pq"):
        return _parquet_batches(path, rows)
    raise PublishError(f"{path}: unknown format {suffix!r}; use .csv, .jsonl or .parquet")


def _parquet_batches(path: Path, rows: int) -> Iterator[list[bytes]]:
    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=rows):
            yield _json_rows(batch)
    except pa.ArrowInvalid as error:
        raise PublishError(f"{path}: not a readable Parquet file ({error})") from None


def _json_lines(path: Path, rows: int) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    with path.open("rb") as lines:
        for line in lines:
            record = line.strip()
            if record:
                batch.append(record)
                if len(batch) == rows:
                    yield batch
                    batch = []
    if batch:
        yield batch


def _csv_batches(path: Path, spec: DatasetSpec, rows: int) -> Iterator[list[bytes]]:
    # Timestamps are left to the reader, which writes them back as ISO 8601 as ingest reads them.
    types = {f.name: ARROW_TYPES[f.type] for f in spec.fields if f.type != "timestamp"}
    try:
        # The reader reads one block ahead of the batch it returns.
        reader = pcsv.open_csv(path, read_options=pcsv.ReadOptions(block_size=CSV_BLOCK_BYTES),
                               convert_options=pcsv.ConvertOptions(column_types=types))
        for batch in reader:
            for start in range(0, batch.num_rows, rows):
                yield _json_rows(batch.slice(start, rows))
    except pa.ArrowInvalid as error:
        raise PublishError(f"{path}: {error}; make the value fit the field's type in the spec") from None


def _json_rows(batch: pa.RecordBatch) -> list[bytes]:
    return [json.dumps(row, default=_json_default, separators=(",", ":")).encode() for row in batch.to_pylist()]


def _json_default(value: object) -> str:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def record_keys(records: list[bytes], spec: DatasetSpec) -> list[bytes | None]:
    keys = []
    for record in records:
        try:
            value = json.loads(record).get(spec.key)
        except (ValueError, AttributeError):
            value = None
        keys.append(None if value is None else str(value).encode())
    return keys


def publish(
    batches: Iterable[list[bytes]],
    spec: DatasetSpec,
    kafka: KafkaSettings,
    max_record_bytes: int | None,
    rate: float | None = None,
    show_progress: bool = True,
    summary: PublishSummary | None = None,
) -> PublishSummary:
    """Send each batch's rows, less those ingest would reject (checked unless ``max_record_bytes`` is None).

    ``summary``, when given, is filled in as rows are sent, so a caller still
    knows what was sent when reading the file fails part way."""
    topic = kafka.topic(spec.ingest_topic)
    producer = EventProducer(kafka, client_id="streamml-publish", **{"linger.ms": 20})
    summary = summary if summary is not None else PublishSummary()
    started = time.monotonic()
    row = 0
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    try:
        with Progress(*columns, disable=not show_progress, transient=True) as progress:
            task = progress.add_task(f"publishing to {topic}", total=None)
            for records in batches:
                rejected = decode_batch(records, spec, max_record_bytes).rejected if max_record_bytes else {}
                summary.rejected += len(rejected)
                for index, reason in sorted(rejected.items())[:REPORTED - len(summary.reasons)]:
                    summary.reasons.append((row + index, reason))
                for index, (record, key) in enumerate(zip(records, record_keys(records, spec), strict=True)):
                    if index in rejected:
                        continue
                    if rate:
                        delay = started + summary.records / rate - time.monotonic()
                        if delay > 0:
                            time.sleep(delay)
                    producer.produce(topic, record, key)
                    summary.records += 1
                    summary.bytes += len(record)
                row += len(records)
                progress.update(task, completed=summary.records)
    finally:
        producer.flush()
        summary.seconds = time.monotonic() - started
    return summary
