"""From drift evidence to ``drift.detected`` events: one event per drift episode of a model.

Each kind of evidence (``covariate``, ``prediction``, ``performance``) keeps
a streak of drifting windows and a count of clean ones. A kind fires when

- a window drifts at ``immediate_severity`` or above (a strong effect), or
- ``consecutive_windows`` windows in a row drift (``performance_consecutive_windows``
  for label windows: labels are scarce), or
- the change detector on the labelled errors raises an alarm (``observe_alarm``,
  called as soon as it fires, not when its label window closes),

unless the kind is cooling down (``cooldown_windows`` judged windows and
``cooldown_s`` seconds after its last event). The first kind to fire opens
the model's episode and raises its event; a kind that fires while the episode
is open joins it without an event, so a drift seen in features, predictions
and errors asks for one retraining. A kind leaves the episode after
``clean_windows_to_end`` clean windows in a row; a window with a residual
drift (significant, at least ``hold_share`` of the drift level) is not clean.
The episode ends when no kind is left in it. A new champion gets a new
decider, which ends the episode.

The whole state is ``state()``, plain JSON-ready data, and ``restore(state)``
continues from it::

    decider = DriftDecider(reference, thresholds)
    for report in reports:
        for event in decider.observe(report):
            producer.send(event)
    checkpoint = decider.state()          # {"covariate": {"streak": 2, ...}, ...}
    DriftDecider(reference, thresholds).restore(checkpoint)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

from services.monitor.drift import MonitorThresholds
from services.monitor.reference import MonitorReference
from streamml.events import DriftDetected, DriftWindow, FeatureDrift
from streamml.registry.monitor import AlarmReport, Kind, PerformanceReport, Severity, WindowReport

KINDS: tuple[Kind, ...] = get_args(Kind)


@dataclass
class _Episode:
    """One kind's part in the model's drift episode."""

    streak: int = 0
    """Drifting judged windows in a row."""
    clean: int = 0
    """Clean judged windows in a row."""
    reported: bool = False
    """This kind is in the open episode."""
    cooldown_windows: int = 0
    cooldown_until: datetime | None = None


@dataclass(frozen=True)
class _Evidence:
    kind: Kind
    drifted: bool
    residual: bool
    severity: Severity | None


class DriftDecider:
    def __init__(self, reference: MonitorReference, thresholds: MonitorThresholds):
        self.reference = reference
        self.thresholds = thresholds
        self._episodes: dict[Kind, _Episode] = {kind: _Episode() for kind in KINDS}

    def active(self, kind: Kind) -> bool:
        """True while ``kind`` is part of the model's open drift episode."""
        return self._episodes[kind].reported

    def state(self) -> dict[str, dict[str, Any]]:
        """Everything the decider knows, as JSON-ready data: kind -> its streak, clean count, cooldown."""
        return {
            kind: {**asdict(episode), "cooldown_until": _iso(episode.cooldown_until)}
            for kind, episode in self._episodes.items()
        }

    def restore(self, state: Mapping[str, Mapping[str, Any]]) -> DriftDecider:
        """Continue from ``state()`` of an earlier decider of the same champion; returns self."""
        known = {field.name for field in fields(_Episode)}
        for kind, values in state.items():
            if kind not in self._episodes:
                raise ValueError(f"decider state names kind {kind!r}; kinds are {list(KINDS)}")
            unknown = sorted(set(values) - known)
            if unknown:
                raise ValueError(f"decider state of {kind} has unknown fields {unknown}; fields are {sorted(known)}")
            until = values.get("cooldown_until")
            self._episodes[kind] = _Episode(**{**values, "cooldown_until": _datetime(until)})
        return self

    def observe(self, report: WindowReport | PerformanceReport) -> list[DriftDetected]:
        """The events a closed window raises (none, or one)."""
        events = []
        for evidence in _evidence(report):
            if self._step(evidence, report.end):
                events.append(self._event(evidence.kind, report))
        return events

    def observe_alarm(self, alarm: AlarmReport) -> list[DriftDetected]:
        """The event an alarm of the change detector raises, at once; the evidence window is the alarm's."""
        if not alarm.drifted:
            return []
        episode = self._episodes["performance"]
        episode.clean = 0
        at = alarm.at_time or datetime.now(UTC)
        if episode.reported or _cooling(episode, at) or not self._enter("performance", at):
            return []
        return [self._alarm_event(alarm)]

    def _step(self, evidence: _Evidence, at: datetime) -> bool:
        """Advance one judged window of ``evidence.kind``; True when it raises the episode's event."""
        episode = self._episodes[evidence.kind]
        cooling = _cooling(episode, at)
        episode.cooldown_windows = max(0, episode.cooldown_windows - 1)
        episode.streak = episode.streak + 1 if evidence.drifted else 0
        if evidence.drifted or (episode.reported and evidence.residual):
            episode.clean = 0
        else:
            episode.clean += 1
            if episode.clean >= self.thresholds.clean_windows_to_end:
                episode.reported = False
        if not evidence.drifted or episode.reported or cooling:
            return False
        needed = (
            self.thresholds.performance_consecutive_windows
            if evidence.kind == "performance"
            else self.thresholds.consecutive_windows
        )
        if episode.streak < needed and not self.thresholds.immediate(evidence.severity):
            return False
        return self._enter(evidence.kind, at)

    def _enter(self, kind: Kind, at: datetime) -> bool:
        """``kind`` joins the episode; True when it opens it (and raises its event)."""
        opens = not any(episode.reported for episode in self._episodes.values())
        episode = self._episodes[kind]
        episode.reported = True
        if opens:
            episode.cooldown_windows = self.thresholds.cooldown_windows
            episode.cooldown_until = at + timedelta(seconds=self.thresholds.cooldown_s)
        return opens

    def _event(self, kind: Kind, report: WindowReport | PerformanceReport) -> DriftDetected:
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
        window = DriftWindow(start=report.start, end=report.end, count=report.count)
        return self._drift(kind, window, features, severity)

    def _alarm_event(self, alarm: AlarmReport) -> DriftDetected:
        end = alarm.at_time or datetime.now(UTC)
        window = DriftWindow(start=alarm.change_time or end, end=end, count=alarm.at - alarm.change_at)
        return self._drift("performance", window, [_alarm_feature(alarm)], alarm.severity)

    def _drift(
        self, kind: Kind, window: DriftWindow, features: list[FeatureDrift], severity: Severity | None
    ) -> DriftDetected:
        reference = self.reference
        return DriftDetected(
            model=reference.model,
            dataset=reference.dataset,
            dataset_version=reference.dataset_version,
            kind=kind,
            window=window,
            features=features,
            severity=severity or "low",
        )


