"""Kafka I/O shared by every service: a producer that never drops, a batch
consumer with manual commits, a group-less tail of topics, and the
dead-letter path.

Processing is at-least-once: a service polls a batch, makes its side effect
durable, then commits exactly the offsets it finished. Side effects are
idempotent (deterministic object keys, conditional creates), which makes the
whole effectively exactly-once.

    consumer = BatchConsumer(settings.kafka, group="streamml-prep", topics=["data.landed"])
    for message in consumer.poll(max_records=100):
        ...
    consumer.commit(messages)
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from prometheus_client import Counter

from streamml.events import Event, encode
from streamml.settings import KafkaSettings

T = TypeVar("T")
log = logging.getLogger("streamml.kafka")

DEAD_LETTERS = Counter(
    "streamml_dead_letters_total",
    "Messages sent to a dead-letter topic",
    ["service", "source_topic", "error_type"],
)


# Errors that say the brokers are away or electing, not that a request is wrong.
TRANSIENT_CODES = frozenset({
    KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._TIMED_OUT, KafkaError._MSG_TIMED_OUT,
    KafkaError._TIMED_OUT_QUEUE, KafkaError._WAIT_COORD, KafkaError._RESOLVE, KafkaError._NODE_UPDATE,
    KafkaError.REQUEST_TIMED_OUT, KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.NETWORK_EXCEPTION, KafkaError.NOT_ENOUGH_REPLICAS, KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    KafkaError.BROKER_NOT_AVAILABLE, KafkaError.KAFKA_STORAGE_ERROR,
})
# A commit refused with one of these is for a generation of the group that has
# passed (the member was away longer than its session): the partitions have been
# or will be assigned again, from the last commit, so the work is redone.
GROUP_MOVED_CODES = frozenset({
    KafkaError.REBALANCE_IN_PROGRESS, KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError._ASSIGNMENT_LOST, KafkaError.FENCED_INSTANCE_ID, KafkaError._STATE,
})
# Delivery errors kept for the message of DeliveryError; the rest are only counted.
KEPT_ERRORS = 10


def transient_kafka_error(error: KafkaError | None) -> bool:
    """True when ``error`` says the brokers are away for now, not that the request was wrong."""
    if not isinstance(error, KafkaError) or error.fatal():
        return False
    return error.code() in TRANSIENT_CODES or (error.retriable() and error.code() not in GROUP_MOVED_CODES)


class KafkaUnavailable(Exception):
    """The brokers named by STREAMML_KAFKA_BOOTSTRAP did not answer."""


class DeliveryError(Exception):
    """Produced messages were not acknowledged by the brokers.

    ``transient``: they are still queued because the brokers are away, and
    flushing again later delivers them. Otherwise they failed for good (too
    large, not authorised...) and are not queued any more."""

    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


ErrorCallback = Callable[[KafkaError], None]


def check_reachable(settings: KafkaSettings) -> None:
    """Fail fast, naming the setting, when no broker answers."""
    # The failure is reported once below; librdkafka would log every retry.
    admin = AdminClient({**settings.client_config(), "socket.timeout.ms": 5000, "log_level": 0})
    try:
        admin.list_topics(timeout=settings.connect_timeout_s)
    except KafkaException as error:
        raise KafkaUnavailable(
            f"no Kafka broker answered at STREAMML_KAFKA_BOOTSTRAP={settings.bootstrap!r} "
            f"within {settings.connect_timeout_s:g}s ({error.args[0].str()}); "
            "check the address, the broker, and STREAMML_KAFKA_SECURITY_PROTOCOL"
        ) from None


def broker_errors(on_error: ErrorCallback | None) -> dict[str, Any]:
    """librdkafka's ``error_cb``: client-wide errors (all brokers down, ...) go to ``on_error``.

    Without it they are dropped; with it a service's fault policy sees an
    outage even while it has nothing to send."""
    return {"error_cb": on_error} if on_error is not None else {}


# Errors after which an idempotent producer sends nothing more, fatal or not: the broker no longer
# knows its producer id and epoch (Tansu, after its storage failed mid-write, fences it).
REPLACE_CODES = frozenset({
    KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH, KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
    KafkaError.UNKNOWN_PRODUCER_ID,
})
# Delivery errors after which the message was not stored, or may not have been, and publishing it
# again delivers it: a broker whose storage failed mid-write (Tansu answers UNKNOWN_SERVER_ERROR);
# a producer to be replaced, and the messages purged from it (see also transient_kafka_error).
AGAIN_CODES = REPLACE_CODES | {KafkaError.UNKNOWN, KafkaError._FATAL, KafkaError._PURGE_QUEUE,
                               KafkaError._PURGE_INFLIGHT}
# Between two tries of a message the brokers did not take: a storage that fails answers at once.
AGAIN_PAUSE_S = 0.2


def publish_again(error: KafkaError) -> bool:
    """Whether a message that failed with ``error`` is delivered by publishing it again."""
    return error.fatal() or error.code() in AGAIN_CODES or transient_kafka_error(error)


class EventProducer:
    """Idempotent producer with acks=all; ``flush`` raises if anything is not delivered.

    Messages never expire in the local queue: while the brokers are away they
    wait there (``produce`` blocks once the queue is full) and ``flush`` raises
    a transient DeliveryError, so retrying the flush later delivers them. A
    message the brokers failed in a way that publishing again mends (see
    ``publish_again``) is published again by ``flush``; a producer librdkafka
    declares failed for good, or that was fenced (it sends nothing more), is
    replaced by a new one, which ``produce`` and ``flush`` use from then on. A
    caller with its own ``on_delivery`` hears of such failures and publishes
    again itself."""

    def __init__(
        self,
        settings: KafkaSettings,
        client_id: str,
        *,
        on_error: ErrorCallback | None = None,
        **overrides: Any,
    ) -> None:
        self.settings = settings
        self.source = f"/streamml/{client_id}"
        self._on_error = on_error
        self._config = {
            **settings.client_config(),
            "client.id": client_id,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            "message.timeout.ms": 0,  # never: see the class doc
            "error_cb": self._client_error,
            **overrides,
        }
        self._producer = Producer(self._config)
        self._failed_for_good = False  # set by librdkafka's thread: replace the producer
        self._errors: list[str] = []
        self._failed = 0
        self._again: list[tuple[str, bytes | None, Any, Any, int]] = []  # (topic, value, key, headers, partition)
        self._lock = threading.Lock()
        self._replacing = threading.Lock()

    def _client_error(self, error: KafkaError) -> None:
        if error.fatal():
            self._failed_for_good = True
        if self._on_error is not None:
            self._on_error(error)

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is None:
            return
        self._heard(error)
        with self._lock:
            if publish_again(error):
                self._again.append((message.topic(), message.value(), message.key(), message.headers(),
                                    message.partition()))
                return
            self._failed += 1
            if len(self._errors) < KEPT_ERRORS:
                self._errors.append(f"{message.topic()}: {error.str()}")

    def _heard(self, error: KafkaError) -> None:
        if error.fatal() or error.code() in REPLACE_CODES:
            self._failed_for_good = True

    def _tell(self, on_delivery: Callable[[KafkaError | None, Message], None], error: KafkaError | None,
              message: Message) -> None:
        """A caller's delivery callback, after this producer has heard of the error."""
        if error is not None:
            self._heard(error)
        on_delivery(error, message)

    def _replace_if_failed(self) -> None:
        """A new librdkafka producer in place of one failed for good; what the old one still held
        is purged, and its delivery reports say to publish it again."""
        if not self._failed_for_good:
            return
        with self._replacing:
            if not self._failed_for_good:
                return  # another thread replaced it
            old, self._producer = self._producer, Producer(self._config)
            self._failed_for_good = False
        # The purged messages' delivery reports may publish them again: on the new producer.
        old.purge()
        old.flush(1)
        log.warning("the Kafka producer failed for good (a broker lost its state); publishing on a new one",
                    extra={"client_id": self._config["client.id"]})

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | str | None = None,
        headers: list[tuple[str, bytes]] | dict[str, bytes] | None = None,
        partition: int = -1,
        wait: bool = True,
        on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
    ) -> bool:
        """Queue one message. While the local queue is full, wait, or with ``wait=False`` return False.

        ``partition`` -1 (librdkafka's "unassigned") leaves the choice to the
        configured partitioner, by key. ``on_delivery(error, message)``, when
        given, hears of the message's acknowledgement or failure instead of
        ``flush``."""
        self._replace_if_failed()
        while True:
            try:
                self._producer.produce(
                    topic, value, key, partition=partition, headers=headers,
                    on_delivery=self._on_delivery if on_delivery is None else partial(self._tell, on_delivery),
                )
                break
            except BufferError:
                if not wait:
                    return False
                self._producer.poll(0.1)
            except KafkaException as error:
                if error.args[0].code() != KafkaError._FATAL:
                    raise
                self._failed_for_good = True  # error_cb may not have run yet
                self._replace_if_failed()
        self._producer.poll(0)
        return True

    def send(self, event: Event, topic: str | None = None, event_id: str | None = None) -> None:
        """Queue one event on its default (prefixed) topic unless ``topic`` is given.

        ``event_id``: the CloudEvents id, for an announcement that may be sent again
        (see ``streamml.events.stable_id``); a new one otherwise."""
        message = encode(event, self.source, event_id)
        name = topic or self.settings.topic(event.default_topic())
        self.produce(name, message.value, message.key, list(message.headers.items()))

    def poll(self, timeout: float = 0) -> None:
        """Serve delivery callbacks."""
        self._producer.poll(timeout)

    def pending(self) -> int:
        """Messages queued and not yet acknowledged."""
        return len(self._producer) + len(self._again)

    def flush(self, timeout: float = 60.0) -> None:
        """Wait for every queued message, publishing again what the brokers failed to take and that
        publishing again delivers; DeliveryError when one failed for good or some are still queued."""
        deadline = time.monotonic() + timeout
        again: list[tuple[str, bytes | None, Any, Any, int]] = []
        while True:
            self._producer.flush(max(0.0, deadline - time.monotonic()))
            self._replace_if_failed()
            with self._lock:
                again, self._again = self._again, []
            # Queued still: on a producer that replaced the one this flush began on.
            if time.monotonic() >= deadline or not (again or len(self._producer)):
                break
            if again:
                time.sleep(min(AGAIN_PAUSE_S, max(0.0, deadline - time.monotonic())))
                for topic, value, key, headers, partition in again:
                    self.produce(topic, value, key, headers, partition)
                again = []
        remaining = len(self._producer)
        with self._lock:
            self._again = again + self._again  # out of time: the next flush publishes them
            errors, failed = self._errors, self._failed
            self._errors, self._failed = [], 0
        if failed:
            raise DeliveryError(f"{failed} message(s) not delivered: {errors[0]}", transient=False)
        if remaining or again:
            raise DeliveryError(f"{remaining + len(again)} message(s) still unacknowledged after {timeout:g}s: "
                                f"the brokers at {self.settings.bootstrap} do not answer", transient=True)

    def send_now(
        self, event: Event, topic: str | None = None, timeout: float = 60.0, event_id: str | None = None
    ) -> None:
        self.send(event, topic, event_id)
        self.flush(timeout)


