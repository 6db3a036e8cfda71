"""Recovery benchmark: does the running loop bring a model back after a known drift?

    .venv/bin/python bench/recovery/run.py                                # the four streams, one stack
    .venv/bin/python bench/recovery/run.py --streams concept_binary      # one of them

One embedded stack (``streamml up`` on free ports, state in a temporary
folder, the in-memory broker) runs the five services with the dataset spec,
model spec and policy of each stream of ``streams.py``. ``--first-rows``
records of each stream's pre-drift world are published; prep builds version
1, the trainer trains, the validator promotes. Then one application per
stream, on the SDK's ``ModelClient``, serves ``--rate`` rows a second in
requests of ``--batch``: it predicts, sends each row's true label as
feedback, and publishes the labelled rows to ``ingest.<dataset>``, as an
application that learns its labels would. At its drift row
(``--pre-rows``, then ``--stagger-rows`` later for each next stream, so the
drift builds do not all queue at once) the stream's world changes. The
monitor should raise drift.detected, prep build a version from the rows
after the drift (``on_drift: {window: since_drift}``), the trainer train,
the validator promote, and the application swap to the new champion. A
stream ends ``--after-rows`` rows after that swap, or ``--give-up-rows``
after its drift.

Per stream it prints rows (served and labelled by the application) from the
drift to the first drift.detected and to the promotion of the retrained
champion; the metric (accuracy, or RMSE for regression) of what the
application served over the ``--pre-rows`` before the drift (the first
champion), from the drift to the swap (the old champion on the new world),
and over the ``--after-rows`` after the swap (the retrained champion);
drift events before and after the drift row; failed requests (predict calls
that raised, labels the client dropped). Then each target, met or not.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.recovery.outcome import Outcome, Segment, metric_of, targets  # noqa: E402
from bench.recovery.streams import STREAMS, Stream, dataset_spec, model_spec, policy  # noqa: E402
from streamml.events import DataLanded, DatasetReady, DriftDetected, ModelPromoted, ModelRejected, ModelTrained, decode  # noqa: E402
from streamml.kafka import BatchConsumer, EventProducer  # noqa: E402
from streamml.sdk.client import ModelClient  # noqa: E402
from streamml.settings import ServiceSettings  # noqa: E402
from streamml.stack.control import down, up  # noqa: E402
from streamml.stack.ports import free_port, free_ports  # noqa: E402
from streamml.stack.supervisor import StackConfig  # noqa: E402

EVENT_TOPICS = ("data.landed", "dataset.ready", "model.trained", "model.promoted", "model.rejected", "drift.detected")
console = Console(width=230)


@dataclass
class Plan:
    first_rows: int
    pre_rows: int
    stagger_rows: int
    after_rows: int
    give_up_rows: int
    rate: float
    batch: int
    min_rows_after: int
    seed: int


def write_declarations(folder: Path, streams: list[Stream], plan: Plan) -> tuple[Path, Path, Path]:
    """Dataset specs, model specs and policies of ``streams`` in three folders under ``folder``."""
    folders = tuple(folder / name for name in ("datasets", "models", "policies"))
    for path in folders:
        path.mkdir(parents=True)
    for stream in streams:
        (folders[0] / f"{stream.name}.yaml").write_text(dataset_spec(stream, plan.min_rows_after))
        (folders[1] / f"{stream.name}.yaml").write_text(model_spec(stream))
        (folders[2] / f"{stream.name}.yaml").write_text(policy(stream))
    return folders


def start_stack(state_dir: Path, declarations: tuple[Path, Path, Path]) -> tuple[StackConfig, ServiceSettings]:
    config = StackConfig(
        state_dir=state_dir, kafka_port=free_port(), s3_port=free_port(), http_base_port=free_ports(5)[0],
        console_port=free_port(), specs_dir=declarations[0], models_dir=declarations[1],
        policies_dir=declarations[2], ephemeral=True,
    )
    try:
        up(config, timeout=180, echo=lambda *_: None)
    except BaseException:
        down(config.state_dir)  # a stack that never became healthy is still running
        raise
    os.environ["STREAMML_CONFIG_FILE"] = str(config.state_dir / "config.yaml")
    try:
        return config, ServiceSettings()
    finally:
        del os.environ["STREAMML_CONFIG_FILE"]


class Application(threading.Thread):
    """One stream's application: serves, labels and publishes ``plan.rate`` rows a second."""

    def __init__(self, settings: ServiceSettings, stream: Stream, plan: Plan, drift_row: int) -> None:
        super().__init__(daemon=True, name=f"app-{stream.name}")
        self.stream, self.plan = stream, plan
        self.outcome = Outcome(stream.name, stream.task, drift_row=drift_row)
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.rng = np.random.default_rng([plan.seed, 1, sorted(STREAMS).index(stream.name)])
        self.producer = EventProducer(settings.kafka, f"bench-recovery-{stream.name}", **{"linger.ms": 20})
        self.topic = settings.kafka.topic(f"ingest.{stream.name}")
        self.client = ModelClient(settings, stream.name)
        self.served = 0  # rows served and labelled so far: the position every count is taken at

    def note_event(self, event: object) -> None:
        with self.lock:
            self.outcome.note(event, self.served, time.time())

    def run(self) -> None:
        try:
            self._serve()
        finally:
            self.client.close()

    def _serve(self) -> None:
        interval = self.plan.batch / self.plan.rate
        next_at = time.monotonic()
        outcome = self.outcome
        while not self.stopping.is_set() and not outcome.finished(self.plan.after_rows, self.plan.give_up_rows,
                                                                 self.served):
            drifted = self.served >= outcome.drift_row
            records, labels = self.stream.rows(self.rng, self.served, self.plan.batch, drifted)
            with self.lock:
                outcome.sent(self.served, time.time())
            try:
                answer = self.client.predict(records)
            except Exception as error:  # counted: a failed request is one of the bench's numbers
                with self.lock:
                    outcome.failed += 1
                    outcome.last_failure = repr(error)
            else:
                dropped = sum(not self.client.feedback(request_id, label)
                              for request_id, label in zip(answer.request_ids, labels, strict=True))
                card = self.client.card(answer.version) or {}
                values = metric_of(self.stream.task, answer.outputs, labels, card.get("outputs", {}).get("classes"))
                with self.lock:
                    outcome.failed += dropped
                    outcome.add(self.served, answer.version, values)
            for record, label in zip(records, labels, strict=True):
                self.producer.produce(self.topic, msgspec.json.encode({**record, "y": label}), record["row_id"])
            self.producer.flush()
            with self.lock:
                self.served += len(records)
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))


