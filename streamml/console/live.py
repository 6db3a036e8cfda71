"""The loop as it happens: every streamml event, read from Kafka by one background consumer.

The consumer joins no group: it is assigned every partition of the event
topics from the beginning, so it reads the history the topics still hold
(``model.promoted`` is kept for ever: who moved each champion and why) and
then follows new events, without committing anything or counting as a
consumer anyone waits for. Topics created later are picked up when the
assignment is refreshed.

What it read goes into an ``EventLog``, which the pages read: the newest
events (for the loop page and its Server-Sent Events), each model's
promotions and each model's drift events. An event about a model version
makes the registry forget that version's cached decision.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, Message, TopicPartition

from streamml.console import links
from streamml.demo import EVENT_TOPICS, describe
from streamml.events import (
    DataLanded,
    DatasetReady,
    DriftDetected,
    Event,
    EventError,
    ModelPromoted,
    ModelRejected,
    ModelShadow,
    ModelTrained,
    decode,
)
from streamml.kafka import unjoined_consumer
from streamml.settings import KafkaSettings

log = logging.getLogger("streamml.console")
REFRESH_ASSIGNMENT_S = 10.0
KEPT_PER_MODEL = 1000


@dataclass(frozen=True)
class SeenEvent:
    """An event as the console saw it: its order here, its CloudEvents id and time, and where it was read."""

    seq: int
    id: str
    time: datetime
    event: Event
    topic: str
    partition: int
    offset: int

    @property
    def kind(self) -> str:
        return self.event.TYPE

    def summary(self) -> tuple[str, str]:
        """(stage, one line), as ``streamml demo`` narrates it."""
        return describe(self.event)


class EventLog:
    """What the console saw, newest last: shared by the feed that writes it and the pages that read it."""

    def __init__(self, keep: int) -> None:
        self.lock = threading.Lock()
        self.recent: deque[SeenEvent] = deque(maxlen=keep)
        self.promotions: dict[str, deque[SeenEvent]] = {}
        self.drifts: dict[str, deque[SeenEvent]] = {}
        self.seq = 0
        self.caught_up = threading.Event()  # set once the history the topics hold was read

    def add(self, event: Event, event_id: str, time: datetime, topic: str = "", partition: int = 0,
            offset: int = 0) -> SeenEvent:
        with self.lock:
            self.seq += 1
            seen = SeenEvent(self.seq, event_id, time, event, topic, partition, offset)
            self.recent.append(seen)
            if isinstance(event, ModelPromoted):
                self.promotions.setdefault(event.model, deque(maxlen=KEPT_PER_MODEL)).append(seen)
            elif isinstance(event, DriftDetected):
                self.drifts.setdefault(event.model, deque(maxlen=KEPT_PER_MODEL)).append(seen)
        return seen

    def after(self, seq: int) -> list[SeenEvent]:
        """The kept events newer than ``seq``, oldest first."""
        with self.lock:
            return [seen for seen in self.recent if seen.seq > seq]

    def newest(self, count: int) -> list[SeenEvent]:
        """The ``count`` newest events, newest first."""
        with self.lock:
            return list(self.recent)[-count:][::-1]

    def promotions_of(self, model: str) -> list[SeenEvent]:
        with self.lock:
            return list(self.promotions.get(model, ()))

    def drifts_of(self, model: str) -> list[SeenEvent]:
        with self.lock:
            return list(self.drifts.get(model, ()))


class LiveFeed:
    """Reads the event topics into an ``EventLog`` in a thread; ``start`` it, ``stop`` it."""

    def __init__(self, kafka: KafkaSettings, log: EventLog, on_event: Callable[[SeenEvent], None] = lambda _: None,
                 topics: list[str] = EVENT_TOPICS) -> None:
        self.kafka = kafka
        self.topics = [kafka.topic(name) for name in topics]
        self.log = log
        self.on_event = on_event
        self._at_end: set[tuple[str, int]] = set()
        self._assigned: set[tuple[str, int]] = set()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="console-live-feed", daemon=True)
        self._consumer = unjoined_consumer(kafka, "streamml-console", **{"enable.partition.eof": True})

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(10)

    def _run(self) -> None:
        refreshed = 0.0
        try:
            while not self._stopping.is_set():
                now = time.monotonic()
                if now - refreshed >= REFRESH_ASSIGNMENT_S:
                    self._assign_new_partitions()
                    refreshed = now
                for message in self._consumer.consume(500, 0.2):
                    self._take(message)
        except Exception:  # noqa: BLE001 - the loop page shows the events stopped; the log has why
            log.exception("the live event feed stopped")
        finally:
            self._consumer.close()

    def _assign_new_partitions(self) -> None:
        try:
            metadata = self._consumer.list_topics(timeout=5).topics
        except KafkaException as error:
            log.warning("cannot list the event topics", extra={"error": str(error)})
            return
        new = [TopicPartition(topic, partition, OFFSET_BEGINNING)
               for topic in self.topics if topic in metadata and metadata[topic].error is None
               for partition in sorted(metadata[topic].partitions)
               if (topic, partition) not in self._assigned]
        if new:
            self._consumer.incremental_assign(new)
            self._assigned |= {(p.topic, p.partition) for p in new}
        if not self._assigned:
            self.log.caught_up.set()  # nothing to read yet

    def _take(self, message: Message) -> None:
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                self._at_end.add((message.topic(), message.partition()))
                if self._at_end >= self._assigned:
                    self.log.caught_up.set()
            elif error.fatal():
                raise KafkaException(error)
            return
        try:
            event, attributes = decode(message.headers(), message.key(), message.value())
        except EventError:
            return  # not an event; the services dead-letter such messages
        seen = self.log.add(event, str(attributes.get("id", "")), _event_time(attributes, message),
                            message.topic(), message.partition(), message.offset())
        self.on_event(seen)


def _event_time(attributes: dict, message: Message) -> datetime:
    stamp = attributes.get("time")
    if isinstance(stamp, datetime):
        return stamp.astimezone(UTC)
    _, millis = message.timestamp()
    return datetime.fromtimestamp(millis / 1000, UTC)


def event_link(event: Event) -> str | None:
    """The console page about what ``event`` announces."""
    match event:
        case DataLanded():
            return links.raw(event.object_key)
        case DatasetReady():
            return links.dataset_version(event.dataset, event.version)
        case ModelTrained() | ModelShadow() | ModelPromoted() | ModelRejected():
            return links.version(event.model, event.version)
        case DriftDetected():
            return links.drift(event.model)
    return None


def event_model_version(event: Event) -> tuple[str, str] | None:
    """(model, version) for events that judge or move a version."""
    if isinstance(event, ModelTrained | ModelShadow | ModelPromoted | ModelRejected):
        return event.model, event.version
    return None
