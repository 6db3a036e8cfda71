"""Land a recorded offset range of an ingest topic again, as ingest landed it.

A dataset version's lineage names each raw object it was built from by its
topic, partition and offset range. When such an object is lost or changed,
the records are read again from those offsets, while the topic still
retains them, and decoded and written the way the ingest member does
(``records.decode_messages``, ``landing.landing_schema``, ``parquet_bytes``),
so the same records give the same key and the same bytes. Records that were
dead-lettered are rejected again and left out, as they were; they are not
sent to the dead-letter topic a second time.

    relanded = land_again(store, settings.kafka, spec, source)        # at the source's own key
    relanded = land_again(store, settings.kafka, spec, source, key)   # or at another key (a scratch copy)

Writing never replaces an object: at the source's own key it creates the
object (If-None-Match), so a landing that comes back meanwhile is kept.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from services.ingest.landing import PartitionBuffer, landing_schema, parquet_bytes
from services.ingest.member import DECODE_CHUNK
from services.ingest.records import decode_messages
from services.ingest.settings import IngestOptions
from streamml.manifest import RawSource
from streamml.settings import KafkaSettings
from streamml.specs import DatasetSpec
from streamml.store import ObjectConflict, ObjectStore

# How long reading the range may go without a new record before it gives up, and how long once
# the broker said the partition ends there.
STALL_S, END_S = 30.0, 3.0


class NotRetained(Exception):
    """The topic no longer holds every record of the range (retention, compaction, or a recreated topic)."""


@dataclass(frozen=True)
class Relanded:
    key: str  # where the records were written
    sha256: str  # of the written bytes
    rows: int  # valid records landed (dead-lettered ones are left out)
    created: bool  # False: an object was already at ``key`` (landed meanwhile); it was kept


def land_again(store: ObjectStore, kafka: KafkaSettings, spec: DatasetSpec, source: RawSource,
               key: str | None = None, max_record_bytes: int = IngestOptions().max_record_bytes) -> Relanded:
    """Read ``source``'s offset range from its topic and land it at ``key`` (default: its own key)."""
    messages = read_range(kafka, source)
    buffer = PartitionBuffer(spec.name, source.topic, source.partition, source.first_offset,
                             messages[0].timestamp()[1])
    buffer.last_offset = source.last_offset
    if buffer.key != source.key:
        # Ingest derives the key from the first record's Kafka time: another time means other records.
        raise NotRetained(f"the records now at {source.topic}[{source.partition}] offsets {source.first_offset}-"
                          f"{source.last_offset} would land at {buffer.key}, not {source.key}: the topic no longer "
                          "holds the records that were landed (was it deleted and created again?)")
    chunks = [decode_messages(messages[i:i + DECODE_CHUNK], spec, max_record_bytes)
              for i in range(0, len(messages), DECODE_CHUNK)]
    tables = [chunk.table for chunk in chunks if chunk.table.num_rows]
    data = parquet_bytes(tables, *landing_schema(spec))
    target = key or source.key
    created = True
    try:
        store.create(target, data)
    except ObjectConflict:
        created = False
    return Relanded(target, hashlib.sha256(data).hexdigest(), sum(t.num_rows for t in tables), created)


def read_range(kafka: KafkaSettings, source: RawSource) -> list[Message]:
    """Every message of the source's offset range, in offset order; NotRetained when the topic lacks some."""
    where = f"{source.topic}[{source.partition}]"
    consumer = Consumer({**kafka.client_config(), "group.id": f"{kafka.group_prefix}streamml-reland",
                         "enable.auto.commit": False, "enable.partition.eof": True,
                         "fetch.wait.max.ms": kafka.fetch_wait_max_ms})
    try:
        partition = TopicPartition(source.topic, source.partition)
        try:
            low, _ = consumer.get_watermark_offsets(partition, timeout=kafka.connect_timeout_s)
        except KafkaException as error:
            raise NotRetained(f"cannot read {where}: {error}") from None
        if low > source.first_offset:
            raise NotRetained(f"{where} starts at offset {low} now: offsets {source.first_offset}-{low - 1} "
                              "are past the topic's retention")
        consumer.assign([TopicPartition(source.topic, source.partition, source.first_offset)])
        messages: list[Message] = []
        last_seen, at_end = time.monotonic(), False
        while not messages or messages[-1].offset() < source.last_offset:
            # Past the partition's end (as the broker reports it, which may be early) wait briefly.
            if time.monotonic() - last_seen > (END_S if at_end else STALL_S):
                raise NotRetained(f"{where} ends at offset {_last(messages, source)}, before the range's last "
                                  f"offset {source.last_offset}")
            for message in consumer.consume(1000, 0.5):
                error = message.error()
                if error is not None and error.code() == KafkaError._PARTITION_EOF:
                    at_end = True
                    continue
                if error is not None:
                    raise NotRetained(f"cannot read {where}: {error.str()}")
                if message.offset() <= source.last_offset:
                    messages.append(message)
                last_seen, at_end = time.monotonic(), False
    finally:
        consumer.close()
    if messages[0].offset() != source.first_offset:
        raise NotRetained(f"{where} holds no record at offset {source.first_offset} any more (the first one "
                          f"there is at {messages[0].offset()})")
    return messages


def _last(messages: list[Message], source: RawSource) -> int:
    return messages[-1].offset() if messages else source.first_offset - 1
