"""Writing what the monitor keeps of a model between restarts (``monitor/<model>/latest.json``).

The document (``MonitorState``) and its reader live in
``streamml/registry/monitor.py``: ``streamml drift report`` and the console
read it too. It is rewritten whenever a window closes or an event is raised,
before the consumed offsets are committed, to ``latest.json`` and to the
copy kept per champion version. Open windows are not kept: a restart starts
them empty.
"""

from __future__ import annotations

from datetime import UTC, datetime

from services.monitor.monitor import ModelMonitor
from streamml.events import DriftDetected
from streamml.registry.monitor import MonitorState, monitor_state_keys


def capture(monitor: ModelMonitor, version: str, events: list[DriftDetected], now: datetime | None = None) -> MonitorState:
    reference = monitor.reference
    return MonitorState(
        model=reference.model,
        version=version,
        dataset=reference.dataset,
        dataset_version=reference.dataset_version,
        updated=now or datetime.now(UTC),
        prediction_reference=reference.prediction,
        thresholds=monitor.thresholds.model_dump(mode="json"),
        episodes=monitor.decider.state(),
        events=events,
        window_reports=list(monitor.window_reports),
        performance_reports=list(monitor.performance_reports),
    )


def restore(monitor: ModelMonitor, state: MonitorState) -> None:
    """Continue from ``state``: report history and drift episodes (call before the first batch)."""
    monitor.window_reports.extend(state.window_reports)
    monitor.performance_reports.extend(state.performance_reports)
    monitor.decider.restore({kind: episode.model_dump(mode="json") for kind, episode in state.episodes.items()})


def write_state(store, state: MonitorState) -> None:
    """``latest.json``, and the copy kept for the champion version, which outlives its promotion."""
    data = state.model_dump_json().encode()
    for key in monitor_state_keys(state):
        store.put(key, data)
