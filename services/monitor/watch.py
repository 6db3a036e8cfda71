"""One watched model: its champion version, the monitor built for it, and what to persist.

A watch judges only the champion's traffic: predictions logged by another
version (the one before a promotion, a canary) are counted and left out, and
their feedback then finds no prediction to join and ages out.

    watch = ModelWatch(champion, options, read_monitor_state(store, "fraud"))
    events = watch.add_predictions(decode_predictions(values, watch.layout, "fraud"))
    if watch.changed():
        etag = write_state(store, watch.state(), etag)
"""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc

from services.monitor import metrics
from services.monitor.champion import Champion
from services.monitor.config import MonitorOptions
from services.monitor.decider import KINDS
from services.monitor.monitor import ModelMonitor
from services.monitor.performance import Task
from services.monitor.records import DecodedFeedback, DecodedPredictions, FeatureLayout
from services.monitor.state import capture, restore
from streamml.events import DriftDetected
from streamml.registry.monitor import MonitorState


class ModelWatch:
    def __init__(self, champion: Champion, options: MonitorOptions, state: MonitorState | None = None,
                 snapshot: dict | None = None):
        """``state`` and ``snapshot`` (``ModelMonitor.snapshot``): where a checkpoint of this champion left off."""
        self.model = champion.model
        self.version = champion.version
        continues = state is not None and state.version == champion.version
        reference = champion.reference
        if continues and reference.prediction is None and state.prediction_reference is not None:
            # The prediction reference adopted from live traffic before the restart, not from drifted traffic after it.
            reference = reference.model_copy(update={"prediction": state.prediction_reference})
        self.monitor = ModelMonitor(
            reference,
            thresholds=options.thresholds_for(self.model),
            windows=options.windows,
            baseline=champion.baseline,
            label_ttl_s=options.label_ttl_s,
            max_pending=options.max_pending,
            history=options.history,
        )
        self.layout = FeatureLayout.of(reference)
        self.history = options.history
        self.events: list[DriftDetected] = list(state.events) if continues else []
        if continues:
            restore(self.monitor, state)
            if snapshot is not None:
                self.monitor.restore(snapshot)
        for kind in KINDS:
            metrics.DRIFT_ACTIVE.labels(self.model, kind).set(1 if self.monitor.decider.active(kind) else 0)
        self._saved = None if not continues else self._marks()

    @property
    def task(self) -> Task | None:
        return self.monitor.baseline.task if self.monitor.baseline is not None else None

    @property
    def classes(self) -> list[str] | None:
        return self.monitor.reference.classes

    def add_predictions(self, decoded: DecodedPredictions) -> tuple[list[DriftDetected], int]:
        """Feed the champion's predictions; returns the events and how many records were another version's
        (or a version's in shadow: scored beside the champion, never served)."""
        if len(decoded) == 0:
            return [], 0
        for flag, count in decoded.flagged.items():
            feature, _, rule = flag.partition(":")
            metrics.FLAGGED.labels(self.model, feature, rule).inc(count)
        ours = pc.equal(decoded.versions, self.version).to_numpy(zero_copy_only=False)
        if decoded.shadow is not None:
            ours = ours & ~decoded.shadow
        others = int(ours.size - np.count_nonzero(ours))
        batch = decoded.batch(None if others == 0 else ours)
        return self._kept(self.monitor.add_predictions(batch)), others

    def add_feedback(self, decoded: DecodedFeedback) -> list[DriftDetected]:
        if len(decoded) == 0:
            return []
        return self._kept(self.monitor.add_feedback(decoded.batch()))

    def poll(self, now: float) -> list[DriftDetected]:
        return self._kept(self.monitor.poll(now))

    def changed(self) -> bool:
        """True when a window closed or an event was raised since the last ``state()``."""
        if self._saved is None:
            return True
        return any(now is not then for now, then in zip(self._marks(), self._saved, strict=True))

    def state(self) -> MonitorState:
        self._saved = self._marks()
        return capture(self.monitor, self.version, self.events)

    def snapshot(self) -> dict:
        return self.monitor.snapshot()

    def _kept(self, events: list[DriftDetected]) -> list[DriftDetected]:
        if events:
            self.events = [*self.events, *events][-self.history :]
        return events

    def _marks(self) -> tuple:
        # Reports and events are appended, never changed: the newest object of each list
        # (compared by identity, and kept alive here) tells whether anything was added.
        return tuple(items[-1] if items else None
                     for items in (self.monitor.window_reports, self.monitor.performance_reports, self.events))