class DeadLetters:
    """Sends a message that cannot be processed to ``dlq.<service>`` with the reason."""

    def __init__(self, producer: EventProducer, service: str) -> None:
        self.producer = producer
        self.service = service
        self.topic = producer.settings.topic(f"dlq.{service}")

    # Below the brokers' default message.max.bytes, headers included.
    max_value_bytes = 512 * 1024

    def send(self, message: Message, reason: str, error_type: str = "invalid") -> None:
        value = message.value()
        headers = list(message.headers() or [])
        if value is not None and len(value) > self.max_value_bytes:
            # The whole record stays in the source topic at the offset below.
            headers.append(("dlq_truncated_from", str(len(value)).encode()))
            value = value[: self.max_value_bytes]
        headers += [
            ("dlq_error", reason.encode()[:4096]),
            ("dlq_error_type", error_type.encode()),
            ("dlq_service", self.service.encode()),
            ("dlq_source_topic", message.topic().encode()),
            ("dlq_source_partition", str(message.partition()).encode()),
            ("dlq_source_offset", str(message.offset()).encode()),
            ("dlq_time", datetime.now(UTC).isoformat().encode()),
        ]
        self.producer.produce(self.topic, value, message.key(), headers)
        DEAD_LETTERS.labels(self.service, message.topic(), error_type).inc()


