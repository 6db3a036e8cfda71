"""The monitor service against a real broker and Ceph: one event per drift episode, across a restart and a
promotion, dead letters, a champion it cannot watch, an integer-class model, and `streamml drift report`."""

from __future__ import annotations

import json
import re
import signal
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from typer.testing import CliRunner

from services.monitor.performance import PerformanceBaseline
from services.monitor.reference import MonitorReference
from services.monitor.synthetic import COUNTRIES, Traffic, multiclass_reference, multiclass_traffic, traffic
from services.monitor.synthetic import training_reference
from services.monitor.synthetic_registry import put_champion, synthetic_card
from streamml.cli.drift import app as drift_app
from streamml.events import DriftDetected, FeedbackRecord, PredictionBatch, PredictionRecord, decode, encode
from streamml.kafka import EventProducer, dead_letter_reason
from streamml.registry.monitor import MonitorState, read_all_unwatched, read_monitor_state, read_unwatched
from streamml.stack.ports import free_port

pytestmark = pytest.mark.integration
MODEL = "fraud"
WINDOW = 2_500
PREDICTIONS_PER_BATCH = 500
MONITOR_ENV = {
    "STREAMML_MONITOR_MODELS": json.dumps([MODEL]),
    "STREAMML_MONITOR_WINDOWS": json.dumps({"size": WINDOW, "label_size": WINDOW}),
    "STREAMML_MONITOR_THRESHOLDS": json.dumps({"min_count": 1_000, "min_labels": 500}),
    "STREAMML_MONITOR_CHAMPION_REFRESH_S": "1",
}


@dataclass
class World:
    kafka: object
    topics: dict[str, str]
    env: dict[str, str]
    store: object
    bucket: str
    producer: EventProducer
    rng: np.random.Generator
    trained: tuple[MonitorReference, PerformanceBaseline]
    next_id: int = 0
    version: str = "v1"
    prediction_messages: int = 0  # sent to the predictions topic by publish

    def publish(self, data: Traffic, labels: bool = True) -> list[tuple[str, int]]:
        """Predictions of the champion, then (unless ``labels`` is false) the truth for each of them;
        returns the (request id, label) pairs."""
        n = data.outputs.size
        ids = [f"q{self.next_id + i}" for i in range(n)]
        start = datetime.now(UTC)
        columns = {name: values.tolist() for name, values in data.features.items()}
        predictions = [PredictionRecord(
            request_id=request_id, model=MODEL, model_version=self.version,
            features={name: _plain(values[i]) for name, values in columns.items()},
            output=float(data.outputs[i]), time=start + timedelta(milliseconds=i)) for i, request_id in enumerate(ids)]
        for first in range(0, n, PREDICTIONS_PER_BATCH):  # as the SDK logs them
            self.producer.send(PredictionBatch(model=MODEL, predictions=predictions[first:first + PREDICTIONS_PER_BATCH]))
            self.prediction_messages += 1
        truth = list(zip(ids, data.labels.astype(int).tolist(), strict=True))
        if labels:
            self.send_labels(truth)
        self.producer.flush()
        self.next_id += n
        return truth

    def send_labels(self, truth: list[tuple[str, int]]) -> None:
        start = datetime.now(UTC)
        for i, (request_id, label) in enumerate(truth):
            self.producer.send(FeedbackRecord(request_id=request_id, model=MODEL, label=label,
                                              time=start + timedelta(milliseconds=i)))
        self.producer.flush()

    def windows(self, count: int, drift: bool = False) -> None:
        for _ in range(count):
            data = traffic(self.rng, WINDOW)
            if drift:
                # Country shares go from Zipf to uniform; the model ignores country, so its outputs do not move.
                data.features["country"] = COUNTRIES[self.rng.integers(0, COUNTRIES.size, WINDOW)]
            self.publish(data)

    def wait_for_windows(self, count: int, monitor, timeout: float = 40, version: str = "v1") -> MonitorState:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert monitor.poll() is None, monitor.log_path.read_text()[-3000:]
            state = read_monitor_state(self.store, MODEL)
            if state is not None and state.version == version and len(state.window_reports) >= count:
                return state
            time.sleep(0.3)
        raise AssertionError(f"fewer than {count} windows reported in {timeout}s:\n"
                             + monitor.log_path.read_text()[-3000:])

    def read(self, name: str, timeout: float, expected: int | None = None) -> list:
        """Messages of a one-partition topic from its start; assigned, so no group join delays them."""
        consumer = Consumer({**self.kafka.client_config(), "group.id": f"read-{self.bucket}",
                             "enable.auto.commit": False, "fetch.wait.max.ms": 50})
        consumer.assign([TopicPartition(self.topics[name], 0, OFFSET_BEGINNING)])
        received, deadline = [], time.monotonic() + timeout
        while time.monotonic() < deadline and (expected is None or len(received) < expected):
            received += [m for m in consumer.consume(100, 0.2) if m.error() is None]
        consumer.close()
        return received


