"""The monitor end to end on synthetic streams with known drift points (no broker)."""

from collections.abc import Callable

import numpy as np
import pytest
from scipy import stats

from services.monitor.drift import MonitorThresholds
from services.monitor.monitor import ModelMonitor
from services.monitor.synthetic import (
    CHANNEL_SHARES,
    Traffic,
    feedback_batch,
    prediction_batch,
    traffic,
    training_reference,
)
from services.monitor.windows import WindowSpec
from streamml.events import DriftDetected

pytestmark = pytest.mark.unit
BATCH = 10_000
SPEC = WindowSpec(size=10_000, label_size=5_000)
START = 1.7e9
RATE = 100.0  # predictions per second of event time


@pytest.fixture(scope="module")
def trained():
    return training_reference(seed=1)


def run_stream(
    monitor: ModelMonitor, batches: int, make: Callable[[np.random.Generator, np.ndarray], Traffic], seed: int
) -> list[DriftDetected]:
    """Feed ``batches`` prediction batches; each batch's labels come back with the next batch."""
    rng = np.random.default_rng(seed)
    events: list[DriftDetected] = []
    previous = None
    for number in range(batches):
        rows = np.arange(number * BATCH, (number + 1) * BATCH)
        data = make(rng, rows)
        times = START + rows / RATE
        events += monitor.add_predictions(prediction_batch(data, int(rows[0]), times))
        if previous is not None:
            events += monitor.add_feedback(feedback_batch(previous[0], previous[1], times))
        previous = (data, int(rows[0]))
    return events


def window_of(monitor: ModelMonitor, event: DriftDetected) -> int:
    reports = monitor.performance_reports if event.kind == "performance" else monitor.window_reports
    return next(report.index for report in reports if report.end == event.window.end)


def of_kind(events: list[DriftDetected], kind: str) -> list[DriftDetected]:
    return [event for event in events if event.kind == kind]


NEW_SHARES = np.array([0.3, 0.3, 0.15, 0.25])


