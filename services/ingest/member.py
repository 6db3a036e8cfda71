"""One consumer-group member of an ingest replica: ``ingest.<dataset>`` -> Parquet.

For each partition, records are buffered until a record, byte or age limit,
or until the partition is caught up and idle, then landed in this order:
dead letters (bad records, with the reason) are flushed, the Parquet object
is written at its deterministic key, ``data.landed`` is sent, and the offsets
are committed. A crash anywhere replays the same range into the same key, so
no record is lost and none is landed twice.

Two stages overlap: the main thread polls, decodes records into Arrow tables
chunk by chunk, seals batches and commits; one lander thread writes sealed
batches strictly in order (Parquet and upload, which release the GIL). Only
the main thread touches the consumer (a synchronous commit from another
thread can hang inside librdkafka while it polls): it commits each batch
once its landing is done. Before partitions move to another member, the
sealed batches are landed and committed, and unsealed ones are dropped: the
next owner replays them from the committed offset into the same keys.
"""

from __future__ import annotations

import gc
import logging
import os
import re
import signal
import threading
import time
from bisect import bisect_right
from collections import defaultdict, deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import groupby
from multiprocessing.connection import Connection

from confluent_kafka import Message, TopicPartition
from prometheus_client import Counter, Gauge, Histogram

from services.ingest.landing import (
    FlushLimits,
    PartitionBuffer,
    event_time_range,
    landing_schema,
    parquet_bytes,
)
from services.ingest.peers import PeerDecoding
from services.ingest.records import DecodedChunk, decode_messages
from services.ingest.settings import IngestSettings
from streamml.events import DataLanded
from streamml.faults import Interrupted
from streamml.kafka import Offsets
from streamml.logs import configure_logging
from streamml.registry.keys import parse_raw_key, raw_range_start
from streamml.service import ConsumerService, StartupError
from streamml.specs import DatasetSpec, SpecError, load_dataset_specs

log = logging.getLogger("streamml.ingest")

GROUP = "streamml-ingest"
TOPIC_PATTERN = r"ingest\..*"

# Each member process writes its own samples; the replica's /metrics adds them up.
RECORDS = Counter("streamml_ingest_records_total", "Ingest records by outcome", ["dataset", "outcome"])
BYTES = Counter("streamml_ingest_bytes_total", "Bytes of landed Parquet objects", ["dataset"])
FLUSH_SECONDS = Histogram(
    "streamml_ingest_flush_seconds", "Landing one batch: dead letters, Parquet, upload, announce", ["dataset"]
)
LAG = Gauge("streamml_ingest_consumer_lag", "High watermark minus next offset", ["topic", "partition"],
            multiprocess_mode="livemostrecent")  # a moved partition reports what its new owner saw last

# Records decoded at a time: their messages are freed once decoded (unless
# one was rejected: a dead letter carries the original message).
DECODE_CHUNK = 20_000
# The longest a poll waits for records: how late an idle or age limit may be noticed.
POLL_TIMEOUT_S = 0.05


@dataclass
class Sealed:
    """A batch handed to the lander, until its offsets are committed."""

    partition: tuple[str, int]
    committed: threading.Event = field(default_factory=threading.Event)
    landing: Future[Offsets | None] | None = None


class Abandoned(Exception):
    """A landing given up as the member stops; the batch is replayed after a restart."""