def _plain(value):
    return None if isinstance(value, float) and np.isnan(value) else value


@pytest.fixture(scope="module")
def trained() -> tuple[MonitorReference, PerformanceBaseline]:
    return training_reference(seed=1, rows=50_000)


@pytest.fixture
def world(stack, unique, bucket, store, trained):
    prefix = f"m{unique}."
    kafka = stack.settings().kafka.model_copy(update={"topic_prefix": prefix})
    names = {"predictions": f"predictions.{MODEL}", "feedback": f"feedback.{MODEL}",
             "drift": "drift.detected", "dlq": "dlq.monitor"}
    topics = {key: kafka.topic(name) for key, name in names.items()}
    partitions = {"predictions": 2, "feedback": 2, "drift": 1, "dlq": 1}
    admin = AdminClient(kafka.client_config())
    for future in admin.create_topics([NewTopic(topics[k], partitions[k], 1) for k in topics]).values():
        future.result()
    reference, baseline = trained
    put_champion(store, synthetic_card(reference, "v1", baseline))  # no expected_prediction, as the trainer writes
    producer = EventProducer(kafka, "test-app", **{"linger.ms": 20})
    env = {"STREAMML_KAFKA_TOPIC_PREFIX": prefix, **MONITOR_ENV}
    return World(kafka, topics, env, store, bucket, producer, np.random.default_rng(3), trained)


def drift_events(world: World, timeout: float) -> list[tuple[bytes, DriftDetected]]:
    return [(m.key(), decode(m.headers(), m.key(), m.value())[0]) for m in world.read("drift", timeout)]


def send_bad_records(world: World) -> None:
    """Five records the monitor cannot judge: a body that is not JSON, no event type, another event type,
    a prediction keyed by its request id instead of the model (another replica could hold it), and a batch
    of two predictions that break the model's contract."""
    valid = encode(PredictionRecord(request_id="bad", model=MODEL, model_version="v1", features={}, output=0.5,
                                    time=datetime.now(UTC)), "/test")
    headers = list(valid.headers.items())
    world.producer.produce(world.topics["predictions"], b"{not json", MODEL.encode(), headers)
    world.producer.produce(world.topics["predictions"], valid.value, MODEL.encode(), [])
    world.producer.produce(world.topics["predictions"], valid.value, b"bad", headers)
    world.producer.send(FeedbackRecord(request_id="bad-3", model=MODEL, label=1, time=datetime.now(UTC)),
                        topic=world.topics["predictions"])
    broken = [PredictionRecord(request_id="bad-4", model=MODEL, model_version="v1", features={}, output=[0.5, 0.5],
                               time=datetime.now(UTC)),
              PredictionRecord(request_id="bad-5", model="other", model_version="v1", features={}, output=0.5,
                               time=datetime.now(UTC))]
    world.producer.send(PredictionBatch(model=MODEL, predictions=broken), topic=world.topics["predictions"])
    world.producer.flush()


