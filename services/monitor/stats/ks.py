"""Two-sample Kolmogorov-Smirnov test: the window's sample against the reference sample.

The statistic D (the largest gap between the two empirical CDFs, 0..1) is
itself the effect size. Both samples are bounded (a reservoir per window, the
manifest's train sample), so the cost per window is fixed whatever the traffic.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from services.monitor.stats.base import ColumnCounts, TestResult


def ks_test(
    live: ColumnCounts, reference_shares: np.ndarray, reference_count: int, reference_sample: np.ndarray
) -> TestResult:
    if live.sample.size == 0 or reference_sample.size == 0:
        # Nothing to compare: report no evidence rather than guess.
        return TestResult("ks", 0.0, 1.0, "ks", 0.0)
    result = stats.ks_2samp(live.sample, reference_sample, method="asymp")
    return TestResult("ks", float(result.statistic), float(result.pvalue), "ks", float(result.statistic))