def dead_letter_reason(message: Message) -> str | None:
    """The reason header of a dead-lettered message (for tools and tests)."""
    for name, value in message.headers() or []:
        if name == "dlq_error":
            return value.decode()
    return None


RebalanceCallback = Callable[[list[TopicPartition]], None]
Offsets = dict[tuple[str, int], int]  # (topic, partition) -> next offset to read


class BatchConsumer:
    """A consumer-group member that polls batches and commits only what is done.

    ``topics`` may hold regular expressions (starting with ``^``), e.g.
    ``^ingest\\..*``. ``on_revoke`` runs before partitions move to another
    member: a service drops or finishes its unfinished work there. With
    ``subscribe=False`` the consumer joins the group only when ``subscribe()``
    is called. While the brokers are away, ``poll`` returns nothing and
    ``on_error`` hears why.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        group: str,
        topics: list[str],
        client_id: str | None = None,
        on_assign: RebalanceCallback | None = None,
        on_revoke: RebalanceCallback | None = None,
        subscribe: bool = True,
        on_error: ErrorCallback | None = None,
        **overrides: Any,
    ) -> None:
        self.group = group
        self.topics = topics
        config = {
            **settings.client_config(),
            "group.id": group,
            "client.id": client_id or group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": settings.session_timeout_ms,
            "max.poll.interval.ms": max(300_000, settings.session_timeout_ms),
            "partition.assignment.strategy": "range",
            # An emptied fetch queue otherwise waits 1 s before fetching again.
            "fetch.queue.backoff.ms": 10,
            "fetch.wait.max.ms": settings.fetch_wait_max_ms,
            "topic.metadata.refresh.interval.ms": 10_000,
            **broker_errors(on_error),
            **overrides,
        }
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        self._working = False  # inside work_while_polling: assigned partitions stay paused
        self._consumer = Consumer(config)
        self.assignment: set[tuple[str, int]] = set()
        if subscribe:
            self.subscribe()

    def subscribe(self) -> None:
        """Join the group; partitions are assigned while polling."""
        self._consumer.subscribe(self.topics, on_assign=self._assigned, on_revoke=self._revoked)

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assignment |= {(p.topic, p.partition) for p in partitions}
        # librdkafka keeps a partition's pause across a rebalance: one paused for long work and
        # revoked before the work ended would, once assigned back, never be fetched again.
        if self._working:
            consumer.pause(partitions)
        else:
            consumer.resume(partitions)
        if self._on_assign:
            self._on_assign(partitions)

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._on_revoke:
            self._on_revoke(partitions)
        self.assignment -= {(p.topic, p.partition) for p in partitions}

    def poll(self, max_records: int = 500, timeout: float = 1.0) -> list[Message]:
        """Up to ``max_records`` messages; partition-EOF notices are dropped."""
        messages = self._consumer.consume(max_records, timeout)
        if not any(map(Message.error, messages)):
            return messages  # the common case, checked without a Python loop per message
        batch = []
        for message in messages:
            error = message.error()
            if error is None:
                batch.append(message)
            elif error.code() == KafkaError._PARTITION_EOF or transient_kafka_error(error):
                continue
            elif error.fatal() or not error.retriable():
                if error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    continue  # a subscribed topic not created yet
                raise KafkaException(error)
        return batch

    def commit(self, messages: Iterable[Message]) -> bool:
        """Synchronously commit past the highest offset of each partition in ``messages``."""
        return self.commit_offsets(next_offsets(messages))

    def commit_offsets(self, offsets: Offsets) -> bool:
        """Commit ``{(topic, partition): next offset to read}`` synchronously.

        False when the group has moved on since these messages were polled (this
        member was away longer than its session): the partitions resume from
        their last commit, here or elsewhere, and the work is done again. A
        transient error (no coordinator yet, brokers away) is raised, to retry."""
        if not offsets:
            return True
        try:
            self._consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                asynchronous=False,
            )
        except KafkaException as error:
            if error.args and isinstance(error.args[0], KafkaError) and error.args[0].code() in GROUP_MOVED_CODES:
                log.warning("commit refused: the group rebalanced meanwhile, so these partitions resume from "
                            "their last commit and this work is done again",
                            extra={"group": self.group, "reason": error.args[0].str()})
                return False
            raise
        return True

    def seek(self, offsets: Offsets) -> None:
        """Read assigned partitions again from ``offsets`` (a service that lost its in-memory state)."""
        for (topic, partition), offset in offsets.items():
            if (topic, partition) in self.assignment:
                self._consumer.seek(TopicPartition(topic, partition, offset))

    def committed(self, partitions: list[tuple[str, int]], timeout: float = 10) -> dict:
        found = self._consumer.committed([TopicPartition(t, p) for t, p in partitions], timeout)
        return {(tp.topic, tp.partition): tp.offset for tp in found}

    def work_while_polling(self, work: Callable[[], T], heartbeat_s: float = 1.0) -> T:
        """Run long ``work`` in a thread while this member keeps polling.

        Partitions are paused so polling returns nothing but keeps the member
        in its group (max.poll.interval.ms) however long the work takes.
        Messages from partitions assigned during the work are rewound, so
        nothing polled here is lost.
        """
        self._consumer.pause(self._consumer.assignment())
        self._working = True
        try:
            with ThreadPoolExecutor(max_workers=1) as pool:
                future: Future[T] = pool.submit(work)
                while not future.done():
                    for message in self._consumer.consume(100, heartbeat_s):
                        if message.error() is None:
                            self._rewind(message)
        finally:
            self._working = False
            self._consumer.resume(self._consumer.assignment())
        return future.result()

    def _rewind(self, message: Message) -> None:
        partition = TopicPartition(message.topic(), message.partition(), message.offset())
        self._consumer.seek(partition)
        self._consumer.pause([partition])

    def high_watermark(self, topic: str, partition: int) -> int | None:
        """The partition's end offset as last fetched (no broker round trip)."""
        try:
            _, high = self._consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
        except KafkaException:
            return None
        return high if high >= 0 else None

    def rewind(self, polled: list[Message], done: list[Message]) -> None:
        """Seek back to the first unfinished message of each partition of ``polled``."""
        finished = next_offsets(done)
        first_unfinished: dict[tuple[str, int], int] = {}
        for message in polled:
            key = (message.topic(), message.partition())
            if message.offset() >= finished.get(key, 0) and key not in first_unfinished:
                first_unfinished[key] = message.offset()
        for (topic, partition), offset in first_unfinished.items():
            if (topic, partition) in self.assignment:  # a revoked one resumes at its commit elsewhere
                self._consumer.seek(TopicPartition(topic, partition, offset))

    def close(self) -> None:
        """Leave the group now so partitions move without waiting for a timeout."""
        self._consumer.close()


