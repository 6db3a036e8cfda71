"""Raw landed transactions as prep meets them, for tests and benchmarks.

``streamml.datagen`` makes clean records; landed data also carries re-sent
versions of a key (some at the same event time), rare categories, and a
share of records that break the spec (negative or too large amounts,
hour 24, unknown channels, missing required values, NaN)::

    table = raw_transactions(20_000, seed=7)
    paths = write_raw(table, Path("/tmp/raw"), files=4)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from streamml import datagen

EPOCH_US = int(datagen.EPOCH.timestamp()) * 1_000_000
RARE_COUNTRIES = np.array([f"X{i:02d}" for i in range(40)])


def raw_transactions(
    rows: int, seed: int = 0, duplicate_share: float = 0.1, bad_share: float = 0.01
) -> pa.Table:
    """``rows`` raw records of which about ``duplicate_share`` re-send an earlier key."""
    rng = np.random.default_rng([seed, 1])
    unique = max(1, round(rows / (1 + duplicate_share)))
    clean = datagen.transactions(unique, seed)
    # Re-sent versions: a later event time, or (one in four) the same time with another amount.
    picks = np.concatenate([np.arange(unique), rng.integers(0, unique, rows - unique)])
    resent = np.arange(rows) >= unique
    columns = {name: values[picks] for name, values in clean.items()}
    ts = EPOCH_US + columns["ts"].astype(np.int64) * 1_000_000
    later = np.where(rng.random(rows) < 0.25, 0, rng.integers(1, 3_600_000_000, rows))
    ts = np.where(resent, ts + later, ts)
    amount = np.where(resent, np.round(columns["amount"] * rng.uniform(0.5, 1.5, rows), 2), columns["amount"])
    country = columns["country"].astype(object)
    rare = rng.random(rows) < 0.003
    country[rare] = RARE_COUNTRIES[np.minimum(rng.zipf(1.5, rare.sum()) - 1, len(RARE_COUNTRIES) - 1)]
    hour = columns["hour"].astype(np.int32)
    channel = columns["channel"].astype(object)
    fraud = columns["is_fraud"].copy()
    missing = {name: np.zeros(rows, dtype=bool) for name in ("ts", "merchant_age_days", "country")}

    bad = np.flatnonzero(rng.random(rows) < bad_share)
    kind = rng.integers(0, 9, len(bad))
    amount[bad[kind == 0]] = -5.0
    amount[bad[kind == 1]] = 250_000.0
    amount[bad[kind == 2]] = np.nan
    hour[bad[kind == 3]] = 24
    channel[bad[kind == 4]] = "fax"
    fraud[bad[kind == 5]] = 2
    missing["merchant_age_days"][bad[kind == 6]] = True
    missing["country"][bad[kind == 7]] = True
    missing["ts"][bad[kind == 8]] = True

    return pa.table(
        {
            "tx_id": pa.array(columns["tx_id"], pa.string()),
            "ts": pa.array(ts, pa.timestamp("us", tz="UTC"), mask=missing["ts"]),
            "amount": pa.array(amount, pa.float64()),
            # Narrower than the spec's int64, as some producers write it: prep casts.
            "hour": pa.array(hour, pa.int32()),
            "distance_km": pa.array(columns["distance_km"], pa.float64()),
            "merchant_age_days": pa.array(
                columns["merchant_age_days"], pa.float64(), mask=missing["merchant_age_days"]
            ),
            "channel": pa.array(channel, pa.string()),
            "country": pa.array(country, pa.string(), mask=missing["country"]),
            "is_fraud": pa.array(fraud, pa.int64()),
        }
    )


def write_raw(table: pa.Table, folder: Path, files: int = 1) -> list[str]:
    """Write ``table`` as ``files`` Parquet objects in row order, like successive ingest batches."""
    folder.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, table.num_rows, files + 1).astype(int)
    paths = []
    for index, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        path = folder / f"batch-{index:05d}.parquet"
        pq.write_table(table.slice(start, stop - start), path)
        paths.append(str(path))
    return paths
