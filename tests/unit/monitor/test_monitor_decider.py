"""From reports to events: debounce, strong effects at once, one event per episode, hysteresis, checkpoints."""

import json
from datetime import UTC, datetime, timedelta

import pytest

from services.monitor.decider import DriftDecider
from services.monitor.drift import AlarmReport, MonitorThresholds, PerformanceReport, WindowReport
from services.monitor.reference import MonitorReference

pytestmark = pytest.mark.unit
T0 = datetime(2026, 1, 1, tzinfo=UTC)
REFERENCE = MonitorReference(model="m", dataset="d", features={})
# Window flags: '.' clean, 'r' residual (significant, under the drift level), '#' low drift, 'M' medium, 'H' high.
SEVERITY = {"#": "low", "M": "medium", "H": "high"}


def window_report(index: int, flag: str, minutes: float | None = None, kind: str = "covariate") -> WindowReport:
    end = T0 + timedelta(minutes=index if minutes is None else minutes)
    drifted = flag in SEVERITY
    return WindowReport(
        model="m", index=index, start=end - timedelta(minutes=1), end=end, count=5000, judged=True,
        **{f"{kind}_drift": drifted, f"{kind}_severity": SEVERITY.get(flag), f"{kind}_residual": flag == "r"},
    )


def performance_report(index: int, flag: str) -> PerformanceReport:
    end = T0 + timedelta(minutes=index)
    drifted = flag in SEVERITY
    return PerformanceReport(
        model="m", index=index, start=end - timedelta(minutes=1), end=end, count=5000, judged=True, metric="auc",
        value=0.76, baseline=0.8, decay=0.05, p_value=0.001, metric_drift=drifted, residual=flag == "r",
        drifted=drifted, severity=SEVERITY.get(flag),
    )


def run(decider: DriftDecider, flags: str) -> list[int]:
    """Indices of the windows that raised an event, for flags like '.##..#'."""
    return [index for index, flag in enumerate(flags) if decider.observe(window_report(index, flag))]


def test_debounce_needs_consecutive_drifting_windows_and_one_episode_raises_one_event():
    decider = DriftDecider(REFERENCE, MonitorThresholds(consecutive_windows=2, cooldown_windows=0))
    assert run(decider, ".#.#.##########...") == [6]
    assert not decider.active("covariate")  # three clean windows ended the episode


def test_a_new_episode_after_the_cooldown_raises_a_new_event():
    decider = DriftDecider(REFERENCE, MonitorThresholds(consecutive_windows=2, cooldown_windows=0))
    assert run(decider, "##...##...##") == [1, 6, 11]


def test_a_strong_drift_raises_in_its_first_window_and_a_borderline_one_needs_consecutive_windows():
    assert run(DriftDecider(REFERENCE, MonitorThresholds()), "..M") == [2]
    assert run(DriftDecider(REFERENCE, MonitorThresholds()), "..H") == [2]
    assert run(DriftDecider(REFERENCE, MonitorThresholds()), "..#.#.##") == [7]
    assert run(DriftDecider(REFERENCE, MonitorThresholds(immediate_severity="high")), "..MM") == [3]
    assert run(DriftDecider(REFERENCE, MonitorThresholds(immediate_severity=None)), "..HH") == [3]


def test_a_drift_hovering_around_its_threshold_is_one_episode():
    decider = DriftDecider(REFERENCE, MonitorThresholds(consecutive_windows=1, cooldown_windows=0))
    # Residual windows (significant, at least half the drift level) are not clean: the episode holds.
    assert run(decider, "#r#rr#rrr#r.r#rrrr#") == [0]
    assert decider.active("covariate")
    assert run(decider, "...#") == [3]  # three clean windows end it; the next drift is a new episode