def drift_report(stack, world: World, *args: str):
    env = {**stack.env(world.bucket), "STREAMML_CONFIG_FILE": ""}
    return CliRunner().invoke(drift_app, ["report", MODEL, *args], env=env, terminal_width=160)


def test_a_drifting_feature_raises_exactly_one_event_and_the_report_shows_it(stack, world, services, tmp_path):
    before = drift_report(stack, world)
    assert before.exit_code == 2 and "no monitor report for 'fraud' at monitor/fraud/latest.json" in before.output
    monitor = services.start("monitor", world.bucket, **world.env)
    world.windows(3)
    send_bad_records(world)
    clean = world.wait_for_windows(3, monitor)
    assert all(report.judged and not report.covariate_drift for report in clean.window_reports)
    assert drift_events(world, 2) == []  # events are flushed before the state that counts their window is written

    world.windows(3, drift=True)  # a strong shift: the first drifting window raises the event, the others continue it
    state = world.wait_for_windows(6, monitor)
    ((key, event),) = drift_events(world, 3)
    assert key == b"transactions"
    assert (event.model, event.dataset, event.dataset_version, event.kind) == (MODEL, "transactions", 3, "covariate")
    assert {feature.feature for feature in event.features} == {"country"}
    assert event.window.count == WINDOW
    assert state.active() == ["covariate"]
    assert [e.kind for e in state.events] == ["covariate"]
    assert [r.covariate_drift for r in state.window_reports] == [False] * 3 + [True] * 3
    assert state.performance_reports and not any(r.drifted for r in state.performance_reports)

    reasons = [dead_letter_reason(m) for m in world.read("dlq", 10, expected=5)]
    assert len(reasons) == 5, reasons
    assert sum(r.startswith("prediction 0: output must be one number") and
               "; prediction 1: record names model 'other'" in r for r in reasons) == 1
    assert sum("Invalid JSON" in r for r in reasons) == 1
    assert sum("found ce_type None" in r for r in reasons) == 1
    assert sum("found ce_type 'streamml.feedback.v1'" in r for r in reasons) == 1
    assert sum("keyed b'bad', not by the model name 'fraud'" in r for r in reasons) == 1

    png = tmp_path / "fraud.png"
    result = drift_report(stack, world, "--png", str(png))
    assert result.exit_code == 0, result.output
    assert "country" in result.output and "psi" in result.output and "drift events raised" in result.output
    assert "drift active: covariate" in result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_restart_in_the_middle_of_a_drift_episode_does_not_announce_it_again(world, services):
    monitor = services.start("monitor", world.bucket, **world.env)
    world.windows(2, drift=True)
    world.wait_for_windows(2, monitor)
    assert [event.kind for _, event in drift_events(world, 3)] == ["covariate"]

    monitor.terminate()
    assert monitor.wait(timeout=20) == 0
    restarted = services.start("monitor", world.bucket, **world.env)
    world.windows(2, drift=True)  # as many drifting windows as raised the event before the restart
    state = world.wait_for_windows(4, restarted)
    assert [r.covariate_drift for r in state.window_reports] == [True] * 4
    assert [event.kind for _, event in drift_events(world, 3)] == ["covariate"]
    assert state.active() == ["covariate"]


def test_a_promoted_champion_is_watched_with_its_own_reference_and_a_fresh_episode(world, services):
    monitor = services.start("monitor", world.bucket, **world.env)
    world.windows(2, drift=True)
    assert world.wait_for_windows(2, monitor).active() == ["covariate"]

    # The new champion was trained on data where countries are uniform: today's traffic is its normal.
    reference, baseline = world.trained
    uniform = {country: 1 / COUNTRIES.size for country in COUNTRIES}
    retrained = reference.model_copy(update={"dataset_version": 4, "features": {
        **reference.features, "country": reference.features["country"].model_copy(update={"frequencies": uniform})}})
    put_champion(world.store, synthetic_card(retrained, "v2", baseline))
    world.version = "v2"
    world.windows(2, drift=True)
    state = world.wait_for_windows(2, monitor, version="v2")
    assert (state.dataset_version, state.active(), state.events) == (4, [], [])
    assert not any(report.covariate_drift for report in state.window_reports)
    assert [event.kind for _, event in drift_events(world, 2)] == ["covariate"]  # v1's, none for v2


