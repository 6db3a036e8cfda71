"""The recovery benchmark's bookkeeping and streams: per-row metrics, segments by row and version,
the targets, and declarations the services accept."""

from datetime import UTC, datetime

import numpy as np
import pytest
import yaml

from bench.recovery.outcome import Outcome, metric_of, targets
from bench.recovery.streams import STREAMS, dataset_spec, model_spec, policy
from services.trainer.spec import ModelSpec
from services.validator.policy import PromotionPolicy
from streamml.events import DriftDetected, DriftWindow, ModelPromoted
from streamml.specs import parse_dataset_spec

pytestmark = pytest.mark.unit


def test_per_row_metrics_read_each_task_s_outputs():
    assert metric_of("binary", np.array([0.9, 0.2, 0.6]), [1, 1, 0], None).tolist() == [1.0, 0.0, 0.0]
    # Integer classes in the card, labels as the application has them: compared as text.
    outputs = np.array([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1]])
    assert metric_of("multiclass", outputs, [1, 2], [0, 1, 2]).tolist() == [1.0, 0.0]
    assert metric_of("regression", np.array([1.0, 2.0]), [1.5, 2.0], None).tolist() == [0.25, 0.0]
    with pytest.raises(ValueError, match="no classes"):
        metric_of("multiclass", outputs, [1, 2], None)


def promoted(version):
    return ModelPromoted.model_construct(model="m", version=version)


def drift(starts_at_row=0):
    """A drift event whose window starts when ``starts_at_row`` was served."""
    window = DriftWindow.model_construct(start=datetime.fromtimestamp(at(starts_at_row), UTC))
    return DriftDetected.model_construct(model="m", window=window)


def at(row):
    """The Unix time row ``row`` is served at: 100 rows a second from time 1,000,000."""
    return 1_000_000 + row / 100


def note(outcome, event, row):
    outcome.note(event, row, at(row))


def served(outcome, rows, version, right_share):
    """Serve ``rows`` rows in batches of 100, ``right_share`` of them right."""
    start = sum(values.size for _, _, values in outcome.batches)
    for first in range(start, start + rows, 100):
        outcome.sent(first, at(first))
        outcome.add(first, version, (np.arange(100) < right_share * 100).astype(float))


def recovered_outcome():
    outcome = Outcome("s", "binary", drift_row=1_000)
    note(outcome, promoted("v1"), 0)
    served(outcome, 1_000, "v1", 0.9)
    note(outcome, drift(starts_at_row=800), 1_400)
    served(outcome, 1_000, "v1", 0.3)
    note(outcome, promoted("v2"), 2_000)
    served(outcome, 500, "v2", 0.89)
    return outcome


def test_segments_split_by_drift_row_and_by_the_retrained_version():
    outcome = recovered_outcome()
    assert (outcome.before().rows, outcome.before().value) == (1_000, pytest.approx(0.9))
    assert (outcome.right_after().rows, outcome.right_after().value) == (1_000, pytest.approx(0.3))
    assert (outcome.after_recovery().rows, outcome.after_recovery().value) == (500, pytest.approx(0.89))
    assert outcome.to_detection == (400, pytest.approx(4.0))
    assert outcome.to_promotion == (1_000, pytest.approx(10.0))
    assert outcome.drift_point_rows == -200  # the event's window starts 200 rows before the drift
    assert (outcome.events_before, outcome.events_after) == (0, 1)
    assert outcome.finished(after_rows=500, give_up_rows=10_000, served=2_500)
    assert not outcome.finished(after_rows=600, give_up_rows=10_000, served=2_500)


def test_targets_are_met_by_a_recovery_and_missed_with_the_numbers_that_say_why():
    assert [met for met, _ in targets(recovered_outcome())] == [True, True, True, True]

    outcome = recovered_outcome()
    note(outcome, drift(), 500)  # a false alarm
    note(outcome, drift(), 2_200)  # a second event for the same drift
    outcome.failed = 3
    served(outcome, 500, "v2", 0.5)  # the retrained champion falls to 0.695 over its 1,000 rows
    checks = targets(outcome)
    assert [met for met, _ in checks] == [False, True, False, False]
    assert checks[0][1] == "accuracy 0.9000 -> 0.6950 (-22.8%)"
    assert checks[2][1] == "1 before, 2 after the drift"

    never = Outcome("s", "regression", drift_row=1_000)
    assert targets(never)[:2] == [(False, "no retrained champion served"), (False, "none")]


def test_regression_is_judged_on_rmse_where_lower_is_better():
    outcome = Outcome("r", "regression", drift_row=100)
    outcome.add(0, "v1", np.full(100, 1.0))
    note(outcome, promoted("v2"), 5_000)
    outcome.add(5_000, "v2", np.full(100, 1.04))  # RMSE 1.0198: just within 2%
    assert targets(outcome)[0] == (True, "rmse 1.0000 -> 1.0198 (+2.0%)")
    outcome.add(5_100, "v2", np.full(100, 1.2))
    assert targets(outcome)[0][0] is False


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_each_stream_s_declarations_are_accepted_and_its_rows_fit_its_spec(name):
    stream = STREAMS[name]
    spec = parse_dataset_spec(yaml.safe_load(dataset_spec(stream, 8_000)))
    assert spec.prep.on_drift.window == "since_drift"
    assert ModelSpec.model_validate(yaml.safe_load(model_spec(stream))).task == stream.task
    assert PromotionPolicy.model_validate(yaml.safe_load(policy(stream))).model == name
    records, labels = stream.rows(np.random.default_rng(0), 10, 5, drifted=True)
    assert [r["row_id"] for r in records] == [f"{name}-{i}" for i in range(10, 15)]
    assert set(records[0]) == {field.name for field in spec.fields} - {"y"}
    assert len(labels) == 5


def best_level(name, drifted):
    """What the world's own truth scores on its rows: the best any model can do."""
    stream, rng = STREAMS[name], np.random.default_rng(1)
    columns = stream.world(rng, 100_000, drifted)
    if name == "concept_binary":
        turn = -1.0 if drifted else 1.0
        effect = np.select([columns["segment"] == s for s in "ab"], [0.5, -0.5], 0.0)
        z = turn * (1.2 * columns["x1"] - 0.9 * columns["x2"]) + 0.6 * columns["x3"] + effect
        return ((z > 0) == (columns["y"] == 1)).mean()
    if name == "covariate_binary":
        return ((columns["x2"] > 2.0 * np.sin(1.5 * columns["x1"])) == (columns["y"] == 1)).mean()
    if name == "concept_multiclass":
        angles = 2 * np.pi * np.arange(3) / 3
        best = (np.outer(columns["x1"], np.cos(angles)) + np.outer(columns["x2"], np.sin(angles))).argmax(axis=1)
        return (((best + 1) % 3 if drifted else best) == columns["y"]).mean()
    effect = np.select([columns["segment"] == s for s in "ab"], [0.5, -0.5], 0.0)
    x1, x2, x3 = columns["x1"], columns["x2"], columns["x3"]
    mean = (-x1 + 2 * x2 + 2 * x3 - effect) if drifted else (3 * x1 - 2 * x2 + x3 + effect)
    return np.sqrt(((columns["y"] - mean) ** 2).mean())


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_a_retrain_can_come_back_the_best_level_is_the_same_on_both_sides_of_the_drift(name):
    assert best_level(name, drifted=True) == pytest.approx(best_level(name, drifted=False), rel=0.01)
