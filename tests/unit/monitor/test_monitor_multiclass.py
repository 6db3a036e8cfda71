"""Multiclass models of integer, boolean or text classes are watched; labels are counted whichever came first."""

import numpy as np
import pytest
from prometheus_client import REGISTRY

from services.monitor.drift import MonitorThresholds
from services.monitor.monitor import FeedbackBatch, ModelMonitor
from services.monitor.service import feature_names
from services.monitor.synthetic import (
    feedback_batch,
    multiclass_reference,
    multiclass_traffic,
    prediction_batch,
    traffic,
    training_reference,
)
from services.monitor.windows import WindowSpec
from streamml.events import DriftDetected, DriftWindow, FeatureDrift

pytestmark = pytest.mark.unit
START = 1.7e9
SPEC = WindowSpec(size=2_000, label_size=2_000, sample_size=300)
THRESHOLDS = MonitorThresholds(min_count=500, min_labels=500)


def sample(name: str, model: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, {"model": model, **labels}) or 0.0


@pytest.mark.parametrize("classes", [[0, 1, 2], ["low", "mid", "high"]], ids=str)
def test_a_multiclass_model_is_judged_on_labels_of_its_class_type(classes):
    reference, baseline = multiclass_reference(classes)
    model = f"multi-{'-'.join(map(str, classes))}"
    reference = reference.model_copy(update={"model": model})
    monitor = ModelMonitor(reference, THRESHOLDS, SPEC, baseline)
    data = multiclass_traffic(np.random.default_rng(7), 4_000, classes)
    times = START + np.arange(4_000) / 100.0
    assert monitor.add_predictions(prediction_batch(data, 0, times)) == []
    labels = data.labels.tolist()  # as JSON gave them: integers or text
    assert monitor.add_feedback(FeedbackBatch(feedback_batch(data, 0, times).request_ids, labels, times + 5)) == []
    (first, second) = monitor.window_reports
    assert first.judged and not first.prediction_drift and not second.prediction_drift
    assert sorted(second.prediction.bins[:3]) == sorted(reference.classes)  # the predicted class, as its text
    reports = monitor.performance_reports
    assert [report.count for report in reports] == [2_000, 2_000]
    assert not any(report.drifted for report in reports)
    assert reports[0].value == pytest.approx(baseline.value, rel=0.1)


def test_labels_that_come_before_their_predictions_are_counted_as_matched_and_shown_waiting():
    reference, baseline = training_reference(seed=1, rows=20_000)
    reference = reference.model_copy(update={"model": "early-labels"})
    monitor = ModelMonitor(reference, THRESHOLDS, SPEC, baseline)
    data = traffic(np.random.default_rng(3), 1_000)
    times = START + np.arange(1_000) / 100.0
    before = sample("streamml_monitor_feedback_total", "early-labels", outcome="matched")
    monitor.add_feedback(feedback_batch(data, 0, times))
    assert sample("streamml_monitor_labels_waiting", "early-labels") == 1_000
    assert sample("streamml_monitor_feedback_total", "early-labels", outcome="matched") == before
    monitor.add_predictions(prediction_batch(data, 0, times))
    assert sample("streamml_monitor_feedback_total", "early-labels", outcome="matched") == before + 1_000
    assert sample("streamml_monitor_labels_waiting", "early-labels") == 0


def test_an_events_features_are_named_once_each():
    def drift(feature: str, test: str) -> FeatureDrift:
        return FeatureDrift(feature=feature, test=test, statistic=0.3, effect_size=0.3)

    window = DriftWindow(start="2026-01-01T00:00:00Z", end="2026-01-01T01:00:00Z", count=10)
    event = DriftDetected(model="m", dataset="d", kind="covariate", window=window, severity="high",
                          features=[drift("amount", "psi"), drift("amount", "ks"), drift("country", "chi2")])
    assert feature_names(event) == ["amount", "country"]
