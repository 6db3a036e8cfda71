"""Chi-square test of a category column's frequencies against the reference frequencies.

Categories the reference never saw are counted in one extra bin. The
statistic grows with the window and says nothing about how far the
distribution moved, so the effect size is the PSI of the same bins.
"""

from __future__ import annotations

import numpy as np

from services.monitor.stats.base import ColumnCounts, TestResult
from services.monitor.stats.contingency import chi2_homogeneity
from services.monitor.stats.psi import psi


def chi2_test(
    live: ColumnCounts, reference_shares: np.ndarray, reference_count: int, reference_sample: np.ndarray
) -> TestResult:
    statistic, p_value, _ = chi2_homogeneity(reference_shares * reference_count, live.counts)
    return TestResult("chi2", statistic, p_value, "psi", psi(reference_shares, live.counts))
