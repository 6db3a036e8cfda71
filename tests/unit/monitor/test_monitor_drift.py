import numpy as np
import pytest
from pydantic import ValidationError

from services.monitor.decider import DriftDecider
from services.monitor.drift import (
    EffectLevels,
    MonitorThresholds,
    evaluate_performance,
    evaluate_window,
)
from services.monitor.performance import PerformanceBaseline, window_metric
from services.monitor.reference import MonitorReference, numeric_reference
from services.monitor.synthetic import training_reference
from services.monitor.windows import ClosedLabelWindow, WindowAccumulator, WindowSpec, column_for
from streamml.events import DriftDetected, decode, encode

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def single():
    rng = np.random.default_rng(11)
    return MonitorReference(
        model="m", dataset="d", features={"x": numeric_reference(rng.normal(0, 1, 1_000_000), seed=11)}
    )


def one_window(reference: MonitorReference, values: np.ndarray, seed: int = 0):
    spec = WindowSpec(size=values.size)
    windows = WindowAccumulator({name: column_for(ref) for name, ref in reference.features.items()}, spec, seed=seed)
    (window,) = windows.add({"x": values}, np.arange(values.size, dtype=float))
    return window


def test_a_trivial_shift_on_a_huge_window_is_significant_but_not_drift(single):
    rng = np.random.default_rng(12)
    window = one_window(single, rng.normal(0.03, 1, 2_000_000))
    report = evaluate_window(window, single, MonitorThresholds(min_count=1))
    (column,) = report.features
    psi = next(test for test in column.tests if test.test == "psi")
    assert psi.p_adjusted < 1e-6  # a p-value alone would flag it
    assert psi.effect_size < 0.01
    assert not column.drifted and not report.covariate_drift


def test_a_large_apparent_shift_on_a_tiny_window_is_not_significant(single):
    rng = np.random.default_rng(13)
    window = one_window(single, rng.normal(0, 1, 40))
    report = evaluate_window(window, single, MonitorThresholds(min_count=1))
    psi = next(test for test in report.features[0].tests if test.test == "psi")
    assert psi.effect_size >= 0.1  # sampling noise of 40 rows over 10 bins
    assert psi.p_adjusted > 0.01 and not report.covariate_drift


def test_a_real_shift_passes_both_gates_with_a_severity_from_its_effect(single):
    rng = np.random.default_rng(14)
    report = evaluate_window(one_window(single, rng.normal(1.0, 1, 20_000)), single, MonitorThresholds())
    (column,) = report.features
    assert column.drifted and report.covariate_drift
    assert report.covariate_severity == "high"  # PSI of a one-sigma shift is about 0.9
    assert {test.test for test in column.tests if test.drifted} == {"psi", "ks"}


def test_small_windows_are_reported_but_not_judged(single):
    report = evaluate_window(one_window(single, np.zeros(10)), single, MonitorThresholds(min_count=100))
    assert not report.judged and report.note == "10 predictions, fewer than min_count 100"
    assert DriftDecider(single, MonitorThresholds()).observe(report) == []


def test_the_event_names_the_drifted_columns_and_survives_the_wire():
    reference, _ = training_reference(rows=20_000)
    rng = np.random.default_rng(2)
    values = {name: np.asarray(ref.sample) for name, ref in reference.features.items() if ref.kind == "numeric"}
    columns = {name: column_for(ref) for name, ref in reference.features.items()}
    windows = WindowAccumulator(columns, WindowSpec(size=2000), seed=3)
    data = {
        **{name: rng.permutation(v)[:2000] for name, v in values.items()},
        "channel": np.full(2000, "web"),
        "country": np.full(2000, "c00"),
    }
    data["score_a"] = data["score_a"] + 2.0
    (window,) = windows.add(data, np.arange(2000.0))
    report = evaluate_window(window, reference, MonitorThresholds())
    decider = DriftDecider(reference, MonitorThresholds(consecutive_windows=1))
    (event,) = decider.observe(report)
    assert {feature.feature for feature in event.features} == {"score_a", "channel", "country"}
    assert event.kind == "covariate" and event.severity == "high"
    assert (event.model, event.dataset, event.dataset_version) == ("fraud", "transactions", 3)
    message = encode(event, source="streamml/monitor")
    decoded, _ = decode(list(message.headers.items()), message.key, message.value)
    assert isinstance(decoded, DriftDetected) and decoded == event


def test_thresholds_reject_bad_values_with_a_reason():
    with pytest.raises(ValidationError, match="need drift <= medium <= high"):
        EffectLevels(drift=0.3, medium=0.2, high=0.5)
    with pytest.raises(ValidationError, match="test 'ks' does not apply to category columns"):
        MonitorThresholds(category_tests=("ks",))


def test_a_decay_within_the_sampling_error_of_the_baseline_is_not_drift():
    rng = np.random.default_rng(40)
    scores = rng.normal(0, 1, 5_000)
    outputs = 1 / (1 + np.exp(-0.7 * scores))  # a weak model (AUC about 0.66), labels drawn from it
    window = ClosedLabelWindow(0, 0.0, 60.0, outputs, (rng.random(5_000) < outputs).astype(float))
    live, _ = window_metric("binary", "auc", window.outputs, window.labels)
    # The validator's small test split came out two of its standard errors above the model's true AUC.
    measured = PerformanceBaseline(task="binary", metric="auc", value=live + 2 * 0.02, standard_error=0.02)
    thresholds = MonitorThresholds()
    report = evaluate_performance(window, [], measured, thresholds, "m")
    assert report.decay >= thresholds.metric_decay.drift  # as large as a drift...
    assert report.p_value > thresholds.alpha and not report.metric_drift  # ...but no larger than the baseline's error
    assert report.baseline_standard_error == 0.02
    exact = measured.model_copy(update={"standard_error": None})
    assert evaluate_performance(window, [], exact, thresholds, "m").metric_drift  # what an exact baseline would say
    worse = measured.model_copy(update={"value": live / 0.8})
    assert evaluate_performance(window, [], worse, thresholds, "m").metric_drift  # a 20% loss stands out of both
