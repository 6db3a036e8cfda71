"""The prep service: landed raw data -> versioned datasets, announced by dataset.ready.

``data.landed`` marks a dataset as worth a look; every couple of seconds the
service derives each marked dataset's pending raw objects from the store and
builds a version when the spec's policy says so (enough new records, or the
oldest pending data is stale). ``drift.detected`` asks for a drift build
(``datasets/<d>/_drift_request``): it waits until ``prep.on_drift.min_rows_after``
rows from after the drift have landed (or ``max_wait_s`` has passed), then
builds from the spec's training window; regular builds wait meanwhile (see
``drift.py``). Builds run on one long-lived SparkSession while the consumer
keeps polling.

Events are keyed by dataset, so one replica gets a dataset's events; after a
start, and whenever partitions are assigned to it, a replica looks at every
dataset once, since events a dead replica committed are not delivered again.
Which replica builds is settled in the store: a build claims the next version
number with a lease (``versions.py``), so while one replica builds a dataset
the others skip it, and a replica that dies mid-build hands the number over
when its lease runs out.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import Counter, Histogram
from pydantic import Field, ValidationInfo, field_validator

from services.prep.builder import AlreadyAnswered, BuildFailed, Busy, DatasetBuilder, DriftOrder, LostRace
from services.prep.drift import DriftCut, drift_step, rows_since, to_ms, window_since_ms
from services.prep.engines import DUCKDB_MAX_BYTES, may_need_spark
from services.prep.s3a_signing import Signer
from services.prep.spark import (
    SparkJarsMissing,
    SparkOnDemand,
    check_cluster_conf,
    check_extra_conf,
    check_master,
    s3a_jars,
    spark_session,
)
from services.prep.versions import pending
from streamml.events import DataLanded, DatasetReady, DriftDetected, Event, stable_id
from streamml.manifest import DatasetManifest
from streamml.registry.datasets import latest_manifest
from streamml.registry.drift_requests import DriftRequest, DriftWait, read_drift_request
from streamml.registry.keys import RegistryError, dataset_announced_key, drift_request_key
from streamml.service import EventService, StartupError, run
from streamml.settings import Group, ServiceSettings
from streamml.specs import DatasetSpec, PrepEngine, PrepPolicy, SpecError, load_dataset_specs
from streamml.store import ObjectConflict, ObjectNotFound, StoreError

log = logging.getLogger("streamml.prep")

GROUP = "streamml-prep"
INPUT_TOPICS = ["data.landed", "drift.detected"]
CHECK_EVERY_S = 2.0

BUILDS = Counter("streamml_prep_builds_total", "Dataset builds by outcome", ["dataset", "trigger", "outcome"])
BUILD_SECONDS = Histogram("streamml_prep_build_seconds", "Duration of a dataset build", ["dataset"],
                          buckets=(5, 10, 20, 40, 60, 120, 300, 600, 1800))


class PrepOptions(Group):
    specs_dir: Path = Field(Path("datasets"), description="folder of dataset spec YAML files")
    engine: PrepEngine = Field(
        "auto", description="spark, duckdb, or auto: duckdb when the raw data a build reads is at most "
        "duckdb_max_bytes, else spark (a spec's prep.engine overrides this)")
    duckdb_max_bytes: int = Field(
        DUCKDB_MAX_BYTES, ge=0, description="auto builds with duckdb up to this many bytes of raw Parquet")
    spark_master: str = Field("local[*]", description="where Spark jobs run: local[N], local[*] (in this process), "
                              "spark://host:port (a standalone cluster) or k8s://https://host[:port] (executor pods)")
    spark_conf: dict[str, str | int | float | bool] = Field(
        {}, description="extra Spark settings as a JSON object, e.g. executor sizing: "
        '{"spark.executor.instances": "4", "spark.executor.memory": "4g"}',
        validate_default=True,  # a k8s:// master with no conf at all must fail too
    )
    spark_driver_host: str | None = Field(
        None, description="address executors reach this process at (on Kubernetes: the pod's IP); "
        "unset: Spark's guess from the host name"
    )
    spark_driver_pod: str | None = Field(
        None, description="with a k8s:// master, the pod this process runs in: it owns the executor pods, "
        "which are deleted with it"
    )
    jars_dir: Path = Field(Path("vendor/jars"), description="folder with the S3A connector jars")
    driver_memory: str = Field("2g", description="Spark driver memory")
    s3a_signer: Signer = Field(
        "auto", description="how Spark signs S3 requests: v4 (SigV4), v2 (the old S3 signer, for Ceph 16's gateway) "
        "or auto (v4 unless the endpoint is found to need v2)"
    )
    lease_s: float = Field(
        60.0, ge=1, le=3600,
        description="a build renews its claim on a version number every third of this; a claim not renewed "
        "for this long (a replica that died mid-build) is taken over by another replica",
    )

    @field_validator("spark_master")
    @classmethod
    def _known_master(cls, value: str) -> str:
        return check_master(value)

    @field_validator("spark_conf")
    @classmethod
    def _spark_settings(cls, value: dict[str, str | int | float | bool], info: ValidationInfo) -> dict[str, str]:
        # Spark reads every setting as text; JSON's true must reach it as "true", not "True".
        conf = check_extra_conf({k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in value.items()})
        if "spark_master" in info.data:  # absent when the master itself was refused
            check_cluster_conf(info.data["spark_master"], conf)
        return conf


class PrepSettings(ServiceSettings):
    prep: PrepOptions = PrepOptions()


def trigger_for(records: int, oldest_seen: float | None, now: float, policy: PrepPolicy) -> str | None:
    """Which policy rule says to build now, if any."""
    if records >= policy.min_new_rows:
        return "rows"
    if oldest_seen is not None and records > 0 and now - oldest_seen >= policy.max_staleness_s:
        return "staleness"
    return None


class PrepService(EventService[PrepSettings]):
    name = "prep"
    group = GROUP
    accepts = (DataLanded, DriftDetected)

    def input_topics(self) -> list[str]:
        return [self.settings.kafka.topic(name) for name in INPUT_TOPICS]

    def load(self) -> None:
        options = self.settings.prep
        try:
            self.specs: dict[str, DatasetSpec] = load_dataset_specs(options.specs_dir)
        except SpecError as error:
            raise StartupError(f"STREAMML_PREP_SPECS_DIR={str(options.specs_dir)!r}: {error}") from None
        super().load()
        if may_need_spark(options.engine, [spec.prep.engine for spec in self.specs.values()]):
            try:
                s3a_jars(options.jars_dir)
            except SparkJarsMissing as error:
                raise StartupError(f"STREAMML_PREP_JARS_DIR={str(options.jars_dir)!r}: {error}; or set "
                                   "STREAMML_PREP_ENGINE=duckdb to build without Spark") from None
        self.spark = SparkOnDemand(lambda: spark_session(
            options.spark_master, self.settings.state_dir, self.settings.s3, options.jars_dir,
            driver_memory=options.driver_memory, signer=options.s3a_signer, extra_conf=options.spark_conf,
            driver_host=options.spark_driver_host, driver_pod=options.spark_driver_pod))
        if options.engine == "spark":
            # Builds need Spark from the first one on: start it now, while data lands, as before any engine choice.
            try:
                self.spark()
            except (OSError, StoreError) as error:  # asking the endpoint which signer it needs
                raise StartupError(f"choosing the S3A signer for STREAMML_S3_ENDPOINT={self.settings.s3.endpoint}: "
                                   f"{error}; or set STREAMML_PREP_S3A_SIGNER to v4 or v2") from None
        self.builder = DatasetBuilder(self.store, self.settings.s3, self.spark, lease_s=options.lease_s,
                                      engine=options.engine, duckdb_max_bytes=options.duckdb_max_bytes)
        self.marked: set[str] = set(self.specs)  # look at every dataset once after a start
        self.first_seen: dict[str, float] = {}
        self.waiting_on: dict[str, str] = {}  # dataset -> the attempt of another replica it waits for
        self.announced: dict[str, int] = {}  # dataset -> the newest version whose dataset.ready was sent
        self.last_check = 0.0

    def close(self) -> None:
        super().close()
        if hasattr(self, "spark"):
            self.spark.stop()

    def on_assign(self, partitions: list) -> None:
        super().on_assign(partitions)
        # The last owner of these partitions may have committed a dataset's data.landed and died
        # before building it; nothing would deliver those events again.
        self.marked.update(self.specs)

    def handle_event(self, event: Event, context: dict) -> None:
        if event.dataset not in self.specs:
            raise ValueError(f"no dataset spec for {event.dataset!r} in STREAMML_PREP_SPECS_DIR")
        if isinstance(event, DataLanded):
            self.marked.add(event.dataset)
        elif isinstance(event, DriftDetected):
            # Drift events of one episode (covariate, prediction, performance) arriving
            # before its build share it: the first request stands (If-None-Match). It is
            # kept in the store, so a restart or another replica continues the wait.
            request = DriftRequest.of(event, context["event_id"], datetime.now(UTC))
            try:
                self.store.create(drift_request_key(event.dataset), request.encode())
                log.info("drift build requested", extra={"dataset": event.dataset, "event_id": request.event_id,
                                                          "drift_point": request.window_start.isoformat()})
            except ObjectConflict:
                pass
            self.marked.add(event.dataset)

    def tick(self) -> None:
        now = time.monotonic()
        if now - self.last_check < CHECK_EVERY_S:
            return
        self.last_check = now
        for name in sorted(self.marked):
            spec = self.specs[name]
            latest = latest_manifest(self.store, name)
            if latest is not None and latest.version > self.announced.get(name, 0):
                # Looked up again now: another replica may have announced it since this one looked.
                self.announced[name] = self._stored_announced(name)
                if latest.version > self.announced[name]:  # committed, then its builder died before announcing it
                    log.info("announcing a version its build left unannounced",
                             extra={"dataset": name, "version": latest.version})
                    self._announce(latest)
            request = self._drift_request(name, latest)
            if request is not None:
                # Regular builds wait for the drift build: it supersedes them. Still marked, so
                # the wait is looked at again at the next check.
                self._answer_drift(spec, request)
                continue
            waiting = pending(self.store, name, latest)
            records = sum(raw.records for raw in waiting)
            if not waiting:
                self.marked.discard(name)
                self.first_seen.pop(name, None)
                continue
            self.first_seen.setdefault(name, now)
            trigger = trigger_for(records, self.first_seen[name], now, spec.prep)
            if trigger is None:
                continue
            if self._try_build(spec, trigger) != "busy":
                self.marked.discard(name)  # looked at again on the next data.landed
                self.first_seen.pop(name, None)

    def _try_build(self, spec: DatasetSpec, trigger: str, drift: DriftOrder | None = None) -> str:
        """``built``, ``failed`` or ``busy`` (another replica holds the next version)."""
        # An outage raises out of here with the dataset still marked: the retry builds it.
        try:
            self._build(spec, trigger, drift)
        except Busy as busy:
            if self.waiting_on.get(spec.name) != busy.held.attempt:
                self.waiting_on[spec.name] = busy.held.attempt
                log.info("another replica builds this dataset; looking again later",
                         extra={"dataset": spec.name, "reason": str(busy)})
            return "busy"  # still marked: if that build fails or its replica dies, this one builds
        except (BuildFailed, LostRace):
            return "failed"  # logged and counted; the next landed batch (or check, for a drift) retries
        return "built"

    def _drift_request(self, dataset: str, latest: DatasetManifest | None) -> DriftRequest | None:
        """The drift build this dataset owes, unless the newest version answers it already."""
        key = drift_request_key(dataset)
        try:
            request = read_drift_request(self.store, dataset)
        except RegistryError as error:  # e.g. written by an older prep: the wait starts over on the next drift
            log.warning("unreadable drift request deleted", extra={"dataset": dataset, "reason": str(error)})
            self.store.delete(key)
            return None
        if request is not None and latest is not None and latest.drift and latest.drift.event_id == request.event_id:
            self.store.delete(key)  # built, then the replica stopped before deleting the request
            return None
        return request

    def _answer_drift(self, spec: DatasetSpec, request: DriftRequest) -> None:
        """Build for the drift once enough post-drift rows landed; else say why not, in the request."""
        policy = spec.prep.on_drift
        times = self.builder.landed_times(spec.name)
        point = to_ms(request.window_start)
        after = rows_since(times, point)
        step = drift_step(after, (datetime.now(UTC) - request.requested).total_seconds(), policy)
        context = {"dataset": spec.name, "event_id": request.event_id, "rows_after": after, "reason": step.reason}
        key = drift_request_key(spec.name)
        if step.action == "wait":
            if request.status is None or request.status.rows_after != after:
                log.info("drift build waits", extra=context)
                status = DriftWait(rows_after=after, needed=policy.min_rows_after, reason=step.reason,
                                   checked=datetime.now(UTC))
                self.store.put(key, request.model_copy(update={"status": status}).encode())
            return
        if step.action == "give_up":
            log.warning("drift build given up", extra=context)
            BUILDS.labels(spec.name, "drift", "given_up").inc()
            self.store.delete(key)
            return
        log.info("drift build starts", extra=context)
        cut = DriftCut(point, window_since_ms(policy, point, times), policy.recency_half_life_s)
        order = DriftOrder(request, cut, landed_rows_after=after, waited_out=step.waited_out,
                           training_window=policy.window_name)
        try:
            outcome = self._try_build(spec, f"drift:{request.event_id}", order)
        except AlreadyAnswered as answered:
            log.info("another replica built for this drift first", extra={**context, "reason": str(answered)})
            outcome = "built"
        if outcome == "built":
            self.store.delete(key)
        elif outcome == "failed":
            self.marked.discard(spec.name)  # not every two seconds: again on the next data.landed or start

    def _build(self, spec: DatasetSpec, trigger: str, drift: DriftOrder | None = None) -> None:
        started = time.monotonic()
        kind = trigger.split(":")[0]
        try:
            manifest = self.consumer.work_while_polling(lambda: self.builder.build(spec, trigger, drift))
        except BuildFailed as error:
            BUILDS.labels(spec.name, kind, "failed").inc()
            log.error("build failed; no version published", extra={"dataset": spec.name, "reason": str(error)})
            raise
        except LostRace as error:
            BUILDS.labels(spec.name, kind, "lost").inc()
            log.warning("another attempt published this version first; this build's files are deleted",
                        extra={"dataset": spec.name, "reason": str(error)})
            raise
        BUILDS.labels(spec.name, kind, "published").inc()
        BUILD_SECONDS.labels(spec.name).observe(time.monotonic() - started)
        self._announce(manifest)
        log.info("dataset ready", extra={"dataset": spec.name, "version": manifest.version, "rows": manifest.rows,
                                         "trigger": trigger, "seconds": round(time.monotonic() - started, 1)})

    def _announce(self, manifest: DatasetManifest) -> None:
        """Send the version's dataset.ready, then note in the store that it was sent: a replica
        that died in between leaves a version the next look announces (its id is stable, and
        the trainer announces a version it trained before again instead of training it twice)."""
        kind = manifest.trigger.split(":")[0]
        self.producer.send(DatasetReady.of(manifest, kind),
                           event_id=stable_id("dataset.ready", manifest.dataset, manifest.version))
        self.retry(self.producer.flush)
        self.retry(lambda: self.store.put(dataset_announced_key(manifest.dataset), str(manifest.version).encode()))
        self.announced[manifest.dataset] = manifest.version

    def _stored_announced(self, dataset: str) -> int:
        try:
            return int(self.store.get_bytes(dataset_announced_key(dataset)))
        except (ObjectNotFound, ValueError):
            return 0  # none yet, written before this note existed, or unreadable


def main() -> None:
    run(PrepService, PrepSettings)
