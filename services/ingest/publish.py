"""``streamml publish DATASET FILE``: send a CSV, JSON Lines or Parquet file to
the dataset's ingest topic, keyed by its key field.

Rows are checked with the same rules the ingest service applies, so what is
reported as rejected here is what would land in ``dlq.ingest`` there.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import pyarrow.csv as pcsv
import pyarrow.parquet as pq
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from services.ingest.records import decode_batch
from streamml.kafka import EventProducer
from streamml.settings import KafkaSettings
from streamml.specs import DatasetSpec

CHUNK = 5_000


class PublishError(Exception):
    pass


@dataclass
class PublishSummary:
    records: int = 0
    bytes: int = 0
    seconds: float = 0.0
    rejected: list[tuple[int, str]] = field(default_factory=list)


def read_records(path: Path) -> list[bytes]:
    """One compact JSON object per row of ``path`` (by suffix: .csv, .jsonl/.ndjson/.json, .parquet)."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return [line.strip() for line in path.read_bytes().splitlines() if line.strip()]
    if suffix == ".csv":
        table = pcsv.read_csv(path)
    elif suffix in (".parquet", ".pq"):
        table = pq.read_table(path)
    else:
        raise PublishError(f"{path}: unknown format {suffix!r}; use .csv, .jsonl or .parquet")
    return [json.dumps(row, default=_json_default, separators=(",", ":")).encode() for row in table.to_pylist()]


def _json_default(value: object) -> str:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def validate(records: list[bytes], spec: DatasetSpec, max_bytes: int) -> dict[int, str]:
    """Row index -> reason, for every row the ingest service would reject."""
    rejected: dict[int, str] = {}
    for start in range(0, len(records), CHUNK):
        decoded = decode_batch(records[start : start + CHUNK], spec, max_bytes)
        rejected.update({start + i: reason for i, reason in decoded.rejected.items()})
    return rejected


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
    records: list[bytes],
    spec: DatasetSpec,
    kafka: KafkaSettings,
    rate: float | None = None,
    skip: set[int] = frozenset(),
    show_progress: bool = True,
) -> PublishSummary:
    topic = kafka.topic(spec.ingest_topic)
    producer = EventProducer(kafka, client_id="streamml-publish", **{"linger.ms": 20})
    keys = record_keys(records, spec)
    summary = PublishSummary()
    started = time.monotonic()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not show_progress, transient=True) as progress:
        task = progress.add_task(f"publishing to {topic}", total=len(records) - len(skip))
        for index, (record, key) in enumerate(zip(records, keys, strict=True)):
            if index in skip:
                continue
            if rate:
                delay = started + summary.records / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            producer.produce(topic, record, key)
            summary.records += 1
            summary.bytes += len(record)
            if summary.records % 1000 == 0:
                progress.update(task, completed=summary.records)
        producer.flush()
        progress.update(task, completed=summary.records)
    summary.seconds = time.monotonic() - started
    return summary

