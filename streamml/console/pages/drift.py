"""Drift: per model and column, each test's effect size over the monitor's windows against its threshold,
the performance metric against the validator's, every ``drift.detected`` marked, and what each one triggered.

The windows and thresholds come from the monitor's states of the last few
champions (``monitor/<model>/versions/<version>.json``), so the windows that
led to a retraining stay in view after its champion replaced the old one; a
line marks where each new champion's windows begin.
the events from the live feed (which knows their CloudEvents ids) and from
the state. An event triggered the dataset version whose trigger names its id
(``drift:<id>``); events of one episode share a build, so a later one maps to
the first version built on drift after its window closed. The models trained
on that version, and the validator's decisions on them, complete the chain.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from streamml.console import charts
from streamml.console.live import EventLog
from streamml.console.pages import NotFound
from streamml.console.pages.datasets import drift_event_id
from streamml.console.pages.lineage import trained_on
from streamml.console.pages.models import existing_model
from streamml.console.reads import ConsoleRegistry, ModelVersion
from streamml.events import DriftDetected
from streamml.manifest import DatasetManifest
from streamml.registry.monitor import MonitorState, WindowReport


@dataclass(frozen=True)
class DriftEvent:
    event: DriftDetected
    id: str | None  # None when only the monitor's state still holds it
    dataset_version: DatasetManifest | None = None
    models: tuple[ModelVersion, ...] = ()

    @property
    def columns(self) -> list[str]:
        return sorted({feature.feature for feature in self.event.features})


def drift_overview(registry: ConsoleRegistry) -> dict[str, Any]:
    return {"models": [{"name": name, "state": registry.monitor_state(name)} for name in registry.model_names()]}


def drift_page(registry: ConsoleRegistry, events: EventLog, model: str) -> dict[str, Any]:
    existing_model(registry, model)
    states = registry.monitor_history(model)
    if not states:
        raise NotFound(f"no monitor report for model {model!r} yet: the monitor writes one when the first window "
                       "of the champion's predictions closes")
    from_kafka = [(seen.event, seen.id) for seen in events.drifts_of(model)]
    drifts = triggered(registry, merged_events(states, from_kafka))
    current = states[-1]
    changes = champion_changes(states)
    return {
        "model": model,
        "state": current,
        "earlier": states[:-1],
        "events": list(reversed(drifts)),
        "column_charts": column_charts(states, drifts, changes),
        "performance_charts": performance_charts(states, drifts, changes),
        "thresholds_recorded": bool(current.thresholds),
    }


def merged_events(states: list[MonitorState], from_kafka: list[tuple[DriftDetected, str]]) -> list[DriftEvent]:
    """The events Kafka still holds (with their ids) and those only the states still hold, by window end."""
    def identity(event: DriftDetected) -> tuple:
        return event.kind, event.window.start, event.window.end

    found = {identity(event): DriftEvent(event, event_id) for event, event_id in from_kafka}
    for state in states:
        for event in state.events:
            found.setdefault(identity(event), DriftEvent(event, None))
    return sorted(found.values(), key=lambda e: e.event.window.end)


def triggered(registry: ConsoleRegistry, events: list[DriftEvent]) -> list[DriftEvent]:
    """Each event with the dataset version built for it and the model versions trained on that."""
    manifests: dict[str, list[DatasetManifest]] = {}
    result = []
    for drift in events:
        dataset = drift.event.dataset
        if dataset not in manifests:
            manifests[dataset] = registry.manifests(dataset) if dataset in registry.dataset_names() else []
        built = built_for(manifests[dataset], drift.id, drift.event.window.end)
        models = tuple(trained_on(registry, dataset, {built.version})) if built else ()
        result.append(DriftEvent(drift.event, drift.id, built, models))
    return result


def built_for(manifests: list[DatasetManifest], event_id: str | None, after: datetime) -> DatasetManifest | None:
    exact = next((m for m in manifests if event_id and drift_event_id(m) == event_id), None)
    return exact or next((m for m in manifests if m.trigger.startswith("drift") and m.created >= after), None)


def champion_changes(states: list[MonitorState]) -> list[tuple[datetime, str]]:
    """Where a new champion's windows begin: its references differ from its predecessor's."""
    changes = []
    for state in states[1:]:
        starts = [r.start for r in [*state.window_reports, *state.performance_reports]]
        if starts:
            changes.append((min(starts), f"champion {state.version}"))
    return changes


def _threshold(state: MonitorState, effect: str, level: str = "drift") -> float | None:
    value = (state.thresholds.get(effect) or {}).get(level)
    return float(value) if value is not None else None


def column_charts(states: list[MonitorState], events: list[DriftEvent],
                  changes: list[tuple[datetime, str]]) -> list[dict[str, Any]]:
    """One chart per column: each test's effect size per judged window, the thresholds, the events on it."""
    columns: dict[str, dict[str, tuple[list[datetime], list[float]]]] = {}
    effects: dict[str, set[str]] = {}
    for report in (r for state in states for r in state.window_reports if r.judged):
        for column in _columns(report):
            for test in column.tests:
                times, values = columns.setdefault(column.column, {}).setdefault(
                    f"{test.test} ({test.effect})", ([], []))
                times.append(report.end)
                values.append(test.effect_size)
                effects.setdefault(column.column, set()).add(test.effect)
    current = states[-1]
    result = []
    for name, series in columns.items():
        thresholds = {effect: value for effect in sorted(effects[name])
                      if (value := _threshold(current, effect)) is not None}
        marks = [(e.event.window.end, e.event.kind) for e in events if name in e.columns]
        result.append({"column": name, "figure": charts.drift_series(
            f"{name}: effect size per window", series, thresholds, marks, "effect size", changes)})
    return result


def _columns(report: WindowReport) -> list:
    return [*report.features, *([report.prediction] if report.prediction is not None else [])]


def performance_charts(states: list[MonitorState], events: list[DriftEvent],
                       changes: list[tuple[datetime, str]]) -> list[dict[str, Any]]:
    """The windowed metric against the validator's, and its relative decay against the threshold."""
    reports = [r for state in states for r in state.performance_reports if r.value is not None]
    if not reports:
        return []
    metric = reports[-1].metric
    times = [r.end for r in reports]
    marks = [(e.event.window.end, e.event.kind) for e in events if e.event.kind == "performance"]
    values = charts.drift_series(
        f"{metric} over label windows against the validator's test {metric}",
        {f"live {metric}": (times, [r.value for r in reports]),
         f"validator's {metric}": (times, [r.baseline for r in reports])}, {}, marks, metric, changes)
    decays = [(r.end, r.decay) for r in reports if r.decay is not None]
    threshold = _threshold(states[-1], "metric_decay")
    decay = charts.drift_series(
        f"relative decay of {metric} (above 0 is worse)",
        {"decay": ([t for t, _ in decays], [d for _, d in decays])},
        {"metric_decay": threshold} if threshold is not None else {}, marks, "decay", changes)
    return [{"column": metric, "figure": values}, {"column": f"{metric} decay", "figure": decay}]
