"""Binary, multiclass and regression models each recover from a concept drift, on one stack at once.

Each model has its own dataset spec, model spec and policy (written here),
small data and a small network. Per model, concurrently:
``streamml publish`` of the old world -> first champion -> an SDK
application predicts and reports every label -> the label rule changes
(features unchanged: concept drift) while the new world is published too ->
``drift.detected`` -> prep waits for post-drift rows and builds from them
only (``on_drift: since_drift``) -> train -> judged on post-drift test rows
-> second champion, which the application swaps in and which predicts the
new world better than the first did. Each drift turns the label rule
around, so the old champion is far worse than chance on the new world and a
retrain on post-drift rows clearly wins.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml
from loop_stack import read_events, start_stack

from streamml.demo import EventWatcher, Timeline
from streamml.events import DatasetReady, DriftDetected, ModelPromoted, ModelTrained
from streamml.registry.decisions import read_decision
from streamml.registry.monitor import read_monitor_history
from streamml.sdk.client import ModelClient
from streamml.settings import ServiceSettings
from streamml.stack.control import down
from streamml.store import ObjectStore

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]
ROOT = Path(__file__).resolve().parents[3]
OLD_ROWS = 4000  # published before the first champion: prep builds v1 on this many (min_new_rows)
NEW_ROWS = 3000  # published once the rule changed: fewer than min_new_rows, so only the drift builds from them
MIN_ROWS_AFTER = 1500
# About 400 predictions a second per model until its drift is detected, then 40: enough to follow
# the loop without taking the CPU the builds need.
SERVE_BATCH, SERVE_PAUSE_S, SERVE_PAUSE_AFTER_DETECTION_S = 40, 0.1, 1.0
OLD_WORLD_PREDICTIONS = 1000  # two label windows before the drift, where nothing may be raised
STAGE_TIMEOUT_S = 600  # per stage; roomy, as a shared machine can slow every build several times over
# Small windows, so a drift shows within a few seconds of traffic (a window is judged from 1,000
# predictions and 500 labels: thresholds.min_count and min_labels).
MONITOR_WINDOWS = {"size": 1000, "label_size": 500}


def binary_labels(x1: np.ndarray, x2: np.ndarray, new_world: bool, rng: np.random.Generator) -> np.ndarray:
    """Boolean labels (the spec's label is a bool): the new world turns the rule around."""
    logit = 3.0 * (x1 + 0.5 * x2) * (-1 if new_world else 1)
    return rng.random(x1.size) < 1 / (1 + np.exp(-logit))


GRADES = np.array(["low", "mid", "high"])


def class_labels(x1: np.ndarray, x2: np.ndarray, new_world: bool, rng: np.random.Generator) -> np.ndarray:
    """Text classes low, mid, high by thirds of a score; the new world shifts every class by one.
    (Boolean labels go through the loop with the binary model; integer classes are read the same way as
    text, which the monitor's and validator's unit tests check.)"""
    score = x1 + 0.5 * x2 + 0.2 * rng.standard_normal(x1.size)
    classes = np.digitize(score, [-0.5, 0.5])
    return GRADES[(classes + 1) % 3 if new_world else classes]


def regression_labels(x1: np.ndarray, x2: np.ndarray, new_world: bool, rng: np.random.Generator) -> np.ndarray:
    sign = -1.0 if new_world else 1.0
    return sign * (2.0 * x1 - x2) + 0.3 * rng.standard_normal(x1.size)


@dataclass(frozen=True)
class Stream:
    """One model's world: its dataset, label rule, task and promotion policy."""

    model: str
    task: str
    label_type: dict
    labels: Callable[[np.ndarray, np.ndarray, bool, np.random.Generator], np.ndarray]
    policy: dict
    seed: int

    @property
    def dataset(self) -> str:
        return f"{self.model}_rows"

    def records(self, count: int, new_world: bool, start: int) -> tuple[list[dict], list]:
        """``count`` records (ids from ``start``) and their labels; the features never change."""
        rng = np.random.default_rng([self.seed, start, int(new_world)])
        x1, x2 = rng.standard_normal(count), rng.standard_normal(count)
        channel = rng.choice(["web", "pos", "atm"], count)
        labels = self.labels(x1, x2, new_world, rng).tolist()
        records = [{"id": f"{self.model}-{start + i:08d}", "x1": a, "x2": b, "channel": c}
                   for i, (a, b, c) in enumerate(zip(x1.tolist(), x2.tolist(), channel.tolist(), strict=True))]
        return records, labels


STREAMS = [
    Stream("churn", "binary", {"type": "bool"}, binary_labels, seed=11, policy={
        "min": {"auc": 0.75}, "max": {"log_loss": 0.6}, "min_improvement": {"auc": 0.01}}),
    # Every class must be found; the monitor watches each class's recall as well.
    Stream("grade", "multiclass", {"type": "category", "categories": GRADES.tolist()}, class_labels, seed=12,
           policy={"min": {"accuracy": 0.6, "recall_per_class": 0.3}, "max": {"log_loss": 1.0},
                   "min_improvement": {"accuracy": 0.01}}),
    Stream("demand", "regression", {"type": "float"}, regression_labels, seed=13, policy={
        "max": {"rmse": 1.0, "mae": 0.8}, "min_improvement": {"rmse": 0.01}}),
]


def write_folders(root: Path) -> tuple[Path, Path, Path]:
    """Dataset specs, model specs and policies of every stream, in folders under ``root``."""
    specs, models, policies = root / "datasets", root / "models", root / "policies"
    for folder in (specs, models, policies):
        folder.mkdir()
    for stream in STREAMS:
        (specs / f"{stream.dataset}.yaml").write_text(yaml.safe_dump({
            "name": stream.dataset, "key": "id", "label": "y",  # no event_time: each record's Kafka timestamp
            "fields": [
                {"name": "id", "type": "string"},
                {"name": "x1", "type": "float"},
                {"name": "x2", "type": "float"},
                {"name": "channel", "type": "category", "categories": ["web", "pos", "atm"]},
                {"name": "y", **stream.label_type},
            ],
            # v1 builds on its row count. No staleness build within the test: one of the new world's rows
            # (mixed with the old, window all) could race the drift build and be promoted in its place.
            "prep": {"min_new_rows": OLD_ROWS, "max_staleness_s": 900,
                     "on_drift": {"min_rows_after": MIN_ROWS_AFTER, "max_wait_s": 120, "window": "since_drift"}},
        }, sort_keys=False))
        (models / f"{stream.model}.yaml").write_text(yaml.safe_dump({
            "name": stream.model, "dataset": stream.dataset, "task": stream.task,
            "architecture": {"hidden": [32]}, "optimiser": {"name": "adamw", "lr": 0.01},
            "batch_size": 128, "max_epochs": 8, "early_stopping": {"patience": 2}, "seed": stream.seed,
        }, sort_keys=False))
        (policies / f"{stream.model}.yaml").write_text(yaml.safe_dump({
            "model": stream.model, **stream.policy, "min_rows_after_drift": 100}, sort_keys=False))
    return specs, models, policies


@dataclass
class Run:
    """What one stream's application saw."""

    first: ModelPromoted | None = None
    second: ModelPromoted | None = None
    drift_at: float = 0.0  # seconds since the timeline started
    served: int = 0
    failed: int = 0
    # What the first champion answered, (outputs, labels, card) per request, before and after the drift.
    first_on_old_world: list = field(default_factory=list)
    first_on_new_world: list = field(default_factory=list)
    second_on_new_world: float | None = None  # the served metric of the second champion on new records
    error: str | None = None


def score(stream: Stream, card: dict, outputs: np.ndarray, labels: list) -> float:
    """The served metric: accuracy (binary, multiclass) or RMSE (regression)."""
    truth = np.asarray(labels)
    if stream.task == "binary":
        return float(np.mean((outputs >= 0.5).astype(int) == truth))
    if stream.task == "multiclass":
        classes = np.asarray(card["outputs"]["classes"])
        return float(np.mean(classes[np.argmax(outputs, axis=1)] == truth))
    return float(np.sqrt(np.mean((outputs - truth) ** 2)))


def publish(config, specs: Path, stream: Stream, path: Path, new_world: bool, start: int, count: int,
            rate: float | None = None) -> subprocess.Popen:
    records, labels = stream.records(count, new_world, start)
    path.write_text("".join(json.dumps({**record, "y": label}) + "\n"
                            for record, label in zip(records, labels, strict=True)))
    command = [sys.executable, "-m", "streamml.cli", "publish", stream.dataset, str(path), "--specs", str(specs),
               "--state-dir", str(config.state_dir)] + (["--rate", str(rate)] if rate else [])
    return subprocess.Popen(command, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def drive(stream: Stream, run: Run, settings: ServiceSettings, config, specs: Path, timeline: Timeline,
          data: Path) -> None:
    """One stream's whole story; what goes wrong is kept in ``run.error`` for the test to report."""
    mine = lambda event: getattr(event, "model", None) == stream.model  # noqa: E731
    try:
        old = publish(config, specs, stream, data / f"{stream.model}-old.jsonl", False, 0, OLD_ROWS)
        assert old.wait(120) == 0, old.stdout.read()
        found = timeline.wait_for(ModelPromoted, STAGE_TIMEOUT_S, where=mine)
        assert found, "no first champion"
        run.first = found[1]
        with ModelClient(settings, stream.model, reconcile_s=5) as client:
            assert client.wait_ready(120), "the application loaded no champion"
            start = 10_000_000  # served records apart from the published ones
            while run.served < OLD_WORLD_PREDICTIONS:
                start = serve(stream, client, run, start, new_world=False)
            run.drift_at = time.monotonic() - timeline.started
            new = publish(config, specs, stream, data / f"{stream.model}-new.jsonl", True, OLD_ROWS, NEW_ROWS,
                          rate=1000)
            deadline = time.monotonic() + STAGE_TIMEOUT_S
            pause = SERVE_PAUSE_S
            while time.monotonic() < deadline:
                start = serve(stream, client, run, start, new_world=True, pause=pause)
                with timeline.lock:
                    if timeline.find(DriftDetected, run.drift_at, mine):
                        pause = SERVE_PAUSE_AFTER_DETECTION_S
                    promoted = timeline.find(ModelPromoted, run.drift_at,
                                             lambda e: mine(e) and e.version != run.first.version)
                if promoted and client.version == promoted[1].version:
                    run.second = promoted[1]
                    break
            assert run.second, f"no second champion served within {STAGE_TIMEOUT_S}s of the drift"
            assert new.wait(60) == 0, new.stdout.read()
            records, labels = stream.records(1000, True, 20_000_000)
            served = client.predict(records)
            run.second_on_new_world = score(stream, client.card(served.version), served.outputs, labels)
            stats = client.stats()
            assert stats.failed == 0 and stats.dropped == 0, f"prediction log: {stats}"
    except BaseException as error:  # noqa: BLE001 - reported by the test with the stream's name
        run.error = f"{type(error).__name__}: {error}"


def serve(stream: Stream, client: ModelClient, run: Run, start: int, new_world: bool,
          pause: float = SERVE_PAUSE_S) -> int:
    """One request of the application and the labels of its records; the next record id."""
    records, labels = stream.records(SERVE_BATCH, new_world, start)
    try:
        result = client.predict(records)
    except Exception:  # noqa: BLE001 - counted: a failed request is what the test must not see
        run.failed += 1
        return start + SERVE_BATCH
    for request_id, label in zip(result.request_ids, labels, strict=True):
        client.feedback(request_id, label)
    run.served += len(records)
    if run.first is not None and result.version == run.first.version:
        kept = run.first_on_new_world if new_world else run.first_on_old_world
        kept.append((result.outputs, labels, client.card(result.version)))
    time.sleep(pause)
    return start + SERVE_BATCH


def test_every_task_type_recovers_from_drift(tmp_path):
    specs, models, policies = write_folders(tmp_path)
    config, settings = start_stack(
        tmp_path / "stack", ephemeral=True, policies=policies, specs=specs, models=models,
        extra_env={"STREAMML_MONITOR_WINDOWS": json.dumps(MONITOR_WINDOWS)})
    runs = {stream.model: Run() for stream in STREAMS}
    try:
        timeline = Timeline()
        watcher = EventWatcher(settings, timeline, echo=None)
        watcher.start()
        data = tmp_path / "data"
        data.mkdir()
        drivers = [threading.Thread(target=drive, args=(stream, runs[stream.model], settings, config, specs,
                                                       timeline, data), name=stream.model) for stream in STREAMS]
        for driver in drivers:
            driver.start()
        for driver in drivers:
            driver.join()
        watcher.stopping.set()
        watcher.join(15)
        status = subprocess.run([sys.executable, "-m", "streamml.cli", "status", "--state-dir", str(config.state_dir)],
                                env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                                timeout=120)
        events = read_events(settings.kafka)
        store = ObjectStore.connect(settings.s3)
        _print_story(timeline, runs)
        _print_stack_cpu(config.state_dir)
        for stream in STREAMS:
            _assert_recovered(stream, runs[stream.model], events, timeline, store, config)
        assert status.returncode == 0 and "degraded" not in status.stdout, status.stdout + status.stderr
    finally:
        down(config.state_dir)


def _assert_recovered(stream: Stream, run: Run, found: list[tuple[str, object]], timeline: Timeline,
                      store: ObjectStore, config) -> None:
    name = stream.model
    events = [event for _, event in found]
    assert run.error is None, f"{name} ({stream.task}): {run.error}\n" + _logs(config.state_dir)
    assert run.failed == 0, f"{name}: {run.failed} failed requests"
    promoted = [e for e in events if isinstance(e, ModelPromoted) and e.model == name]
    assert [e.version for e in promoted][:2] == [run.first.version, run.second.version], promoted
    assert run.second.previous_champion == run.first.version
    drifts = [e for e in events if isinstance(e, DriftDetected) and e.model == name]
    assert len(drifts) == 1, f"{name}: one drift, {len(drifts)} drift.detected events: {drifts}"
    raised_at = next(at for at, event in timeline.events if isinstance(event, DriftDetected) and event.model == name)
    assert raised_at > run.drift_at, f"{name}: drift.detected at {raised_at:.1f}s, before the drift at {run.drift_at:.1f}s"
    # The drift build: a version whose manifest answers one of this model's drift events,
    # built from rows after the drift only, and the second champion trained on it.
    trained = next(e for e in events if isinstance(e, ModelTrained) and e.version == run.second.version)
    built = next(e for e in events if isinstance(e, DatasetReady) and e.dataset == stream.dataset
                 and e.version == trained.dataset_version)
    assert built.trigger == "drift", f"{name}: the second champion was trained on a {built.trigger} build"
    manifest = json.loads(store.get_bytes(built.manifest_key))
    answered = manifest["drift"]
    drift_ids = {event_id for event_id, event in found if isinstance(event, DriftDetected) and event.model == name}
    assert answered["event_id"] in drift_ids, f"{name}: the build answers {answered['event_id']}, not a drift of it"
    assert answered["training_window"] == "since_drift" and answered["rows_before"] == 0, answered
    assert answered["rows_after"] >= MIN_ROWS_AFTER and not answered["waited_out"], answered  # prep drops none here
    if stream.task == "multiclass":
        _assert_recall_per_class_watched(run, store)
    # The application predicts the new world better with the second champion than it did with the first.
    old, new = served_score(stream, run.first_on_new_world), run.second_on_new_world
    if stream.task == "regression":
        assert new < old / 2, f"{name}: RMSE on the new world {old:.3f} with the first champion, {new:.3f} after"
    else:
        assert new > old + 0.3, f"{name}: accuracy on the new world {old:.3f} with the first champion, {new:.3f} after"


def _assert_recall_per_class_watched(run: Run, store: ObjectStore) -> None:
    """The policy names recall_per_class: the validator judged each text class's recall, and the monitor
    watched each against it, so the drift (every class shifted by one) showed in every class's recall."""
    recalls = [f"recall[{name}]" for name in GRADES]
    decision = read_decision(store, "grade", run.second.version)
    assert set(recalls) <= set(decision.candidate.metrics), decision.candidate.metrics
    assert all(f"{name} " in " ".join(decision.notes) for name in recalls), decision.notes  # each floor judged
    first = next(state for state in read_monitor_history(store, "grade", 2) if state.version == run.first.version)
    judged = [report for report in first.performance_reports if report.judged]
    watched = [sorted(check.metric for check in report.others if check.metric in recalls) for report in judged]
    assert judged and all(metrics == sorted(recalls) for metrics in watched), watched
    drifted = {check.metric for report in judged for check in report.others
               if check.drifted and check.metric in recalls}
    assert drifted == set(recalls), f"recall drift seen on {sorted(drifted)} of {recalls}"


def served_score(stream: Stream, served: list) -> float:
    """The served metric over requests kept as (outputs, labels, card)."""
    outputs = np.concatenate([outputs for outputs, _, _ in served])
    return score(stream, served[0][2], outputs, [label for _, labels, _ in served for label in labels])


def _print_story(timeline: Timeline, runs: dict[str, Run]) -> None:
    """Each event as it came, and per model the served metric before the drift, right after it and after
    the retrain (accuracy, or RMSE for regression)."""
    load = os.getloadavg()
    print(f"\nload average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    for at, stage, text in timeline.lines:
        print(f"{at:7.1f}s {stage:<10} {text}")
    for stream in STREAMS:
        run = runs[stream.model]
        metrics = [f"{served_score(stream, kept):.3f}" if kept else "-"
                   for kept in (run.first_on_old_world, run.first_on_new_world)]
        recovered = f"{run.second_on_new_world:.3f}" if run.second_on_new_world is not None else "-"
        print(f"{stream.model} ({stream.task}): drift at {run.drift_at:.1f}s; {run.served} predictions served, "
              f"{run.failed} failed requests; metric before the drift {metrics[0]}, after it {metrics[1]}, "
              f"after the retrain {recovered}")


def _print_stack_cpu(state_dir: Path) -> None:
    """CPU seconds the stack's processes used so far, their children (prep's JVM) included."""
    processes = {}
    for pid_file in (state_dir / "run").glob("*.pid"):
        try:
            process = psutil.Process(int(pid_file.read_text()))
            processes.update((p.pid, p) for p in (process, *process.children(recursive=True)))
        except (psutil.Error, ValueError):
            continue
    used = 0.0
    for process in processes.values():
        try:
            used += sum(process.cpu_times()[:2])
        except psutil.Error:
            continue
    print(f"stack CPU {used:.0f}s in {len(processes)} processes; this test's process "
          f"{sum(psutil.Process().cpu_times()[:2]):.0f}s")


def _logs(state_dir: Path) -> str:
    logs = state_dir / "logs"
    return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}" for log in sorted(logs.glob("*.log")))