class EventWatcher(threading.Thread):
    """Hands each loop event to the application of its model (or dataset), with the row it came at."""

    def __init__(self, settings: ServiceSettings, apps: dict[str, Application]) -> None:
        super().__init__(daemon=True, name="bench-events")
        self.apps = apps
        self.landed = dict.fromkeys(apps, 0)  # rows landed per dataset
        self.stopping = threading.Event()
        self.assigned = threading.Event()
        self.consumer = BatchConsumer(
            settings.kafka, f"bench-recovery-{uuid.uuid4().hex[:8]}", [settings.kafka.topic(t) for t in EVENT_TOPICS],
            on_assign=lambda _: self.assigned.set(), **{"auto.offset.reset": "earliest"},
        )

    def run(self) -> None:
        while not self.stopping.is_set():
            for message in self.consumer.poll(100, 0.5):
                event, _ = decode(message.headers(), message.key(), message.value())
                owner = getattr(event, "model", None) or getattr(event, "dataset", None)
                if isinstance(event, DataLanded) and owner in self.landed:
                    self.landed[owner] += event.rows
                elif owner in self.apps:
                    self.apps[owner].note_event(event)
                    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {describe(event)}", highlight=False)
        self.consumer.close()


def describe(event: object) -> str:
    match event:
        case DatasetReady():
            return f"dataset {event.dataset} v{event.version} ready ({event.rows}; trigger {event.trigger})"
        case ModelTrained():
            return f"{event.model} {event.version} trained ({', '.join(f'{k} {v:.3f}' for k, v in event.metrics.items())})"
        case ModelPromoted():
            return f"{event.model} {event.version} promoted: {event.reason}"
        case ModelRejected():
            return f"{event.model} {event.version} rejected: {'; '.join(event.reasons)}"
        case DriftDetected():
            return f"{event.kind} drift on {event.model} ({event.severity})"
    return str(event)


