"""The monitor service: ``predictions.<model>`` and ``feedback.<model>`` -> ``drift.detected``.

Each polled batch is split by topic, decoded in one pass per topic (bad
records go to ``dlq.monitor`` with the reason) and fed to the watch of its
model, which judges the champion's traffic against the champion's training
data. Then, in this order: the drift events are sent and, with the dead
letters, flushed; each model whose windows or episodes changed has its
state written to ``monitor/<model>/latest.json``; the offsets are committed.

The champion of each model is read at start and re-read every
``champion_refresh_s``, and at once (at most every second) when a batch holds
predictions of a version other than the watched one, which is what a
promotion looks like from here. A new champion gets a new watch (new
reference, new windows, no episode carried over).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict

import pyarrow.compute as pc
from confluent_kafka import Message
from prometheus_client import Counter, Gauge, Histogram

from services.monitor.champion import read_champion_setup, read_champion_version
from services.monitor.config import MonitorOptions
from services.monitor.records import DecodedPredictions, decode_feedback, decode_predictions
from services.monitor.state import write_state
from services.monitor.watch import ModelWatch
from streamml.events import DriftDetected, FeedbackRecord, PredictionRecord
from streamml.faults import Interrupted
from streamml.registry.keys import RegistryError, check_name
from streamml.registry.monitor import MonitorState, read_monitor_state
from streamml.service import ConsumerService, run
from streamml.settings import ServiceSettings
from streamml.store import ObjectNotFound

log = logging.getLogger("streamml.monitor")

GROUP = "streamml-monitor"
INPUT_TOPICS = [r"^predictions\..*", r"^feedback\..*"]
EVENT_TYPES = {"predictions": PredictionRecord.ce_type(), "feedback": FeedbackRecord.ce_type()}
# Predictions of an unwatched version make the monitor re-read the champion pointer, at most this often.
FOLLOW_AT_MOST_EVERY_S = 1.0

RECORDS = Counter(
    "streamml_monitor_records_total",
    "Consumed records by outcome: monitored, other_version, rejected, no_champion, unwatched",
    ["model", "stream", "outcome"],
)
BATCH_SECONDS = Histogram("streamml_monitor_batch_seconds", "Decode, judge, publish and commit one polled batch")
CHAMPION = Gauge("streamml_monitor_champion", "1 for the champion version being watched", ["model", "version"])
CHAMPION_FAILURES = Counter(
    "streamml_monitor_champion_failures_total", "Champions whose card or manifest gave no reference", ["model"]
)


class MonitorSettings(ServiceSettings):
    monitor: MonitorOptions = MonitorOptions()


class MonitorService(ConsumerService[MonitorSettings]):
    name = "monitor"
    group = GROUP

    def input_topics(self) -> list[str]:
        prefix = self.settings.kafka.topic_prefix.replace(".", r"\.")
        return [f"^{prefix}{pattern[1:]}" for pattern in INPUT_TOPICS]

    def load(self) -> None:
        super().load()
        self.options = self.settings.monitor
        self.watches: dict[str, ModelWatch] = {}
        self.next_refresh: dict[str, float] = {}
        self.last_followed: dict[str, float] = {}
        for model in self.options.models:
            self._refresh(model)
        log.info("watching models", extra={"models": self.options.models or "every model with a champion",
                                           "champions": {m: w.version for m, w in self.watches.items()}})

    def serve(self) -> None:
        self.consumer.subscribe()
        while not self.stopping.is_set():
            messages = self.consumer.poll(self.options.poll_batch, timeout=0.2)
            started = time.monotonic()
            events = self._take(messages)
            events += self._tick()
            for event in events:
                self.producer.send(event)
                log.warning("drift detected", extra={
                    "model": event.model, "dataset": event.dataset, "kind": event.kind, "severity": event.severity,
                    "features": [feature.feature for feature in event.features]})
            # Events and dead letters are durable, and the state saved, before the offsets are committed;
            # each step waits out an outage of the brokers or the store.
            self.retry(self.producer.flush)
            self.retry(self._save)
            if messages:
                self.retry(lambda: self.consumer.commit(messages))
                BATCH_SECONDS.observe(time.monotonic() - started)

    def handle(self, messages: list[Message]) -> list[Message]:
        raise NotImplementedError("the monitor judges whole polled batches in serve()")

    # ------------------------------------------------------------------ batches

    def _take(self, messages: list[Message]) -> list[DriftDetected]:
        by_topic: dict[str, list[Message]] = defaultdict(list)
        for message in messages:
            by_topic[message.topic()].append(message)
        routed = [(*self._route(topic), batch) for topic, batch in by_topic.items()]
        # Predictions before feedback, so labels polled with their predictions join at once.
        routed.sort(key=lambda item: item[0] != "predictions")
        events = []
        for stream, model, batch in routed:
            watch = self._watch(model)
            if watch is None:
                outcome = "unwatched" if not self._watched(model) else "no_champion"
                RECORDS.labels(model, stream, outcome).inc(len(batch))
                continue
            try:
                events += self._feed(watch, stream, batch)
            except Interrupted:
                raise
            except Exception as error:  # noqa: BLE001 - one poison batch must not stop its partitions
                log.exception("batch failed; sent to the dead-letter topic", extra={"model": model, "stream": stream})
                for message in batch:
                    self.dead_letters.send(message, f"{type(error).__name__}: {error}", "processing_error")
                RECORDS.labels(model, stream, "rejected").inc(len(batch))
        return events

    def _feed(self, watch: ModelWatch, stream: str, batch: list[Message]) -> list[DriftDetected]:
        expected = EVENT_TYPES[stream]
        typed: list[Message] = []
        for message in batch:
            found = _header(message, "ce_type")
            if found == expected:
                typed.append(message)
            else:
                reason = f"{message.topic()} carries {expected} events, found ce_type {found!r}"
                self.dead_letters.send(message, reason, "unexpected_event")
        values = [message.value() for message in typed]
        if stream == "predictions":
            decoded = decode_predictions(values, watch.layout, watch.model)
            if self._another_version(decoded, watch):
                watch = self._follow(watch)
                decoded = decode_predictions(values, watch.layout, watch.model)
            events, others = watch.add_predictions(decoded)
            RECORDS.labels(watch.model, stream, "other_version").inc(others)
        else:
            decoded = decode_feedback(values, watch.model, watch.task, watch.classes)
            events, others = watch.add_feedback(decoded), 0
        for index, reason in decoded.rejected.items():
            self.dead_letters.send(typed[index], reason, "invalid_record")
        RECORDS.labels(watch.model, stream, "rejected").inc(len(batch) - len(typed) + len(decoded.rejected))
        RECORDS.labels(watch.model, stream, "monitored").inc(len(decoded) - others)
        return events

    def _route(self, topic: str) -> tuple[str, str]:
        """``<prefix>predictions.fraud`` -> ("predictions", "fraud")."""
        stream, _, model = topic[len(self.settings.kafka.topic_prefix):].partition(".")
        return stream, model

    # ---------------------------------------------------------------- champions

    def _watched(self, model: str) -> bool:
        if self.options.models:
            return model in self.options.models
        try:
            check_name(model)
        except RegistryError:
            return False
        return True

    def _watch(self, model: str) -> ModelWatch | None:
        if model not in self.watches and self._watched(model) and time.monotonic() >= self.next_refresh.get(model, 0):
            self._refresh(model)
        return self.watches.get(model)

    def _another_version(self, decoded: DecodedPredictions, watch: ModelWatch) -> bool:
        return len(decoded) > 0 and pc.any(pc.not_equal(decoded.versions, watch.version)).as_py()

    def _follow(self, watch: ModelWatch) -> ModelWatch:
        """Re-read the pointer now: predictions of another version usually mean a promotion just happened."""
        if time.monotonic() - self.last_followed.get(watch.model, 0) >= FOLLOW_AT_MOST_EVERY_S:
            self.last_followed[watch.model] = time.monotonic()
            self._refresh(watch.model)
        return self.watches[watch.model]

    def _tick(self) -> list[DriftDetected]:
        """Close time windows traffic stopped filling; follow champion changes."""
        now = time.time()
        events = [event for watch in list(self.watches.values()) for event in watch.poll(now)]
        for model in {*self.options.models, *self.watches}:
            if time.monotonic() >= self.next_refresh.get(model, 0):
                self._refresh(model)
        return events

    def _refresh(self, model: str) -> None:
        """Watch the champion the pointer names now, if it is not watched already."""
        self.next_refresh[model] = time.monotonic() + self.options.champion_refresh_s
        current = self.watches.get(model)
        version = None
        try:
            version = self.retry(lambda: read_champion_version(self.store, model))
            if version is None or (current is not None and current.version == version):
                return
            champion = self.retry(lambda: read_champion_setup(self.store, model, version))
            stored = self.retry(lambda: self._stored_state(model))
            watch = ModelWatch(champion, self.options, stored)
        except (ValueError, ObjectNotFound) as error:  # RegistryError and ValidationError are ValueErrors
            CHAMPION_FAILURES.labels(model).inc()
            log.error("cannot watch the champion; retrying at the next refresh",
                      extra={"model": model, "version": version, "error": str(error)})
            return
        self.watches[model] = watch
        if current is not None:
            CHAMPION.remove(model, current.version)
        CHAMPION.labels(model, version).set(1)
        log.info("watching champion", extra={
            "model": model, "version": version, "previous": current.version if current else None,
            "continued": stored is not None and stored.version == version,
            "dataset": champion.reference.dataset, "dataset_version": champion.reference.dataset_version,
            "baseline": champion.baseline.model_dump() if champion.baseline else None})

    def _stored_state(self, model: str) -> MonitorState | None:
        try:
            return read_monitor_state(self.store, model)
        except RegistryError as error:
            log.warning("ignoring the stored monitor state", extra={"model": model, "error": str(error)})
            return None

    def _save(self) -> None:
        for watch in self.watches.values():
            if watch.changed():
                write_state(self.store, watch.state())


def _header(message: Message, name: str) -> str | None:
    for key, value in message.headers() or ():
        if key == name:
            return value.decode("utf-8", "replace") if value is not None else None
    return None


def main() -> None:
    run(MonitorService, MonitorSettings)
