"""The ingest service: ``ingest.<dataset>`` topics -> Parquet in the object store.

For each partition, records are validated against their dataset spec (bad
ones go to ``dlq.ingest`` with the reason) and buffered until a row, byte or
age limit; then, in this order: the dead letters are flushed, the Parquet
object is written at its deterministic key, ``data.landed`` is sent, and the
offsets are committed. A crash anywhere replays the same range into the same
key, so no record is lost and none is landed twice.
"""

from __future__ import annotations

import logging
import re
import time
from collections import defaultdict
from pathlib import Path

from confluent_kafka import Message, TopicPartition
from prometheus_client import Counter, Gauge, Histogram
from pydantic import Field

from services.ingest.landing import (
    META_COLUMNS,
    FlushLimits,
    PartitionBuffer,
    event_time_range,
    parquet_bytes,
    parse_last_offset,
    with_kafka_columns,
)
from services.ingest.records import decode_batch
from streamml.events import DataLanded
from streamml.service import ConsumerService, StartupError, run
from streamml.settings import Group, ServiceSettings
from streamml.specs import DatasetSpec, SpecError, load_dataset_specs

log = logging.getLogger("streamml.ingest")

GROUP = "streamml-ingest"
TOPIC_PATTERN = r"ingest\..*"

RECORDS = Counter("streamml_ingest_records_total", "Ingest records by outcome", ["dataset", "outcome"])
BYTES = Counter("streamml_ingest_bytes_total", "Bytes of landed Parquet objects", ["dataset"])
FLUSH_SECONDS = Histogram(
    "streamml_ingest_flush_seconds", "Upload + announce + commit of one batch", ["dataset"]
)
LAG = Gauge("streamml_ingest_consumer_lag", "High watermark minus next offset", ["topic", "partition"])


class IngestOptions(Group):
    specs_dir: Path = Field(Path("datasets"), description="folder of dataset spec YAML files")
    flush_rows: int = Field(100_000, ge=1, description="land a batch at this many valid rows")
    flush_bytes: int = Field(64 << 20, ge=1024, description="or at this many input bytes")
    flush_age_s: float = Field(10.0, gt=0, description="or when its first record is this old")
    max_record_bytes: int = Field(1 << 20, ge=64, description="larger records are dead-lettered")
    poll_batch: int = Field(10_000, ge=1, le=1_000_000)


class IngestSettings(ServiceSettings):
    ingest: IngestOptions = IngestOptions()


