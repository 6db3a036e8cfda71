"""Prometheus metrics of the monitor; ``dashboards/streamml-monitor.json`` plots these names.

Labels: ``model`` everywhere, ``feature`` per tested column (``prediction``
for the model's outputs), ``test`` per statistical test. Gauges hold the
latest judged window; counters add up since the process started.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from services.monitor.drift import PerformanceReport, WindowReport
from streamml.events import DriftDetected

PREDICTIONS = Counter("streamml_monitor_predictions_total", "Predictions added to windows", ["model"])
FEEDBACK = Counter(
    "streamml_monitor_feedback_total",
    "Feedback rows by outcome: matched to a prediction (whichever came first), or expired waiting for one",
    ["model", "outcome"],
)
UNLABELLED = Counter(
    "streamml_monitor_unlabelled_predictions_total", "Predictions that aged out before their feedback came", ["model"]
)
FLAGGED = Counter(
    "streamml_monitor_flagged_inputs_total",
    "Logged predictions whose input broke a rule of the dataset spec (SDK input checks 'flag'), by feature and rule;"
    " divided by streamml_monitor_predictions_total it is the data-quality rate",
    ["model", "feature", "rule"],
)
PENDING = Gauge("streamml_monitor_pending_predictions", "Predictions waiting for their feedback", ["model"])
LABELS_WAITING = Gauge(
    "streamml_monitor_labels_waiting", "Feedback rows that came before their prediction and wait for it", ["model"]
)
WINDOWS = Counter(
    "streamml_monitor_windows_total",
    "Closed windows by stream (predictions, labels) and judged",
    ["model", "stream", "judged"],
)
WINDOW_FILL = Gauge("streamml_monitor_window_fill", "Share of the open window filled, 0..1", ["model", "stream"])
WINDOW_COUNT = Gauge("streamml_monitor_window_count", "Rows in the last closed window", ["model", "stream"])
STATISTIC = Gauge(
    "streamml_monitor_feature_statistic", "Test statistic of the last judged window", ["model", "feature", "test"]
)
EFFECT = Gauge(
    "streamml_monitor_feature_effect_size",
    "Effect size (PSI or KS distance) of the last judged window",
    ["model", "feature", "test"],
)
P_VALUE = Gauge(
    "streamml_monitor_feature_p_value", "Corrected p-value of the last judged window", ["model", "feature", "test"]
)
FEATURE_DRIFT = Gauge(
    "streamml_monitor_feature_drift", "1 when the column drifted in the last judged window", ["model", "feature"]
)
LIVE_METRIC = Gauge("streamml_monitor_live_metric", "Metric over the last judged label window", ["model", "metric"])
BASELINE_METRIC = Gauge("streamml_monitor_baseline_metric", "The promoted model's test metric", ["model", "metric"])
METRIC_DECAY = Gauge(
    "streamml_monitor_metric_decay", "Relative loss of the live metric against the baseline", ["model", "metric"]
)
ERROR_CHANGE = Gauge(
    "streamml_monitor_error_change_statistic",
    "Page-Hinkley statistic on the error stream (alarm at its threshold)",
    ["model"],
)
ERROR_ALARMS = Counter(
    "streamml_monitor_error_change_alarms_total", "Page-Hinkley alarms on the error stream", ["model"]
)
DRIFT_ACTIVE = Gauge("streamml_monitor_drift_active", "1 while a reported drift episode lasts", ["model", "kind"])
DRIFT_EVENTS = Counter(
    "streamml_monitor_drift_events_total", "drift.detected events raised", ["model", "kind", "severity"]
)


def publish_window(report: WindowReport) -> None:
    WINDOWS.labels(report.model, "predictions", str(report.judged).lower()).inc()
    WINDOW_COUNT.labels(report.model, "predictions").set(report.count)
    columns = [*report.features, *([report.prediction] if report.prediction is not None else [])]
    for column in columns:
        FEATURE_DRIFT.labels(report.model, column.column).set(1 if column.drifted else 0)
        for test in column.tests:
            labels = (report.model, column.column, test.test)
            STATISTIC.labels(*labels).set(test.statistic)
            EFFECT.labels(*labels).set(test.effect_size)
            P_VALUE.labels(*labels).set(test.p_adjusted)


def publish_performance(report: PerformanceReport) -> None:
    WINDOWS.labels(report.model, "labels", str(report.judged).lower()).inc()
    WINDOW_COUNT.labels(report.model, "labels").set(report.count)
    ERROR_ALARMS.labels(report.model).inc(len(report.alarms))
    if report.baseline is not None:
        BASELINE_METRIC.labels(report.model, report.metric).set(report.baseline)
    if report.value is not None:
        LIVE_METRIC.labels(report.model, report.metric).set(report.value)
    if report.decay is not None:
        METRIC_DECAY.labels(report.model, report.metric).set(report.decay)
    for check in report.others:  # the other metrics the policy names, each class's recall on its own
        BASELINE_METRIC.labels(report.model, check.metric).set(check.baseline)
        if check.value is not None:
            LIVE_METRIC.labels(report.model, check.metric).set(check.value)
        if check.decay is not None:
            METRIC_DECAY.labels(report.model, check.metric).set(check.decay)


def publish_event(event: DriftDetected) -> None:
    DRIFT_EVENTS.labels(event.model, event.kind, event.severity).inc()