def _evidence(report: WindowReport | PerformanceReport) -> list[_Evidence]:
    if isinstance(report, PerformanceReport):
        if not (report.judged or report.alarms):
            return []
        return [_Evidence("performance", report.drifted, report.residual, report.severity)]
    if not report.judged:
        return []
    found = [_Evidence("covariate", report.covariate_drift, report.covariate_residual, report.covariate_severity)]
    if report.prediction is not None:
        found.append(
            _Evidence("prediction", report.prediction_drift, report.prediction_residual, report.prediction_severity)
        )
    return found


def _cooling(episode: _Episode, at: datetime) -> bool:
    return episode.cooldown_windows > 0 or (episode.cooldown_until is not None and at < episode.cooldown_until)


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
        FeatureDrift(feature=check.metric, test="metric_decay", statistic=check.value, p_value=check.p_value,
                     effect_size=check.decay)
        for check in report.others
        if check.drifted
    ]
    return features + [_alarm_feature(alarm) for alarm in report.alarms if alarm.drifted]


def _alarm_feature(alarm: AlarmReport) -> FeatureDrift:
    return FeatureDrift(
        feature="error",
        test="page_hinkley",
        statistic=alarm.statistic,
        p_value=None,
        effect_size=alarm.relative_increase,
    )


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _datetime(value: datetime | str | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)
