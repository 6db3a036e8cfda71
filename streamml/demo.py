"""``streamml demo``: the whole loop on the embedded stack, narrated.

1. Bring up the stack with the example dataset, model and policy.
2. Publish card transactions at a steady rate; watch them land, become
   dataset v1, train, pass validation and get promoted.
3. An application (the SDK's ModelClient) serves predictions from the
   champion, logs them, and sends the true labels as feedback.
4. Inject drift into what the application sees and what it publishes; the
   monitor raises drift.detected, prep builds a new version, the trainer
   trains on it, the validator promotes it (first putting it in shadow
   when the policy has ``shadow:``: the application then scores its requests
   with it too, and the narration shows that phase); the application swaps to it.
5. Print each stage's timing, each model's metrics, and where to look.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import KafkaError, KafkaException, Message
from rich.console import Console
from rich.table import Table

from streamml.datagen import to_json_records, transactions
from streamml.events import (
    DataLanded,
    DatasetReady,
    DriftDetected,
    ModelPromoted,
    ModelRejected,
    ModelShadow,
    ModelTrained,
    decode,
)
from streamml.kafka import DeliveryError, EventProducer, TopicTail, publish_again
from streamml.settings import ServiceSettings

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
EVENT_TOPICS = ["data.landed", "dataset.ready", "model.trained", "model.shadow", "model.promoted", "model.rejected",
                "drift.detected"]
DATASET, MODEL = "transactions", "fraud"


@dataclass
class DemoPlan:
    rate: float = 4000.0  # records/s published
    first_records: int = 40_000  # before drift
    drift_records: int = 40_000  # after drift
    drift_shift: float = 0.6  # covariate shift injected (0..1)
    serve_batch: int = 50  # predictions per application request
    serve_interval_s: float = 0.05
    timeout_s: float = 900.0
    seed: int = 7


@dataclass
class Timeline:
    """What happened, when (seconds since the demo started), and the events themselves."""

    started: float = field(default_factory=time.monotonic)
    lines: list[tuple[float, str, str]] = field(default_factory=list)
    events: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    changed: threading.Condition = field(init=False)
    stopped: str | None = None  # why a part of the demo itself stopped: nothing more will happen

    def __post_init__(self) -> None:
        self.changed = threading.Condition(self.lock)

    def add(self, stage: str, text: str, event: object | None = None, echo=None) -> None:
        with self.changed:
            at = time.monotonic() - self.started
            self.lines.append((at, stage, text))
            if event is not None:
                self.events.append((at, event))
            self.changed.notify_all()
        if echo:
            echo(f"[dim]{at:7.1f}s[/dim]  [bold]{stage:<10}[/bold] {text}")

    def stop(self, reason: str) -> None:
        with self.changed:
            self.stopped = reason
            self.changed.notify_all()

    def wait_for(self, kind: type, timeout: float, after: float = 0.0, where=lambda e: True):
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                found = self.find(kind, after, where)
                if found or self.stopped or time.monotonic() >= deadline:
                    return found
                self.changed.wait(min(1.0, max(0.0, deadline - time.monotonic())))

    def find(self, kind: type, after: float = 0.0, where=lambda e: True):
        """The first event of ``kind`` at or after ``after`` (call with the lock held or when done)."""
        for at, event in self.events:
            if isinstance(event, kind) and at >= after and where(event):
                return at, event
        return None


def describe(event: object) -> tuple[str, str]:
    match event:
        case DataLanded():
            return "ingest", f"landed {event.rows:,} rows → {event.object_key.rsplit('/', 1)[-1]}"
        case DatasetReady():
            rows = ", ".join(f"{k} {v:,}" for k, v in event.rows.items())
            return "prep", f"dataset {event.dataset} v{event.version} ready ({rows}; trigger {event.trigger})"
        case ModelTrained():
            metrics = ", ".join(f"{k} {v:.3f}" for k, v in sorted(event.metrics.items()))
            return "trainer", f"{event.model} {event.version} trained on {event.device} in {event.training_seconds:.1f}s ({metrics})"
        case ModelPromoted():
            return "validator", f"{event.model} {event.version} PROMOTED (was {event.previous_champion}): {event.reason}"
        case ModelShadow():
            return "validator", (f"{event.model} {event.version} passed offline; in SHADOW beside {event.champion}: "
                                 f"scoring live requests until {event.min_predictions:,} are labelled "
                                 f"(by {event.deadline:%H:%M:%S})")
        case ModelRejected():
            return "validator", f"{event.model} {event.version} rejected: {'; '.join(event.reasons)}"
        case DriftDetected():
            features = ", ".join(f"{f.feature} ({f.test} {f.effect_size:.2f})" for f in event.features[:4])
            return "monitor", f"{event.kind} drift on {event.model}, severity {event.severity}: {features}"
    return "event", str(event)


class EventWatcher(threading.Thread):
    def __init__(self, settings: ServiceSettings, timeline: Timeline, echo) -> None:
        super().__init__(daemon=True, name="demo-events")
        self.stopping = threading.Event()
        self.timeline, self.echo = timeline, echo
        # A tail, not a group member: a member without commits that rejoins after a
        # broker restart starts at the end again, past events published meanwhile.
        # ``since``: a durable stack keeps the events of earlier demos.
        self.events = TopicTail(settings.kafka, [settings.kafka.topic(t) for t in EVENT_TOPICS],
                                since=datetime.now(UTC))

    def run(self) -> None:
        seen: set[str] = set()
        while not self.stopping.is_set():
            for message in self.events.poll(100, 0.5):
                event, attributes = decode(message.headers(), message.key(), message.value())
                if attributes["id"] in seen:
                    continue  # announced again after a restart (delivery is at least once)
                seen.add(attributes["id"])
                stage, text = describe(event)
                self.timeline.add(stage, text, event, self.echo)
        self.events.close()


class Publisher(threading.Thread):
    """Publishes transactions to ingest.transactions at a steady rate."""

    def __init__(self, settings: ServiceSettings, plan: DemoPlan, timeline: Timeline | None = None) -> None:
        super().__init__(daemon=True, name="demo-publisher")
        self.timeline = timeline
        self.producer = EventProducer(settings.kafka, "streamml-demo", **{"linger.ms": 20})
        self.topic = settings.kafka.topic(f"ingest.{DATASET}")
        self.plan = plan
        self.sent = 0
        self.target = 0
        self.shift = 0.0
        self.stopping = threading.Event()
        self.undelivered: list[tuple[bytes, bytes]] = []  # (value, key): published again
        self.refused: str | None = None  # an error publishing again cannot mend

    def publish(self, records: int, shift: float) -> None:
        self.shift, self.target = shift, self.target + records

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        # A broker whose storage failed mid-write answers with an error the client does not
        # retry by itself (Tansu: "Unknown broker error"), or fences the producer for good (the
        # EventProducer replaces it); an application publishes again.
        if error is None:
            return
        if publish_again(error):
            self.undelivered.append((message.value(), message.key()))
        else:
            self.refused = f"{message.topic()}: {error.str()}"

    def run(self) -> None:
        try:
            self._publish()
        except Exception as error:  # the demo waits for nothing more: say why at once
            if self.timeline is None:
                raise
            self.timeline.stop(f"publishing transactions stopped: {type(error).__name__}: {error}")

    def _publish(self) -> None:
        started, chunk = time.monotonic(), 500
        while not self.stopping.is_set():
            if self.undelivered:
                again, self.undelivered = self.undelivered, []
                for record, key in again:
                    self.producer.produce(self.topic, record, key, on_delivery=self._delivered)
                self._flush()
                continue
            if self.sent >= self.target:
                time.sleep(0.1)
                started = time.monotonic() - self.sent / self.plan.rate
                continue
            count = min(chunk, self.target - self.sent)
            columns = transactions(count, self.plan.seed, start=self.sent, shift=self.shift)
            for record, key in zip(to_json_records(columns), columns["tx_id"], strict=True):
                self.producer.produce(self.topic, record, key, on_delivery=self._delivered)
            self.sent += count
            self._flush()
            delay = started + self.sent / self.plan.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def _flush(self) -> None:
        try:
            self.producer.flush()
        except DeliveryError as error:  # still queued while the brokers are away: delivered later
            if not error.transient:
                raise
        if self.refused:
            raise DeliveryError(f"a transaction was refused: {self.refused}", transient=False)


class Application(threading.Thread):
    """An app on the SDK: predicts on live traffic and reports the truth as feedback."""

    def __init__(self, settings: ServiceSettings, plan: DemoPlan, timeline: Timeline, echo) -> None:
        super().__init__(daemon=True, name="demo-app")
        from streamml.sdk.client import ModelClient

        self.plan, self.timeline, self.echo = plan, timeline, echo
        self.shift = 0.0
        self.served = 0
        self.failed = 0
        self.versions: list[str] = []
        self.stopping = threading.Event()
        self.client = ModelClient(settings, MODEL, on_swap=self._swapped)

    def _swapped(self, old: str | None, new: str) -> None:
        self.versions.append(new)
        self.timeline.add("app", f"now serving {MODEL} {new} (was {old})", echo=self.echo)

    def run(self) -> None:
        self.client.wait_ready()
        start = 10_000_000  # ids apart from the published ones
        while not self.stopping.is_set():
            columns = transactions(self.plan.serve_batch, self.plan.seed + 1, start=start, shift=self.shift)
            start += self.plan.serve_batch
            labels = columns.pop("is_fraud")
            records = [dict(zip(columns, values, strict=True)) for values in zip(*(c.tolist() for c in columns.values()), strict=True)]
            try:
                result = self.client.predict(records)
            except Exception:  # counted: the demo's summary shows failed requests
                self.failed += 1
                continue
            for request_id, label in zip(result.request_ids, labels.tolist(), strict=True):
                self.client.feedback(request_id, label)
            self.served += len(records)
            time.sleep(self.plan.serve_interval_s)
        self.client.close()


class DemoFailed(Exception):
    pass


def run_demo(settings: ServiceSettings, plan: DemoPlan, console: Console) -> Timeline:
    """Drive the loop to its second champion; raises DemoFailed naming the stage that stalled."""
    echo = console.print
    timeline = Timeline()
    try:
        watcher = EventWatcher(settings, timeline, echo)
    except KafkaException as error:
        raise DemoFailed(f"the demo cannot follow the stack's events: {error}") from error
    watcher.start()
    publisher = Publisher(settings, plan, timeline)
    publisher.start()
    app = None
    try:
        timeline.add("demo", f"publishing {plan.first_records:,} transactions at {plan.rate:,.0f}/s", echo=echo)
        publisher.publish(plan.first_records, 0.0)
        first = _expect(timeline, ModelPromoted, plan, "the first promotion")
        app = Application(settings, plan, timeline, echo)
        app.start()
        if not app.client.wait_ready(120):
            raise DemoFailed("the application loaded no champion within 120 s")
        time.sleep(15)  # a few monitor windows of undrifted traffic
        drift_at = time.monotonic() - timeline.started
        timeline.add("demo", f"injecting drift (shift {plan.drift_shift}) into published and served traffic", echo=echo)
        app.shift = plan.drift_shift
        publisher.publish(plan.drift_records, plan.drift_shift)
        _expect(timeline, DriftDetected, plan, "drift detection", after=drift_at)
        # Prep builds on drift.detected, or on the row count when the drifted records
        # land before the monitor reports: then that version already holds them.
        _expect(timeline, DatasetReady, plan, "a dataset version built after the drift", after=drift_at)
        second = _expect(timeline, ModelPromoted, plan, "the second promotion", after=drift_at,
                         where=lambda e: e.version != first[1].version)
        deadline = time.monotonic() + 60
        while app.client.version != second[1].version and time.monotonic() < deadline:
            time.sleep(0.5)
        if app.client.version != second[1].version:
            raise DemoFailed(f"the application still serves {app.client.version} after {second[1].version} was promoted")
        shadow = app.client.shadow_stats()
        scored = (f"; {shadow.scored:,} scored in shadow, {shadow.dropped:,} not"
                  if shadow.scored or shadow.dropped else "")
        timeline.add("demo", f"done: the application serves {second[1].version}; "
                     f"{app.served:,} predictions, {app.failed} failed requests{scored}", echo=echo)
        return timeline
    finally:
        for worker in (app, publisher, watcher):
            if worker is not None:
                worker.stopping.set()
        for worker in (app, publisher, watcher):
            if worker is not None and worker.is_alive():
                worker.join(timeout=15)


def _expect(timeline: Timeline, kind: type, plan: DemoPlan, what: str, after: float = 0.0, where=lambda e: True):
    remaining = plan.timeout_s - (time.monotonic() - timeline.started)
    found = timeline.wait_for(kind, max(1.0, remaining), after, where)
    if found is None and timeline.stopped:
        raise DemoFailed(f"no {what}: {timeline.stopped}")
    if found is None:
        raise DemoFailed(f"no {what} within the demo's {plan.timeout_s:.0f}s; see the services' logs")
    return found


def summary_table(timeline: Timeline) -> Table:
    table = Table("stage", "reached at", title="streamml demo")
    milestones = [
        ("first data landed", DataLanded, lambda e: True),
        ("dataset v1", DatasetReady, lambda e: e.version == 1),
        ("first model trained", ModelTrained, lambda e: True),
        ("first champion", ModelPromoted, lambda e: True),
        ("drift detected", DriftDetected, lambda e: True),
        ("dataset built on drift", DatasetReady, lambda e: e.trigger == "drift"),
        ("candidate in shadow", ModelShadow, lambda e: True),
    ]
    for name, kind, where in milestones:
        found = timeline.find(kind, 0.0, where)
        table.add_row(name, f"{found[0]:.1f}s" if found else "-")
    promotions = [(at, e) for at, e in timeline.events if isinstance(e, ModelPromoted)]
    if len(promotions) > 1:
        table.add_row("second champion", f"{promotions[1][0]:.1f}s")
    return table


def models_table(timeline: Timeline) -> Table:
    table = Table("model version", "dataset", "device", "train s", "validation metrics", "decision")
    decisions = {}
    for _, event in timeline.events:
        if isinstance(event, ModelPromoted):
            decisions[event.version] = "promoted"
        elif isinstance(event, ModelRejected):
            decisions[event.version] = "rejected: " + "; ".join(event.reasons)
    for _, event in timeline.events:
        if isinstance(event, ModelTrained):
            metrics = ", ".join(f"{k} {v:.3f}" for k, v in sorted(event.metrics.items()))
            table.add_row(event.version, f"{event.dataset} v{event.dataset_version}", event.device,
                          f"{event.training_seconds:.1f}", metrics, decisions.get(event.version, "pending"))
    return table
