"""Rebuild a committed dataset version from its lineage, and compare the result with the version.

A manifest records everything its preparation depended on: the raw objects
(key, topic, partition, offset range, rows, sha256), the whole spec, the
engine, the training window (``rows_since``) and a drift build's drift
point. A rebuild reads the same objects with the same engine into a scratch
prefix (``keys.rebuild_prefix``), never into the version itself:

    checks = check_lineage(store, stored, prefix, reland)   # each raw object: still there, unchanged?
    rebuilt = prepare_again(store, s3, stored, checks, prefix, spark)
    differences = compare(stored, rebuilt)                   # [] when identical

A raw object that is gone is landed again at its own key from the recorded
offsets (``reland``, which never replaces an object); one whose bytes are
not the recorded ones is left as it is and its records are landed again
into the scratch prefix, which the rebuild then reads.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import SparkSession

from services.prep.builder import engine_function
from services.prep.drift import to_ms
from services.prep.result import build_manifest
from streamml import code_version
from streamml.manifest import DatasetManifest, RawSource
from streamml.registry.keys import MANIFEST_FILE, rebuild_raw_key
from streamml.settings import S3Settings
from streamml.store import ObjectNotFound, ObjectStore

# What a rebuild must reproduce. The rest differs by nature: when and by which code it was built,
# the names of its files, why its engine was chosen.
COMPARED = ("spec_fingerprint", "schema_", "key", "event_time", "event_time_source", "label", "features", "rows",
            "content_sha256", "transform", "reference", "label_reference", "engine", "rows_since", "drift", "weight")


class RebuildError(Exception):
    """The version cannot be rebuilt; the message says why."""


@dataclass(frozen=True)
class Relanding:
    """What landing a raw object's records again gave: the sha256 of the bytes at ``key``, or why it could not."""

    key: str
    sha256: str | None = None
    problem: str | None = None


# Lands ``source``'s recorded offsets again at a key (its own, or a scratch one).
Reland = Callable[[RawSource, str], Relanding]


State = Literal["ok", "unverified", "lost", "changed"]


@dataclass(frozen=True)
class RawCheck:
    """One raw object of the lineage, as the rebuild found it, and the key it reads its records from."""

    source: RawSource
    state: State
    detail: str
    read_from: str | None  # None: its records are not available
    sha256: str | None = None  # of the bytes at read_from

    @property
    def relanded(self) -> bool:
        return self.state in ("lost", "changed") and self.read_from is not None


@dataclass(frozen=True)
class Difference:
    path: str
    stored: object
    rebuilt: object

    def __str__(self) -> str:
        return f"{self.path}: stored {_short(self.stored)}, rebuilt {_short(self.rebuilt)}"


def rebuildable(stored: DatasetManifest) -> None:
    """RebuildError unless the manifest records all a rebuild needs."""
    if stored.spec is None:
        raise RebuildError(
            f"{stored.dataset} v{stored.version} was built before manifests recorded the spec they were prepared "
            "by (its prep policy: splits, clipping, null handling), so it cannot be rebuilt; versions built "
            f"from now on can be (`streamml prep run {stored.dataset}` builds one now)")
    if stored.engine not in ("duckdb", "spark"):
        raise RebuildError(f"{stored.dataset} v{stored.version} records engine {stored.engine!r}, which streamml "
                           "does not have; it cannot be rebuilt")


def check_raw(store: ObjectStore, source: RawSource) -> tuple[State, str, str | None]:
    """One lineage object as stored now: its state (ok; unverified: no sha256 recorded, rows match; lost;
    changed), why, and the sha256 of its bytes when there."""
    try:
        data = store.get_bytes(source.key)
    except ObjectNotFound:
        return "lost", "not in the store", None
    digest = hashlib.sha256(data).hexdigest()
    if source.sha256 is not None:
        if digest == source.sha256:
            return "ok", "as recorded", digest
        return "changed", f"sha256 {digest[:16]}… where the version recorded {source.sha256[:16]}…", digest
    try:
        rows = pq.read_metadata(pa.BufferReader(data)).num_rows
    except (pa.ArrowException, OSError) as error:
        return "changed", f"no longer readable Parquet ({error})", digest
    if rows != source.rows:
        return "changed", f"{rows} rows where the version recorded {source.rows}", digest
    return "unverified", f"{rows} rows as recorded; the version recorded no sha256 to compare its bytes with", digest


def check_lineage(store: ObjectStore, stored: DatasetManifest, prefix: str, reland: Reland | None,
                  on_checked: Callable[[RawCheck], None] = lambda _: None) -> list[RawCheck]:
    """Each raw object of the version: as recorded, or lost or changed and then landed again from its
    offsets where ``reland`` can (a lost one at its own key, a changed one under ``prefix``)."""
    checks = []
    for source in stored.lineage:
        state, detail, digest = check_raw(store, source)
        if state == "lost":
            check = _landed_again(source, state, detail, source.key, reland)
        elif state == "changed":
            check = _landed_again(source, state, f"{detail}; the stored object was left as it is",
                                  rebuild_raw_key(prefix, source.key), reland)
        else:
            check = RawCheck(source, state, detail, source.key, digest)
        on_checked(check)
        checks.append(check)
    return checks


