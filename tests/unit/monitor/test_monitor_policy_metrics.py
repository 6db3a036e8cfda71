"""Every metric the promotion policy names is watched against the validator's test value of it."""

from datetime import UTC, datetime

import numpy as np
import pytest

from services.monitor.champion import baseline_from, policy_metrics, read_champion_setup
from services.monitor.drift import MonitorThresholds, evaluate_performance
from services.monitor.monitor import ModelMonitor
from services.monitor.performance import MetricBaseline, PerformanceBaseline, window_metric
from services.monitor.synthetic import feedback_batch, prediction_batch, traffic, training_reference
from services.monitor.synthetic_registry import put_champion, synthetic_card
from services.monitor.windows import ClosedLabelWindow, WindowSpec
from streamml.registry.decisions import DecisionRecord, Evaluation, MetricInterval
from streamml.registry.keys import decision_key
from tests.memory_store import MemoryStore

pytestmark = pytest.mark.unit
POLICY = {"model": "fraud", "min": {"auc": 0.8}, "max": {"log_loss": 0.35}, "max_regression": {"log_loss": 0.02},
          "min_improvement": {"accuracy": 0.001, "rmse": 0.1}, "slices": [{"feature": "channel", "min": {"auc": 0.7}}]}


def interval(error: float) -> MetricInterval:
    return MetricInterval(standard_error=error, low=0.0, high=1.0, method="mean")


def test_the_policys_metrics_are_watched_beside_the_selection_metric_with_the_validators_values():
    assert policy_metrics(POLICY) == ["auc", "log_loss", "accuracy", "rmse"]
    test = Evaluation(rows=5_000, metrics={"auc": 0.85, "log_loss": 0.31, "accuracy": 0.89},
                      intervals={"auc": interval(0.005), "log_loss": interval(0.004)})
    card = {"task": "binary", "selection": {"metric": "auc"}, "metrics": {"auc": 0.84}}
    baseline = baseline_from(card, test, POLICY)
    assert (baseline.metric, baseline.value, baseline.standard_error) == ("auc", 0.85, 0.005)
    # rmse is no binary metric; accuracy has no recorded sampling error.
    assert baseline.others == {"log_loss": MetricBaseline(value=0.31, standard_error=0.004),
                               "accuracy": MetricBaseline(value=0.89, standard_error=None)}
    assert baseline_from(card, test).others == {}  # no policy recorded: the selection metric alone
    assert baseline_from(card, None, POLICY).others == {}  # no test values to compare with


def test_the_champion_is_watched_on_the_metrics_of_the_policy_its_decision_applied():
    reference, baseline = training_reference(seed=1, rows=5_000)
    store = MemoryStore()
    put_champion(store, synthetic_card(reference, "v1", baseline))
    test = Evaluation(rows=5_000, metrics={"auc": 0.85, "log_loss": 0.31, "accuracy": 0.89})
    decision = DecisionRecord(model="fraud", version="v1", promote=True, reasons=[], notes=[], candidate=test,
                              champion_version=None, champion=None, policy=POLICY, actor="validator",
                              time=datetime(2026, 3, 1, tzinfo=UTC))
    store.put(decision_key("fraud", "v1"), decision.model_dump_json().encode())
    watched = read_champion_setup(store, "fraud").baseline
    assert (watched.metric, watched.value, sorted(watched.others)) == ("auc", 0.85, ["accuracy", "log_loss"])


def calibrated_window(rng: np.random.Generator, rows: int, power: float = 1.0) -> ClosedLabelWindow:
    """Labels drawn from the model's probabilities, the outputs then raised to ``power``: a monotone change,
    so AUC does not move while accuracy and log-loss do."""
    outputs = rng.beta(2, 2, rows)
    labels = (rng.random(rows) < outputs).astype(np.float64)
    return ClosedLabelWindow(0, 0.0, 60.0, outputs**power, labels)


def test_a_metric_of_the_policy_drifts_while_the_selection_metric_holds():
    rng = np.random.default_rng(8)
    honest = calibrated_window(rng, 20_000)
    values = {metric: window_metric("binary", metric, honest.outputs, honest.labels)[0]
              for metric in ("auc", "accuracy", "log_loss")}
    baseline = PerformanceBaseline(task="binary", metric="auc", value=values["auc"], standard_error=0.003, others={
        "accuracy": MetricBaseline(value=values["accuracy"], standard_error=0.003),
        "log_loss": MetricBaseline(value=values["log_loss"], standard_error=0.003)})
    thresholds = MonitorThresholds()
    clean = evaluate_performance(calibrated_window(rng, 5_000), [], baseline, thresholds, "m")
    assert clean.judged and not clean.drifted and [check.metric for check in clean.others] == ["accuracy", "log_loss"]

    skewed = evaluate_performance(calibrated_window(rng, 5_000, power=4.0), [], baseline, thresholds, "m")
    assert not skewed.metric_drift and abs(skewed.decay) < 0.05  # AUC, the selection metric, holds
    assert skewed.drifted and {check.metric for check in skewed.others if check.drifted} == {"accuracy", "log_loss"}
    accuracy = next(check for check in skewed.others if check.metric == "accuracy")
    assert accuracy.decay > thresholds.metric_decay.drift and accuracy.p_value < thresholds.alpha
    assert skewed.severity is not None