def next_offsets(messages: Iterable[Message]) -> Offsets:
    """``{(topic, partition): highest offset + 1}`` — what to commit after ``messages``."""
    offsets: dict[tuple[str, int], int] = {}
    for message in messages:
        key = (message.topic(), message.partition())
        offsets[key] = max(offsets.get(key, 0), message.offset() + 1)
    return offsets


def unjoined_consumer(settings: KafkaSettings, name: str, **overrides: Any) -> Consumer:
    """A consumer that is assigned partitions directly: it never joins its group nor commits.

    Its fetches wait as long as a group member's (``fetch_wait_max_ms``): a broker
    on slow storage (Tansu) answers a fetch its wait cut short with nothing, so a
    shorter wait starves a reader with a backlog (measured on the embedded stack:
    50 ms read ~10 messages/s of a busy topic, 500 ms ~500)."""
    return Consumer({
        **settings.client_config(),
        "group.id": f"{name}-{uuid.uuid4().hex[:12]}",  # required by the client, never joined
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "fetch.wait.max.ms": settings.fetch_wait_max_ms,
        "fetch.queue.backoff.ms": 10,
        **overrides,
    })


def partition_ends(consumer: Consumer, topics: Iterable[str], timeout: float,
                   optional: Iterable[str] = ()) -> dict[str, dict[int, int]]:
    """``{topic: {partition: end offset}}`` for every partition of ``topics``, and of each topic in
    ``optional`` that exists; KafkaException naming a topic of ``topics`` that does not."""
    metadata = consumer.list_topics(timeout=timeout).topics
    for name in topics:
        topic = metadata.get(name)
        if topic is None or topic.error is not None or not topic.partitions:
            raise KafkaException(
                f"topic {name!r} does not exist; create it with `streamml topics apply`"
                + (f" ({topic.error.str()})" if topic is not None and topic.error is not None else ""))
    followed = [*topics, *(name for name in optional if name in metadata and metadata[name].partitions)]
    return {
        name: {partition: max(consumer.get_watermark_offsets(TopicPartition(name, partition), timeout=timeout,
                                                             cached=False)[1], 0)
               for partition in sorted(metadata[name].partitions)}
        for name in followed
    }