def test_two_replicas_judge_a_model_once_and_a_killed_owner_hands_over_labels_and_episode(world, services):
    """Two monitor replicas, the model's traffic keyed to one partition: its owner judges every window.
    The owner is SIGKILLed while a window's predictions wait for their labels and a drift episode is
    open; the other replica takes over from the checkpoint: it joins those labels, continues the
    episode without announcing it again, and counts no record twice."""
    env = {**world.env, "STREAMML_MONITOR_CHECKPOINT_INTERVAL_S": "1"}
    replicas = [services.start("monitor", world.bucket, **env) for _ in range(2)]
    world.windows(2)
    world.wait_for_windows(2, replicas[0])
    [owner] = [r for r in replicas if '"message": "model taken", "model": "fraud"' in r.log_path.read_text()]
    [other] = [r for r in replicas if r is not owner]
    data = traffic(world.rng, WINDOW)
    data.features["country"] = COUNTRIES[world.rng.integers(0, COUNTRIES.size, WINDOW)]
    held = world.publish(data, labels=False)  # a drifted window whose labels come later
    state = world.wait_for_windows(3, owner)
    assert [event.kind for event in state.events] == ["covariate"]
    # The checkpoint holding the waiting predictions.
    _wait_committed_past(world, world.prediction_messages, owner, timeout=30)
    owner.send_signal(signal.SIGKILL)
    owner.wait()

    world.send_labels(held)
    world.windows(2, drift=True)
    state = world.wait_for_windows(5, other, timeout=90)
    assert [report.covariate_drift for report in state.window_reports] == [False, False, True, True, True]
    # Every label joined its prediction once: the held window's too, joined by the replica that took over.
    assert sum(report.count for report in state.performance_reports) == 5 * WINDOW
    assert [event.kind for event in state.events] == ["covariate"]
    events = world.read("drift", 5)
    assert len({dict(m.headers())["ce_id"] for m in events}) == 1, "the episode was announced again"
    assert '"message": "model taken", "model": "fraud"' in other.log_path.read_text()


def test_a_monitor_killed_while_predictions_wait_for_labels_joins_them_after_its_restart(world, services):
    """One replica: a window's predictions are judged and their offsets committed while their labels
    are still to come. The monitor is SIGKILLed and started again; the labels that then arrive must
    find their predictions, as the committed offsets will not bring those predictions back."""
    monitor = services.start("monitor", world.bucket, **world.env)
    world.windows(2)
    world.wait_for_windows(2, monitor)
    held = world.publish(traffic(world.rng, WINDOW), labels=False)
    world.wait_for_windows(3, monitor)
    _wait_committed_past(world, world.prediction_messages, monitor, timeout=60)
    monitor.send_signal(signal.SIGKILL)
    monitor.wait()

    restarted = services.start("monitor", world.bucket, **world.env)
    world.send_labels(held)
    world.windows(1)
    state = world.wait_for_windows(4, restarted, timeout=90)
    deadline = time.monotonic() + 30
    while sum(report.count for report in state.performance_reports) < 4 * WINDOW and time.monotonic() < deadline:
        time.sleep(0.3)
        state = read_monitor_state(world.store, MODEL)
    joined = sum(report.count for report in state.performance_reports)
    assert joined == 4 * WINDOW, f"{joined} labels joined their predictions, not {4 * WINDOW}: the held window's lost"