@pytest.mark.parametrize("drift_at", [100_000, 105_000])
@pytest.mark.parametrize(
    ("change", "drifted"),
    [({"shift": 0.6}, {"score_a"}), ({"channel_shares": NEW_SHARES}, {"channel"})],
    ids=["numeric-shift", "category-shares"],
)
def test_abrupt_covariate_drift_is_raised_once_within_two_windows(trained, drift_at, change, drifted):
    reference, baseline = trained
    monitor = ModelMonitor(reference, windows=SPEC, baseline=baseline)
    events = run_stream(monitor, 16, lambda rng, rows: changed_from(rng, rows >= drift_at, change), seed=21)
    (event,) = of_kind(events, "covariate")
    first_full_window = -(-drift_at // SPEC.size)
    assert first_full_window <= window_of(monitor, event) <= first_full_window + 1
    assert {feature.feature for feature in event.features} == drifted
    assert event.window.start.timestamp() >= START + drift_at / RATE - SPEC.size / RATE


def changed_from(rng: np.random.Generator, changed: np.ndarray, change: dict) -> Traffic:
    """Rows before the change drawn as in training, the rest with ``change`` applied."""
    before = traffic(rng, int((~changed).sum()))
    after = traffic(rng, int(changed.sum()), **change)
    return Traffic(
        {name: np.concatenate([before.features[name], after.features[name]]) for name in before.features},
        np.concatenate([before.outputs, after.outputs]),
        np.concatenate([before.labels, after.labels]),
    )


def test_new_categories_count_as_drift_of_their_column(trained):
    reference, baseline = trained
    monitor = ModelMonitor(reference, windows=SPEC, baseline=baseline)

    def make(rng, rows):
        data = traffic(rng, rows.size)
        if rows[0] >= 50_000:
            data.features["country"][rng.random(rows.size) < 0.1] = "c99"
        return data

    (event,) = of_kind(run_stream(monitor, 8, make, seed=22), "covariate")
    assert [(feature.feature, feature.test) for feature in event.features] == [("country", "chi2")]
    country = next(column for column in monitor.window_reports[-1].features if column.column == "country")
    assert country.bins[-1] == "(unseen)" and country.live[-1] == pytest.approx(0.1, abs=0.01)


def expected_effects(reference, shift: float) -> tuple[float, float]:
    """PSI on the reference bins and KS distance of a normal shifted by ``shift`` standard deviations."""
    edges = np.asarray(reference.edges)
    cdf = np.concatenate([[0.0], stats.norm.cdf(edges - shift), [1.0]])
    live = np.maximum(np.diff(cdf), 1e-4)
    ref = np.maximum(np.asarray(reference.fractions), 1e-4)
    return float(np.sum((live - ref) * np.log(live / ref))), float(2 * stats.norm.cdf(shift / 2) - 1)


def test_gradual_covariate_drift_is_raised_within_two_windows_of_becoming_large(trained):
    reference, baseline = trained
    ramp_from, ramp_to, full = 100_000, 300_000, 1.0  # score_a's mean climbs one sigma over 20 windows
    monitor = ModelMonitor(reference, windows=SPEC, baseline=baseline)

    def shift(rows):
        return full * np.clip((rows - ramp_from) / (ramp_to - ramp_from), 0.0, 1.0)

    events = run_stream(monitor, 32, lambda rng, rows: traffic(rng, rows.size, shift=shift(rows)), seed=23)
    thresholds = MonitorThresholds()
    crossing = next(
        window
        for window in range(32)
        if any(
            effect >= level
            for effect, level in zip(
                expected_effects(
                    reference.features["score_a"], shift(np.arange(window * 10_000, (window + 1) * 10_000)).mean()
                ),
                (thresholds.psi.drift, thresholds.ks.drift),
                strict=True,
            )
        )
    )
    (event,) = of_kind(events, "covariate")
    assert crossing - 1 <= window_of(monitor, event) <= crossing + 2
    assert {feature.feature for feature in event.features} == {"score_a"}


def test_abrupt_concept_drift_is_raised_within_two_label_windows(trained):
    reference, baseline = trained
    flip_at = 200_000
    monitor = ModelMonitor(reference, windows=SPEC, baseline=baseline)
    events = run_stream(monitor, 32, lambda rng, rows: traffic(rng, rows.size, flipped=rows[0] >= flip_at), seed=24)
    assert of_kind(events, "covariate") == [] and of_kind(events, "prediction") == []
    (event,) = of_kind(events, "performance")
    first_flipped_label_window = flip_at // SPEC.label_size
    assert first_flipped_label_window <= window_of(monitor, event) <= first_flipped_label_window + 1
    assert event.severity == "high"
    assert {feature.test for feature in event.features} >= {"metric_decay"}


def test_no_drift_over_a_million_predictions_with_feedback(trained):
    reference, baseline = trained
    monitor = ModelMonitor(reference, windows=SPEC, baseline=baseline)
    events = run_stream(monitor, 100, lambda rng, rows: traffic(rng, rows.size), seed=25)
    assert events == []
    assert sum(report.judged for report in monitor.window_reports) == 100
    judged = [report for report in monitor.performance_reports if report.judged]
    assert len(judged) == 100  # the last 100 of 198 label windows are kept, all judged
    assert all(report.p_value is not None and not report.alarms for report in judged)


def test_one_episode_raises_one_event_and_a_later_episode_another(trained):
    reference, baseline = trained
    monitor = ModelMonitor(reference, windows=SPEC, baseline=baseline)

    def make(rng, rows):
        window = rows[0] // SPEC.size
        drifting = 10 <= window < 25 or 35 <= window < 45
        return traffic(rng, rows.size, channel_shares=NEW_SHARES if drifting else CHANNEL_SHARES)

    events = run_stream(monitor, 50, make, seed=26)
    assert [window_of(monitor, event) for event in events] == [11, 36]
    assert all(event.kind == "covariate" for event in events)


def test_without_a_prediction_reference_the_first_window_becomes_it(trained):
    reference, baseline = trained
    monitor = ModelMonitor(reference.model_copy(update={"prediction": None}), windows=SPEC, baseline=baseline)
    events = run_stream(
        monitor, 8, lambda rng, rows: traffic(rng, rows.size, shift=1.0 if rows[0] >= 40_000 else 0.0), seed=27
    )
    reports = list(monitor.window_reports)
    assert reports[0].prediction is None and reports[1].prediction is not None
    assert monitor.reference.prediction is not None and monitor.reference.prediction.count == SPEC.sample_size
    assert [report.prediction_drift for report in reports[1:]] == [False, False, False, True, True, True, True]
    assert len(of_kind(events, "prediction")) == 1


@pytest.mark.parametrize("outputs", ["probability", "classes"])
def test_windows_after_the_first_in_one_batch_are_judged_against_the_prediction_reference_it_gave(trained, outputs):
    """One batch longer than a window: the reference adopted from its first window counts the windows after it."""
    reference, _ = trained
    rng = np.random.default_rng(28)
    n = 3 * SPEC.size + SPEC.size // 2
    data = traffic(rng, n)
    if outputs == "classes":
        # Unequal class shares: the adopted reference lists classes by share, not in output order.
        reference = reference.model_copy(update={"classes": ["a", "b", "c"]})
        chosen = rng.choice(3, size=n, p=[0.1, 0.3, 0.6])
        data = Traffic(data.features, np.eye(3)[chosen] * 0.8 + 0.2 / 3, data.labels)
    monitor = ModelMonitor(reference.model_copy(update={"prediction": None}), windows=SPEC)
    events = monitor.add_predictions(prediction_batch(data, 0, START + np.arange(n) / RATE))
    reports = list(monitor.window_reports)
    assert [report.prediction is None for report in reports] == [True, False, False]
    assert [report.prediction.drifted for report in reports[1:]] == [False, False]
    for report in reports[1:]:
        assert report.prediction.live == pytest.approx(report.prediction.reference, abs=0.03)
    assert events == []
