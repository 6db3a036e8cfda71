"""Labelled synthetic streams with a known drift row, for the monitor's detection benchmark.

Each row has the eight features of ``services/monitor/synthetic.py``, six
numeric and two categorical:

    amount ~ lognormal(3, 1)       hour ~ uniform{0..23}       distance_km ~ exp(10), 2% missing
    age ~ normal(40, 10)           score_a ~ normal(0, 1)      score_b ~ uniform(0, 1)
    channel in web/pos/atm/phone (50/30/15/5%)                 country c00..c19 (Zipf: share of ck ~ 1/(k+1))

and a 0/1 label drawn from a logistic "truth" of them (``CONCEPT_A``), which
includes a term in score_a squared that the deployed logistic model cannot
fit. The streams (1,000,000 rows each by default; the drift row falls a
quarter into a 10,000-row window, as real drifts do not wait for windows):

| stream | from the drift row on |
|---|---|
| no-drift-1/2/3 | nothing changes (three seeds) |
| concept-abrupt | labels follow ``CONCEPT_B``: score_a's effect reverses, channels weigh differently; features unchanged |
| concept-gradual | the share of rows labelled by ``CONCEPT_B`` climbs from 0 to 1 over 100,000 rows |
| covariate-strong-numeric | score_a's mean moves up one standard deviation (KS 0.38) |
| covariate-strong-category | channel shares become 20/20/20/40% (PSI 1.06) |
| covariate-subtle-numeric | age's mean moves up 0.35 standard deviations (KS 0.14) |
| covariate-subtle-category | country shares move 40% of the way to uniform (PSI 0.13) |
| covariate-gradual | score_a's mean climbs by one standard deviation over 200,000 rows |

In covariate drift the truth stays ``CONCEPT_A``: labels follow the moved
features. ``Stream.rows(rng, index)`` draws the rows at the given row
numbers, so a stream is generated batch by batch in constant memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from services.monitor.synthetic import CATEGORY, CHANNEL_SHARES, CHANNELS, COUNTRIES, COUNTRY_SHARES, NUMERIC

__all__ = ["CATEGORY", "NUMERIC", "Stream", "streams", "training_rows"]

DRIFT_ROW = 402_500
ROWS = 1_000_000


@dataclass(frozen=True)
class Concept:
    """Log-odds of the label: weights of standardised features, channel effects, a curve in score_a."""

    score_a: float
    amount: float
    distance: float
    age: float
    score_b: float
    channel: dict[str, float]
    score_a_squared: float = 0.4
    offset: float = -1.6

    def probability(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        z = (
            self.score_a * columns["score_a"]
            + self.score_a_squared * columns["score_a"] ** 2
            + self.amount * (np.log(columns["amount"]) - 3.0)
            + self.distance * (np.nan_to_num(columns["distance_km"], nan=10.0) - 10.0) / 10.0
            + self.age * (columns["age"] - 40.0) / 10.0
            + self.score_b * (columns["score_b"] - 0.5) * 3.0
            + np.select([columns["channel"] == name for name in self.channel], list(self.channel.values()), 0.0)
            + self.offset
        )
        return 1.0 / (1.0 + np.exp(-z))


CONCEPT_A = Concept(score_a=1.1, amount=0.7, distance=0.5, age=-0.4, score_b=0.3,
                    channel={"pos": 0.3, "atm": 0.9, "phone": -0.4})
CONCEPT_B = Concept(score_a=-0.6, amount=0.7, distance=0.5, age=-0.4, score_b=0.3,
                    channel={"pos": -0.2, "atm": 0.0, "phone": 0.8})


@dataclass(frozen=True)
class Change:
    """What moves from the drift row on; ``ramp`` rows to reach it fully (0: at once)."""

    concept: bool = False
    score_a_shift: float = 0.0
    age_shift: float = 0.0
    channel_shares: np.ndarray | None = None
    country_towards_uniform: float = 0.0
    ramp: int = 0


@dataclass(frozen=True)
class Stream:
    name: str
    change: Change | None = None
    drift_row: int | None = None
    length: int = ROWS
    seed: int = 0
    kind: str = field(default="none")

    def rows(self, rng: np.random.Generator, index: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Features and labels of the rows numbered ``index`` (consecutive)."""
        strength = self._strength(index)
        change = self.change or Change()
        n = index.size
        distance = rng.exponential(10.0, n)
        distance[rng.random(n) < 0.02] = np.nan
        channel_shares = _mixed(rng, CHANNEL_SHARES, change.channel_shares, strength, n)
        country_shares = _mixed(
            rng, COUNTRY_SHARES, None if change.country_towards_uniform == 0 else
            (1 - change.country_towards_uniform) * COUNTRY_SHARES + change.country_towards_uniform / COUNTRIES.size,
            strength, n,
        )
        columns = {
            "amount": rng.lognormal(3.0, 1.0, n),
            "hour": rng.integers(0, 24, n).astype(np.float64),
            "distance_km": distance,
            "age": rng.normal(40.0, 10.0, n) + 10.0 * change.age_shift * strength,
            "score_a": rng.normal(0.0, 1.0, n) + change.score_a_shift * strength,
            "score_b": rng.uniform(0.0, 1.0, n),
            "channel": CHANNELS[_draw(rng, channel_shares)],
            "country": COUNTRIES[_draw(rng, country_shares)],
        }
        p = CONCEPT_A.probability(columns)
        if change.concept:
            new = rng.random(n) < strength  # each row follows the new concept with the ramp's probability
            p = np.where(new, CONCEPT_B.probability(columns), p)
        return columns, (rng.random(n) < p).astype(np.float64)

    def _strength(self, index: np.ndarray) -> np.ndarray:
        if self.change is None or self.drift_row is None:
            return np.zeros(index.size)
        since = (index - self.drift_row).astype(np.float64)
        if self.change.ramp == 0:
            return (since >= 0).astype(np.float64)
        return np.clip((since + 1) / self.change.ramp, 0.0, 1.0)