def test_a_monitor_taking_over_commits_what_the_checkpoint_covers_beyond_the_groups_commits(world, services):
    """A monitor killed after writing its checkpoint and before committing leaves the group's commits
    behind the checkpoint. The replica that takes the model over skips what the checkpoint covers and
    commits it, though no new record comes: a lag that never drains would keep an autoscaler adding
    replicas."""
    # A short session, so the killed member leaves the group soon and its commits can be rewound.
    env = {**world.env, "STREAMML_MONITOR_CHECKPOINT_INTERVAL_S": "1", "STREAMML_KAFKA_SESSION_TIMEOUT_MS": "6000"}
    monitor = services.start("monitor", world.bucket, **env)
    world.windows(2)
    world.wait_for_windows(2, monitor)
    _wait_committed_past(world, world.prediction_messages, monitor, timeout=60)
    monitor.send_signal(signal.SIGKILL)
    monitor.wait()
    _commit_start(world)  # as if the kill had come between the checkpoint and its commit
    assert not _committed_past(world, 1)

    restarted = services.start("monitor", world.bucket, **env)
    _wait_committed_past(world, world.prediction_messages, restarted, timeout=60)
    state = read_monitor_state(world.store, MODEL)
    assert len(state.window_reports) == 2, "what the checkpoint covered was judged again"


def _commit_start(world: World) -> None:
    """Commit offset 0 of every partition of the monitor's topics for its group, as a member of it."""
    consumer = Consumer({**world.kafka.client_config(), "group.id": "streamml-monitor",
                         "enable.auto.commit": False, "session.timeout.ms": 6000})
    consumer.subscribe([world.topics["predictions"], world.topics["feedback"]])
    deadline = time.monotonic() + 60
    try:
        while len(consumer.assignment()) < 4:  # once the killed member's session has ended
            assert time.monotonic() < deadline, "the group kept its killed member"
            consumer.poll(0.5)
        consumer.commit(offsets=[TopicPartition(tp.topic, tp.partition, 0) for tp in consumer.assignment()],
                        asynchronous=False)
    finally:
        consumer.close()


def _wait_committed_past(world: World, offset: int, monitor, timeout: float) -> None:
    """Until the monitor group has committed ``offset`` messages of predictions; its log if not in time."""
    deadline = time.monotonic() + timeout
    while not _committed_past(world, offset):
        assert time.monotonic() < deadline, monitor.log_path.read_text()[-3000:]
        time.sleep(0.2)


def _committed_past(world: World, offset: int) -> bool:
    """Whether the monitor group committed ``offset`` messages of predictions (on the model's partition)."""
    consumer = Consumer({**world.kafka.client_config(), "group.id": "streamml-monitor"})
    try:
        found = consumer.committed([TopicPartition(world.topics["predictions"], p) for p in range(2)], timeout=10)
    finally:
        consumer.close()
    return sum(max(tp.offset, 0) for tp in found) >= offset


