"""What every drift test reads (a column's live counts) and returns (a TestResult)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ColumnCounts:
    """One column of one window.

    ``counts`` has one entry per reference bin: the quantile bins of a numeric
    column (``len(edges) + 1``), or the vocabulary of a category column plus a
    last entry for values the reference never saw. ``sample`` is a uniform
    sample of the window's numeric values (empty for categories).
    """

    counts: np.ndarray
    missing: int
    sample: np.ndarray

    @property
    def count(self) -> int:
        return int(self.counts.sum())


@dataclass(frozen=True)
class TestResult:
    """One test of one column: its statistic, its uncorrected p-value and its effect size.

    ``effect`` names the effect-size measure (``psi`` or ``ks``) so that the
    matching threshold from the configuration applies.
    """

    test: str
    statistic: float
    p_value: float
    effect: str
    effect_size: float
