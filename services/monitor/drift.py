"""Drift decisions: from a closed window to a report, and from reports to events.

``evaluate_window`` tests every feature of a prediction window against its
reference and, separately, the model's predictions; ``evaluate_performance``
compares a label window's metric with the validator's test metric and looks
at the change detector's alarms. A column drifts only when a test's effect
size reaches its threshold AND the test's p-value, corrected over all tests
of the window (Holm by default), is below ``alpha``: on a large window a
trivial shift is significant but small, and on a small window a large
apparent shift may be noise; neither is drift.

``DriftDecider`` turns the reports of one model into at most one
``DriftDetected`` per episode and kind: an event needs ``consecutive_windows``
drifting windows in a row, none comes during ``cooldown_windows`` /
``cooldown_s`` after an event, and an episode ends after
``clean_windows_to_end`` clean windows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from scipy import stats

from services.monitor.performance import PerformanceBaseline, window_metric
from services.monitor.reference import (
    PREDICTION,
    ColumnReference,
    MonitorReference,
    bin_labels,
    shares,
)
from services.monitor.stats.base import ColumnCounts, TestResult
from services.monitor.stats.multiple_testing import Correction, adjust
from services.monitor.stats.page_hinkley import ChangeAlarm
from services.monitor.stats.registry import DEFAULT_TESTS, check_tests, run_tests
from services.monitor.windows import ClosedLabelWindow, ClosedWindow
from streamml.events import DriftDetected, DriftWindow, FeatureDrift
from streamml.manifest import NumericReference
from streamml.registry.monitor import (
    AlarmReport,
    ColumnReport,
    Kind,
    PerformanceReport,
    Severity,
    TestReport,
    WindowReport,
)

SEVERITIES: tuple[Severity, ...] = ("low", "medium", "high")
# Effect sizes can be unbounded (an error rising from zero); events carry finite numbers.
MAX_EFFECT = 1e6


class Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EffectLevels(Strict):
    """Effect sizes at which a change counts as drift (low), medium and high."""

    drift: float = Field(gt=0)
    medium: float = Field(gt=0)
    high: float = Field(gt=0)

    @model_validator(mode="after")
    def _ascending(self) -> EffectLevels:
        if not self.drift <= self.medium <= self.high:
            raise ValueError(f"need drift <= medium <= high, got {self.drift}, {self.medium}, {self.high}")
        return self

    def severity(self, effect: float) -> Severity | None:
        if effect >= self.high:
            return "high"
        if effect >= self.medium:
            return "medium"
        return "low" if effect >= self.drift else None


class PageHinkleyOptions(Strict):
    """The error-stream change detector; delta and threshold in standard deviations of a block mean."""

    delta: float = Field(0.5, ge=0)
    threshold: float = Field(20.0, gt=0)
    block: int = Field(100, ge=1, description="errors averaged per step")
    warmup: int = Field(2000, ge=1, description="errors that set the scale after each reset")


class MonitorThresholds(Strict):
    """How one model's windows are judged; every field has a default."""

    alpha: float = Field(0.01, gt=0, lt=1, description="significance after correction")
    correction: Correction = "holm"
    psi: EffectLevels = EffectLevels(drift=0.1, medium=0.25, high=0.5)
    ks: EffectLevels = EffectLevels(drift=0.1, medium=0.2, high=0.3)
    metric_decay: EffectLevels = Field(
        EffectLevels(drift=0.05, medium=0.1, high=0.2),
        description="relative loss of the windowed metric against the validator's test metric",
    )
    error_increase: EffectLevels = Field(
        EffectLevels(drift=0.2, medium=0.5, high=1.0),
        description="relative rise of the mean error at a change-detector alarm",
    )
    page_hinkley: PageHinkleyOptions = PageHinkleyOptions()
    numeric_tests: tuple[str, ...] = DEFAULT_TESTS["numeric"]
    category_tests: tuple[str, ...] = DEFAULT_TESTS["category"]
    min_count: int = Field(1_000, ge=1, description="a prediction window with fewer rows is not judged")
    min_labels: int = Field(500, ge=1, description="a label window with fewer labels gets no metric verdict")
    consecutive_windows: int = Field(2, ge=1, description="covariate/prediction: drifting windows in a row")
    performance_consecutive_windows: int = Field(1, ge=1)
    cooldown_windows: int = Field(3, ge=0, description="judged windows after an event with no new event")
    cooldown_s: float = Field(0.0, ge=0, description="seconds after an event with no new event")
    clean_windows_to_end: int = Field(1, ge=1, description="clean windows that end an episode")

    @field_validator("numeric_tests")
    @classmethod
    def _numeric_tests(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return check_tests("numeric", value)

    @field_validator("category_tests")
    @classmethod
    def _category_tests(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return check_tests("category", value)

    def levels(self, effect: str) -> EffectLevels:
        return self.psi if effect == "psi" else self.ks


def evaluate_window(window: ClosedWindow, reference: MonitorReference, thresholds: MonitorThresholds) -> WindowReport:
    start, end = _time(window.start), _time(window.end)
    if window.count < thresholds.min_count:
        return WindowReport(
            model=reference.model,
            index=window.index,
            start=start,
            end=end,
            count=window.count,
            judged=False,
            note=f"{window.count} predictions, fewer than min_count {thresholds.min_count}",
        )
    features = _judge_family(
        {name: (window.columns[name], ref) for name, ref in reference.features.items()}, thresholds
    )
    prediction = None
    if reference.prediction is not None and PREDICTION in window.columns:
        prediction = _judge_family({PREDICTION: (window.columns[PREDICTION], reference.prediction)}, thresholds)[0]
    drifted = [column for column in features if column.drifted]
    return WindowReport(
        model=reference.model,
        index=window.index,
        start=start,
        end=end,
        count=window.count,
        judged=True,
        note=None if prediction is not None else "no prediction reference yet",
        features=features,
        prediction=prediction,
        covariate_drift=bool(drifted),
        covariate_severity=_worst(column.severity for column in drifted),
        prediction_drift=prediction is not None and prediction.drifted,
        prediction_severity=prediction.severity if prediction is not None else None,
    )


def _judge_family(
    columns: dict[str, tuple[ColumnCounts, ColumnReference]], thresholds: MonitorThresholds
) -> list[ColumnReport]:
    """Run each column's tests, correct all their p-values together, apply both gates."""
    results: dict[str, list[TestResult]] = {}
    for name, (live, reference) in columns.items():
        numeric = isinstance(reference, NumericReference)
        tests = thresholds.numeric_tests if numeric else thresholds.category_tests
        sample = np.asarray(reference.sample, dtype=np.float64) if numeric else np.empty(0)
        results[name] = run_tests(tests, live, shares(reference), reference.count, sample)
    flat = [result for column in results.values() for result in column]
    adjusted = iter(adjust(np.asarray([result.p_value for result in flat]), thresholds.correction))
    reports = []
    for name, (live, reference) in columns.items():
        tests = [_test_report(result, float(next(adjusted)), thresholds) for result in results[name]]
        passed = [test for test in tests if test.drifted]
        reports.append(
            ColumnReport(
                column=name,
                kind=reference.kind,
                count=live.count,
                missing=live.missing,
                bins=bin_labels(reference),
                live=(live.counts / max(live.count, 1)).tolist(),
                reference=(shares(reference) / shares(reference).sum()).tolist(),
                tests=tests,
                drifted=bool(passed),
                severity=_worst(test.severity for test in passed),
            )
        )
    return reports


def _test_report(result: TestResult, p_adjusted: float, thresholds: MonitorThresholds) -> TestReport:
    severity = thresholds.levels(result.effect).severity(result.effect_size)
    drifted = severity is not None and p_adjusted <= thresholds.alpha
    return TestReport(
        test=result.test,
        statistic=result.statistic,
        p_value=result.p_value,
        p_adjusted=p_adjusted,
        effect=result.effect,
        effect_size=result.effect_size,
        drifted=drifted,
        severity=severity if drifted else None,
    )


def evaluate_performance(
    window: ClosedLabelWindow,
    alarms: list[ChangeAlarm],
    baseline: PerformanceBaseline,
    thresholds: MonitorThresholds,
    model: str,
) -> PerformanceReport:
    """The window's metric against the baseline, plus the detector's alarms raised while it filled."""
    alarm_reports = [_alarm_report(alarm, thresholds) for alarm in alarms]
    alarm_severity = _worst(
        thresholds.error_increase.severity(alarm.relative_increase) for alarm in alarm_reports if alarm.drifted
    )
    common = dict(
        model=model,
        index=window.index,
        start=_time(window.start),
        end=_time(window.end),
        count=window.count,
        metric=baseline.metric,
        baseline=baseline.value,
        alarms=alarm_reports,
    )
    value, error = window_metric(baseline.task, baseline.metric, window.outputs, window.labels)
    note = None
    if window.count < thresholds.min_labels:
        note = f"{window.count} labels, fewer than min_labels {thresholds.min_labels}"
    elif math.isnan(value) or math.isnan(error):
        note = f"{baseline.metric} is undefined on this window (e.g. one class only)"
    elif baseline.value is None:
        note = "no baseline metric: change detector only"
    if note is not None:
        drifted = any(alarm.drifted for alarm in alarm_reports)
        return PerformanceReport(
            **common,
            judged=False,
            note=note,
            value=None if math.isnan(value) else value,
            drifted=drifted,
            severity=alarm_severity,
        )
    loss = baseline.value - value if baseline.better == "max" else value - baseline.value
    decay = loss / max(abs(baseline.value), 1e-12)
    # One-sided: only getting worse matters; a zero error (constant window) makes any loss certain.
    p_value = float(stats.norm.sf(loss / error)) if error > 0 else (0.0 if loss > 0 else 1.0)
    metric_severity = thresholds.metric_decay.severity(decay)
    metric_drift = metric_severity is not None and p_value <= thresholds.alpha
    return PerformanceReport(
        **common,
        judged=True,
        value=value,
        standard_error=error,
        decay=decay,
        p_value=p_value,
        metric_drift=metric_drift,
        drifted=metric_drift or any(alarm.drifted for alarm in alarm_reports),
        severity=_worst([metric_severity if metric_drift else None, alarm_severity]),
    )


def _alarm_report(alarm: ChangeAlarm, thresholds: MonitorThresholds) -> AlarmReport:
    increase = min(alarm.relative_increase, MAX_EFFECT)
    return AlarmReport(
        at=alarm.at,
        change_at=alarm.change_at,
        mean_before=alarm.mean_before,
        mean_after=alarm.mean_after,
        statistic=alarm.statistic,
        relative_increase=increase,
        drifted=thresholds.error_increase.severity(increase) is not None,
    )


def _worst(severities: Iterable[Severity | None]) -> Severity | None:
    present = [severity for severity in severities if severity is not None]
    return max(present, key=SEVERITIES.index) if present else None


def _time(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


@dataclass
class _Episode:
    streak: int = 0
    clean: int = 0
    reported: bool = False
    cooldown_windows: int = 0
    cooldown_until: datetime | None = None


class DriftDecider:
    """Debounce and cooldown for one model: at most one event per drift episode and kind.

    decider = DriftDecider(reference, thresholds)
    for report in reports:
        for event in decider.observe(report):
            producer.send(event)
    """

    def __init__(self, reference: MonitorReference, thresholds: MonitorThresholds):
        self.reference = reference
        self.thresholds = thresholds
        self._episodes: dict[Kind, _Episode] = {kind: _Episode() for kind in ("covariate", "prediction", "performance")}

    def active(self, kind: Kind) -> bool:
        """True while an episode of ``kind`` has been reported and has not ended."""
        return self._episodes[kind].reported

    def observe(self, report: WindowReport | PerformanceReport) -> list[DriftDetected]:
        if isinstance(report, PerformanceReport):
            judged = report.judged or bool(report.alarms)
            flags: list[tuple[Kind, bool]] = [("performance", report.drifted)] if judged else []
        else:
            flags = [("covariate", report.covariate_drift)] if report.judged else []
            if report.prediction is not None:
                flags.append(("prediction", report.prediction_drift))
        events = []
        for kind, drifted in flags:
            if self._step(kind, drifted, report.end):
                events.append(self._event(kind, report))
        return events

    def _step(self, kind: Kind, drifted: bool, at: datetime) -> bool:
        """Advance one judged window; True when this window raises the episode's event."""
        episode = self._episodes[kind]
        cooling = episode.cooldown_windows > 0 or (episode.cooldown_until is not None and at < episode.cooldown_until)
        episode.cooldown_windows = max(0, episode.cooldown_windows - 1)
        if not drifted:
            episode.streak = 0
            episode.clean += 1
            if episode.reported and episode.clean >= self.thresholds.clean_windows_to_end:
                episode.reported = False
            return False
        episode.streak += 1
        episode.clean = 0
        needed = (
            self.thresholds.performance_consecutive_windows
            if kind == "performance"
            else self.thresholds.consecutive_windows
        )
        if episode.reported or cooling or episode.streak < needed:
            return False
        episode.reported = True
        episode.cooldown_windows = self.thresholds.cooldown_windows
        episode.cooldown_until = datetime.fromtimestamp(at.timestamp() + self.thresholds.cooldown_s, UTC)
        return True

    def _event(self, kind: Kind, report: WindowReport | PerformanceReport) -> DriftDetected:
        reference = self.reference
        if isinstance(report, PerformanceReport):
            features = _performance_features(report)
            severity = report.severity
        else:
            columns = report.features if kind == "covariate" else [report.prediction]
            features = [
                FeatureDrift(
                    feature=column.column,
                    test=test.test,
                    statistic=test.statistic,
                    p_value=test.p_adjusted,
                    effect_size=test.effect_size,
                )
                for column in columns
                if column is not None and column.drifted
                for test in column.tests
                if test.drifted
            ]
            severity = report.covariate_severity if kind == "covariate" else report.prediction_severity
        return DriftDetected(
            model=reference.model,
            dataset=reference.dataset,
            dataset_version=reference.dataset_version,
            kind=kind,
            window=DriftWindow(start=report.start, end=report.end, count=report.count),
            features=features,
            severity=severity or "low",
        )


def _performance_features(report: PerformanceReport) -> list[FeatureDrift]:
    features = []
    if report.metric_drift:
        features.append(
            FeatureDrift(
                feature=report.metric,
                test="metric_decay",
                statistic=report.value,
                p_value=report.p_value,
                effect_size=report.decay,
            )
        )
    features += [
        FeatureDrift(
            feature="error",
            test="page_hinkley",
            statistic=alarm.statistic,
            p_value=None,
            effect_size=alarm.relative_increase,
        )
        for alarm in report.alarms
        if alarm.drifted
    ]
    return features
