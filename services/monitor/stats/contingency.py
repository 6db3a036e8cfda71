"""The chi-square homogeneity statistic of a reference and a live histogram over the same bins."""

from __future__ import annotations

import numpy as np
from scipy import stats


def chi2_homogeneity(reference_counts: np.ndarray, live_counts: np.ndarray) -> tuple[float, float, int]:
    """Statistic, p-value and degrees of freedom of the 2 x k table (reference, live) x bins.

    Two-sample: the reference counts carry their own noise, so a small
    reference is not mistaken for an exact one. Bins empty on both sides are
    dropped.
    """
    reference = np.asarray(reference_counts, dtype=np.float64)
    live = np.asarray(live_counts, dtype=np.float64)
    used = (reference + live) > 0
    reference, live = reference[used], live[used]
    dof = int(used.sum()) - 1
    n_reference, n_live = reference.sum(), live.sum()
    if dof < 1 or n_reference == 0 or n_live == 0:
        return 0.0, 1.0, max(dof, 0)
    pooled = (reference + live) / (n_reference + n_live)
    expected_reference, expected_live = pooled * n_reference, pooled * n_live
    statistic = float(
        np.sum((reference - expected_reference) ** 2 / expected_reference)
        + np.sum((live - expected_live) ** 2 / expected_live)
    )
    return statistic, float(stats.chi2.sf(statistic, dof)), dof
