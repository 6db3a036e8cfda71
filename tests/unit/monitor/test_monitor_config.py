"""The monitor's settings: every key is read, and a bad or unused one stops the service at start."""

import json

import pytest
from pydantic import ValidationError

from services.monitor.config import MonitorOptions
from services.monitor.drift import MonitorThresholds
from services.monitor.service import MonitorSettings
from streamml.settings import SettingsError, load_settings

pytestmark = pytest.mark.unit


def test_per_model_overrides_replace_only_the_fields_they_name():
    options = MonitorOptions(thresholds=MonitorThresholds(alpha=0.001), overrides={"fraud": {"consecutive_windows": 1}})
    fraud, other = options.thresholds_for("fraud"), options.thresholds_for("churn")
    assert (fraud.consecutive_windows, fraud.alpha) == (1, 0.001)
    assert other.consecutive_windows == 2
    with pytest.raises(ValidationError, match="overrides.fraud: alpha"):
        MonitorOptions(overrides={"fraud": {"alpha": 2}})
    with pytest.raises(ValidationError, match="overrides.fraud: alhpa: Extra inputs are not permitted"):
        MonitorOptions(overrides={"fraud": {"alhpa": 0.1}})


def test_overrides_of_a_model_that_is_not_watched_stop_the_service():
    with pytest.raises(ValidationError, match=r"overrides.churn: 'churn' is not among the watched models \['fraud'\]"):
        MonitorOptions(models=["fraud"], overrides={"churn": {"consecutive_windows": 1}})


@pytest.mark.parametrize(("variable", "value", "named"), [
    # Judging gates are thresholds; a window spec that names them was never read.
    ("STREAMML_MONITOR_WINDOWS", {"size": 10_000, "min_count": 5_000}, "STREAMML_MONITOR_WINDOWS_MIN_COUNT"),
    ("STREAMML_MONITOR_WINDOWS", {"label_size": 5_000, "min_labels": 900}, "STREAMML_MONITOR_WINDOWS_MIN_LABELS"),
    ("STREAMML_MONITOR_THRESHOLDS", {"min_cuont": 5_000}, "STREAMML_MONITOR_THRESHOLDS_MIN_CUONT"),
])
def test_unknown_keys_stop_the_service_at_start_naming_the_setting(monkeypatch, variable, value, named):
    monkeypatch.setenv(variable, json.dumps(value))
    with pytest.raises(SettingsError, match=f"unknown setting {named}"):
        load_settings(MonitorSettings)


def test_thresholds_min_count_and_min_labels_are_the_settings_that_gate_judging(monkeypatch):
    monkeypatch.setenv("STREAMML_MONITOR_THRESHOLDS", json.dumps({"min_count": 5_000, "min_labels": 900}))
    options = load_settings(MonitorSettings).monitor
    assert (options.thresholds.min_count, options.thresholds.min_labels) == (5_000, 900)
