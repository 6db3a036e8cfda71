"""What one stream's application saw: what each version served and how well, the loop's events by
row, and the targets judged from them. Pure logic, tested in tests/unit/bench/test_recovery_outcome.py."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from streamml.events import DriftDetected, ModelPromoted

RECOVERY_ROWS = 30_000  # target: a retrained champion promoted within this many labelled rows of an abrupt drift
WITHIN = 0.02  # target: the retrained champion's metric within 2% of the pre-drift one


def metric_of(task: str, outputs: np.ndarray, labels: Sequence, classes: Sequence | None) -> np.ndarray:
    """Per row: 1.0 if the prediction was right, else 0.0 (binary at 0.5, multiclass by the most likely
    of the card's ``classes``), or the squared error (regression)."""
    if task == "regression":
        return (np.asarray(outputs, dtype=float) - np.asarray(labels, dtype=float)) ** 2
    if task == "binary":
        return ((np.asarray(outputs) > 0.5) == (np.asarray(labels) == 1)).astype(float)
    if classes is None:
        raise ValueError("a multiclass model's card gives no classes; the bench cannot read its outputs")
    predicted = np.asarray([str(c) for c in classes])[np.asarray(outputs).argmax(axis=1)]
    return (predicted == np.asarray([str(label) for label in labels])).astype(float)


@dataclass(frozen=True)
class Segment:
    rows: int
    value: float  # accuracy, or RMSE for regression


def segment(task: str, values: list[np.ndarray]) -> Segment | None:
    if not values:
        return None
    joined = np.concatenate(values)
    mean = float(joined.mean())
    return Segment(joined.size, float(np.sqrt(mean)) if task == "regression" else mean)


@dataclass
class Outcome:
    stream: str
    task: str
    drift_row: int
    batches: list[tuple[int, str, np.ndarray]] = field(default_factory=list)  # (first row, version, per-row values)
    served_at: list[tuple[int, float]] = field(default_factory=list)  # (first row of a request, its Unix time)
    events: list[tuple[int, float, object]] = field(default_factory=list)  # (rows served when it came, Unix time, event)
    failed: int = 0
    last_failure: str | None = None

    @property
    def metric(self) -> str:
        return "rmse" if self.task == "regression" else "accuracy"

    def add(self, first_row: int, version: str, values: np.ndarray) -> None:
        self.batches.append((first_row, version, values))

    def sent(self, first_row: int, at: float) -> None:
        self.served_at.append((first_row, at))

    def note(self, event: object, served: int, at: float) -> None:
        self.events.append((served, at, event))

    def _drift_events(self) -> list[int]:
        return [row for row, _, event in self.events if isinstance(event, DriftDetected)]

    def row_at(self, moment: float) -> int | None:
        """The first row served at or after ``moment`` (Unix time), or None if none was."""
        return next((row for row, at in self.served_at if at >= moment), None)

    @property
    def drift_time(self) -> float | None:
        return next((at for row, at in self.served_at if row >= self.drift_row), None)

    @property
    def drift_point_rows(self) -> int | None:
        """Where the first drift event says the drift began, in rows from the real drift row (< 0: before it).

        Prep's since_drift window starts there: rows before the drift row in it are the old world."""
        for _, _, event in self.events:
            if isinstance(event, DriftDetected):
                row = self.row_at(event.window.start.timestamp())
                return None if row is None else row - self.drift_row
        return None

    @property
    def events_before(self) -> int:
        return sum(row < self.drift_row for row in self._drift_events())

    @property
    def events_after(self) -> int:
        return sum(row >= self.drift_row for row in self._drift_events())

    def _after_drift(self, kind: type) -> tuple[int, float, object] | None:
        """The first event of ``kind`` that came at or after the drift row: (rows served, Unix time, event)."""
        return next(((row, at, event) for row, at, event in self.events
                     if isinstance(event, kind) and row >= self.drift_row), None)

    def _rows_and_seconds(self, kind: type) -> tuple[int, float | None] | None:
        found = self._after_drift(kind)
        if found is None:
            return None
        return found[0] - self.drift_row, None if self.drift_time is None else found[1] - self.drift_time

    @property
    def to_detection(self) -> tuple[int, float | None] | None:
        """Rows and seconds from the drift to the first drift event after it."""
        return self._rows_and_seconds(DriftDetected)

    @property
    def to_promotion(self) -> tuple[int, float | None] | None:
        """Rows and seconds from the drift to the first promotion after it: the retrained champion."""
        return self._rows_and_seconds(ModelPromoted)

    @property
    def rows_to_promotion(self) -> int | None:
        return None if self.to_promotion is None else self.to_promotion[0]

    def _retrain(self) -> tuple[int, str] | None:
        found = self._after_drift(ModelPromoted)
        return None if found is None else (found[0], found[2].version)

    def before(self) -> Segment | None:
        return segment(self.task, [values for row, _, values in self.batches if row < self.drift_row])

    def right_after(self) -> Segment | None:
        """From the drift until the retrained champion answers: the old champion on the new world."""
        retrained = self._retrain()
        return segment(self.task, [values for row, version, values in self.batches
                                   if row >= self.drift_row and (retrained is None or version != retrained[1])])

    def after_recovery(self) -> Segment | None:
        retrained = self._retrain()
        if retrained is None:
            return None
        return segment(self.task, [values for row, version, values in self.batches
                                   if row >= self.drift_row and version == retrained[1]])

    def finished(self, after_rows: int, give_up_rows: int, served: int) -> bool:
        recovered = self.after_recovery()
        return (recovered is not None and recovered.rows >= after_rows) or served >= self.drift_row + give_up_rows


def targets(outcome: Outcome) -> list[tuple[bool, str]]:
    """Each target of the bench, in order: (met, the numbers that say so)."""
    before, after = outcome.before(), outcome.after_recovery()
    if before is None or after is None:
        level = (False, "no retrained champion served")
    else:
        change = (after.value - before.value) / before.value
        worse = -change if outcome.metric == "accuracy" else change
        level = (worse <= WITHIN, f"{outcome.metric} {before.value:.4f} -> {after.value:.4f} ({change:+.1%})")
    rows = outcome.rows_to_promotion
    recovery = (rows is not None and rows <= RECOVERY_ROWS,
                "none" if rows is None else f"{rows:,} rows")
    one_event = (outcome.events_before == 0 and outcome.events_after == 1,
                 f"{outcome.events_before} before, {outcome.events_after} after the drift")
    failures = (outcome.failed == 0, f"{outcome.failed} failed")
    return [level, recovery, one_event, failures]