def publish_first_rows(settings: ServiceSettings, streams: list[Stream], plan: Plan) -> None:
    """The rows each first champion learns from: ``plan.first_rows`` of the pre-drift world."""
    producer = EventProducer(settings.kafka, "bench-recovery-first", **{"linger.ms": 20})
    for stream in streams:
        rng = np.random.default_rng([plan.seed, 0, sorted(STREAMS).index(stream.name)])
        topic = settings.kafka.topic(f"ingest.{stream.name}")
        for first in range(0, plan.first_rows, 5000):
            records, labels = stream.rows(rng, first, min(5000, plan.first_rows - first), drifted=False)
            for record, label in zip(records, labels, strict=True):
                record["row_id"] = f"first-{record['row_id']}"
                producer.produce(topic, msgspec.json.encode({**record, "y": label}), record["row_id"])
            producer.flush()


def build_first_versions(settings: ServiceSettings, streams: list[Stream], specs_dir: Path, state_dir: Path,
                         watcher: EventWatcher, first_rows: int) -> None:
    """Version 1 of each dataset, built now (as ``streamml prep run`` does) once its first rows landed.

    The specs' min_new_rows is out of reach, so prep never builds on rows during a run: every
    retrain the bench sees is the drift's."""
    from services.prep.builder import DatasetBuilder
    from services.prep.spark import SparkOnDemand, spark_session
    from streamml.specs import load_dataset_specs
    from streamml.store import ObjectStore

    deadline = time.monotonic() + 600
    while min(watcher.landed[stream.name] for stream in streams) < first_rows:
        if time.monotonic() > deadline:
            raise SystemExit(f"ingest landed {watcher.landed} of {first_rows:,} first rows each within 10 minutes")
        time.sleep(1)
    specs = load_dataset_specs(specs_dir)
    spark = SparkOnDemand(lambda: spark_session("local[2]", state_dir / "bench-prep", settings.s3,
                                                ROOT / "vendor" / "jars"))
    builder = DatasetBuilder(ObjectStore.connect(settings.s3), settings.s3, spark)
    producer = EventProducer(settings.kafka, "bench-recovery-prep")
    try:
        for stream in streams:
            producer.send_now(DatasetReady.of(builder.build(specs[stream.name], "manual"), "manual"))
    finally:
        spark.stop()


def segment_cell(segment: Segment | None) -> str:
    return "-" if segment is None or segment.rows == 0 else f"{segment.value:.4f} ({segment.rows:,} rows)"


def reached_cell(reached: tuple[int, float | None] | None) -> str:
    if reached is None:
        return "not reached"
    rows, seconds = reached
    return f"{rows:,}" if seconds is None else f"{rows:,} ({seconds:.0f} s)"


def drift_point_cell(rows: int | None) -> str:
    return "-" if rows is None else f"{rows:+,}"


def results_table(outcomes: list[Outcome]) -> Table:
    table = Table("stream", "drift row", "rows to detection", "drift point", "rows to promoted retrain", "metric",
                  "before drift", "right after", "after recovery", "events before / after drift",
                  "failed requests", title="recovery per stream")
    for outcome in outcomes:
        table.add_row(outcome.stream, f"{outcome.drift_row:,}", reached_cell(outcome.to_detection),
                      drift_point_cell(outcome.drift_point_rows), reached_cell(outcome.to_promotion), outcome.metric, segment_cell(outcome.before()),
                      segment_cell(outcome.right_after()), segment_cell(outcome.after_recovery()),
                      f"{outcome.events_before} / {outcome.events_after}", str(outcome.failed))
    return table


