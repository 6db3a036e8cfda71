"""The monitor service: ``predictions.<model>`` and ``feedback.<model>`` -> ``drift.detected``.

One replica owns a model: the SDK keys a model's predictions and feedback by
the model name, so they sit in one partition of each topic (the same index
when both topics have the same partition count), and the replica the
consumer group assigns that partition takes the model with its first
record. Records keyed otherwise would reach other replicas, so they go to
``dlq.monitor`` with the reason.

Each polled batch is split by topic, decoded in one pass per topic (bad
records go to ``dlq.monitor`` with the reason) and fed to the watch of its
model, which judges the champion's traffic against the champion's training
data. Drift events go into the model's outbox. Then, per owned model, when
an event was raised, or records were consumed and a window closed or
``checkpoint_interval_s`` passed: the checkpoint (``checkpoint.py``:
offsets, reports, open windows, waiting labels, decider, outbox) is written
with a conditional write, then the outbox is sent and flushed with the dead
letters, then exactly the offsets the checkpoint holds are committed. A
replica that takes a model over (a restart, a rebalance) reads its
checkpoint, skips the records it covers (consumed before a crash that came
before the commit) and continues the same windows, labels and episodes; it
sends again only what the outbox holds, with the same event ids. Partitions
are checkpointed and dropped when revoked. A replica whose checkpoint write
fails lost the model to another: it drops what it did not checkpoint and
continues from the other's checkpoint. Records of models outside ``models``
carry no state: their offsets are committed at once.

The champion of each owned model is read when it is taken and re-read every
``champion_refresh_s``, and at once (at most every second) when a batch holds
predictions of a version other than the watched one, which is what a
promotion looks like from here. A new champion gets a new watch (new
reference, new windows, no episode carried over).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow.compute as pc
from confluent_kafka import Message, TopicPartition
from prometheus_client import Counter, Gauge, Histogram

from services.monitor.champion import read_champion_setup, read_champion_version
from services.monitor.checkpoint import Checkpoint, read_checkpoint, write_checkpoint
from services.monitor.config import MonitorOptions
from services.monitor.records import DecodedPredictions, decode_feedback, decode_predictions
from services.monitor.state import write_state
from services.monitor.watch import ModelWatch
from streamml.events import DriftDetected, EventError, FeedbackRecord
from streamml.faults import Interrupted
from streamml.kafka import Offsets, next_offsets
from streamml.prediction_events import BATCH_TYPE, PREDICTION_TYPES, prediction_bodies
from streamml.registry.keys import RegistryError, check_name, monitor_state_key, monitor_unwatched_key
from streamml.registry.monitor import MonitorState, UnwatchedChampion, read_monitor_state
from streamml.service import ConsumerService, run
from streamml.settings import ServiceSettings
from streamml.store import ObjectConflict, ObjectNotFound

log = logging.getLogger("streamml.monitor")

GROUP = "streamml-monitor"
INPUT_TOPICS = [r"^predictions\..*", r"^feedback\..*"]
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
OWNED = Gauge("streamml_monitor_owned_models", "Models whose partitions this replica holds")
CHECKPOINTS = Counter("streamml_monitor_checkpoints_total", "Checkpoints written, by outcome", ["model", "outcome"])


class MonitorSettings(ServiceSettings):
    monitor: MonitorOptions = MonitorOptions()


@dataclass
class Owned:
    """A model whose partitions this replica holds, and what it has not checkpointed yet."""

    model: str
    offsets: Offsets = field(default_factory=dict)
    watch: ModelWatch | None = None
    outbox: list[tuple[str, DriftDetected]] = field(default_factory=list)
    etag: str | None = None  # of the checkpoint this replica read or wrote last
    state_etag: str | None = None  # of latest.json, likewise
    saved_offsets: Offsets = field(default_factory=dict)
    saved_at: float = field(default_factory=time.monotonic)
    unwatched: UnwatchedChampion | None = None  # why the champion is not watched, as noted in the store


class MonitorService(ConsumerService[MonitorSettings]):
    name = "monitor"
    group = GROUP

    def input_topics(self) -> list[str]:
        prefix = self.settings.kafka.topic_prefix.replace(".", r"\.")
        return [f"^{prefix}{pattern[1:]}" for pattern in INPUT_TOPICS]

    def load(self) -> None:
        super().load()
        self.options = self.settings.monitor
        self.owned: dict[str, Owned] = {}
        self.next_refresh: dict[str, float] = {}
        self.last_followed: dict[str, float] = {}
        self.stateless: Offsets = {}  # processed offsets of models outside `models`: committed at once
        self.batched = 0  # predictions of the last poll beyond one per message (PredictionBatch events)
        log.info("watching models as their partitions are assigned",
                 extra={"models": self.options.models or "every model with a champion"})

    def serve(self) -> None:
        self.consumer.subscribe()
        poll_size = self.options.poll_batch
        try:
            while not self.stopping.is_set():
                messages = self.consumer.poll(poll_size, timeout=0.2)
                started = time.monotonic()
                self.batched = 0
                self._take(messages)
                if messages:
                    # A PredictionBatch message carries many predictions: poll about poll_batch records.
                    poll_size = max(1, self.options.poll_batch * len(messages) // (len(messages) + self.batched))
                self._tick()
                self._checkpoint(force=False)
                if messages:
                    BATCH_SECONDS.observe(time.monotonic() - started)
        finally:
            self._checkpoint(force=True)  # SIGTERM: hand over where this replica stands

    def handle(self, messages: list[Message]) -> list[Message]:
        raise NotImplementedError("the monitor judges whole polled batches in serve()")

    # ------------------------------------------------------------ ownership

    def on_revoke(self, partitions: list[TopicPartition]) -> None:
        super().on_revoke(partitions)
        for model in {self._route(p.topic)[1] for p in partitions}:
            if model in self.owned:
                self._save(self.owned[model], force=True)
                self._drop(model)
        self._commit_stateless()

    def _take_over(self, model: str) -> Owned:
        """Own ``model`` from its checkpoint (or from scratch), watching its champion."""
        checkpoint, etag = self.retry(lambda: read_checkpoint(self.store, model))
        owned = Owned(model, etag=etag)
        if checkpoint is not None:
            # The group's commits may trail the checkpoint (its writer died between the two): with
            # nothing counted as committed, the next save commits every offset the checkpoint covers,
            # even when no record beyond them ever comes. Else the group would show that lag for ever.
            owned.offsets = dict(checkpoint.offsets)
            owned.outbox = list(checkpoint.outbox)  # raised before a crash, maybe never sent
        else:
            # No checkpoint yet (or one written before checkpoints): the episodes of latest.json still hold.
            checkpoint = Checkpoint(model, state=self.retry(lambda: self._stored_state(model)))
        owned.state_etag = self.retry(lambda: self._state_etag(model))
        self.owned[model] = owned
        OWNED.set(len(self.owned))
        self._refresh(model, checkpoint)
        log.info("model taken", extra={"model": model, "offsets": _named(owned.offsets),
                                       "continued": etag is not None, "unsent_events": len(owned.outbox)})
        return owned

    def _drop(self, model: str) -> None:
        owned = self.owned.pop(model)
        if owned.watch is not None:
            CHAMPION.remove(model, owned.watch.version)
        self.next_refresh.pop(model, None)
        OWNED.set(len(self.owned))

    def _stored_state(self, model: str) -> MonitorState | None:
        try:
            return read_monitor_state(self.store, model)
        except RegistryError as error:
            log.warning("ignoring the stored monitor state", extra={"model": model, "error": str(error)})
            return None

    def _state_etag(self, model: str) -> str | None:
        try:
            return self.store.get(monitor_state_key(model)).etag
        except ObjectNotFound:
            return None

    # ------------------------------------------------------------ checkpoints

    def _checkpoint(self, force: bool) -> None:
        for owned in list(self.owned.values()):
            self._save(owned, force)
        self._commit_stateless()

    def _save(self, owned: Owned, force: bool) -> None:
        """Checkpoint, send the outbox, commit what the checkpoint covers; drop the model if another
        replica wrote a checkpoint since."""
        watch = owned.watch
        changed = watch is not None and watch.changed()
        moved = owned.offsets != owned.saved_offsets
        due = time.monotonic() - owned.saved_at >= self.options.checkpoint_interval_s
        if not (owned.outbox or (moved and (force or changed or due))):
            return
        state = watch.state() if watch is not None else None
        checkpoint = Checkpoint(owned.model, dict(owned.offsets), state,
                                watch.snapshot() if watch is not None else None, list(owned.outbox))
        try:
            owned.etag = self.retry(lambda: write_checkpoint(self.store, checkpoint, owned.etag))
            if changed:
                owned.state_etag = self.retry(lambda: write_state(self.store, state, owned.state_etag))
        except ObjectConflict:
            CHECKPOINTS.labels(owned.model, "lost").inc()
            self._lost(owned)
            return
        CHECKPOINTS.labels(owned.model, "written").inc()
        for event_id, event in owned.outbox:
            self.producer.send(event, event_id=event_id)
            log.warning("drift detected", extra={
                "model": event.model, "dataset": event.dataset, "kind": event.kind, "severity": event.severity,
                "features": feature_names(event)})
        # Events and dead letters are durable before their offsets are committed; each step waits out an
        # outage of the brokers or the store.
        self.retry(self.producer.flush)
        self.retry(lambda: self.consumer.commit_offsets(_changed(owned.offsets, owned.saved_offsets)))
        owned.saved_offsets, owned.saved_at = dict(owned.offsets), time.monotonic()
        if owned.outbox:
            owned.outbox = []
            # So a restart does not send them again: the same checkpoint, with the outbox empty.
            checkpoint.outbox = []
            try:
                owned.etag = self.retry(lambda: write_checkpoint(self.store, checkpoint, owned.etag))
            except ObjectConflict:
                self._lost(owned)

    def _lost(self, owned: Owned) -> None:
        """Another replica wrote this model's checkpoint: it owns the model. Start over from there."""
        log.error("another replica checkpointed this model since this one did: dropping what is not "
                  "checkpointed and continuing from its checkpoint (records of one model must share a "
                  "partition: key them by the model name, and give predictions and feedback topics the same "
                  "partition count)", extra={"model": owned.model})
        self._drop(owned.model)
        taken = self._take_over(owned.model)
        self.consumer.seek({tp: offset for tp, offset in taken.offsets.items() if tp in self.consumer.assignment})

    def _commit_stateless(self) -> None:
        if self.stateless:
            self.retry(self.producer.flush)
            self.retry(lambda: self.consumer.commit_offsets(self.stateless))
            self.stateless = {}

    # ------------------------------------------------------------------ batches

    def _take(self, messages: list[Message]) -> None:
        by_topic: dict[str, list[Message]] = defaultdict(list)
        for message in messages:
            by_topic[message.topic()].append(message)
        routed = [(*self._route(topic), batch) for topic, batch in by_topic.items()]
        # Predictions before feedback, so labels polled with their predictions join at once.
        routed.sort(key=lambda item: item[0] != "predictions")
        for stream, model, batch in routed:
            if not self._watched(model):
                RECORDS.labels(model, stream, "unwatched").inc(len(batch))
                self.stateless |= next_offsets(batch)
                continue
            key = model.encode()
            keyed = [message for message in batch if message.key() == key]
            for message in batch:
                if message.key() != key:
                    reason = (f"keyed {message.key()!r}, not by the model name {model!r}: a model's records must "
                              "share a partition, so that one monitor replica judges them all")
                    self.dead_letters.send(message, reason, "misrouted")
            owned = self.owned.get(model)
            if owned is None and not keyed:
                self.stateless |= next_offsets(batch)
                continue
            # The model is this replica's from its first record on: a partition of its topics without
            # its records (another index) does not make a replica its owner.
            owned = owned or self._take_over(model)
            fresh = [m for m in keyed if m.offset() >= owned.offsets.get((m.topic(), m.partition()), 0)]
            _advance(owned.offsets, next_offsets(batch))
            watch = self._watch(owned)
            if watch is None:
                RECORDS.labels(model, stream, "no_champion").inc(len(fresh))
                continue
            try:
                events = self._feed(watch, stream, fresh)
            except Interrupted:
                raise
            except Exception as error:  # noqa: BLE001 - one poison batch must not stop its partitions
                log.exception("batch failed; sent to the dead-letter topic", extra={"model": model, "stream": stream})
                for message in fresh:
                    self.dead_letters.send(message, f"{type(error).__name__}: {error}", "processing_error")
                RECORDS.labels(model, stream, "rejected").inc(len(fresh))
                continue
            owned.outbox += [(str(uuid.uuid4()), event) for event in events]

    def _feed(self, watch: ModelWatch, stream: str, batch: list[Message]) -> list[DriftDetected]:
        """Judge a batch of the model's records (records the checkpoint covers already taken out)."""
        if stream == "predictions":
            return self._feed_predictions(watch, batch)
        expected = FeedbackRecord.ce_type()
        typed: list[Message] = []
        for message in batch:
            found = _header(message, "ce_type")
            if found == expected:
                typed.append(message)
            else:
                reason = f"{message.topic()} carries {expected} events, found ce_type {found!r}"
                self.dead_letters.send(message, reason, "unexpected_event")
        decoded = decode_feedback([message.value() for message in typed], watch.model, watch.task, watch.classes)
        for index, reason in decoded.rejected.items():
            self.dead_letters.send(typed[index], reason, "invalid_record")
        RECORDS.labels(watch.model, stream, "rejected").inc(len(batch) - len(typed) + len(decoded.rejected))
        RECORDS.labels(watch.model, stream, "monitored").inc(len(decoded))
        return watch.add_feedback(decoded)

    def _feed_predictions(self, watch: ModelWatch, batch: list[Message]) -> list[DriftDetected]:
        """Predictions come one per message or many (a PredictionBatch); each is judged on its own, and a
        message with a bad one goes to the dead-letter topic once, naming each bad one by its place."""
        bodies: list[bytes] = []
        origins: list[int] = []  # the index in ``batch`` of the message each body came from
        starts: dict[int, int] = {}  # message index -> its first body's index, for batches
        unreadable = 0
        for index, message in enumerate(batch):
            found = _header(message, "ce_type")
            try:
                split = prediction_bodies(found, message.value())
            except EventError as error:
                kind = "unexpected_event" if found not in PREDICTION_TYPES else "invalid_record"
                self.dead_letters.send(message, f"{message.topic()}: {error}", kind)
                unreadable += 1
                continue
            if found == BATCH_TYPE:
                starts[index] = len(bodies)
            bodies += split
            origins += [index] * len(split)
        self.batched += len(bodies) + unreadable - len(batch)
        decoded = decode_predictions(bodies, watch.layout, watch.model)
        if self._another_version(decoded, watch):
            watch = self._follow(watch)
            decoded = decode_predictions(bodies, watch.layout, watch.model)
        events, others = watch.add_predictions(decoded)
        bad: dict[int, list[str]] = defaultdict(list)
        for index, reason in sorted(decoded.rejected.items()):
            origin = origins[index]
            bad[origin].append(f"prediction {index - starts[origin]}: {reason}" if origin in starts else reason)
        for index, reasons in bad.items():
            self.dead_letters.send(batch[index], "; ".join(reasons), "invalid_record")
        RECORDS.labels(watch.model, "predictions", "rejected").inc(unreadable + len(decoded.rejected))
        RECORDS.labels(watch.model, "predictions", "other_version").inc(others)
        RECORDS.labels(watch.model, "predictions", "monitored").inc(len(decoded) - others)
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

    def _watch(self, owned: Owned) -> ModelWatch | None:
        if owned.watch is None and time.monotonic() >= self.next_refresh.get(owned.model, 0):
            self._refresh(owned.model)
        return owned.watch

    def _another_version(self, decoded: DecodedPredictions, watch: ModelWatch) -> bool:
        """Served answers of another version: a promotion happened (a version in shadow answers beside)."""
        other = pc.not_equal(decoded.versions, watch.version).to_numpy(zero_copy_only=False)
        if decoded.shadow is not None:
            other = other & ~decoded.shadow
        return bool(other.any())

    def _follow(self, watch: ModelWatch) -> ModelWatch:
        """Re-read the pointer now: predictions of another version usually mean a promotion just happened."""
        if time.monotonic() - self.last_followed.get(watch.model, 0) >= FOLLOW_AT_MOST_EVERY_S:
            self.last_followed[watch.model] = time.monotonic()
            self._refresh(watch.model)
        return self.owned[watch.model].watch

    def _tick(self) -> None:
        """Close time windows traffic stopped filling; follow champion changes."""
        now = time.time()
        for owned in list(self.owned.values()):
            if owned.watch is not None:
                owned.outbox += [(str(uuid.uuid4()), event) for event in owned.watch.poll(now)]
            if time.monotonic() >= self.next_refresh.get(owned.model, 0):
                self._refresh(owned.model)

    def _refresh(self, model: str, checkpoint: Checkpoint | None = None) -> None:
        """Watch the champion the pointer names now, if it is not watched already; a checkpoint of
        that champion is continued."""
        self.next_refresh[model] = time.monotonic() + self.options.champion_refresh_s
        owned = self.owned[model]
        current = owned.watch
        version = None
        try:
            version = self.retry(lambda: read_champion_version(self.store, model))
            if version is None or (current is not None and current.version == version):
                return
            champion = self.retry(lambda: read_champion_setup(self.store, model, version))
            if checkpoint is not None:
                watch = ModelWatch(champion, self.options, checkpoint.state, checkpoint.monitor)
            else:
                watch = ModelWatch(champion, self.options)
        except (ValueError, ObjectNotFound) as error:  # RegistryError and ValidationError are ValueErrors
            CHAMPION_FAILURES.labels(model).inc()
            self._note_unwatched(owned, version, str(error))
            return
        if owned.unwatched is not None or current is None:
            # The note of a failed watch (maybe left by an earlier process) no longer holds.
            self.retry(lambda: self.store.delete(monitor_unwatched_key(model)))
            owned.unwatched = None
        owned.watch = watch
        if current is not None:
            CHAMPION.remove(model, current.version)
        CHAMPION.labels(model, version).set(1)
        continued = checkpoint is not None and checkpoint.state is not None and checkpoint.state.version == version
        log.info("watching champion", extra={
            "model": model, "version": version, "previous": current.version if current else None,
            "continued": continued, "dataset": champion.reference.dataset,
            "dataset_version": champion.reference.dataset_version,
            "baseline": champion.baseline.model_dump() if champion.baseline else None})

    def _note_unwatched(self, owned: Owned, version: str | None, reason: str) -> None:
        """Say in the store why the champion is not watched, for `streamml status` and `drift report`."""
        if owned.unwatched is not None and (owned.unwatched.version, owned.unwatched.reason) == (version, reason):
            return
        log.error("cannot watch the champion; retrying every champion_refresh_s (logged again if the reason changes)",
                  extra={"model": owned.model, "version": version, "error": reason})
        note = UnwatchedChampion(model=owned.model, version=version, reason=reason, since=datetime.now(UTC))
        self.retry(lambda: self.store.put(monitor_unwatched_key(owned.model), note.model_dump_json().encode()))
        owned.unwatched = note


def feature_names(event: DriftDetected) -> list[str]:
    """The drifted features of an event, each once (an event lists a feature once per test that flagged it)."""
    return list(dict.fromkeys(feature.feature for feature in event.features))


def _advance(offsets: Offsets, reached: Offsets) -> None:
    for partition, offset in reached.items():
        offsets[partition] = max(offsets.get(partition, 0), offset)


def _changed(offsets: Offsets, saved: Offsets) -> Offsets:
    return {tp: offset for tp, offset in offsets.items() if saved.get(tp) != offset}


def _named(offsets: Offsets) -> dict[str, int]:
    return {f"{topic}[{partition}]": offset for (topic, partition), offset in sorted(offsets.items())}


def _header(message: Message, name: str) -> str | None:
    for key, value in message.headers() or ():
        if key == name:
            return value.decode("utf-8", "replace") if value is not None else None
    return None


def main() -> None:
    run(MonitorService, MonitorSettings)
