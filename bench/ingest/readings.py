"""The benchmark's records: sensor readings of about 200 bytes (``readings.yaml``).

    {"id":"r-0000000042","time":"2026-12-01T00:00:00.042Z","temp":21.37,"humidity":48.2,
     "pressure":1013.25,"vibration":0.0123,"voltage":229.8,"current":null,"rpm":1450,"errors":0,
     "device":"pump","site":"berlin-2","label":0}

Deterministic for a seed; ``id`` is unique, so every landed row can be
checked for loss and duplication.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

SPEC = Path(__file__).with_name("readings.yaml")
DEVICES = np.array(["pump", "fan", "valve", "compressor", "motor"])
SITES = np.array([f"{city}-{n}" for city in ("berlin", "lyon", "porto", "turin", "gdansk") for n in (1, 2, 3)])
START = datetime(2026, 12, 1, tzinfo=UTC)


def reading_id(index: int) -> str:
    return f"r-{index:010d}"


def readings(first: int, count: int, seed: int = 7, times: list[datetime] | None = None) -> list[bytes]:
    """Records ``first .. first+count-1`` as compact JSON; ``times`` overrides the event times."""
    rng = np.random.default_rng([seed, first])
    temperature = rng.normal(40, 15, count).round(2).tolist()
    humidity = rng.uniform(5, 95, count).round(1).tolist()
    pressure = rng.normal(1013, 8, count).round(2).tolist()
    vibration = rng.exponential(0.02, count).round(4)
    vibration = np.where(rng.random(count) < 0.05, np.nan, vibration).tolist()
    voltage = rng.normal(230, 3, count).round(1).tolist()
    current = rng.gamma(4, 2.5, count).round(3)
    current = np.where(rng.random(count) < 0.1, np.nan, current).tolist()
    rpm = rng.integers(600, 3000, count).tolist()
    errors = rng.poisson(0.3, count).tolist()
    device = DEVICES[rng.integers(0, len(DEVICES), count)].tolist()
    site = SITES[rng.integers(0, len(SITES), count)].tolist()
    failure = (rng.random(count) < 0.03).astype(int).tolist()
    records = []
    for i in range(count):
        index = first + i
        moment = times[i] if times is not None else START + timedelta(milliseconds=index)
        stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
        records.append(
            f'{{"id":"{reading_id(index)}","time":"{stamp}","temp":{temperature[i]!r},'
            f'"humidity":{humidity[i]!r},"pressure":{pressure[i]!r},"vibration":{_number(vibration[i])},'
            f'"voltage":{voltage[i]!r},"current":{_number(current[i])},"rpm":{rpm[i]},'
            f'"errors":{errors[i]},"device":"{device[i]}","site":"{site[i]}","label":{failure[i]}}}'.encode()
        )
    return records


def _number(value: float) -> str:
    return "null" if value != value else repr(value)