def _mixed(
    rng: np.random.Generator, before: np.ndarray, after: np.ndarray | None, strength: np.ndarray, n: int
) -> np.ndarray:
    """Per-row category shares: ``before`` blended towards ``after`` by each row's strength."""
    if after is None:
        return np.broadcast_to(before, (n, before.size))
    return (1 - strength)[:, None] * before + strength[:, None] * np.asarray(after)


def _draw(rng: np.random.Generator, shares: np.ndarray) -> np.ndarray:
    """One category per row from per-row shares (inverse CDF, vectorised)."""
    cumulative = np.cumsum(shares, axis=1)
    picks = (rng.random(shares.shape[0])[:, None] * cumulative[:, -1:] > cumulative).sum(axis=1)
    return np.minimum(picks, shares.shape[1] - 1)


def streams(length: int = ROWS, drift_row: int = DRIFT_ROW) -> list[Stream]:
    uniformish = np.array([0.2, 0.2, 0.2, 0.4])
    return [
        Stream("no-drift-1", length=length, seed=101),
        Stream("no-drift-2", length=length, seed=102),
        Stream("no-drift-3", length=length, seed=103),
        Stream("concept-abrupt", Change(concept=True), drift_row, length, 104, "concept"),
        Stream("concept-gradual", Change(concept=True, ramp=100_000), drift_row, length, 105, "concept"),
        Stream("covariate-strong-numeric", Change(score_a_shift=1.0), drift_row, length, 106, "covariate-strong"),
        Stream("covariate-strong-category", Change(channel_shares=uniformish), drift_row, length, 107,
               "covariate-strong"),
        Stream("covariate-subtle-numeric", Change(age_shift=0.35), drift_row, length, 108, "covariate-subtle"),
        Stream("covariate-subtle-category", Change(country_towards_uniform=0.4), drift_row, length, 109,
               "covariate-subtle"),
        Stream("covariate-gradual", Change(score_a_shift=1.0, ramp=200_000), drift_row, length, 110, "covariate"),
    ]


def training_rows(rows: int, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Rows as the model's training and test data saw them: no drift."""
    return Stream("train", length=rows, seed=seed).rows(np.random.default_rng(seed), np.arange(rows))