def test_one_event_per_episode_whichever_kinds_show_it():
    decider = DriftDecider(REFERENCE, MonitorThresholds(cooldown_windows=0))
    raised = []
    for index, (covariate, prediction, performance) in enumerate(
        ["...", "H..", "HH.", "HHH", ".HH", "..H", "...", "...", "...", "..H"]
    ):
        events = decider.observe(window_report(index, covariate))
        events += decider.observe(window_report(index, prediction, kind="prediction"))
        events += decider.observe(performance_report(index, performance))
        raised += [(index, event.kind) for event in events]
    # Features moved first; predictions and errors followed in the same episode: one retraining asked for.
    assert raised[0] == (1, "covariate")
    assert raised[1:] == [(9, "performance")]  # the episode ended after three clean windows of every kind


def test_cooldown_in_windows_holds_back_a_flapping_drift():
    decider = DriftDecider(
        REFERENCE, MonitorThresholds(consecutive_windows=1, cooldown_windows=6, clean_windows_to_end=1)
    )
    # Episodes start at 0, 3 and 5; the first raises, the next two fall in the cooldown; the one at 8 is new.
    assert run(decider, "#.##.#..#") == [0, 8]


def test_cooldown_in_seconds():
    decider = DriftDecider(
        REFERENCE,
        MonitorThresholds(consecutive_windows=1, cooldown_windows=0, cooldown_s=3600, clean_windows_to_end=1),
    )
    raised = [
        minutes
        for index, minutes in enumerate([0, 10, 30, 50, 61, 62, 70])
        if decider.observe(window_report(index, "#" if index % 2 == 0 else ".", minutes=minutes))
    ]
    assert raised == [0, 61]  # the new episode at 30 minutes falls inside the hour; the one at 61 does not


def test_performance_reports_need_one_window_by_default():
    decider = DriftDecider(REFERENCE, MonitorThresholds())
    (event,) = decider.observe(performance_report(0, "#"))
    assert event.kind == "performance" and event.features[0].test == "metric_decay"
    assert decider.observe(performance_report(1, "#")) == []


def alarm(at: int, relative_increase: float = 2.0) -> AlarmReport:
    return AlarmReport(
        at=at, change_at=at - 300, at_time=T0 + timedelta(seconds=at), change_time=T0 + timedelta(seconds=at - 300),
        mean_before=0.1, mean_after=0.1 * (1 + relative_increase), statistic=25.0,
        relative_increase=relative_increase, drifted=relative_increase >= 0.2, severity="high",
    )


def test_an_alarm_raises_at_once_with_its_evidence_window_and_its_label_window_continues_the_episode():
    decider = DriftDecider(REFERENCE, MonitorThresholds())
    assert decider.observe_alarm(alarm(2_400, relative_increase=0.1)) == []  # too small a rise to be drift
    (event,) = decider.observe_alarm(alarm(2_600))
    assert event.kind == "performance" and event.severity == "high"
    assert (event.window.start, event.window.end, event.window.count) == (
        T0 + timedelta(seconds=2_300), T0 + timedelta(seconds=2_600), 300)
    assert [(f.feature, f.test) for f in event.features] == [("error", "page_hinkley")]
    assert decider.observe(performance_report(0, "H")) == []
    assert decider.observe_alarm(alarm(9_000)) == []


def test_the_state_is_plain_data_and_a_restored_decider_continues_the_episode():
    decider = DriftDecider(REFERENCE, MonitorThresholds(cooldown_windows=0))
    assert run(decider, "H") == [0]
    checkpoint = json.loads(json.dumps(decider.state()))
    assert checkpoint["covariate"]["reported"] is True
    restored = DriftDecider(REFERENCE, MonitorThresholds(cooldown_windows=0)).restore(checkpoint)
    assert restored.state() == decider.state()
    assert [restored.observe(window_report(index, "H")) for index in (1, 2)] == [[], []]
    assert DriftDecider(REFERENCE, MonitorThresholds()).observe(window_report(1, "H"))  # a fresh one would raise


def test_restore_refuses_state_it_does_not_know():
    with pytest.raises(ValueError, match="decider state names kind 'latency'"):
        DriftDecider(REFERENCE, MonitorThresholds()).restore({"latency": {}})
    with pytest.raises(ValueError, match=r"decider state of covariate has unknown fields \['strak'\]"):
        DriftDecider(REFERENCE, MonitorThresholds()).restore({"covariate": {"strak": 1}})
