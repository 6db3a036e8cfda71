"""What the monitor keeps of a model: ``monitor/<model>/latest.json``.

The monitor writes it, with a conditional write, after each checkpoint of
the model in which a window closed or an event was raised
(``services/monitor/state.py``; the checkpoint, ``monitor/<model>/checkpoint.npz``,
holds the same document and is what a restarted monitor continues from). It
holds the last window reports, the last events, the prediction reference
adopted from live traffic, and the drift episodes (streaks and cooldowns).
``streamml drift report`` and any console read it here. The monitor writes
the same state to ``monitor/<model>/versions/<version>.json`` too, so what it
saw of each champion outlives the next promotion, when a new champion starts
with empty windows.

``monitor/<model>/unwatched.json`` (``UnwatchedChampion``) says why the
monitor cannot watch the model's champion (a card that gives no reference,
say), while it cannot: ``streamml status`` shows the model degraded and
``streamml drift report`` names the reason.

    state = read_monitor_state(store, "fraud")     # None before the first window closes
    state.latest_judged(), state.active(), state.events[-1]
    for state in read_monitor_history(store, "fraud", champions=3): ...   # oldest first
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from streamml.events import DriftDetected
from streamml.manifest import CategoryReference, NumericReference
from streamml.registry.documents import read_document
from streamml.registry.keys import (
    MONITOR_ROOT,
    MONITOR_UNWATCHED_FILE,
    monitor_state_key,
    monitor_unwatched_key,
    monitor_version_state_key,
    monitor_versions_prefix,
)
from streamml.store import ObjectStore, ReadableStore

Severity = Literal["low", "medium", "high"]
Kind = Literal["covariate", "prediction", "performance"]


class Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TestReport(Strict):
    test: str
    statistic: float
    p_value: float
    p_adjusted: float
    effect: str
    effect_size: float
    drifted: bool
    severity: Severity | None


class ColumnReport(Strict):
    column: str
    kind: Literal["numeric", "category"]
    count: int
    missing: int
    bins: list[str]
    live: list[float] = Field(description="share of the window per bin")
    reference: list[float] = Field(description="share of the reference per bin")
    tests: list[TestReport]
    drifted: bool
    severity: Severity | None
    residual: bool = Field(False, description="a test is significant with at least hold_share of its drift level")


class Window(Strict):
    """What every report says first: which window of which model, and whether it was judged."""

    model: str
    index: int
    start: datetime
    end: datetime
    count: int
    judged: bool
    note: str | None = None


class WindowReport(Window):
    """How one window of predictions compared with the reference."""

    features: list[ColumnReport] = []
    prediction: ColumnReport | None = None
    covariate_drift: bool = False
    covariate_severity: Severity | None = None
    prediction_drift: bool = False
    prediction_severity: Severity | None = None
    covariate_residual: bool = False
    prediction_residual: bool = False


class AlarmReport(Strict):
    at: int = Field(description="labelled predictions seen when the detector fired")
    change_at: int = Field(description="where the error most likely began to rise (same count)")
    at_time: datetime | None = Field(None, description="event time of the feedback that made it fire")
    change_time: datetime | None = Field(None, description="event time of the feedback at change_at")
    mean_before: float
    mean_after: float
    statistic: float
    relative_increase: float
    drifted: bool
    severity: Severity | None = None


class MetricCheck(Strict):
    """One more metric of a label window against the validator's test value of it, judged as ``metric`` is."""

    metric: str
    value: float | None = None
    standard_error: float | None = None
    baseline: float
    baseline_standard_error: float | None = None
    decay: float | None = Field(None, description="relative loss against the baseline; > 0 is worse")
    p_value: float | None = None
    drifted: bool = False
    residual: bool = False
    severity: Severity | None = None


class PerformanceReport(Window):
    """How one window of labelled predictions compared with the validator's test metric."""

    metric: str
    value: float | None = None
    standard_error: float | None = None
    baseline: float | None = None
    baseline_standard_error: float | None = Field(None, description="the validator's sampling error of it")
    decay: float | None = Field(None, description="relative loss against the baseline; > 0 is worse")
    p_value: float | None = None
    metric_drift: bool = False
    residual: bool = Field(False, description="a significant decay of at least hold_share of its drift level")
    others: list[MetricCheck] = Field(
        default_factory=list, description="the other metrics the promotion policy names, each judged the same way"
    )
    alarms: list[AlarmReport] = []
    drifted: bool = False
    severity: Severity | None = None


class EpisodeState(Strict):
    streak: int = 0
    clean: int = 0
    reported: bool = False
    cooldown_windows: int = 0
    cooldown_until: datetime | None = None


class MonitorState(Strict):
    """The content of ``monitor/<model>/latest.json``."""

    model: str
    version: str
    dataset: str
    dataset_version: int | None
    updated: datetime
    prediction_reference: NumericReference | CategoryReference | None = None
    thresholds: dict[str, Any] = Field(
        default_factory=dict,
        description="the thresholds that judged these windows (MonitorThresholds of services/monitor/drift.py); "
        "empty in a state written before they were recorded",
    )
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


def read_monitor_state(store: ReadableStore, model: str) -> MonitorState | None:
    """The stored state of ``model``; None when the monitor never wrote one."""
    return read_document(store, monitor_state_key(model), MonitorState, "a monitor state",
                         "delete it and the monitor writes a new one")


def read_monitor_history(store: ObjectStore, model: str, champions: int) -> list[MonitorState]:
    """The states of the last ``champions`` champion versions the monitor watched, oldest first."""
    kept = sorted(store.list_details(monitor_versions_prefix(model)), key=lambda item: item.modified)[-champions:]
    fix = "delete it; the monitor writes it again while that version is champion"
    states = [read_document(store, item.key, MonitorState, "a monitor state", fix) for item in kept]
    return [state for state in states if state is not None]


def monitor_state_keys(state: MonitorState) -> tuple[str, str]:
    """Where ``state`` is written: ``latest.json``, and the copy kept for its champion version."""
    return monitor_state_key(state.model), monitor_version_state_key(state.model, state.version)


class UnwatchedChampion(Strict):
    """The content of ``monitor/<model>/unwatched.json``: written when the monitor fails to watch the
    champion, deleted once it watches one."""

    model: str
    version: str | None
    """None when the champion pointer itself could not be read."""
    reason: str
    since: datetime


def read_unwatched(store: ReadableStore, model: str) -> UnwatchedChampion | None:
    """Why the monitor cannot watch ``model``'s champion; None when nothing stops it."""
    return read_document(store, monitor_unwatched_key(model), UnwatchedChampion, "an unwatched-champion note",
                         "delete it; the monitor writes it again if it still cannot watch the champion")


def read_all_unwatched(store: ObjectStore) -> list[UnwatchedChampion]:
    """Every model whose champion the monitor cannot watch, by model name."""
    keys = [key for key in store.list(MONITOR_ROOT) if key.endswith("/" + MONITOR_UNWATCHED_FILE)]
    fix = "delete it; the monitor writes it again if it still cannot watch the champion"
    notes = [read_document(store, key, UnwatchedChampion, "an unwatched-champion note", fix) for key in keys]
    return [note for note in notes if note is not None]
