"""The champion's reference and baseline from its card, decision and manifest (no object store)."""

from datetime import UTC, datetime

import numpy as np
import pytest

from services.monitor.champion import baseline_from, champion_from
from services.monitor.reference import MonitorReference, category_reference, numeric_reference
from services.monitor.performance import PerformanceBaseline
from services.monitor.synthetic_registry import synthetic_card
from streamml.manifest import DatasetManifest, NumericTransform
from streamml.registry.decisions import Evaluation, MetricInterval
from streamml.registry.keys import RegistryError

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def reference() -> MonitorReference:
    rng = np.random.default_rng(5)
    return MonitorReference(
        model="fraud", dataset="transactions", dataset_version=4,
        features={"amount": numeric_reference(rng.lognormal(3, 1, 10_000)),
                  "channel": category_reference(rng.choice(["web", "pos"], 10_000))},
        prediction=numeric_reference(rng.random(10_000)),
    )


def card(reference: MonitorReference, **changes) -> dict:
    baseline = PerformanceBaseline(task="binary", metric="auc", value=0.81)
    return {**synthetic_card(reference, "v7", baseline), **changes}


def test_the_reference_comes_from_the_card_and_the_baseline_from_the_validators_test_metric(reference):
    test = Evaluation(rows=2_000, metrics={"auc": 0.79, "log_loss": 0.4})
    champion = champion_from("fraud", "v7", card(reference), test)
    assert champion.version == "v7"
    assert champion.reference.features == reference.features
    assert (champion.reference.dataset, champion.reference.dataset_version) == ("transactions", 4)
    assert champion.reference.prediction is None  # the trainer's card has none: adopted from live traffic
    assert champion.baseline == PerformanceBaseline(task="binary", metric="auc", value=0.79)


def test_the_baseline_carries_the_validators_sampling_error_of_its_test_metric(reference):
    interval = MetricInterval(standard_error=0.006, low=0.778, high=0.802, method="delong")
    test = Evaluation(rows=2_000, metrics={"auc": 0.79}, intervals={"auc": interval})
    baseline = champion_from("fraud", "v7", card(reference), test).baseline
    assert (baseline.value, baseline.standard_error) == (0.79, 0.006)
    assert champion_from("fraud", "v7", card(reference)).baseline.standard_error is None  # the card's has none


def test_without_a_decision_the_cards_validation_metric_is_the_baseline(reference):
    assert champion_from("fraud", "v7", card(reference)).baseline.value == 0.81


def test_a_card_without_feature_statistics_takes_them_from_its_dataset_manifest(reference):
    manifest = DatasetManifest(
        dataset="transactions", version=4, created=datetime(2026, 1, 1, tzinfo=UTC), spec_fingerprint="f",
        schema={"amount": "double", "channel": "int64"}, key="id", event_time="ts", label="y",
        features=["amount", "channel"], files={}, rows={"train": 10_000}, content_sha256={},
        transform={"amount": NumericTransform(mean=0.0, std=1.0)}, reference=reference.features,
        lineage=[], trigger="rows", code_version="test",
    )
    champion = champion_from("fraud", "v7", card(reference, expected_features={}), None, manifest)
    assert champion.reference.features == reference.features
    assert champion.reference.dataset_version == 4


def test_a_card_that_gives_no_reference_is_an_error_naming_it(reference):
    with pytest.raises(RegistryError, match=r"the model card of fraud v7 has no expected_features"):
        champion_from("fraud", "v7", card(reference, expected_features={}))
    broken = card(reference)
    del broken["dataset"]
    with pytest.raises(RegistryError, match=r"the model card of fraud v7 does not give a drift reference: missing 'dataset'"):
        champion_from("fraud", "v7", broken)


@pytest.mark.parametrize(
    ("card", "expected"),
    [
        ({"task": "binary", "selection": {"metric": "log_loss"}, "metrics": {"log_loss": 0.3}},
         PerformanceBaseline(task="binary", metric="log_loss", value=0.3)),
        ({"task": "regression", "metrics": {}}, PerformanceBaseline(task="regression", metric="rmse", value=None)),
        ({"task": "multiclass", "outputs": {"classes": ["a", "b"]}, "metrics": {"log_loss": 1.0}},
         PerformanceBaseline(task="multiclass", metric="log_loss", value=1.0, classes=["a", "b"])),
        ({"metrics": {"auc": 0.9}}, None),
    ],
)
def test_the_baseline_follows_the_task_and_the_selection_metric(card, expected):
    assert baseline_from(card, None) == expected


@pytest.mark.parametrize(
    ("classes", "texts"),
    [([0, 1, 2], ["0", "1", "2"]), ([False, True], ["false", "true"]), (["cat", "dog"], ["cat", "dog"])],
)
def test_a_multiclass_card_with_integer_boolean_or_text_classes_gives_a_reference(reference, classes, texts):
    multiclass = card(reference, task="multiclass", selection={"metric": "log_loss"}, metrics={"log_loss": 0.6},
                      outputs={"meaning": "probability of each class", "label": "y", "classes": classes})
    champion = champion_from("fraud", "v7", multiclass)
    assert champion.reference.classes == texts
    assert champion.baseline == PerformanceBaseline(task="multiclass", metric="log_loss", value=0.6, classes=texts)


def test_classes_that_are_not_labels_are_an_error_naming_them(reference):
    broken = card(reference, task="multiclass", outputs={"classes": [1, "1"]})
    with pytest.raises(RegistryError, match=r"classes: Value error, classes \[1, '1'\] are not distinct as text"):
        champion_from("fraud", "v7", broken)