def test_an_integer_class_model_is_watched_end_to_end_once_its_champion_can_be(stack, world, services):
    """A champion the monitor cannot watch is noted with the reason (status shows it degraded, drift report
    names it); the next champion, a three-class model whose classes are the integers 0, 1, 2, is watched:
    its predicted classes and its integer labels are judged, labels that came first included."""
    reference, baseline = multiclass_reference([0, 1, 2])
    reference = reference.model_copy(update={"model": MODEL})
    unreadable = synthetic_card(reference, "v1", baseline)
    unreadable["expected_features"] = {}  # and the manifest it names does not exist
    put_champion(world.store, unreadable)
    port = free_port()
    monitor = services.start("monitor", world.bucket, STREAMML_HTTP_PORT=str(port), **world.env)
    rng = np.random.default_rng(11)
    scrape = lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()  # noqa: E731
    predictions, _ = multiclass_records(world, multiclass_traffic(rng, 10))
    send_predictions(world, predictions)  # the model is taken with its first record
    note = wait_until(lambda: read_unwatched(world.store, MODEL), monitor)
    assert note.version == "v1" and "which does not exist" in note.reason
    assert [n.model for n in read_all_unwatched(world.store)] == [MODEL]
    report = drift_report(stack, world)
    assert report.exit_code == 1, report.output
    assert "the monitor cannot watch fraud's champion v1" in report.output and "does not exist" in report.output

    card = synthetic_card(reference, "v2", baseline)
    card["outputs"]["classes"] = [0, 1, 2]  # label values, as the trainer writes them
    put_champion(world.store, card)
    wait_until(lambda: True if read_unwatched(world.store, MODEL) is None else None, monitor)
    world.version = "v2"
    predictions, truth = multiclass_records(world, multiclass_traffic(rng, WINDOW))
    world.send_labels(truth)  # a window's labels before their predictions
    wait_until(lambda: True if metric(scrape(), "streamml_monitor_labels_waiting") == WINDOW else None, monitor)
    send_predictions(world, predictions)
    predictions, truth = multiclass_records(world, multiclass_traffic(rng, WINDOW))
    send_predictions(world, predictions)
    world.send_labels(truth)
    state = wait_until(lambda: labelled(world, 2 * WINDOW), monitor)
    assert [r.judged for r in state.window_reports] == [True, True]
    assert not any(r.prediction_drift or r.covariate_drift for r in state.window_reports)
    assert sorted(state.window_reports[-1].prediction.bins[:3]) == ["0", "1", "2"]
    assert [r.metric for r in state.performance_reports] == ["log_loss", "log_loss"]
    assert not any(r.drifted for r in state.performance_reports) and state.events == []

    scraped = scrape()
    assert metric(scraped, "streamml_monitor_feedback_total", outcome="matched") == 2 * WINDOW
    assert metric(scraped, "streamml_monitor_labels_waiting") == 0
    assert metric(scraped, "streamml_monitor_records_total", stream="predictions", outcome="no_champion") == 10
    assert metric(scraped, "streamml_monitor_records_total", stream="feedback", outcome="rejected") == 0
    assert read_all_unwatched(world.store) == []
    assert drift_report(stack, world).exit_code == 0


def multiclass_records(world: World, data: Traffic) -> tuple[list[PredictionRecord], list[tuple[str, int]]]:
    """Predictions of three class probabilities, and the (request id, integer label) pairs of their truth."""
    n = len(data.outputs)
    ids = [f"q{world.next_id + i}" for i in range(n)]
    world.next_id += n
    start = datetime.now(UTC)
    columns = {name: values.tolist() for name, values in data.features.items()}
    predictions = [
        PredictionRecord(request_id=request_id, model=MODEL, model_version=world.version,
                         features={name: _plain(values[i]) for name, values in columns.items()},
                         output=data.outputs[i].tolist(), time=start + timedelta(milliseconds=i))
        for i, request_id in enumerate(ids)
    ]
    return predictions, list(zip(ids, [int(label) for label in data.labels], strict=True))


def send_predictions(world: World, predictions: list[PredictionRecord]) -> None:
    for record in predictions:
        world.producer.send(record)
    world.producer.flush()


def labelled(world: World, count: int) -> MonitorState | None:
    """The champion's state once ``count`` labels were judged in closed label windows."""
    state = read_monitor_state(world.store, MODEL)
    if state is None or state.version != world.version:
        return None
    return state if sum(report.count for report in state.performance_reports) >= count else None


def wait_until(found, monitor, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert monitor.poll() is None, monitor.log_path.read_text()[-3000:]
        if (value := found()) is not None:
            return value
        time.sleep(0.3)
    raise AssertionError(f"not reached in {timeout}s:\n" + monitor.log_path.read_text()[-3000:])


def metric(scraped: str, name: str, **labels: str) -> float:
    """The value of ``name`` for model fraud and ``labels`` in a /metrics page (0 when absent)."""
    wanted = {"model": MODEL, **labels}
    for line in scraped.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match and dict(re.findall(r'(\w+)="([^"]*)"', match.group(1))) == wanted:
            return float(match.group(2))
    return 0.0
