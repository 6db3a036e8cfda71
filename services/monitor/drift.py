"""Drift evidence: from a closed window to a report.

``evaluate_window`` tests every feature of a prediction window against its
reference and, separately, the model's predictions; ``evaluate_performance``
compares a label window's metric with the validator's test metric (both
uncertain: the test includes the sampling error of each) and lists the
change detector's alarms. A column drifts only when a test's effect size
reaches its threshold AND the test's p-value, corrected over all tests of the
window (Holm by default), is below ``alpha``: on a large window a trivial
shift is significant but small, and on a small window a large apparent shift
may be noise; neither is drift.

A window that does not drift may still show a residual drift: significant,
with an effect of at least ``hold_share`` of the drift level. It keeps an
open episode going (``decider.py``), so a drift that hovers around its
threshold is one episode, not many.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
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
from streamml.manifest import NumericReference
from streamml.registry.monitor import (
    AlarmReport,
    ColumnReport,
    MetricCheck,
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
    consecutive_windows: int = Field(
        2, ge=1, description="covariate/prediction: drifting windows in a row that raise a drift below immediate_severity"
    )
    performance_consecutive_windows: int = Field(1, ge=1, description="the same for label windows")
    immediate_severity: Severity | None = Field(
        "medium", description="a window drifting at this severity or above raises at once (null: never at once)"
    )
    cooldown_windows: int = Field(3, ge=0, description="judged windows of a kind after its event with no new event")
    cooldown_s: float = Field(0.0, ge=0, description="seconds after an event with no new event of its kind")
    clean_windows_to_end: int = Field(3, ge=1, description="clean windows in a row that end an episode")
    hold_share: float = Field(
        0.5, gt=0, le=1, description="a significant effect of this share of its drift level keeps an episode open"
    )

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

    def immediate(self, severity: Severity | None) -> bool:
        """True when a drift of ``severity`` raises without waiting for consecutive windows."""
        if severity is None or self.immediate_severity is None:
            return False
        return SEVERITIES.index(severity) >= SEVERITIES.index(self.immediate_severity)


def evaluate_window(window: ClosedWindow, reference: MonitorReference, thresholds: MonitorThresholds) -> WindowReport:
    start, end = as_datetime(window.start), as_datetime(window.end)
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
        covariate_severity=worst(column.severity for column in drifted),
        prediction_drift=prediction is not None and prediction.drifted,
        prediction_severity=prediction.severity if prediction is not None else None,
        covariate_residual=any(column.residual for column in features),
        prediction_residual=prediction is not None and prediction.residual,
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
                severity=worst(test.severity for test in passed),
                residual=any(_residual(test, thresholds) for test in tests),
            )
        )
    return reports


def _residual(test: TestReport, thresholds: MonitorThresholds) -> bool:
    level = thresholds.levels(test.effect).drift * thresholds.hold_share
    return test.p_adjusted <= thresholds.alpha and test.effect_size >= level


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
    alarm_reports = [alarm_report(alarm, thresholds) for alarm in alarms]
    alarm_severity = worst(alarm.severity for alarm in alarm_reports)
    common = dict(
        model=model,
        index=window.index,
        start=as_datetime(window.start),
        end=as_datetime(window.end),
        count=window.count,
        metric=baseline.metric,
        baseline=baseline.value,
        baseline_standard_error=baseline.standard_error,
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
    # Bonferroni over the metrics watched, so watching more of them does not raise more false alarms.
    alpha = thresholds.alpha / (1 + len(baseline.others))
    main = _metric_check(baseline.metric, value, error, baseline.value, baseline.standard_error,
                         baseline.better, thresholds, alpha)
    others = []
    for metric, reference in baseline.others.items():
        other_value, other_error = window_metric(baseline.task, metric, window.outputs, window.labels,
                                                 baseline.classes)
        if not (math.isnan(other_value) or math.isnan(other_error)):
            others.append(_metric_check(metric, other_value, other_error, reference.value, reference.standard_error,
                                        baseline.better_of(metric), thresholds, alpha))
    checks = [main, *others]
    return PerformanceReport(
        **common,
        judged=True,
        value=value,
        standard_error=error,
        decay=main.decay,
        p_value=main.p_value,
        metric_drift=main.drifted,
        residual=any(check.residual for check in checks),
        others=others,
        drifted=any(check.drifted for check in checks) or any(alarm.drifted for alarm in alarm_reports),
        severity=worst([*(check.severity for check in checks), alarm_severity]),
    )


def _metric_check(
    metric: str,
    value: float,
    error: float,
    baseline: float,
    baseline_error: float | None,
    better: str,
    thresholds: MonitorThresholds,
    alpha: float,
) -> MetricCheck:
    """One metric of a window against the validator's test value: drifts when worse by ``metric_decay.drift``
    (relative) and significantly so (p <= ``alpha``), the baseline's own sampling error counted."""
    loss = baseline - value if better == "max" else value - baseline
    decay = loss / max(abs(baseline), 1e-12)
    # The baseline was measured on a finite test split: its sampling error adds to the window's.
    spread = math.hypot(error, baseline_error or 0.0)
    # One-sided: only getting worse matters; no spread at all (constant window, exact baseline) makes any loss certain.
    p_value = float(stats.norm.sf(loss / spread)) if spread > 0 else (0.0 if loss > 0 else 1.0)
    severity = thresholds.metric_decay.severity(decay)
    significant = p_value <= alpha
    drifted = severity is not None and significant
    return MetricCheck(
        metric=metric,
        value=value,
        standard_error=error,
        baseline=baseline,
        baseline_standard_error=baseline_error,
        decay=decay,
        p_value=p_value,
        drifted=drifted,
        residual=significant and decay >= thresholds.metric_decay.drift * thresholds.hold_share,
        severity=severity if drifted else None,
    )


def alarm_report(alarm: ChangeAlarm, thresholds: MonitorThresholds) -> AlarmReport:
    """A change-detector alarm, judged by how much the mean error rose."""
    increase = min(alarm.relative_increase, MAX_EFFECT)
    severity = thresholds.error_increase.severity(increase)
    return AlarmReport(
        at=alarm.at,
        change_at=alarm.change_at,
        at_time=None if alarm.at_time is None else as_datetime(alarm.at_time),
        change_time=None if alarm.change_time is None else as_datetime(alarm.change_time),
        mean_before=alarm.mean_before,
        mean_after=alarm.mean_after,
        statistic=alarm.statistic,
        relative_increase=increase,
        drifted=severity is not None,
        severity=severity,
    )


def worst(severities: Iterable[Severity | None]) -> Severity | None:
    present = [severity for severity in severities if severity is not None]
    return max(present, key=SEVERITIES.index) if present else None


def as_datetime(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)