def targets_table(outcomes: list[Outcome]) -> Table:
    table = Table("stream", "metric within 2% of pre-drift", "recovery within 30,000 labelled rows",
                  "exactly one drift event", "0 failed requests", title="targets")
    for outcome in outcomes:
        table.add_row(outcome.stream, *(f"{'met' if met else '[red]not met[/red]'}: {why}"
                                        for met, why in targets(outcome)))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", nargs="+", choices=sorted(STREAMS), default=list(STREAMS))
    parser.add_argument("--first-rows", type=int, default=30_000, help="pre-drift rows the first champion learns from")
    parser.add_argument("--pre-rows", type=int, default=10_000, help="rows the application serves before a drift")
    parser.add_argument("--stagger-rows", type=int, default=15_000, help="each next stream drifts this much later")
    parser.add_argument("--after-rows", type=int, default=6_000, help="rows served by the retrained champion")
    parser.add_argument("--give-up-rows", type=int, default=80_000, help="rows after a drift without recovery")
    parser.add_argument("--rate", type=float, default=200.0, help="rows served (and labelled) per second per stream")
    parser.add_argument("--batch", type=int, default=50, help="rows per predict call")
    parser.add_argument("--min-rows-after", type=int, default=8_000, help="the specs' prep.on_drift.min_rows_after")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="leave the stack's state folder (logs) in place")
    args = parser.parse_args()
    plan = Plan(args.first_rows, args.pre_rows, args.stagger_rows, args.after_rows, args.give_up_rows, args.rate,
                args.batch, args.min_rows_after, args.seed)
    streams = [STREAMS[name] for name in args.streams]
    started, load_before = time.monotonic(), os.getloadavg()
    folder = Path(tempfile.mkdtemp(prefix="streamml-recovery-", dir="/tmp"))
    config, settings = start_stack(folder / "state", write_declarations(folder / "declared", streams, plan))
    console.print(f"stack up in {time.monotonic() - started:.0f}s ({config.state_dir}); load {load_before}")
    apps: dict[str, Application] = {}
    watcher = None
    try:
        apps = {stream.name: Application(settings, stream, plan, plan.pre_rows + i * plan.stagger_rows)
                for i, stream in enumerate(streams)}
        watcher = EventWatcher(settings, apps)
        watcher.start()
        publish_first_rows(settings, streams, plan)
        console.print(f"published {plan.first_rows:,} first rows per stream; building version 1 of each dataset")
        build_first_versions(settings, streams, config.specs_dir, config.state_dir, watcher, plan.first_rows)
        for app in apps.values():
            if not app.client.wait_ready(900):
                raise SystemExit(f"no champion of {app.stream.name} within 15 minutes; see {config.state_dir}/logs")
        console.print(f"first champions served at {time.monotonic() - started:.0f}s; the applications start")
        for app in apps.values():
            app.start()
        for app in apps.values():
            app.join()
    finally:
        for app in apps.values():
            app.stopping.set()
        if watcher is not None:
            watcher.stopping.set()
            watcher.join(timeout=15)
        down(config.state_dir)
    outcomes = [app.outcome for app in apps.values()]
    console.print(results_table(outcomes))
    console.print(targets_table(outcomes))
    for outcome in outcomes:
        if outcome.last_failure:
            console.print(f"{outcome.stream}: last failed request: {outcome.last_failure}")
    console.print(f"{args.rate:g} rows/s per stream, {time.monotonic() - started:.0f}s in all; load average "
                  f"{load_before[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end ({os.cpu_count()} cores)")
    if not args.keep:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
