from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from pydantic import ValidationError

from services.monitor.drift import (
    DriftDecider,
    EffectLevels,
    MonitorThresholds,
    PerformanceReport,
    WindowReport,
    evaluate_window,
)
from services.monitor.reference import MonitorReference, numeric_reference
from services.monitor.synthetic import training_reference
from services.monitor.windows import WindowAccumulator, WindowSpec, column_for
from streamml.events import DriftDetected, decode, encode

pytestmark = pytest.mark.unit
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def single():
    rng = np.random.default_rng(11)
    return MonitorReference(
        model="m", dataset="d", features={"x": numeric_reference(rng.normal(0, 1, 1_000_000), seed=11)}
    )


def one_window(reference: MonitorReference, values: np.ndarray, seed: int = 0):
    spec = WindowSpec(size=values.size)
    windows = WindowAccumulator({name: column_for(ref) for name, ref in reference.features.items()}, spec, seed=seed)
    (window,) = windows.add({"x": values}, np.arange(values.size, dtype=float))
    return window


def test_a_trivial_shift_on_a_huge_window_is_significant_but_not_drift(single):
    rng = np.random.default_rng(12)
    window = one_window(single, rng.normal(0.03, 1, 2_000_000))
    report = evaluate_window(window, single, MonitorThresholds(min_count=1))
    (column,) = report.features
    psi = next(test for test in column.tests if test.test == "psi")
    assert psi.p_adjusted < 1e-6  # a p-value alone would flag it
    assert psi.effect_size < 0.01
    assert not column.drifted and not report.covariate_drift


def test_a_large_apparent_shift_on_a_tiny_window_is_not_significant(single):
    rng = np.random.default_rng(13)
    window = one_window(single, rng.normal(0, 1, 40))
    report = evaluate_window(window, single, MonitorThresholds(min_count=1))
    psi = next(test for test in report.features[0].tests if test.test == "psi")
    assert psi.effect_size >= 0.1  # sampling noise of 40 rows over 10 bins
    assert psi.p_adjusted > 0.01 and not report.covariate_drift


def test_a_real_shift_passes_both_gates_with_a_severity_from_its_effect(single):
    rng = np.random.default_rng(14)
    report = evaluate_window(one_window(single, rng.normal(1.0, 1, 20_000)), single, MonitorThresholds())
    (column,) = report.features
    assert column.drifted and report.covariate_drift
    assert report.covariate_severity == "high"  # PSI of a one-sigma shift is about 0.9
    assert {test.test for test in column.tests if test.drifted} == {"psi", "ks"}


def test_small_windows_are_reported_but_not_judged(single):
    report = evaluate_window(one_window(single, np.zeros(10)), single, MonitorThresholds(min_count=100))
    assert not report.judged and report.note == "10 predictions, fewer than min_count 100"
    assert DriftDecider(single, MonitorThresholds()).observe(report) == []


def window_report(index: int, drifted: bool, minutes: float | None = None) -> WindowReport:
    end = T0 + timedelta(minutes=index if minutes is None else minutes)
    return WindowReport(
        model="m",
        index=index,
        start=end - timedelta(minutes=1),
        end=end,
        count=5000,
        judged=True,
        covariate_drift=drifted,
        covariate_severity="medium" if drifted else None,
    )


def run(decider: DriftDecider, flags: str) -> list[int]:
    """Indices of the windows that raised an event, for flags like '.##..#'."""
    return [index for index, flag in enumerate(flags) if decider.observe(window_report(index, flag == "#"))]


def test_debounce_needs_consecutive_drifting_windows_and_one_episode_raises_one_event(single):
    decider = DriftDecider(single, MonitorThresholds(consecutive_windows=2, cooldown_windows=0))
    assert run(decider, ".#.#.##########..") == [6]
    assert not decider.active("covariate")  # two clean windows ended the episode


def test_a_new_episode_after_the_cooldown_raises_a_new_event(single):
    decider = DriftDecider(single, MonitorThresholds(consecutive_windows=2, cooldown_windows=0))
    assert run(decider, "##...##..##") == [1, 6, 10]


def test_cooldown_in_windows_holds_back_a_flapping_drift(single):
    decider = DriftDecider(single, MonitorThresholds(consecutive_windows=1, cooldown_windows=6))
    # Episodes start at 0, 3 and 5; the first raises, the next two fall in the cooldown; the one at 8 is new.
    assert run(decider, "#.##.#..#") == [0, 8]


def test_cooldown_in_seconds(single):
    decider = DriftDecider(single, MonitorThresholds(consecutive_windows=1, cooldown_windows=0, cooldown_s=3600))
    raised = [
        minutes
        for index, minutes in enumerate([0, 10, 30, 50, 61, 62, 70])
        if decider.observe(window_report(index, index % 2 == 0, minutes=minutes))
    ]
    assert raised == [0, 61]  # the new episode at 30 minutes falls inside the hour; the one at 61 does not


def test_the_event_names_the_drifted_columns_and_survives_the_wire():
    reference, _ = training_reference(rows=20_000)
    rng = np.random.default_rng(2)
    values = {name: np.asarray(ref.sample) for name, ref in reference.features.items() if ref.kind == "numeric"}
    columns = {name: column_for(ref) for name, ref in reference.features.items()}
    windows = WindowAccumulator(columns, WindowSpec(size=2000), seed=3)
    data = {
        **{name: rng.permutation(v)[:2000] for name, v in values.items()},
        "channel": np.full(2000, "web"),
        "country": np.full(2000, "c00"),
    }
    data["score_a"] = data["score_a"] + 2.0
    (window,) = windows.add(data, np.arange(2000.0))
    report = evaluate_window(window, reference, MonitorThresholds())
    decider = DriftDecider(reference, MonitorThresholds(consecutive_windows=1))
    (event,) = decider.observe(report)
    assert {feature.feature for feature in event.features} == {"score_a", "channel", "country"}
    assert event.kind == "covariate" and event.severity == "high"
    assert (event.model, event.dataset, event.dataset_version) == ("fraud", "transactions", 3)
    message = encode(event, source="streamml/monitor")
    decoded, _ = decode(list(message.headers.items()), message.key, message.value)
    assert isinstance(decoded, DriftDetected) and decoded == event


def test_performance_reports_need_one_window_by_default(single):
    decider = DriftDecider(single, MonitorThresholds())
    report = PerformanceReport(
        model="m",
        index=0,
        start=T0,
        end=T0,
        count=5000,
        judged=True,
        metric="auc",
        value=0.6,
        standard_error=0.01,
        baseline=0.8,
        decay=0.25,
        p_value=0.0,
        metric_drift=True,
        drifted=True,
        severity="high",
    )
    (event,) = decider.observe(report)
    assert event.kind == "performance" and event.features[0].test == "metric_decay"
    assert decider.observe(report.model_copy(update={"index": 1})) == []


def test_thresholds_reject_bad_values_with_a_reason():
    with pytest.raises(ValidationError, match="need drift <= medium <= high"):
        EffectLevels(drift=0.3, medium=0.2, high=0.5)
    with pytest.raises(ValidationError, match="test 'ks' does not apply to category columns"):
        MonitorThresholds(category_tests=("ks",))
