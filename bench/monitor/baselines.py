"""The detectors the monitor is compared with, fed the same rows as it.

``WindowTests``: per window of the monitor's size, a two-sample KS test of
each numeric feature against the same 2,000-row reference sample the
monitor has, and a chi-square test of each category's counts against the
training shares; a window alarms when any p-value is below alpha / (number
of tests) (Bonferroni). Every alarming window is an alarm: no debounce.

``AdwinOnErrors``: River's ADWIN (default delta 0.002) on the model's
per-row Brier errors; every detection is an alarm.

Both take arrays, not JSON: their rows per second leave decoding out.
"""

from __future__ import annotations

import numpy as np
from river import drift
from scipy import stats

from services.monitor.reference import MonitorReference


class WindowTests:
    def __init__(self, reference: MonitorReference, size: int, alpha: float = 0.01):
        self.size = size
        self.alpha = alpha
        self.samples = {
            name: np.asarray(ref.sample) for name, ref in reference.features.items() if ref.kind == "numeric"
        }
        self.shares = {
            name: (np.asarray(list(ref.frequencies)), np.asarray(list(ref.frequencies.values())))
            for name, ref in reference.features.items()
            if ref.kind == "category"
        }
        self._pending: list[dict[str, np.ndarray]] = []
        self._count = 0
        self._first = 0

    def add(self, features: dict[str, np.ndarray]) -> list[int]:
        """Rows (the last of each window) at which a window alarmed."""
        alarms = []
        n = len(features["channel"])
        position = 0
        while position < n:
            take = min(n - position, self.size - self._count)
            self._pending.append({name: values[position : position + take] for name, values in features.items()})
            self._count += take
            position += take
            if self._count == self.size:
                if self._alarms(self._pending):
                    alarms.append(self._first + self.size - 1)
                self._first += self.size
                self._pending, self._count = [], 0
        return alarms

    def _alarms(self, parts: list[dict[str, np.ndarray]]) -> bool:
        p_values = []
        for name, sample in self.samples.items():
            values = np.concatenate([part[name] for part in parts])
            values = values[~np.isnan(values)]
            p_values.append(stats.ks_2samp(values, sample, method="asymp").pvalue)
        for name, (vocabulary, shares) in self.shares.items():
            values = np.concatenate([part[name] for part in parts])
            counts = (values[:, None] == vocabulary[None, :]).sum(axis=0)
            p_values.append(stats.chisquare(counts, shares / shares.sum() * counts.sum()).pvalue)
        return min(p_values) < self.alpha / len(p_values)


class AdwinOnErrors:
    def __init__(self) -> None:
        self.detector = drift.ADWIN()
        self._row = 0

    def add(self, errors: np.ndarray) -> list[int]:
        """Rows at which ADWIN detected a change."""
        alarms = []
        update = self.detector.update
        for offset, error in enumerate(errors.tolist()):
            update(error)
            if self.detector.drift_detected:
                alarms.append(self._row + offset)
        self._row += errors.size
        return alarms