def _landed_again(source: RawSource, state: Literal["lost", "changed"], detail: str, key: str,
                  reland: Reland | None) -> RawCheck:
    if reland is None:
        return RawCheck(source, state, f"{detail}; not landed again (no broker to read its offsets from)", None)
    offsets = f"{source.topic}[{source.partition}] offsets {source.first_offset}-{source.last_offset}"
    landed = reland(source, key)
    if landed.problem is not None:
        return RawCheck(source, state, f"{detail}; cannot be landed again from {offsets}: {landed.problem}", None)
    same = ("the same bytes as recorded" if landed.sha256 == source.sha256 else
            "bytes the version did not record" if source.sha256 else "no recorded sha256 to compare with")
    return RawCheck(source, state, f"{detail}; landed again from {offsets} at {landed.key}: {same}", landed.key,
                    landed.sha256)


def prepare_again(store: ObjectStore, s3: S3Settings, stored: DatasetManifest, checks: list[RawCheck], prefix: str,
                  spark: Callable[[], SparkSession]) -> DatasetManifest:
    """Prepare the checked raw objects as the version was prepared (spec, engine, training window, drift
    point, recency weights) into ``prefix``; the rebuilt manifest is written there too, and returned."""
    rebuildable(stored)
    assert stored.spec is not None  # rebuildable says so
    missing = [check.source.key for check in checks if check.read_from is None]
    if missing:
        raise RebuildError(f"{len(missing)} raw object(s) of {stored.dataset} v{stored.version} are not available, "
                           f"e.g. {missing[0]}: the rebuild would not read what the version read")
    prepare = engine_function(stored.engine, spark)
    result = prepare(
        stored.spec, [f"s3a://{s3.bucket}/{check.read_from}" for check in checks], f"s3a://{s3.bucket}/{prefix}",
        s3, since_ms=to_ms(stored.rows_since) if stored.rows_since is not None else None,
        drift_point_ms=to_ms(stored.drift.point) if stored.drift is not None else None,
        half_life_s=stored.drift.half_life_s if stored.drift is not None else None,
    )
    drift = stored.drift
    if drift is not None and result.drift_sides is not None:
        sides = result.drift_sides
        drift = drift.model_copy(update={"rows_before": sides.before, "rows_after": sides.after,
                                         "test_rows_left_out": sides.test_left_out})
    rebuilt = build_manifest(
        result, stored.spec, version=stored.version, trigger=stored.trigger, code_version=code_version(),
        quarantined=stored.quarantined, drift=drift, rows_since=stored.rows_since,
        engine_reason=f"the rebuild of v{stored.version} uses the engine its manifest records",
        lineage=[check.source.model_copy(update={"key": check.read_from, "sha256": check.sha256}) for check in checks],
    )
    store.put(prefix + MANIFEST_FILE, rebuilt.model_dump_json(by_alias=True, indent=1).encode())
    return rebuilt


def compare(stored: DatasetManifest, rebuilt: DatasetManifest) -> list[Difference]:
    """Every difference between what the two manifests say a version holds: rows, statistics, hashes."""
    differences: list[Difference] = []
    before, after = stored.model_dump(include=set(COMPARED)), rebuilt.model_dump(include=set(COMPARED))
    for name in COMPARED:
        _diff(name.rstrip("_"), before[name], after[name], differences)
    return differences


def _diff(path: str, stored: object, rebuilt: object, found: list[Difference]) -> None:
    if isinstance(stored, dict) and isinstance(rebuilt, dict):
        for key in [*stored, *(key for key in rebuilt if key not in stored)]:
            _diff(f"{path}.{key}", stored.get(key), rebuilt.get(key), found)
    elif isinstance(stored, list | tuple) and isinstance(rebuilt, list | tuple) and len(stored) == len(rebuilt):
        for index, (a, b) in enumerate(zip(stored, rebuilt, strict=True)):
            _diff(f"{path}[{index}]", a, b, found)
    elif not _same(stored, rebuilt):
        found.append(Difference(path, stored, rebuilt))


def _same(a: object, b: object) -> bool:
    """Equal, bit for bit for floats (NaN equals NaN: both builds found no value)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return type(a) is type(b) and a == b


def _short(value: object, width: int = 100) -> str:
    text = repr(value)
    if isinstance(value, list | tuple | dict):
        text = f"{type(value).__name__} of {len(value)}: {text}"
    return text if len(text) <= width else text[: width - 1] + "…"
