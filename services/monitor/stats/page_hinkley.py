"""Page-Hinkley change detector for an increase in the mean of a stream of errors.

The stream is cut into blocks of ``block`` errors and the test runs on block
means: by the central limit theorem they are close to normal whatever the
error distribution (0/1 misses, squared errors), so ``threshold`` and
``delta`` mean the same everywhere and the false-alarm rate follows the normal
theory of the CUSUM. With ``delta=0.5`` and ``threshold=20`` (both in
standard deviations of a block mean) Siegmund's approximation puts the mean
run between false alarms near 3e9 blocks for a known mean; estimating the
mean and scale from the stream lowers it (``bench/monitor/run.py`` counts
alarms on a long stream without change).

After a reset the first ``warmup`` errors only estimate the scale (and start
the running mean). Errors bounded by ``error_bound`` (binary and multiclass:
1) get a floor on that scale: the spread the warm-up would have had with one
error at the bound among them. Without it a warm-up of a near-perfect model,
all errors 0, has no spread, and one wrong label looks like a change of
thousands of standard deviations. Then for each block mean x_t:

    m_t = sum((x_i - mean_i) / scale - delta),  M_t = min(m_1..m_t),  alarm when m_t - M_t > threshold

where mean_i is the running mean since the reset. At an alarm the detector
reports where the change most likely began (the arg-min of m) and the mean
error before and after it, then resets so it adapts to the new level.
Everything is vectorised over the blocks of one ``update``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ChangeAlarm:
    at: int
    """Position in the error stream (errors seen before the alarm's block ended)."""
    change_at: int
    """Estimated position where the mean began to rise."""
    mean_before: float
    mean_after: float
    statistic: float
    at_time: float | None = None
    """Time of the error that ended the alarm's block (when ``update`` was given times)."""
    change_time: float | None = None
    """Time of the last error before the estimated change."""
    mean_floor: float = 0.0
    """The smallest mean error the warm-up could tell from zero (one error at the bound among them)."""

    @property
    def relative_increase(self) -> float:
        before = max(self.mean_before, self.mean_floor)
        if before > 0:
            return (self.mean_after - self.mean_before) / before
        return math.inf if self.mean_after > 0 else 0.0


class PageHinkley:
    def __init__(
        self,
        delta: float = 0.5,
        threshold: float = 20.0,
        block: int = 100,
        warmup: int = 2000,
        error_bound: float | None = None,
    ):
        if delta < 0 or threshold <= 0 or block < 1 or warmup < block or (error_bound is not None and error_bound <= 0):
            raise ValueError(
                f"need delta >= 0, threshold > 0, block >= 1, warmup >= block and error_bound > 0 (or None); "
                f"got delta={delta}, threshold={threshold}, block={block}, warmup={warmup}, error_bound={error_bound}"
            )
        self.delta = delta
        self.threshold = threshold
        self.block = block
        self.warmup_blocks = warmup // block
        self.error_bound = error_bound
        self._partial = np.empty(0)
        self._partial_times = np.empty(0)
        self._blocks_done = 0  # blocks consumed since construction
        self._reset()

    def _reset(self) -> None:
        self._warm_blocks = 0
        self._warm_sum = 0.0
        self._warm_sum_sq = 0.0
        self._scale = 0.0
        self._mean_sum = 0.0  # sum of block means since the reset
        self._mean_n = 0
        self._cum = 0.0
        self._min_cum = 0.0
        self._min_n = 0  # block count since reset where the minimum was reached
        self._min_sum = 0.0  # sum of block means up to that point
        self._min_time: float | None = None  # time of the last error of that block
        self._mean_floor = 0.0

    def snapshot(self) -> dict:
        """Where the detector stands (its settings come from the constructor), as plain data and arrays."""
        return {name: value for name, value in vars(self).items() if name.startswith("_")}

    def restore(self, state: dict) -> None:
        expected = set(self.snapshot())
        if set(state) != expected:
            raise ValueError(f"detector state has fields {sorted(state)}; expected {sorted(expected)}")
        for name, value in state.items():
            setattr(self, name, value)

    @property
    def warming_up(self) -> bool:
        return self._warm_blocks < self.warmup_blocks

    @property
    def statistic(self) -> float:
        """The current m_t - M_t, in standard deviations of a block mean."""
        return self._cum - self._min_cum

    def update(self, errors: np.ndarray, times: np.ndarray | None = None) -> list[ChangeAlarm]:
        """Feed errors in order (with their event times, to date the alarms); returns the alarms they raise."""
        errors = np.asarray(errors, dtype=np.float64).ravel()
        times = np.full(errors.size, np.nan) if times is None else np.asarray(times, dtype=np.float64).ravel()
        values = np.concatenate([self._partial, errors])
        stamps = np.concatenate([self._partial_times, times])
        n_blocks = values.size // self.block
        self._partial = values[n_blocks * self.block :]
        self._partial_times = stamps[n_blocks * self.block :]
        blocks = values[: n_blocks * self.block].reshape(n_blocks, self.block)
        means = blocks.mean(axis=1)
        sums_sq = np.einsum("ij,ij->i", blocks, blocks)
        block_times = stamps[self.block - 1 : n_blocks * self.block : self.block]
        alarms: list[ChangeAlarm] = []
        start = 0
        while start < n_blocks:
            if self.warming_up:
                start = self._warm(means, sums_sq, block_times, start)
            else:
                alarm, start = self._watch(means, block_times, start)
                if alarm is not None:
                    alarms.append(alarm)
        return alarms

    def _warm(self, means: np.ndarray, sums_sq: np.ndarray, block_times: np.ndarray, start: int) -> int:
        stop = min(means.size, start + self.warmup_blocks - self._warm_blocks)
        taken = means[start:stop]
        self._warm_blocks += taken.size
        self._warm_sum += float(taken.sum()) * self.block
        self._warm_sum_sq += float(sums_sq[start:stop].sum())
        self._mean_sum += float(taken.sum())
        self._mean_n += taken.size
        self._blocks_done += taken.size
        if not self.warming_up:
            n = self._warm_blocks * self.block
            mean = self._warm_sum / n
            std = math.sqrt(max(self._warm_sum_sq / n - mean * mean, 0.0))
            if self.error_bound is not None:
                # As if one more error, at the bound, had been among the warm-up's (Bernoulli spread at 1/(n+1)).
                rate = 1.0 / (n + 1)
                std = max(std, self.error_bound * math.sqrt(rate * (1 - rate)))
                self._mean_floor = self.error_bound * rate
            # A constant unbounded stream has no spread: a floor keeps the scale positive.
            self._scale = max(std, 1e-6 + 1e-3 * abs(mean)) / math.sqrt(self.block)
            self._min_n, self._min_sum = self._mean_n, self._mean_sum
            self._min_time = _time(block_times[stop - 1])
        return stop

    def _watch(self, means: np.ndarray, block_times: np.ndarray, start: int) -> tuple[ChangeAlarm | None, int]:
        chunk = means[start:]
        sums = self._mean_sum + np.cumsum(chunk)
        counts = self._mean_n + np.arange(1, chunk.size + 1)
        cum = self._cum + np.cumsum((chunk - sums / counts) / self._scale - self.delta)
        running_min = np.minimum(self._min_cum, np.minimum.accumulate(cum))
        over = np.flatnonzero(cum - running_min > self.threshold)
        stop = int(over[0]) + 1 if over.size else chunk.size
        self._track_minimum(cum[:stop], sums[:stop], counts[:stop], block_times[start : start + stop])
        self._cum = float(cum[stop - 1])
        self._mean_sum, self._mean_n = float(sums[stop - 1]), int(counts[stop - 1])
        self._blocks_done += stop
        if not over.size:
            return None, start + stop
        before = self._min_sum / self._min_n
        after = (self._mean_sum - self._min_sum) / (self._mean_n - self._min_n)
        blocks_since_min = self._mean_n - self._min_n
        alarm = ChangeAlarm(
            at=self._blocks_done * self.block,
            change_at=(self._blocks_done - blocks_since_min) * self.block,
            mean_before=before,
            mean_after=after,
            statistic=self._cum - self._min_cum,
            at_time=_time(block_times[start + stop - 1]),
            change_time=self._min_time,
            mean_floor=self._mean_floor,
        )
        self._reset()
        return alarm, start + stop

    def _track_minimum(self, cum: np.ndarray, sums: np.ndarray, counts: np.ndarray, times: np.ndarray) -> None:
        lowest = int(np.argmin(cum))
        if cum[lowest] < self._min_cum:
            self._min_cum = float(cum[lowest])
            self._min_n, self._min_sum = int(counts[lowest]), float(sums[lowest])
            self._min_time = _time(times[lowest])


def _time(value: float) -> float | None:
    return None if math.isnan(value) else float(value)
