"""The monitor end to end on synthetic streams with known drift points (no broker)."""

from collections.abc import Callable

import numpy as np
import pytest
from scipy import stats

from services.monitor.drift import MonitorThresholds
from services.monitor.monitor import ModelMonitor
from services.monitor.performance import PerformanceBaseline
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
    monitor: ModelMonitor,
    batches: int,
    make: Callable[[np.random.Generator, np.ndarray], Traffic],
    seed: int,
    labels_later: bool = True,
) -> list[DriftDetected]:
    """Feed ``batches`` prediction batches; each batch's labels come back with the next batch,
    or (``labels_later=False``) right after their predictions, stamped with their times."""
    rng = np.random.default_rng(seed)
    events: list[DriftDetected] = []
    previous = None
    for number in range(batches):
        rows = np.arange(number * BATCH, (number + 1) * BATCH)
        data = make(rng, rows)
        times = START + rows / RATE
        events += monitor.add_predictions(prediction_batch(data, int(rows[0]), times))
        if not labels_later:
            events += monitor.add_feedback(feedback_batch(data, int(rows[0]), times))
        elif previous is not None:
            events += monitor.add_feedback(feedback_batch(previous[0], previous[1], times))
        previous = (data, int(rows[0]))
    return events


def row_at(moment) -> float:
    return (moment.timestamp() - START) * RATE


def window_of(monitor: ModelMonitor, event: DriftDetected) -> int:
    reports = monitor.performance_reports if event.kind == "performance" else monitor.window_reports
    return next(report.index for report in reports if report.end == event.window.end)


def of_kind(events: list[DriftDetected], kind: str) -> list[DriftDetected]:
    return [event for event in events if event.kind == kind]


NEW_SHARES = np.array([0.3, 0.3, 0.15, 0.25])


@pytest.mark.parametrize("drift_at", [100_000, 105_000])
@pytest.mark.parametrize(
    ("change", "drifted"),
    [({"shift": 1.0}, {"score_a"}), ({"channel_shares": NEW_SHARES}, {"channel"})],
    ids=["numeric-shift", "category-shares"],
)
def test_a_strong_covariate_shift_is_raised_once_by_its_first_window(trained, drift_at, change, drifted):
    reference, baseline = trained
    monitor = ModelMonitor(reference, windows=SPEC, baseline=baseline)
    events = run_stream(monitor, 16, lambda rng, rows: changed_from(rng, rows >= drift_at, change), seed=21)
    (event,) = events  # predictions (and perhaps errors) moved too: the same episode
    assert event.kind == "covariate" and event.severity in ("medium", "high")
    assert {feature.feature for feature in event.features} == drifted
    # Raised by the first window that holds drifted rows only, or by an earlier one.
    first_drifted_window_end = (-(-drift_at // SPEC.size) + 1) * SPEC.size
    assert drift_at < row_at(event.window.end) < first_drifted_window_end


def test_a_borderline_covariate_shift_needs_two_drifting_windows(trained):
    reference, baseline = trained
    monitor = ModelMonitor(reference, windows=SPEC, baseline=baseline)
    events = run_stream(monitor, 16, lambda rng, rows: changed_from(rng, rows >= 100_000, {"shift": 0.3}), seed=21)
    (event,) = events
    assert event.kind == "covariate" and event.severity == "low"
    assert [report.covariate_drift for report in monitor.window_reports][9:12] == [False, True, True]
    assert window_of(monitor, event) == 11


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


def test_abrupt_concept_drift_is_raised_within_1000_labelled_rows_by_the_change_detector(trained):
    reference, baseline = trained
    flip_at = 200_000
    monitor = ModelMonitor(reference, windows=SPEC, baseline=baseline)
    events = run_stream(
        monitor, 24, lambda rng, rows: traffic(rng, rows.size, flipped=rows[0] >= flip_at), seed=24, labels_later=False
    )
    (event,) = events  # features and predictions did not move; the label windows that follow continue the episode
    assert event.kind == "performance" and event.severity == "high"
    assert [(feature.feature, feature.test) for feature in event.features] == [("error", "page_hinkley")]
    # Raised as the detector fired, not when the 5,000-label window closed; the evidence window spans the change.
    assert flip_at < row_at(event.window.end) <= flip_at + 1_000
    assert flip_at - 1_000 <= row_at(event.window.start) <= flip_at
    (alarm,) = [alarm for report in monitor.performance_reports for alarm in report.alarms]
    assert (alarm.at_time, alarm.change_time) == (event.window.end, event.window.start)
    assert any(report.metric_drift for report in monitor.performance_reports)
    assert monitor.decider.active("performance")


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
    # A strong change (PSI about 0.4, medium) raises in its first window; the gap of 10 clean windows ends the first.
    assert [window_of(monitor, event) for event in events] == [10, 35]
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
    # Predictions drifted with score_a: the same episode as the covariate drift, one event.
    assert [event.kind for event in events] == ["covariate"] and monitor.decider.active("prediction")


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


def test_a_lasting_decay_that_hovers_around_the_threshold_raises_one_event(trained):
    """5.5% of labels turn to noise: AUC decays about 5%, so label windows fall on both sides of the gate."""
    reference, baseline = trained
    monitor = ModelMonitor(reference, windows=SPEC, baseline=baseline)

    def make(rng, rows):
        data = traffic(rng, rows.size)
        noisy = (rows >= 100_000) & (rng.random(rows.size) < 0.055)
        return Traffic(data.features, data.outputs, np.where(noisy, 1.0 - data.labels, data.labels))

    events = run_stream(monitor, 60, make, seed=29)
    judged = [report for report in monitor.performance_reports if report.judged and report.index >= 22]
    assert 10 <= sum(report.metric_drift for report in judged) <= len(judged) - 10  # it does hover
    assert [event.kind for event in events] == ["performance"]
    assert monitor.decider.active("performance")


def near_perfect(trained, wrong: Callable[[np.random.Generator, np.ndarray], np.ndarray]):
    """A monitor of a model whose outputs are exactly 0 or 1, and a stream of its traffic whose labels
    are right except where ``wrong(rng, rows)``; outputs of 0 and 1 are its normal, so the prediction
    reference comes from its live traffic."""
    reference, _ = trained
    baseline = PerformanceBaseline(task="binary", metric="auc", value=1.0)
    monitor = ModelMonitor(reference.model_copy(update={"prediction": None}), windows=SPEC, baseline=baseline)

    def make(rng, rows):
        data = traffic(rng, rows.size)
        return Traffic(data.features, data.labels, np.where(wrong(rng, rows), 1.0 - data.labels, data.labels))

    return monitor, make


def test_one_wrong_label_of_a_near_perfect_model_is_not_a_drift(trained):
    """The change detector's warm-up sees no error at all; then the first label after 20,000 right ones is wrong."""
    monitor, make = near_perfect(trained, lambda rng, rows: rows == 20_000)
    assert run_stream(monitor, 3, make, seed=30, labels_later=False) == []
    last = monitor.performance_reports[-1]
    assert last.value == pytest.approx(1.0, abs=1e-3) and not last.alarms


def test_a_near_perfect_model_that_starts_to_err_is_caught_with_a_finite_effect(trained):
    monitor, make = near_perfect(trained, lambda rng, rows: (rows >= 20_000) & (rng.random(rows.size) < 0.05))
    (event,) = run_stream(monitor, 4, make, seed=31, labels_later=False)
    assert event.kind == "performance" and row_at(event.window.end) <= 21_000
    (feature,) = event.features
    assert feature.test == "page_hinkley" and 10 < feature.effect_size < 1_000
