"""One model's monitor: windows, the feedback join, the change detector and the decider.

Feed it batches; it returns the ``drift.detected`` events to publish::

    monitor = ModelMonitor(MonitorReference.from_card(card), baseline=PerformanceBaseline(
        task="binary", metric="auc", value=promoted.metrics["auc"]))
    events = monitor.add_predictions(PredictionBatch.from_records(predictions))
    events += monitor.add_feedback(FeedbackBatch.from_records(feedback))
    events += monitor.poll(time.time())      # closes time windows traffic stopped filling

Reports of the last windows stay in ``window_reports`` and
``performance_reports``; Prometheus metrics are updated as windows close.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa

from services.monitor import metrics
from services.monitor.decider import KINDS, DriftDecider
from services.monitor.drift import (
    MonitorThresholds,
    PerformanceReport,
    WindowReport,
    alarm_report,
    evaluate_performance,
    evaluate_window,
)
from services.monitor.labels import LabelJoin, Matched
from services.monitor.performance import PerformanceBaseline, encode_labels, prediction_errors
from services.monitor.reference import (
    PREDICTION,
    MonitorReference,
    category_reference,
    numeric_reference,
)
from services.monitor.stats.page_hinkley import ChangeAlarm, PageHinkley
from services.monitor.windows import (
    CategoryColumn,
    ClosedLabelWindow,
    ClosedWindow,
    LabelWindowAccumulator,
    Values,
    WindowAccumulator,
    WindowSpec,
    column_for,
)
from streamml.events import DriftDetected, FeedbackRecord, PredictionRecord


@dataclass(frozen=True)
class PredictionBatch:
    request_ids: pa.Array
    times: np.ndarray
    """Event time of each prediction, seconds since the epoch."""
    features: Mapping[str, Values]
    outputs: np.ndarray
    """[N] probability or value, or [N, K] class probabilities."""

    @classmethod
    def from_records(cls, records: Sequence[PredictionRecord]) -> PredictionBatch:
        names = list(records[0].features) if records else []
        return cls(
            request_ids=pa.array([record.request_id for record in records], type=pa.string()),
            times=np.asarray([record.time.timestamp() for record in records]),
            features={name: pa.array([record.features.get(name) for record in records]) for name in names},
            outputs=np.asarray([record.output for record in records], dtype=np.float64),
        )


@dataclass(frozen=True)
class FeedbackBatch:
    request_ids: pa.Array
    labels: np.ndarray | pa.Array | list
    times: np.ndarray

    @classmethod
    def from_records(cls, records: Sequence[FeedbackRecord]) -> FeedbackBatch:
        return cls(
            request_ids=pa.array([record.request_id for record in records], type=pa.string()),
            labels=[record.label for record in records],
            times=np.asarray([record.time.timestamp() for record in records]),
        )


class ModelMonitor:
    def __init__(
        self,
        reference: MonitorReference,
        thresholds: MonitorThresholds | None = None,
        windows: WindowSpec | None = None,
        baseline: PerformanceBaseline | None = None,
        *,
        label_ttl_s: float = 86_400.0,
        max_pending: int = 2_000_000,
        history: int = 100,
        seed: int = 0,
    ):
        self.reference = reference
        self.thresholds = thresholds or MonitorThresholds()
        self.windows = windows or WindowSpec()
        self.baseline = baseline
        self.decider = DriftDecider(reference, self.thresholds)
        self.window_reports: deque[WindowReport] = deque(maxlen=history)
        self.performance_reports: deque[PerformanceReport] = deque(maxlen=history)
        self._seed = seed
        self._accumulator: WindowAccumulator | None = None  # built at the first batch, when outputs show their shape
        self._labels = LabelWindowAccumulator(self.windows)
        self._join = LabelJoin(label_ttl_s, max_pending)
        ph = self.thresholds.page_hinkley
        # Binary (Brier) and multiclass (1 - p(true class)) errors lie in [0, 1]; regression errors are unbounded.
        bound = 1.0 if baseline is not None and baseline.task != "regression" else None
        self._detector = PageHinkley(ph.delta, ph.threshold, ph.block, ph.warmup, error_bound=bound)
        self._alarms: list[ChangeAlarm] = []
        self._labels_closed = 0  # labels in closed label windows, to place alarms
        self._latest_time = -np.inf

    @property
    def model(self) -> str:
        return self.reference.model

    def snapshot(self) -> dict:
        """What the monitor holds besides its reports: open windows, waiting rows, the detector, the decider.

        With ``restore`` on a monitor built the same way it continues exactly where this one stands,
        so a checkpoint (``checkpoint.py``) loses no record and repeats no judgement.
        """
        return {
            "decider": self.decider.state(),
            "accumulator": self._accumulator.snapshot() if self._accumulator is not None else None,
            "labels": self._labels.snapshot(),
            "join": self._join.snapshot(),
            "detector": self._detector.snapshot(),
            "alarms": [asdict(alarm) for alarm in self._alarms],
            "labels_closed": self._labels_closed,
            "latest_time": self._latest_time,
        }

    def restore(self, snapshot: dict) -> None:
        self.decider.restore(snapshot["decider"])
        if snapshot["accumulator"] is not None:
            self._accumulator = WindowAccumulator({}, self.windows, seed=self._seed)
            self._accumulator.restore(snapshot["accumulator"])
        self._labels.restore(snapshot["labels"])
        self._join.restore(snapshot["join"])
        self._detector.restore(snapshot["detector"])
        self._alarms = [ChangeAlarm(**alarm) for alarm in snapshot["alarms"]]
        self._labels_closed = snapshot["labels_closed"]
        self._latest_time = snapshot["latest_time"]

    def add_predictions(self, batch: PredictionBatch) -> list[DriftDetected]:
        if len(batch.times) == 0:
            return []
        columns = {**batch.features, PREDICTION: self._prediction_column(batch.outputs)}
        if self._accumulator is None:
            self._accumulator = self._build_accumulator(batch.outputs)
        # Each window is judged as it closes, before the rest of the batch is counted: a prediction
        # reference adopted from it counts the windows after it, even within this batch.
        events = [event for window in self._accumulator.add(columns, batch.times) for event in self._judge(window)]
        metrics.PREDICTIONS.labels(self.model).inc(len(batch.times))
        self._latest_time = max(self._latest_time, float(np.max(batch.times)))
        if self.baseline is not None:
            early = self._join.add_predictions(batch.request_ids, batch.outputs, batch.times)
            metrics.FEEDBACK.labels(self.model, "matched").inc(early.count)  # labels that came before
            events += self._labelled(early)
            self._expire()
        metrics.WINDOW_FILL.labels(self.model, "predictions").set(self._accumulator.fill)
        return events

    def add_feedback(self, batch: FeedbackBatch) -> list[DriftDetected]:
        if self.baseline is None or len(batch.times) == 0:
            return []
        labels = encode_labels(self.baseline.task, batch.labels, self.baseline.classes or self.reference.classes)
        matched = self._join.add_feedback(batch.request_ids, labels, batch.times)
        metrics.FEEDBACK.labels(self.model, "matched").inc(matched.count)
        events = self._labelled(matched)
        self._expire()
        return events

    def poll(self, now: float) -> list[DriftDetected]:
        events = []
        if self._accumulator is not None:
            events += [event for window in self._accumulator.poll(now) for event in self._judge(window)]
        events += [event for window in self._labels.poll(now) for event in self._judge_labels(window)]
        return events

    def _prediction_column(self, outputs: np.ndarray) -> Values:
        if outputs.ndim == 1:
            return outputs
        classes = np.asarray(self.reference.classes or [str(k) for k in range(outputs.shape[1])])
        return classes[outputs.argmax(axis=1)]

    def _build_accumulator(self, outputs: np.ndarray) -> WindowAccumulator:
        columns = {name: column_for(ref) for name, ref in self.reference.features.items()}
        if self.reference.prediction is not None or outputs.ndim == 1:
            columns[PREDICTION] = column_for(self.reference.prediction)
        else:
            columns[PREDICTION] = CategoryColumn(self.reference.classes or [str(k) for k in range(outputs.shape[1])])
        return WindowAccumulator(columns, self.windows, seed=self._seed)

    def _judge(self, window: ClosedWindow) -> list[DriftDetected]:
        report = evaluate_window(window, self.reference, self.thresholds)
        if self.reference.prediction is None and report.judged:
            self._adopt_prediction_reference(window)
        return self._decide(report)

    def _adopt_prediction_reference(self, window: ClosedWindow) -> None:
        """Without a prediction reference from training, the first judged window becomes it.

        The accumulator counts the next window with the adopted reference's bins.
        """
        live = window.columns[PREDICTION]
        column = self._accumulator.columns[PREDICTION]
        if isinstance(column, CategoryColumn):
            counts = np.repeat(np.asarray(column.vocabulary, dtype=object), live.counts[:-1])
            reference = category_reference(counts.tolist())
        else:
            reference = numeric_reference(live.sample, seed=self._seed)
        self.reference = self.reference.model_copy(update={"prediction": reference})
        self.decider.reference = self.reference
        self._accumulator.set_column(PREDICTION, column_for(reference))

    def _labelled(self, matched: Matched) -> list[DriftDetected]:
        if matched.count == 0:
            return []
        errors = prediction_errors(self.baseline.task, matched.outputs, matched.labels)
        alarms = self._detector.update(errors, matched.times)
        self._alarms += alarms
        metrics.ERROR_CHANGE.labels(self.model).set(self._detector.statistic)
        # An alarm raises at once, not when its label window closes; the window's report lists it again.
        events = []
        for alarm in alarms:
            events += self._published(self.decider.observe_alarm(alarm_report(alarm, self.thresholds)))
        for window in self._labels.add(matched.outputs, matched.labels, matched.times):
            events += self._judge_labels(window)
        metrics.WINDOW_FILL.labels(self.model, "labels").set(self._labels.fill)
        return events

    def _judge_labels(self, window: ClosedLabelWindow) -> list[DriftDetected]:
        self._labels_closed += window.count
        mine = [alarm for alarm in self._alarms if alarm.at <= self._labels_closed]
        self._alarms = [alarm for alarm in self._alarms if alarm.at > self._labels_closed]
        report = evaluate_performance(window, mine, self.baseline, self.thresholds, self.model)
        self.performance_reports.append(report)
        metrics.publish_performance(report)
        return self._decide(report)

    def _decide(self, report: WindowReport | PerformanceReport) -> list[DriftDetected]:
        if isinstance(report, WindowReport):
            self.window_reports.append(report)
            metrics.publish_window(report)
        return self._published(self.decider.observe(report))

    def _published(self, events: list[DriftDetected]) -> list[DriftDetected]:
        for event in events:
            metrics.publish_event(event)
        for kind in KINDS:
            metrics.DRIFT_ACTIVE.labels(self.model, kind).set(1 if self.decider.active(kind) else 0)
        return events

    def _expire(self) -> None:
        predictions, feedback = self._join.expire(self._latest_time)
        if predictions:
            metrics.UNLABELLED.labels(self.model).inc(predictions)
        if feedback:
            metrics.FEEDBACK.labels(self.model, "expired").inc(feedback)
        metrics.PENDING.labels(self.model).set(self._join.pending_predictions)
        metrics.LABELS_WAITING.labels(self.model).set(self._join.pending_feedback)
