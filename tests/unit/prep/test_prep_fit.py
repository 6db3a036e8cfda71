import math

import numpy as np
import pytest

from services.prep import fit
from services.prep.rules import PrepError
from streamml.manifest import NumericTransform

pytestmark = pytest.mark.unit


def order_stats_of(values: np.ndarray, probabilities) -> dict[int, float]:
    ordered = np.sort(values)
    return {rank: float(ordered[rank]) for rank in fit.quantile_ranks(len(ordered), probabilities)}


@pytest.mark.parametrize("count", [1, 2, 3, 10, 1001])
def test_quantile_from_order_statistics_matches_numpy_linear(count):
    values = np.random.default_rng(count).lognormal(2, 1, count)
    probabilities = [0.0, 0.001, 0.1, 0.25, 0.5, 0.9, 0.999, 1.0]
    stats = order_stats_of(values, probabilities)
    for p in probabilities:
        assert fit.quantile(stats, count, p) == pytest.approx(float(np.quantile(values, p)), rel=1e-12)


def test_quantile_needs_only_the_neighbouring_ranks():
    assert fit.quantile_ranks(11, [0.5]) == [5, 6]
    assert fit.quantile_ranks(10, [0.5]) == [4, 5]
    assert fit.quantile_ranks(1, [0.1, 0.9]) == [0]


def test_cuts_give_median_clip_bounds_and_unique_edges():
    values = np.array([1.0] * 50 + list(range(2, 52)), dtype=float)
    plan = fit.NumericPlan("x", impute=True, clip_quantiles=(0.01, 0.99), transformed=True)
    cuts = fit.numeric_cuts(plan, len(values), order_stats_of(values, plan.probabilities))
    assert cuts.impute == pytest.approx(float(np.median(values)))
    assert cuts.clip == pytest.approx((np.quantile(values, 0.01), np.quantile(values, 0.99)))
    # Half the values are 1.0: the lower deciles collapse into one edge.
    assert cuts.edges == sorted(set(cuts.edges))
    assert cuts.edges[0] == 1.0 and len(cuts.edges) < len(fit.REFERENCE_QUANTILES)


def test_cuts_without_values_name_the_field():
    plan = fit.NumericPlan("distance_km", impute=False, clip_quantiles=None, transformed=True)
    with pytest.raises(PrepError, match="'distance_km' has no values in the train split"):
        fit.numeric_cuts(plan, 0, {})


def sums_of(raw: np.ndarray, processed: np.ndarray, edges: list[float]) -> fit.NumericSums:
    raw_mean, mean = raw.mean(), processed.mean()
    bins = np.bincount(np.searchsorted(edges, raw, side="right"), minlength=len(edges) + 1)
    return fit.NumericSums(
        raw_count=len(raw),
        raw_sum=float(raw.sum()),
        raw_sum_sq_dev=float(((raw - raw_mean) ** 2).sum()),
        processed_count=len(processed),
        processed_sum=float(processed.sum()),
        processed_sum_sq_dev=float(((processed - mean) ** 2).sum()),
        bin_counts=[int(count) for count in bins],
    )


def test_transform_standardises_processed_values_and_reference_describes_raw_ones():
    raw = np.random.default_rng(1).normal(10, 3, 500)
    plan = fit.NumericPlan("x", impute=False, clip_quantiles=(0.05, 0.95), transformed=True)
    cuts = fit.numeric_cuts(plan, len(raw), order_stats_of(raw, plan.probabilities))
    processed = np.clip(raw, *cuts.clip)
    sums = sums_of(raw, processed, cuts.edges)
    transform = fit.numeric_transform(plan, cuts, sums)
    assert transform.mean == pytest.approx(processed.mean())
    assert transform.std == pytest.approx(processed.std())
    standardised = [transform.apply(float(v)) for v in raw]
    assert np.mean(standardised) == pytest.approx(0, abs=1e-9)
    assert np.std(standardised) == pytest.approx(1)
    reference = fit.numeric_reference(cuts, sums, raw[:20].tolist())
    assert reference.mean == pytest.approx(raw.mean()) and reference.std == pytest.approx(raw.std())
    assert len(reference.fractions) == len(reference.edges) + 1
    assert sum(reference.fractions) == pytest.approx(1)
    assert all(f == pytest.approx(0.1, abs=0.01) for f in reference.fractions)
    assert reference.sample == sorted(raw[:20].tolist())


def test_a_constant_feature_gets_unit_std_and_maps_to_zero():
    raw = np.full(20, 4.0)
    plan = fit.NumericPlan("x", impute=False, clip_quantiles=None, transformed=True)
    cuts = fit.numeric_cuts(plan, len(raw), order_stats_of(raw, plan.probabilities))
    transform = fit.numeric_transform(plan, cuts, sums_of(raw, raw, cuts.edges))
    assert transform == NumericTransform(mean=4.0, std=1.0)
    assert transform.apply(4.0) == 0.0


def test_reference_rejects_bin_counts_that_do_not_cover_the_values():
    cuts = fit.NumericCuts(impute=None, clip=None, edges=[1.0, 2.0])
    sums = fit.NumericSums(10, 15.0, 3.0, 10, 15.0, 3.0, bin_counts=[3, 3, 3])
    with pytest.raises(ValueError, match="do not cover 10 values"):
        fit.numeric_reference(cuts, sums, [])


def test_bin_of_counts_edges_at_or_below_the_value():
    edges = [1.0, 2.0, 3.0]
    assert [fit.bin_of(edges, v) for v in (0.5, 1.0, 1.5, 3.0, 9.0)] == [0, 1, 1, 3, 3]


def test_vocabulary_orders_by_count_then_value_and_applies_the_floor():
    counts = {"pos": 5, "atm": 9, "web": 9, "fax": 1, "phone": 4}
    assert fit.vocabulary(counts, 1) == ["atm", "web", "pos", "phone", "fax"]
    assert fit.vocabulary(counts, 5) == ["atm", "web", "pos"]
    assert fit.vocabulary(counts, 10) == []


def test_category_transform_imputes_the_most_frequent_value_and_encodes_rare_ones_as_zero():
    counts = {"b": 3, "a": 3, "z": 1}
    transform = fit.category_transform(counts, min_count=2, impute=True)
    assert transform.vocabulary == ["a", "b"]
    assert transform.impute == "a"
    assert [transform.apply(v) for v in ("a", "b", "z", None)] == [1, 2, 0, 1]
    assert fit.category_transform(counts, 2, impute=False).apply(None) == 0


def test_category_reference_frequencies_sum_to_one():
    reference = fit.category_reference({"x": 1, "y": 3})
    assert reference.count == 4
    assert reference.frequencies == {"y": 0.75, "x": 0.25}
    assert fit.category_reference({}).frequencies == {}


def test_label_text_is_stable_for_each_label_type():
    assert [fit.label_text(v) for v in (True, False, 0, 1, "fraud")] == ["true", "false", "0", "1", "fraud"]


def test_std_is_the_population_std():
    assert fit.std_of(8.0, 2) == math.sqrt(4.0)


def test_ordered_sum_adds_bucket_sums_in_bucket_order_and_skips_empty_buckets():
    # 1e16 + 1 + 1 loses both ones in this order; added in another order they survive.
    assert fit.ordered_sum({2: 1.0, 0: 1e16, 1: 1.0, 3: None}) == (1e16 + 1.0) + 1.0
    assert fit.ordered_sum({0: 1.0, 1: 1.0, 2: 1e16}) == (1.0 + 1.0) + 1e16
    assert fit.ordered_sum({}) == 0.0