class IngestService(ConsumerService[IngestSettings]):
    name = "ingest"
    group = GROUP

    def input_topics(self) -> list[str]:
        return [f"^{re.escape(self.settings.kafka.topic_prefix)}{TOPIC_PATTERN}"]

    def load(self) -> None:
        super().load()
        options = self.settings.ingest
        try:
            specs = load_dataset_specs(options.specs_dir)
        except SpecError as error:
            raise StartupError(f"STREAMML_INGEST_SPECS_DIR={str(options.specs_dir)!r}: {error}") from None
        self.specs: dict[str, DatasetSpec] = {
            self.settings.kafka.topic(spec.ingest_topic): spec for spec in specs.values()
        }
        self.limits = FlushLimits(options.flush_rows, options.flush_bytes, options.flush_age_s)
        self.buffers: dict[tuple[str, int], PartitionBuffer] = {}
        log.info("serving datasets", extra={"topics": sorted(self.specs)})

    def serve(self) -> None:
        while not self.stopping.is_set():
            messages = self.consumer.poll(self.settings.ingest.poll_batch, timeout=0.2)
            by_partition: dict[tuple[str, int], list[Message]] = defaultdict(list)
            for message in messages:
                by_partition[(message.topic(), message.partition())].append(message)
            for (topic, partition), batch in by_partition.items():
                self._take(topic, partition, batch)
                self._record_lag(topic, partition, batch[-1].offset())
            self._flush_due()

    def handle(self, messages: list[Message]) -> list[Message]:
        raise NotImplementedError("ingest commits per landed batch in serve()")

    def _take(self, topic: str, partition: int, messages: list[Message]) -> None:
        spec = self.specs.get(topic)
        if spec is None:
            for message in messages:
                self.dead_letters.send(message, f"no dataset spec serves topic {topic!r}", "unknown_dataset")
            RECORDS.labels(topic, "rejected").inc(len(messages))
            self.producer.flush()
            self.consumer.commit(messages)
            return
        while messages:
            buffer = self.buffers.get((topic, partition)) or self._open(spec, messages[0])
            room = buffer.room_before_boundary()
            taken, messages = (messages, []) if room is None else (messages[:room], messages[room:])
            self._add(buffer, spec, taken)
            if buffer.should_flush(self.limits):
                self._flush(buffer, spec)

    def _open(self, spec: DatasetSpec, first: Message) -> PartitionBuffer:
        buffer = PartitionBuffer(
            dataset=spec.name,
            topic=first.topic(),
            partition=first.partition(),
            first_offset=first.offset(),
            first_time_ms=first.timestamp()[1],
        )
        # A batch from this offset may be landed already but not committed (crash).
        existing = list(self.store.list(f"{buffer.prefix}{buffer.first_offset:020d}-"))
        if existing:
            buffer.must_end_at = parse_last_offset(existing[0])
            log.info("replaying a landed range", extra={"object_key": existing[0]})
        self.buffers[(buffer.topic, buffer.partition)] = buffer
        return buffer

    def _add(self, buffer: PartitionBuffer, spec: DatasetSpec, messages: list[Message]) -> None:
        values = [message.value() for message in messages]
        decoded = decode_batch(values, spec, self.settings.ingest.max_record_bytes)
        for index, reason in sorted(decoded.rejected.items()):
            self.dead_letters.send(messages[index], reason, "invalid_record")
        valid = [messages[i] for i in decoded.valid]
        table = with_kafka_columns(
            decoded.table,
            buffer.partition,
            [m.offset() for m in valid],
            [m.timestamp()[1] for m in valid],
        )
        buffer.add(table, messages[-1].offset(), sum(len(v) for v in values if v))
        RECORDS.labels(spec.name, "in").inc(len(messages))
        RECORDS.labels(spec.name, "rejected").inc(len(decoded.rejected))

    def _flush_due(self) -> None:
        now = time.monotonic()
        for key, buffer in list(self.buffers.items()):
            if buffer.should_flush(self.limits, now):
                self._flush(buffer, self.specs[buffer.topic])

    def _flush(self, buffer: PartitionBuffer, spec: DatasetSpec) -> None:
        started = time.monotonic()
        self.producer.flush()  # dead letters are durable before their offsets are committed
        if buffer.rows:
            schema = landing_schema(spec)
            data = parquet_bytes(buffer.tables, schema)
            self.store.put(buffer.key, data)
            low, high = event_time_range(buffer.tables, spec.event_time)
            self.producer.send_now(
                DataLanded(
                    dataset=spec.name,
                    object_key=buffer.key,
                    rows=buffer.rows,
                    bytes=len(data),
                    topic=buffer.topic,
                    partition=buffer.partition,
                    first_offset=buffer.first_offset,
                    last_offset=buffer.last_offset,
                    schema_fingerprint=spec.fingerprint(),
                    min_event_time=low,
                    max_event_time=high,
                )
            )
            RECORDS.labels(spec.name, "landed").inc(buffer.rows)
            BYTES.labels(spec.name).inc(len(data))
        self.consumer.commit_offsets({(buffer.topic, buffer.partition): buffer.last_offset + 1})
        del self.buffers[(buffer.topic, buffer.partition)]
        FLUSH_SECONDS.labels(spec.name).observe(time.monotonic() - started)
        log.info(
            "landed" if buffer.rows else "committed a batch with no valid record",
            extra={"dataset": spec.name, "object_key": buffer.key, "rows": buffer.rows,
                   "first_offset": buffer.first_offset, "last_offset": buffer.last_offset},
        )

    def on_revoke(self, partitions: list[TopicPartition]) -> None:
        # Unlanded buffers are dropped, not flushed: the next owner replays them
        # from the committed offset into the same keys.
        for partition in partitions:
            self.buffers.pop((partition.topic, partition.partition), None)
        super().on_revoke(partitions)

    def _record_lag(self, topic: str, partition: int, offset: int) -> None:
        high = self.consumer.high_watermark(topic, partition)
        if high is not None:
            LAG.labels(topic, str(partition)).set(max(0, high - offset - 1))

    def close(self) -> None:
        # Stopping lands nothing new: buffered ranges are replayed after restart.
        self.buffers.clear()
        super().close()


def landing_schema(spec: DatasetSpec):
    schema = spec.arrow_schema()
    for meta in META_COLUMNS:
        schema = schema.append(meta)
    return schema.with_metadata({b"streamml.spec_fingerprint": spec.fingerprint().encode()})


def main() -> None:
    run(IngestService, IngestSettings)
