"""A monitor saved mid-stream and restored elsewhere continues exactly: same windows, joins, alarms, events."""

import numpy as np
import pytest

from services.monitor.checkpoint import Checkpoint, decode, encode
from services.monitor.drift import MonitorThresholds
from services.monitor.monitor import ModelMonitor
from services.monitor.snapshot import pack, unpack
from services.monitor.synthetic import feedback_batch, prediction_batch, traffic, training_reference
from services.monitor.windows import WindowSpec
from streamml.events import DriftDetected, DriftWindow
from streamml.registry.keys import RegistryError

pytestmark = pytest.mark.unit
BATCH = 1_500
START = 1.7e9


@pytest.fixture(scope="module")
def trained():
    return training_reference(seed=1, rows=50_000)


def monitor(trained) -> ModelMonitor:
    reference, baseline = trained
    return ModelMonitor(reference, MonitorThresholds(min_count=500, min_labels=300),
                        WindowSpec(size=2_000, label_size=1_000, sample_size=300), baseline)


def stream(batches: int, seed: int = 5):
    """Prediction batches whose labels come two batches later; covariate and concept drift from batch 6."""
    rng = np.random.default_rng(seed)
    sent = []
    for number in range(batches):
        rows = np.arange(number * BATCH, (number + 1) * BATCH)
        data = traffic(rng, BATCH, shift=1.5 if number >= 6 else 0.0, flipped=number >= 6)
        sent.append((data, int(rows[0]), START + rows / 50.0))
        yield "predictions", prediction_batch(data, int(rows[0]), START + rows / 50.0)
        if number >= 2:
            data, first, times = sent[number - 2]
            yield "feedback", feedback_batch(data, first, times + 30)


def feed(monitor: ModelMonitor, item) -> list[DriftDetected]:
    kind, batch = item
    return monitor.add_predictions(batch) if kind == "predictions" else monitor.add_feedback(batch)


def test_a_monitor_restored_from_its_snapshot_continues_exactly_where_it_stood(trained):
    items = list(stream(12))
    original = monitor(trained)
    cut = 9  # mid-window, with predictions waiting for labels
    for item in items[:cut]:
        feed(original, item)
    assert original.snapshot()["join"]["predictions"]["rows"] > 0, "no label waits at the cut: a weak test"
    restored = monitor(trained)
    restored.restore(unpack(pack(original.snapshot())))

    after_original = [event for item in items[cut:] for event in feed(original, item)]
    after_restored = [event for item in items[cut:] for event in feed(restored, item)]
    assert after_original, "the stream raised no drift after the cut: a weak test"
    assert after_restored == after_original
    assert list(restored.window_reports) == list(original.window_reports)[-len(restored.window_reports):]
    assert list(restored.performance_reports) == list(original.performance_reports)[-len(restored.performance_reports):]
    assert pack(restored.snapshot()) == pack(original.snapshot())


def test_a_checkpoint_round_trips_and_a_damaged_one_names_its_key(trained):
    original = monitor(trained)
    for item in list(stream(4)):
        feed(original, item)
    event = DriftDetected(model="fraud", dataset="tx", kind="covariate", severity="high", features=[],
                          window=DriftWindow(start="2026-01-01T00:00:00Z", end="2026-01-01T00:01:00Z", count=9))
    checkpoint = Checkpoint("fraud", {("predictions.fraud", 3): 4500, ("feedback.fraud", 3): 3000}, None,
                            original.snapshot(), [("id-1", event)])
    back = decode(encode(checkpoint), "monitor/fraud/checkpoint.npz")
    assert (back.model, back.offsets, back.outbox, back.state) == (checkpoint.model, checkpoint.offsets,
                                                                    checkpoint.outbox, None)
    assert pack(back.monitor) == pack(checkpoint.monitor)
    with pytest.raises(RegistryError, match="monitor/fraud/checkpoint.npz is not a monitor checkpoint"):
        decode(b"not a zip", "monitor/fraud/checkpoint.npz")
