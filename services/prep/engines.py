"""Which engine builds a dataset version, and why: pure decisions, recorded in the manifest.

Both engines implement the same preparation and produce bit-identical
output (``job.py`` with Spark, ``duckdb_job.py`` with DuckDB on one
machine). ``auto`` takes DuckDB while the raw data a build reads fits
``STREAMML_PREP_DUCKDB_MAX_BYTES``, and Spark beyond: Spark's session start
and per-job overhead buy nothing on data one process handles in seconds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from streamml.specs import PrepEngine

Engine = Literal["spark", "duckdb"]
SETTING = "STREAMML_PREP_ENGINE"
MAX_BYTES_SETTING = "STREAMML_PREP_DUCKDB_MAX_BYTES"
# The default limit of auto. DuckDB's peak RSS was about 25 times the raw Parquet it read
# (bench/prep: 1.2 GiB for 2M transactions, 49 MiB of Parquet), so 256 MiB of raw data, about
# 10M such rows, needs about 6 GiB: within what one machine or a prep pod can give it.
DUCKDB_MAX_BYTES = 256 * 2**20


@dataclass(frozen=True)
class EngineChoice:
    engine: Engine
    reason: str


def choose_engine(setting: PrepEngine, policy: PrepEngine | None, raw_bytes: int,
                  duckdb_max_bytes: int) -> EngineChoice:
    """The engine of one build: the spec's ``prep.engine`` if set, else the service's setting;
    ``auto`` decides by the size of the raw objects the build reads."""
    chosen, source = (policy, "the spec's prep.engine") if policy is not None else (setting, SETTING)
    if chosen != "auto":
        return EngineChoice(chosen, f"{source} is {chosen}")
    size, limit = _size(raw_bytes), _size(duckdb_max_bytes)
    if raw_bytes <= duckdb_max_bytes:
        return EngineChoice("duckdb", f"{source} is auto: {size} of raw data <= {MAX_BYTES_SETTING} ({limit})")
    return EngineChoice("spark", f"{source} is auto: {size} of raw data > {MAX_BYTES_SETTING} ({limit})")


def may_need_spark(setting: PrepEngine, policies: Iterable[PrepEngine | None]) -> bool:
    """Whether any of these datasets can be built with Spark (so its jars must be there at start)."""
    return any((policy if policy is not None else setting) != "duckdb" for policy in policies)


def _size(size: int) -> str:
    return f"{size / 2**20:,.1f} MiB" if size >= 2**20 else f"{size / 2**10:,.1f} KiB"
