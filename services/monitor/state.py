"""What the monitor keeps of a model between restarts, and shows to ``streamml drift report``.

One object per model, ``monitor/<model>/latest.json``, rewritten whenever a
window closes or an event is raised, before the consumed offsets are
committed. It holds the last window reports, the last events, the prediction
reference adopted from live traffic, and the decider's episodes (streaks and
cooldowns), so a restarted monitor continues an ongoing drift episode instead
of announcing it again. Open windows are not kept: a restart starts them empty.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, ValidationError

from services.monitor.drift import Kind, PerformanceReport, WindowReport
from services.monitor.monitor import ModelMonitor
from services.monitor.reference import ColumnReference
from streamml.events import DriftDetected
from streamml.sdk.registry import RegistryError, check_name
from streamml.store import ObjectNotFound


class Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EpisodeState(Strict):
    streak: int = 0
    clean: int = 0
    reported: bool = False
    cooldown_windows: int = 0
    cooldown_until: datetime | None = None


class MonitorState(Strict):
    model: str
    version: str
    dataset: str
    dataset_version: int | None
    updated: datetime
    prediction_reference: ColumnReference | None = None
    episodes: dict[Kind, EpisodeState] = {}
    events: list[DriftDetected] = []
    window_reports: list[WindowReport] = []
    performance_reports: list[PerformanceReport] = []

    def active(self) -> list[Kind]:
        return [kind for kind, episode in self.episodes.items() if episode.reported]

    def latest_judged(self) -> WindowReport | None:
        """The newest judged window, else the newest window, else None."""
        judged = [report for report in self.window_reports if report.judged]
        return (judged or self.window_reports or [None])[-1]


def state_key(model: str) -> str:
    return f"monitor/{check_name(model)}/latest.json"


def capture(monitor: ModelMonitor, version: str, events: list[DriftDetected], now: datetime | None = None) -> MonitorState:
    reference = monitor.reference
    return MonitorState(
        model=reference.model,
        version=version,
        dataset=reference.dataset,
        dataset_version=reference.dataset_version,
        updated=now or datetime.now(UTC),
        prediction_reference=reference.prediction,
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


def read_state(store, model: str) -> MonitorState | None:
    """The stored state of ``model``; None when the monitor never wrote one."""
    key = state_key(model)
    try:
        data = store.get(key).data
    except ObjectNotFound:
        return None
    try:
        return MonitorState.model_validate_json(data)
    except ValidationError as error:
        raise RegistryError(
            f"{key} is not a monitor state ({error.error_count()} problems, first: "
            f"{error.errors(include_url=False)[0]['msg']}); delete it and the monitor writes a new one"
        ) from None


def write_state(store, state: MonitorState) -> None:
    store.put(state_key(state.model), state.model_dump_json().encode())
