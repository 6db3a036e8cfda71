"""Population stability index of a numeric column on the reference quantile bins.

PSI = sum((live - ref) * ln(live / ref)) over the bins, with shares floored at
``FLOOR`` so an empty bin adds a large but finite term. Rules of thumb: below
0.1 stable, 0.1-0.25 moved, above 0.25 changed a lot. PSI is the effect size;
the p-value is the chi-square homogeneity test of the same counts, so a
window too small to tell noise from change is never flagged.
"""

from __future__ import annotations

import numpy as np

from services.monitor.stats.base import ColumnCounts, TestResult
from services.monitor.stats.contingency import chi2_homogeneity

FLOOR = 1e-4


def psi(reference_shares: np.ndarray, live_counts: np.ndarray, floor: float = FLOOR) -> float:
    total = live_counts.sum()
    if total == 0:
        return 0.0
    live = np.maximum(live_counts / total, floor)
    reference = np.maximum(reference_shares / reference_shares.sum(), floor)
    return float(np.sum((live - reference) * np.log(live / reference)))


def psi_test(
    live: ColumnCounts, reference_shares: np.ndarray, reference_count: int, reference_sample: np.ndarray
) -> TestResult:
    _, p_value, _ = chi2_homogeneity(reference_shares * reference_count, live.counts)
    effect = psi(reference_shares, live.counts)
    return TestResult("psi", effect, p_value, "psi", effect)
