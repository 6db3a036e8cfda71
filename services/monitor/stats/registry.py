"""Which tests apply to which kind of column, and the default ones.

A test is a function ``(live, reference_shares, reference_count, reference_sample) -> TestResult``.
``MonitorThresholds.tests`` may name other registered tests per kind.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np

from services.monitor.stats.base import ColumnCounts, TestResult
from services.monitor.stats.chi2 import chi2_test
from services.monitor.stats.ks import ks_test
from services.monitor.stats.psi import psi_test

ColumnKind = Literal["numeric", "category"]
StatTest = Callable[[ColumnCounts, np.ndarray, int, np.ndarray], TestResult]

TESTS: dict[str, StatTest] = {"psi": psi_test, "ks": ks_test, "chi2": chi2_test}

# Tests that make sense per kind: KS needs ordered values, so not for categories.
APPLICABLE: dict[ColumnKind, tuple[str, ...]] = {
    "numeric": ("psi", "ks", "chi2"),
    "category": ("chi2", "psi"),
}

DEFAULT_TESTS: dict[ColumnKind, tuple[str, ...]] = {
    "numeric": ("psi", "ks"),
    "category": ("chi2",),
}


def check_tests(kind: ColumnKind, names: tuple[str, ...]) -> tuple[str, ...]:
    """The names unchanged, or ValueError naming the bad one and the allowed ones."""
    if not names:
        raise ValueError(f"{kind} columns need at least one test; use some of {list(APPLICABLE[kind])}")
    for name in names:
        if name not in APPLICABLE[kind]:
            raise ValueError(f"test {name!r} does not apply to {kind} columns; use some of {list(APPLICABLE[kind])}")
    return names


def run_tests(
    names: tuple[str, ...],
    live: ColumnCounts,
    reference_shares: np.ndarray,
    reference_count: int,
    reference_sample: np.ndarray,
) -> list[TestResult]:
    return [TESTS[name](live, reference_shares, reference_count, reference_sample) for name in names]