def test_a_decay_of_a_policy_metric_raises_one_performance_event_for_the_whole_drift():
    reference, baseline = training_reference(seed=1, rows=20_000)
    rng = np.random.default_rng(12)
    test = traffic(rng, 20_000)
    accuracy, error = window_metric("binary", "accuracy", test.outputs, test.labels)
    watched = baseline.model_copy(update={"others": {"accuracy": MetricBaseline(value=accuracy, standard_error=error)}})
    spec = WindowSpec(size=2_000, label_size=2_000, sample_size=300)
    monitor = ModelMonitor(reference.model_copy(update={"model": "policy-metrics"}),
                           MonitorThresholds(min_count=500, min_labels=500), spec, watched)
    events = []
    for number in range(8):
        data = traffic(rng, 2_000)
        if number >= 3:  # from here positives are more common for the same inputs: the ranking holds, accuracy falls
            shifted = 1 / (1 + np.exp(-(np.log(data.outputs / (1 - data.outputs)) + 1.5)))
            data = type(data)(data.features, data.outputs, (rng.random(2_000) < shifted).astype(np.float64))
        times = 1.7e9 + number * 2_000 + np.arange(2_000.0)
        events += monitor.add_predictions(prediction_batch(data, number * 2_000, times))
        events += monitor.add_feedback(feedback_batch(data, number * 2_000, times + 1))
    assert [event.kind for event in events] == ["performance"]  # one drift, one event, whichever metrics show it
    drifted = [[check.metric for check in report.others if check.drifted] for report in monitor.performance_reports]
    assert drifted[:3] == [[], [], []] and all(metrics == ["accuracy"] for metrics in drifted[3:]), drifted
    assert not any(report.metric_drift for report in monitor.performance_reports)  # AUC alone would not tell


def class_window(rng: np.random.Generator, rows: int, found: tuple[float, float, float]) -> ClosedLabelWindow:
    """Three classes in equal shares; the model predicts class ``c`` for a row of it with chance ``found[c]``,
    else the next class."""
    labels = rng.integers(0, 3, rows)
    hit = rng.random(rows) < np.asarray(found)[labels]
    outputs = np.full((rows, 3), 0.1)
    outputs[np.arange(rows), np.where(hit, labels, (labels + 1) % 3)] = 0.8
    return ClosedLabelWindow(0, 0.0, 60.0, outputs, labels.astype(np.float64))


def test_recall_per_class_is_watched_on_each_class_of_the_validators_test():
    classes = ["low", "mid", "high"]
    test = Evaluation(rows=3_000, metrics={"accuracy": 0.8, "log_loss": 0.6, "recall[low]": 0.85,
                                           "recall[mid]": 0.75, "recall[high]": None},
                      intervals={"recall[low]": interval(0.01), "recall[mid]": interval(0.012)})
    card = {"task": "multiclass", "selection": {"metric": "log_loss"}, "outputs": {"classes": classes}}
    baseline = baseline_from(card, test, {"model": "grade", "min": {"recall_per_class": 0.5}})
    # "high" had no test rows: the validator has no value of its recall to compare with.
    assert baseline.others == {"recall[low]": MetricBaseline(value=0.85, standard_error=0.01),
                               "recall[mid]": MetricBaseline(value=0.75, standard_error=0.012)}
    assert baseline.better_of("recall[mid]") == "max"


def test_one_class_losing_its_recall_is_performance_drift_on_that_class():
    rng = np.random.default_rng(21)
    honest = class_window(rng, 30_000, (0.9, 0.9, 0.9))
    classes = ["low", "mid", "high"]
    values = {name: window_metric("multiclass", f"recall[{name}]", honest.outputs, honest.labels, classes)
              for name in classes}
    assert values["mid"][0] == pytest.approx(0.9, abs=0.01) and values["mid"][1] == pytest.approx(0.003, abs=0.001)
    # Without class names the class is its column; a class the model does not have is undefined.
    assert window_metric("multiclass", "recall[1]", honest.outputs, honest.labels) == values["mid"]
    assert np.isnan(window_metric("multiclass", "recall[top]", honest.outputs, honest.labels, classes)[0])
    accuracy, error = window_metric("multiclass", "accuracy", honest.outputs, honest.labels)
    baseline = PerformanceBaseline(task="multiclass", metric="accuracy", value=accuracy, standard_error=error,
                                   classes=classes, others={f"recall[{name}]": MetricBaseline(
                                       value=value, standard_error=value_error)
                                       for name, (value, value_error) in values.items()})
    thresholds = MonitorThresholds()
    clean = evaluate_performance(class_window(rng, 3_000, (0.9, 0.9, 0.9)), [], baseline, thresholds, "grade")
    assert clean.judged and not clean.drifted
    assert [check.metric for check in clean.others] == ["recall[low]", "recall[mid]", "recall[high]"]
    # "mid" is found half as often; "high" a little more often, so accuracy falls less than mid's recall.
    skewed = evaluate_performance(class_window(rng, 3_000, (0.9, 0.45, 0.97)), [], baseline, thresholds, "grade")
    assert skewed.drifted and [check.metric for check in skewed.others if check.drifted] == ["recall[mid]"]
    mid = next(check for check in skewed.others if check.metric == "recall[mid]")
    assert mid.value == pytest.approx(0.45, abs=0.05) and mid.decay > 0.4
