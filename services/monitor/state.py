"""The watched champion's part of a checkpoint, and its readable copy (``monitor/<model>/latest.json``).

The document (``MonitorState``) and its reader live in
``streamml/registry/monitor.py``: ``streamml drift report`` and the console
read it. The monitor writes it, conditionally like the checkpoint
(``checkpoint.py``), right after each checkpoint in which a window closed or
an event was raised, to ``latest.json`` and to the copy kept per champion
version. A restart continues from the checkpoint, which holds the same document.
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


def write_state(store, state: MonitorState, etag: str | None) -> str:
    """``latest.json`` if the stored one is still ``etag`` (None: if there is none), and the copy kept for
    the champion version, which outlives its promotion; the new ETag of ``latest.json``."""
    latest, kept = monitor_state_keys(state)
    data = state.model_dump_json().encode()
    written = store.create(latest, data) if etag is None else store.replace(latest, data, etag)
    store.put(kept, data)
    return written
