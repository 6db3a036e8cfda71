"""Build one dataset version: check the raw objects, choose the engine
(``engines.py``), claim the next number (a lease, see ``versions.py``), run
the job into the attempt's own folder, and create the manifest last
(If-None-Match): it publishes the version."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import SparkSession

from services.prep.drift import DriftCut, from_ms, to_ms
from services.prep.duckdb_job import prepare_with_duckdb
from services.prep.engines import DUCKDB_MAX_BYTES, Engine, choose_engine
from services.prep.job import prepare_with_spark
from services.prep.result import DriftSides, PrepResult, build_manifest
from services.prep.rules import PrepError
from services.prep.spark import error_summary, lost_the_store
from services.prep.versions import Held, Lease, build_id, claim_next_version, discard
from streamml import code_version
from streamml.manifest import DatasetManifest, DriftBuild, RawSource
from streamml.registry.datasets import latest_manifest, raw_objects, read_manifest
from streamml.registry.drift_requests import DriftRequest
from streamml.registry.keys import RawObject, dataset_manifest_key
from streamml.settings import S3Settings
from streamml.specs import KAFKA_TIME, DatasetSpec, PrepEngine
from streamml.store import ObjectConflict, ObjectNotFound, ObjectStore, StoreUnavailable

log = logging.getLogger("streamml.prep")


class BuildFailed(Exception):
    """No version was published; the message says why."""


class Busy(Exception):
    """Another attempt holds the next version of the dataset (a live lease): nothing was built."""

    def __init__(self, held: Held) -> None:
        super().__init__(f"version {held.version} is being built by {held.owner} (attempt {held.attempt})")
        self.held = held


class LostRace(Exception):
    """Another attempt published the version first (this one had lost its lease); its files are gone."""


class AlreadyAnswered(Exception):
    """Another replica published the build of this drift first: nothing was built."""


@dataclass(frozen=True)
class DriftOrder:
    """A drift build to make: the request it answers, its Spark cut, and the counts behind the decision."""

    request: DriftRequest
    cut: DriftCut
    landed_rows_after: int
    waited_out: bool
    training_window: str

    def record(self, sides: DriftSides) -> DriftBuild:
        request = self.request
        return DriftBuild(
            event_id=request.event_id, model=request.model, kind=request.kind, window_start=request.window_start,
            window_end=request.window_end, point=from_ms(self.cut.point_ms), training_window=self.training_window,
            rows_before=sides.before, rows_after=sides.after, test_rows_left_out=sides.test_left_out,
            landed_rows_after=self.landed_rows_after, waited_out=self.waited_out,
        )


class DatasetBuilder:
    """``spark`` returns the session, started on first call (``spark.SparkOnDemand``): only a build
    that runs on Spark calls it."""

    def __init__(self, store: ObjectStore, s3: S3Settings, spark: Callable[[], SparkSession],
                 lease_s: float = 60.0, engine: PrepEngine = "auto", duckdb_max_bytes: int = DUCKDB_MAX_BYTES) -> None:
        self.store, self.s3, self.spark, self.lease_s = store, s3, spark, lease_s
        self.engine, self.duckdb_max_bytes = engine, duckdb_max_bytes
        self._rows: dict[str, int] = {}  # raw key -> rows, for objects already checked
        self._bytes: dict[str, int] = {}  # raw key -> size, for objects already checked
        self._sha256: dict[str, str] = {}  # raw key -> sha256 of its bytes, recorded in the lineage
        # raw key -> its rows' Kafka times (ms, sorted), to count the rows on each side of a drift:
        # 8 bytes per landed row.
        self._times: dict[str, np.ndarray] = {}
        self._bad: dict[str, str] = {}  # raw key -> why it cannot be read

    def check(self, raw: RawObject) -> str | None:
        """Why a raw object cannot be used, or None; each object is read once per process."""
        if raw.key in self._rows:
            return None
        if raw.key not in self._bad:
            try:
                data = self.store.get_bytes(raw.key)
                metadata = pq.read_metadata(pa.BufferReader(data))
                self._times[raw.key] = kafka_times(data, metadata)
                self._rows[raw.key] = metadata.num_rows
                self._bytes[raw.key] = len(data)
                self._sha256[raw.key] = hashlib.sha256(data).hexdigest()
                return None
            except (pa.ArrowException, OSError) as error:
                self._bad[raw.key] = f"unreadable Parquet: {error}"
                log.warning("raw object quarantined", extra={"object_key": raw.key, "reason": self._bad[raw.key]})
        return self._bad[raw.key]

    def landed_times(self, dataset: str) -> list[np.ndarray]:
        """The sorted Kafka times of every readable raw object of ``dataset`` (reading new ones)."""
        return [self._times[raw.key] for raw in raw_objects(self.store, dataset) if self.check(raw) is None]

    def build(self, spec: DatasetSpec, trigger: str, drift: DriftOrder | None = None) -> DatasetManifest:
        """Build the next version; a drift build from its window, any other from the newest version's
        ``rows_since`` (a drift build's window start holds until the next drift moves it)."""
        since_ms = drift.cut.since_ms if drift is not None else kept_since(latest_manifest(self.store, spec.name))
        raws = raw_objects(self.store, spec.name)
        quarantined = {raw.key: reason for raw in raws if (reason := self.check(raw))}
        if quarantined and spec.prep.on_bad_object == "fail":
            raise BuildFailed(f"{len(quarantined)} unreadable raw object(s), e.g. {next(iter(quarantined.items()))}; "
                              f"dataset {spec.name!r} has on_bad_object: fail")
        usable = [raw for raw in raws if raw.key not in quarantined]
        if not usable:
            raise BuildFailed(f"dataset {spec.name!r} has no readable raw data")
        chosen = choose_engine(self.engine, spec.prep.engine, sum(self._bytes[raw.key] for raw in usable),
                               self.duckdb_max_bytes)
        prepare = engine_function(chosen.engine, self.spark)  # before the claim: a Spark that fails to start holds no number
        claim = claim_next_version(self.store, spec.name, build_id([raw.key for raw in usable], trigger),
                                   self.lease_s)
        if isinstance(claim, Held):
            raise Busy(claim)
        if drift is not None and answered_before(self.store, spec.name, claim.version, drift.request.event_id):
            # Another replica built this drift while this one decided to: give the number back.
            Lease(self.store, claim, self.lease_s).release()
            raise AlreadyAnswered(f"version {claim.version - 1} answers drift event {drift.request.event_id}")
        out = f"s3a://{self.s3.bucket}/{claim.prefix.rstrip('/')}"
        log.info("building", extra={"dataset": spec.name, "version": claim.version, "trigger": trigger,
                                    "attempt": claim.attempt, "raw_objects": len(usable),
                                    "quarantined": len(quarantined), "engine": chosen.engine,
                                    "reason": chosen.reason})
        with Lease(self.store, claim, self.lease_s) as lease:
            try:
                result = prepare(
                    spec, [f"s3a://{self.s3.bucket}/{raw.key}" for raw in usable], out, self.s3,
                    since_ms=since_ms, drift_point_ms=drift.cut.point_ms if drift else None,
                )
            except (PrepError, StoreUnavailable) as error:
                failed = error
            except Exception as error:
                if not lost_the_store(error):
                    raise
                failed = StoreUnavailable(f"the {chosen.engine} job lost the object store: {error_summary(error)}")
            else:
                failed = None
                manifest = build_manifest(
                    result, spec, version=claim.version, trigger=trigger, code_version=code_version(),
                    quarantined=quarantined,
                    drift=drift.record(result.drift_sides) if drift and result.drift_sides else None,
                    rows_since=None if since_ms is None else from_ms(since_ms), engine_reason=chosen.reason,
                    lineage=[RawSource(key=r.key, topic=r.topic, partition=r.partition, first_offset=r.first_offset,
                                       last_offset=r.last_offset, rows=self._rows[r.key],
                                       sha256=self._sha256[r.key]) for r in usable],
                )
                try:
                    self.store.create(dataset_manifest_key(spec.name, claim.version),
                                      manifest.model_dump_json(by_alias=True, indent=1).encode())
                except ObjectConflict:
                    failed = LostRace(f"version {claim.version} was published by another attempt first")
        if failed is not None:
            discard(self.store, claim)
            if isinstance(failed, LostRace):
                raise failed
            lease.release()
            if isinstance(failed, StoreUnavailable):
                raise failed  # waited out by the fault policy; the retry claims the version again
            raise BuildFailed(str(failed)) from None
        return manifest

def engine_function(engine: Engine, spark: Callable[[], SparkSession]) -> Callable[..., PrepResult]:
    """The engine's prepare function, with the same signature for both (Spark's session started now)."""
    if engine == "duckdb":
        return prepare_with_duckdb
    return partial(prepare_with_spark, spark())


def kafka_times(data: bytes, metadata: pq.FileMetaData) -> np.ndarray:
    """The sorted Kafka times (ms) of a raw object's rows; a batch without them counts as pre-drift (time 0)."""
    if KAFKA_TIME not in metadata.schema.names:
        return np.zeros(metadata.num_rows, dtype=np.int64)
    column = pq.read_table(pa.BufferReader(data), columns=[KAFKA_TIME]).column(KAFKA_TIME)
    return np.sort(column.cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64()).to_numpy(zero_copy_only=False))


def kept_since(latest: DatasetManifest | None) -> int | None:
    """Where a build that answers no drift starts reading (Kafka time, ms): where the newest version did."""
    return to_ms(latest.rows_since) if latest is not None and latest.rows_since is not None else None


def answered_before(store: ObjectStore, dataset: str, version: int, event_id: str) -> bool:
    """Whether the version before ``version`` is the build of drift event ``event_id``."""
    if version <= 1:
        return False
    try:
        previous = read_manifest(store, dataset, version - 1)
    except ObjectNotFound:
        return False
    return previous.drift is not None and previous.drift.event_id == event_id
