import numpy as np
import pytest

from services.monitor.reference import (
    MonitorReference,
    bin_labels,
    category_reference,
    numeric_reference,
    shares,
)
from services.monitor.windows import NumericColumn
from services.prep.fit import bin_of

pytestmark = pytest.mark.unit


def test_numeric_bins_follow_the_manifest_rule_edges_at_or_below_the_value():
    hours = np.random.default_rng(0).integers(0, 24, 10_000).astype(float)
    reference = numeric_reference(hours)
    codes, _ = NumericColumn(np.asarray(reference.edges)).codes(np.arange(-1.0, 25.0))
    assert codes.tolist() == [bin_of(reference.edges, value) for value in np.arange(-1.0, 25.0)]
    counts = np.bincount(NumericColumn(np.asarray(reference.edges)).codes(hours)[0], minlength=len(reference.edges) + 1)
    assert reference.fractions == pytest.approx((counts / hours.size).tolist())


def test_references_leave_nulls_out():
    numeric = numeric_reference(np.array([1.0, np.nan, 3.0, 2.0]))
    category = category_reference(["a", None, "b", "a"])
    assert numeric.count == 3 and sorted(numeric.sample) == [1.0, 2.0, 3.0]
    assert category.count == 3 and category.frequencies == pytest.approx({"a": 2 / 3, "b": 1 / 3})
    assert shares(category).tolist() == pytest.approx([2 / 3, 1 / 3, 0.0])  # unseen bin last
    assert bin_labels(category) == ["a", "b", "(unseen)"]
    with pytest.raises(ValueError, match="cannot build a numeric reference from no values"):
        numeric_reference(np.array([np.nan]))


def test_category_text_matches_the_manifest_booleans_and_numbers():
    assert category_reference([True, False, True]).frequencies == pytest.approx({"true": 2 / 3, "false": 1 / 3})
    assert set(category_reference([3, 3, 7]).frequencies) == {"3", "7"}


def test_reference_from_a_model_card():
    card = {
        "model": "fraud",
        "dataset": {"name": "transactions", "version": 4},
        "outputs": {"classes": None},
        "expected_features": {
            "amount": numeric_reference(np.arange(100.0)).model_dump(mode="json"),
            "channel": category_reference(["web", "pos"]).model_dump(mode="json"),
        },
    }
    reference = MonitorReference.from_card(card)
    assert (reference.model, reference.dataset, reference.dataset_version) == ("fraud", "transactions", 4)
    assert reference.features["amount"].kind == "numeric" and reference.features["channel"].kind == "category"
    assert reference.prediction is None
