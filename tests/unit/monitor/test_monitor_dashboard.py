import json
import re
from pathlib import Path

import pytest
from prometheus_client.metrics import MetricWrapperBase

from services.monitor import metrics

pytestmark = pytest.mark.unit
DASHBOARD = Path(__file__).parents[3] / "dashboards" / "streamml-monitor.json"
SELECTOR = re.compile(r"\b((?:streamml|kafka)_[a-z_]+)(\{[^}]*\})?")


def defined() -> dict[str, tuple[str, ...]]:
    """Exposed metric name -> label names, for every metric of the monitor module."""
    names = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            suffix = "_total" if value._type == "counter" else ""
            names[value._name + suffix] = tuple(value._labelnames)
    return names


def expressions(node) -> list[str]:
    if isinstance(node, dict):
        found = [node["expr"]] if isinstance(node.get("expr"), str) else []
        return found + [expr for value in node.values() for expr in expressions(value)]
    if isinstance(node, list):
        return [expr for value in node for expr in expressions(value)]
    return []


def test_dashboard_queries_only_metrics_the_monitor_defines_with_their_labels():
    dashboard = json.loads(DASHBOARD.read_text())
    known = defined()
    external = {"kafka_consumergroup_lag": ("consumergroup", "topic"), "streamml_service_ready": ("service",)}
    used = set()
    for expr in expressions(dashboard):
        for name, selector in SELECTOR.findall(expr):
            assert name in known or name in external, f"{name} in {expr!r} is not a defined metric"
            labels = {**known, **external}[name]
            for label in re.findall(r"(\w+)\s*=~?", selector):
                assert label in labels, f"{name} has no label {label!r} (it has {labels})"
            used.add(name)
    assert set(known) <= used, f"metrics never shown: {sorted(set(known) - used)}"


def test_every_monitor_metric_is_labelled_by_model_and_per_column_ones_by_feature():
    for name, labels in defined().items():
        assert labels[0] == "model", name
        if name.startswith("streamml_monitor_feature_"):
            assert "feature" in labels, name


def test_dashboard_lets_the_reader_pick_the_model_and_feature():
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {variable["name"] for variable in dashboard["templating"]["list"]}
    assert {"datasource", "model", "feature", "consumergroup"} <= variables
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
