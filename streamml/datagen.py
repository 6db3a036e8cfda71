"""Synthetic card transactions with a learnable fraud label (the demo dataset,
``examples/datasets/transactions.yaml``), deterministic for a seed.

``shift`` moves the feature distributions (covariate drift); ``concept``
changes how the label depends on them (concept drift) while the features
stay put. Both go from 0 (the training world) to 1 (fully drifted), so a
gradual drift is a ramp of values over successive calls.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np

CHANNELS = np.array(["web", "pos", "atm", "phone"])
COUNTRIES = np.array(["DE", "FR", "ES", "IT", "NL", "PL", "SE", "US", "GB", "BR"])
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def transactions(
    n: int, seed: int, start: int = 0, shift: float = 0.0, concept: float = 0.0
) -> dict[str, np.ndarray]:
    """Columns of ``n`` transactions with ids ``start .. start+n-1``."""
    rng = np.random.default_rng([seed, start])
    amount = rng.lognormal(mean=3.5 + 1.2 * shift, sigma=1.0, size=n).clip(0, 100_000)
    hour = rng.integers(0, 24, size=n)
    distance = rng.exponential(scale=20 * (1 + 1.5 * shift), size=n)
    merchant_age = rng.gamma(shape=2.0, scale=300.0, size=n)
    channel = CHANNELS[rng.choice(4, size=n, p=_mix([0.45, 0.4, 0.1, 0.05], [0.1, 0.2, 0.2, 0.5], shift))]
    country = COUNTRIES[rng.integers(0, len(COUNTRIES), size=n)]
    risk_then = (
        1.2 * (np.log1p(amount) - 3.5)
        + 0.03 * distance
        - 0.003 * merchant_age
        + 1.5 * (channel == "phone")
        + 1.2 * ((hour < 5) | (hour > 22))
        - 3.2
    )
    # After a concept drift, small night purchases far from home are the fraud.
    risk_now = -1.2 * (np.log1p(amount) - 3.5) + 1.5 * (channel == "web") - 0.03 * distance - 3.0
    risk = (1 - concept) * risk_then + concept * risk_now
    fraud = (rng.random(n) < 1 / (1 + np.exp(-risk))).astype(np.int64)
    distance = np.where(rng.random(n) < 0.02, np.nan, distance)  # some readings are missing
    ids = np.arange(start, start + n)
    return {
        "tx_id": np.array([f"tx-{i:010d}" for i in ids]),
        "ts": ids,  # seconds after EPOCH
        "amount": amount.round(2),
        "hour": hour,
        "distance_km": distance.round(3),
        "merchant_age_days": merchant_age.round(1),
        "channel": channel,
        "country": country,
        "is_fraud": fraud,
    }


def _mix(before: list[float], after: list[float], weight: float) -> np.ndarray:
    mixed = (1 - weight) * np.array(before) + weight * np.array(after)
    return mixed / mixed.sum()


def to_json_records(columns: dict[str, np.ndarray]) -> list[bytes]:
    """One compact JSON object per row, as an application would publish it."""
    rows = []
    amount, hour, distance = columns["amount"].tolist(), columns["hour"].tolist(), columns["distance_km"].tolist()
    age, channel, country = columns["merchant_age_days"].tolist(), columns["channel"].tolist(), columns["country"].tolist()
    fraud, ids, ts = columns["is_fraud"].tolist(), columns["tx_id"].tolist(), columns["ts"].tolist()
    for i in range(len(ids)):
        rows.append(
            json.dumps(
                {
                    "tx_id": ids[i],
                    "ts": (EPOCH + timedelta(seconds=ts[i])).isoformat().replace("+00:00", "Z"),
                    "amount": amount[i],
                    "hour": hour[i],
                    "distance_km": None if distance[i] != distance[i] else distance[i],
                    "merchant_age_days": age[i],
                    "channel": channel[i],
                    "country": country[i],
                    "is_fraud": fraud[i],
                },
                separators=(",", ":"),
            ).encode()
        )
    return rows