class IngestMember(ConsumerService[IngestSettings]):
    name = "ingest"
    group = GROUP
    watches_dependencies = False  # the replica's process does, for its /readyz

    def __init__(self, settings: IngestSettings, index: int = 0, peer_links: dict[int, Connection] | None = None,
                 idle: Sequence[int] = ()) -> None:
        super().__init__(settings)
        self.index = index
        self.peer_links = peer_links or {}
        self.idle = idle

    def input_topics(self) -> list[str]:
        return [f"^{re.escape(self.settings.kafka.topic_prefix)}{TOPIC_PATTERN}"]

    def load(self) -> None:
        options = self.settings.ingest
        self.buffers: dict[tuple[str, int], PartitionBuffer] = {}
        self.lander = ThreadPoolExecutor(1, thread_name_prefix="ingest-land")
        self.sealed: deque[Sealed] = deque()
        self.unstarted: set[tuple[str, int]] = set()  # assigned, no record polled yet
        # Partitions whose earlier owners' uncommitted ranges are all replayed (see _open).
        self.replayed: set[tuple[str, int]] = set()
        super().load()
        self.specs: dict[str, DatasetSpec] = {
            self.settings.kafka.topic(spec.ingest_topic): spec for spec in load_specs(self.settings).values()
        }
        self.limits = FlushLimits(options.flush_rows, options.flush_bytes, options.flush_age_s, options.flush_idle_s)
        self.peers = PeerDecoding(self.index, self.peer_links, self.idle, self.specs, options.max_record_bytes)
        # The partition of each batch of dead letters only that the lander has landed: see _land.
        self.objectless: dict[tuple[str, int], threading.Event] = {}
        # Every polled message is a tracked object: collect the young generation
        # less often, and never re-scan what load() created.
        gc.set_threshold(50_000, 20, 100)
        gc.freeze()

    def serve(self) -> None:
        self.consumer.subscribe()
        while not self.stopping.is_set():
            messages = self.consumer.poll(self.settings.ingest.poll_batch, timeout=POLL_TIMEOUT_S)
            self.peers.set_idle(len(messages) < self.settings.ingest.poll_batch)
            for (topic, partition), batch in by_partition(messages).items():
                if (topic, partition) in self.unstarted:
                    self.unstarted.discard((topic, partition))
                    log.info("consuming", extra={"partition": f"{topic}[{partition}]", "offset": batch[0].offset()})
                self._take(topic, partition, batch)
                self._record_lag(topic, partition, batch[-1].offset())
            self._seal_due()
            self._wait_for_landings(keep=self.settings.ingest.max_sealed_batches)

    def handle(self, messages: list[Message]) -> list[Message]:
        raise NotImplementedError("ingest commits per landed batch in serve()")

    def _take(self, topic: str, partition: int, messages: list[Message]) -> None:
        spec = self.specs.get(topic)
        if spec is None:
            for message in messages:
                self.dead_letters.send(message, f"no dataset spec serves topic {topic!r}", "unknown_dataset")
            RECORDS.labels(topic, "rejected").inc(len(messages))
            self.retry(self.producer.flush)
            self.retry(lambda: self.consumer.commit(messages))
            return
        now = time.monotonic()
        while messages:
            buffer = self.buffers.get((topic, partition)) or self._open(spec, messages[0])
            count = records_to_take(buffer, messages, self.limits.records)
            if count == 0:
                # The end of the object landed before is gone from the log (compacted
                # or expired): end the replay where the log now has a gap.
                log.warning("the end of a landed range is no longer in the log", extra={"object_key": buffer.key})
                self._seal(buffer, spec)
                continue
            taken, messages = messages[:count], messages[count:]
            buffer.add(taken, taken[-1].offset(), sum(map(len, taken)), now)
            if buffer.should_flush(self.limits, now):
                self._seal(buffer, spec)
            elif len(buffer.pending) >= DECODE_CHUNK:
                self._decode(buffer, spec)

    def _decode(self, buffer: PartitionBuffer, spec: DatasetSpec) -> None:
        messages = buffer.take_pending()
        handed = self.peers.offload(messages, spec)
        buffer.chunks.append(handed if handed is not None else
                             decode_messages(messages, spec, self.settings.ingest.max_record_bytes))

    def _open(self, spec: DatasetSpec, first: Message) -> PartitionBuffer:
        buffer = PartitionBuffer(
            dataset=spec.name,
            topic=first.topic(),
            partition=first.partition(),
            first_offset=first.offset(),
            first_time_ms=first.timestamp()[1],
        )
        # A batch from this offset may be landed already but not committed (crash).
        # An owner lands its batches in offset order, and commits a batch that
        # left no object (dead letters only) before a later object lands, so what
        # earlier owners left uncommitted is one unbroken run of objects from the
        # committed offset: once an offset has no object, no later one has either,
        # and listing (the costliest S3 request) stops until the partition is
        # assigned again.
        partition = (buffer.topic, buffer.partition)
        if partition not in self.replayed:
            existing = self.retry(lambda: list(self.store.list(raw_range_start(buffer.prefix, buffer.first_offset))))
            if existing:
                buffer.must_end_at = parse_raw_key(existing[0]).last_offset
                log.info("replaying a landed range", extra={"object_key": existing[0]})
            else:
                self.replayed.add(partition)
        self.buffers[partition] = buffer
        return buffer

    def _seal_due(self) -> None:
        now = time.monotonic()
        for buffer in list(self.buffers.values()):
            if buffer.should_flush(self.limits, now, self._caught_up(buffer)):
                self._seal(buffer, self.specs[buffer.topic])

    def _caught_up(self, buffer: PartitionBuffer) -> bool:
        """Whether the buffer holds the partition's last record, by the end offset of the latest fetch.

        A member that is behind does not land small batches when polling
        pauses (while landings catch up) or another partition's records
        fill its polls. Unknown (no fetch has reported it) counts as caught up.
        """
        high = self.consumer.high_watermark(buffer.topic, buffer.partition)
        return high is None or buffer.last_offset + 1 >= high

    def _seal(self, buffer: PartitionBuffer, spec: DatasetSpec) -> None:
        partition = (buffer.topic, buffer.partition)
        del self.buffers[partition]
        if buffer.pending:
            self._decode(buffer, spec)
        self._wait_for_landings(keep=self.settings.ingest.max_sealed_batches - 1)
        sealed = Sealed(partition)
        sealed.landing = self.lander.submit(self._land, buffer, spec, sealed)
        self.sealed.append(sealed)

    def _wait_for_landings(self, keep: int) -> None:
        """Commit landed batches in order, re-raising a failed landing; block while more than ``keep`` remain."""
        while self.sealed and (self.sealed[0].landing.done() or len(self.sealed) > keep):
            batch = self.sealed.popleft()
            offsets = batch.landing.result()
            self.retry(lambda: self.consumer.commit_offsets(offsets))
            batch.committed.set()

    def _land(self, buffer: PartitionBuffer, spec: DatasetSpec, sealed: Sealed) -> Offsets:
        """Runs on the lander thread, one batch at a time, in the order sealed.

        Returns the offsets to commit now that the batch is durable. Each step
        waits out an outage of the store or the brokers (``self.retry``)."""
        started = time.monotonic()
        # A chunk a peer decodes is a future until then.
        chunks: list[DecodedChunk] = [c.result() if isinstance(c, Future) else c for c in buffer.chunks]
        tables = [chunk.table for chunk in chunks if chunk.table.num_rows]
        rejected = 0
        for chunk in chunks:
            for message, reason in chunk.rejected:
                self.dead_letters.send(message, reason, "invalid_record")
            rejected += len(chunk.rejected)
        self.retry(self.producer.flush)  # dead letters are durable before their offsets are committed
        rows = sum(table.num_rows for table in tables)
        partition = (buffer.topic, buffer.partition)
        if not rows:
            # No object, and a replay stops looking for landed ranges at the first
            # offset without one (_open): until this batch is committed, no later
            # object of its partition may land.
            self.objectless[partition] = sealed.committed
        elif partition in self.objectless:
            self._wait_until_committed(self.objectless.pop(partition))
        if rows:
            schema, dictionary = landing_schema(spec)
            data = parquet_bytes(tables, schema, dictionary)
            self.retry(lambda: self.store.put(buffer.key, data))
            low, high = event_time_range(tables, spec.time_column)
            self.producer.send(
                DataLanded(
                    dataset=spec.name,
                    object_key=buffer.key,
                    rows=rows,
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
            self.retry(self.producer.flush)
            BYTES.labels(spec.name).inc(len(data))
        RECORDS.labels(spec.name, "in").inc(buffer.records)
        RECORDS.labels(spec.name, "landed").inc(rows)
        RECORDS.labels(spec.name, "rejected").inc(rejected)
        FLUSH_SECONDS.labels(spec.name).observe(time.monotonic() - started)
        log.info(
            "landed" if rows else "committed a batch with no valid record",
            extra={"dataset": spec.name, "object_key": buffer.key, "rows": rows, "rejected": rejected,
                   "first_offset": buffer.first_offset, "last_offset": buffer.last_offset},
        )
        return {(buffer.topic, buffer.partition): buffer.last_offset + 1}

    def _wait_until_committed(self, committed: threading.Event) -> None:
        """The main thread commits landed batches in order, the earlier ones first, so this returns
        soon, unless the member stops: then the batch is left to be replayed."""
        while not committed.wait(0.1):
            if self.stopping.is_set():
                raise Abandoned

    def on_assign(self, partitions: list[TopicPartition]) -> None:
        self.unstarted.update((p.topic, p.partition) for p in partitions)
        self.replayed.difference_update((p.topic, p.partition) for p in partitions)
        super().on_assign(partitions)

    def on_revoke(self, partitions: list[TopicPartition]) -> None:
        # Unsealed buffers are dropped: the next owner replays them from the
        # committed offset into the same keys. Sealed ones land and commit
        # first, so no commit of ours arrives after the partition has moved.
        for partition in partitions:
            self.buffers.pop((partition.topic, partition.partition), None)
            self.unstarted.discard((partition.topic, partition.partition))
        if not self.stopping.is_set():
            self._wait_for_landings(keep=0)
        super().on_revoke(partitions)

    def _record_lag(self, topic: str, partition: int, offset: int) -> None:
        high = self.consumer.high_watermark(topic, partition)
        if high is not None:
            LAG.labels(topic, str(partition)).set(max(0, high - offset - 1))

    def close(self) -> None:
        # Stopping seals nothing new: buffered ranges are replayed after a restart.
        # The batch being landed finishes; batches still queued are cancelled.
        self.stopping.set()  # also after a crash: the revocation in close() must not wait
        if hasattr(self, "lander"):
            self.buffers.clear()
            self.lander.shutdown(wait=True, cancel_futures=True)
        super().close()


def load_specs(settings: IngestSettings) -> dict[str, DatasetSpec]:
    try:
        return load_dataset_specs(settings.ingest.specs_dir)
    except SpecError as error:
        raise StartupError(f"STREAMML_INGEST_SPECS_DIR={str(settings.ingest.specs_dir)!r}: {error}") from None


def by_partition(messages: list[Message]) -> dict[tuple[str, int], list[Message]]:
    """Messages grouped by partition, each group in offset order.

    librdkafka returns a partition's messages in runs, so this groups runs with
    C-level calls instead of looking at each message in Python.
    """
    groups: dict[tuple[str, int], list[Message]] = defaultdict(list)
    for topic, same_topic in groupby(messages, Message.topic):
        for partition, run in groupby(same_topic, Message.partition):
            groups[(topic, partition)].extend(run)
    return groups


def records_to_take(buffer: PartitionBuffer, messages: list[Message], max_records: int) -> int:
    """How many of ``messages`` (one partition, offset order) go into ``buffer``.

    A replay ends exactly at the last offset of the object landed before
    (offsets may have gaps, so that end is found by offset, not counted);
    otherwise a batch takes up to the row limit, so batches are exactly that
    long unless the byte or age limit ends them first.
    """
    if buffer.must_end_at is not None:
        return bisect_right(messages, buffer.must_end_at, key=Message.offset)
    return max_records - buffer.records


# What the replica sends each member once all have loaded.
SERVE = "serve"


def run_member(settings: IngestSettings, index: int, parent: int, channel: Connection,
               peer_links: dict[int, Connection], idle: Sequence[int]) -> None:
    """A member process: load, tell the replica (None when loaded, else why not),
    then serve from the replica's SERVE until SIGTERM.

    ``peer_links`` are pipes to the other members, ``idle`` the flags the members
    share: see peers.py."""
    configure_logging(settings.log, "ingest", member=index)
    member = IngestMember(settings, index, peer_links, idle)
    # Ctrl-C reaches the whole process group: members stop cleanly, as on SIGTERM.
    signal.signal(signal.SIGTERM, lambda *_: member.stop())
    signal.signal(signal.SIGINT, lambda *_: member.stop())
    # A SIGKILLed replica cannot stop its members; each leaves when its parent does.
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    try:
        member.load()
    except StartupError as error:
        channel.send(str(error))
        raise SystemExit(3) from None
    channel.send(None)
    try:
        if _serve_allowed(member, channel):
            log.info("member serving", extra={"pid": os.getpid()})
            member.serve()
    except Interrupted:
        log.info("stopped while a dependency was away; the batches not committed are landed again after the restart")
    finally:
        member.close()


def _serve_allowed(member: IngestMember, channel: Connection) -> bool:
    """Wait for the replica's SERVE; False when SIGTERM comes first (another member failed to load)."""
    while not member.stopping.is_set():
        if channel.poll(0.1):
            return channel.recv() == SERVE
    return False


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)
