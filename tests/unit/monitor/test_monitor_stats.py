import numpy as np
import pytest
from scipy import stats

from services.monitor.stats.base import ColumnCounts
from services.monitor.stats.chi2 import chi2_test
from services.monitor.stats.contingency import chi2_homogeneity
from services.monitor.stats.ks import ks_test
from services.monitor.stats.multiple_testing import adjust, benjamini_hochberg, holm
from services.monitor.stats.page_hinkley import PageHinkley
from services.monitor.stats.psi import psi, psi_test
from services.monitor.stats.registry import check_tests

pytestmark = pytest.mark.unit


def test_psi_matches_its_definition_and_is_zero_for_equal_shares():
    reference = np.array([0.25, 0.25, 0.5])
    live = np.array([10, 30, 60])
    shares = live / live.sum()
    expected = np.sum((shares - reference) * np.log(shares / reference))
    assert psi(reference, live) == pytest.approx(expected)
    assert psi(reference, np.array([25, 25, 50])) == pytest.approx(0.0)


def test_psi_of_a_bin_empty_on_one_side_is_large_but_finite():
    value = psi(np.array([0.5, 0.5, 0.0]), np.array([40, 40, 20]))
    assert np.isfinite(value) and value > 0.5


def test_chi2_homogeneity_equals_scipy_contingency_and_drops_empty_bins():
    reference = np.array([500.0, 300.0, 0.0, 200.0])
    live = np.array([60.0, 20.0, 0.0, 20.0])
    statistic, p_value, dof = chi2_homogeneity(reference, live)
    expected = stats.chi2_contingency(np.vstack([reference[[0, 1, 3]], live[[0, 1, 3]]]), correction=False)
    assert statistic == pytest.approx(expected.statistic)
    assert p_value == pytest.approx(expected.pvalue)
    assert dof == 2


def test_chi2_test_counts_unseen_categories_and_uses_psi_as_effect():
    reference_shares = np.array([0.6, 0.4, 0.0])  # two known categories, then the unseen bin
    same = chi2_test(ColumnCounts(np.array([600, 400, 0]), 0, np.empty(0)), reference_shares, 10_000, np.empty(0))
    unseen = chi2_test(ColumnCounts(np.array([500, 300, 200]), 0, np.empty(0)), reference_shares, 10_000, np.empty(0))
    assert same.p_value > 0.5 and same.effect_size == pytest.approx(0.0, abs=1e-9)
    assert unseen.p_value < 1e-12 and unseen.effect == "psi" and unseen.effect_size > 0.5


def test_ks_test_agrees_with_scipy_and_reports_no_evidence_without_a_sample():
    rng = np.random.default_rng(0)
    live, reference = rng.normal(0.3, 1, 3000), rng.normal(0, 1, 2000)
    result = ks_test(ColumnCounts(np.zeros(1), 0, live), np.ones(1), 2000, reference)
    expected = stats.ks_2samp(live, reference)
    assert result.statistic == pytest.approx(expected.statistic)
    assert result.effect_size == result.statistic
    assert ks_test(ColumnCounts(np.zeros(1), 0, np.empty(0)), np.ones(1), 2000, reference).p_value == 1.0


def test_psi_test_gets_its_p_value_from_the_same_bins():
    shares = np.full(10, 0.1)
    close = psi_test(ColumnCounts(np.full(10, 1000), 0, np.empty(0)), shares, 100_000, np.empty(0))
    moved = psi_test(ColumnCounts(np.array([2000] * 5 + [0] * 5), 0, np.empty(0)), shares, 100_000, np.empty(0))
    assert close.p_value > 0.5 and close.effect_size < 1e-9
    assert moved.p_value < 1e-12 and moved.effect_size > 1


def test_holm_and_benjamini_hochberg_on_a_worked_example():
    p = np.array([0.01, 0.04, 0.03, 0.005])
    # Holm: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1, made monotone.
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # BH: sorted p * 4 / rank = 0.02, 0.02, 0.04, 0.04, made monotone from the top.
    assert benjamini_hochberg(p) == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert adjust(p, "none") == pytest.approx(p)
    with pytest.raises(ValueError, match="unknown correction 'bonferonni'"):
        adjust(p, "bonferonni")


def test_corrections_never_lower_a_p_value_and_cap_at_one():
    p = np.random.default_rng(3).random(50)
    for corrected in (holm(p), benjamini_hochberg(p)):
        assert np.all(corrected >= p) and np.all(corrected <= 1.0)


def test_registry_rejects_a_test_that_does_not_fit_the_column_kind():
    assert check_tests("numeric", ("psi", "ks")) == ("psi", "ks")
    with pytest.raises(ValueError, match="test 'ks' does not apply to category columns"):
        check_tests("category", ("ks",))


def test_page_hinkley_finds_a_rise_in_the_error_mean_soon_after_it_starts():
    rng = np.random.default_rng(1)
    before = rng.binomial(1, 0.10, 50_000).astype(float)
    after = rng.binomial(1, 0.13, 20_000).astype(float)
    times = 1_000.0 + np.arange(70_000)  # one error a second
    detector = PageHinkley()
    assert detector.update(before, times[:50_000]) == []
    alarms = []
    # Odd batch sizes: blocks (and their times) carry over between updates.
    for chunk, stamps in zip(np.array_split(after, 37), np.array_split(times[50_000:], 37), strict=True):
        alarms += detector.update(chunk, stamps)
    assert len(alarms) == 1
    alarm = alarms[0]
    assert 50_000 < alarm.at < 50_000 + 10_000
    assert abs(alarm.change_at - 50_000) < 3_000
    assert (alarm.at_time, alarm.change_time) == (times[alarm.at - 1], times[alarm.change_at - 1])
    assert alarm.mean_before == pytest.approx(0.10, abs=0.01) and alarm.mean_after > 0.115


def test_page_hinkley_ignores_a_fall_in_the_error_mean():
    rng = np.random.default_rng(2)
    detector = PageHinkley()
    assert detector.update(rng.binomial(1, 0.3, 20_000).astype(float)) == []
    assert detector.update(rng.binomial(1, 0.05, 50_000).astype(float)) == []


def test_page_hinkley_rejects_a_warmup_shorter_than_a_block():
    with pytest.raises(ValueError, match="warmup >= block"):
        PageHinkley(block=100, warmup=50)


def test_a_warmup_without_errors_keeps_a_scale_so_one_miss_is_not_a_change():
    bounded, unbounded = PageHinkley(error_bound=1.0), PageHinkley()
    errors = np.zeros(20_100)
    errors[20_000] = 1.0  # a perfect model's first miss
    assert bounded.update(errors) == []
    (alarm,) = unbounded.update(errors)  # no spread in the warm-up: one miss looks like 10,000 standard deviations
    assert alarm.relative_increase == float("inf")


def test_a_perfect_model_that_starts_to_miss_is_caught_with_a_finite_rise():
    rng = np.random.default_rng(3)
    detector = PageHinkley(error_bound=1.0)
    assert detector.update(np.zeros(20_000)) == []
    (alarm,) = detector.update(rng.binomial(1, 0.05, 2_000).astype(float))
    assert alarm.at <= 20_600
    # Against the smallest rate the warm-up could tell from zero (1 in 2,001), not against zero.
    assert alarm.mean_before == 0 and alarm.relative_increase == pytest.approx(alarm.mean_after * 2001, rel=1e-9)