class TopicTail:
    """Every message on ``topics`` from their end at start on, read by this reader alone.

    The reader assigns itself every partition directly, with no consumer group:
    each reader (an application instance, a watcher) sees every message, and a
    broker restart, a session timeout or a slow poll cannot reset it past
    messages published meanwhile, as a group member with no commits would be.
    A topic in ``optional`` is followed only where it exists. Nothing is
    committed: a reader that starts again starts at the end again.

    Some brokers (Tansu) report a partition's end as the first offset of its
    last batch plus one, so a tail may start with the rest of that batch. A
    reader that must not see those passes ``since``: messages stamped before
    it are skipped (a producer's clock behind by more than the gap from
    ``since`` to the publication would hide its messages; on one machine,
    none is).
    """

    def __init__(self, settings: KafkaSettings, topics: list[str], optional: Iterable[str] = (),
                 timeout_s: float | None = None, since: datetime | None = None, **overrides: Any) -> None:
        timeout = timeout_s or settings.connect_timeout_s
        self._since_ms = None if since is None else since.timestamp() * 1000
        self._consumer = unjoined_consumer(settings, "streamml-tail", **overrides)
        try:
            ends = partition_ends(self._consumer, topics, timeout, optional)
            self._consumer.assign([TopicPartition(name, partition, end)
                                   for name, partitions in ends.items() for partition, end in partitions.items()])
        except Exception:
            self._consumer.close()
            raise

    def poll(self, max_records: int = 100, timeout: float = 1.0) -> list[Message]:
        """Up to ``max_records`` messages; while the brokers are away, none."""
        batch = []
        for message in self._consumer.consume(max_records, timeout):
            error = message.error()
            if error is None:
                if self._since_ms is None or message.timestamp()[1] >= self._since_ms:
                    batch.append(message)
            elif error.fatal():
                raise KafkaException(error)
        return batch

    def close(self) -> None:
        self._consumer.close()
