"""The prep service: landed raw data -> versioned datasets, announced by dataset.ready.

``data.landed`` marks a dataset as worth a look; every couple of seconds the
service derives each marked dataset's pending raw objects from the store and
builds a version when the spec's policy says so (enough new records, or the
oldest pending data is stale). ``drift.detected`` builds as soon as any new
data has landed, whatever the row policy says. Builds run on one long-lived
SparkSession while the consumer keeps polling.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from prometheus_client import Counter, Histogram
from pydantic import Field

from services.prep.builder import BuildFailed, DatasetBuilder
from services.prep.s3a_signing import Signer
from services.prep.spark import SparkJarsMissing, spark_session
from services.prep.versions import pending
from streamml.events import DataLanded, DatasetReady, DriftDetected, Event
from streamml.registry.datasets import latest_manifest
from streamml.registry.keys import drift_request_key
from streamml.service import EventService, StartupError, run
from streamml.settings import Group, ServiceSettings
from streamml.specs import DatasetSpec, PrepPolicy, SpecError, load_dataset_specs
from streamml.store import ObjectNotFound, StoreError

log = logging.getLogger("streamml.prep")

GROUP = "streamml-prep"
INPUT_TOPICS = ["data.landed", "drift.detected"]
CHECK_EVERY_S = 2.0

BUILDS = Counter("streamml_prep_builds_total", "Dataset builds by outcome", ["dataset", "trigger", "outcome"])
BUILD_SECONDS = Histogram("streamml_prep_build_seconds", "Duration of a dataset build", ["dataset"],
                          buckets=(5, 10, 20, 40, 60, 120, 300, 600, 1800))


class PrepOptions(Group):
    specs_dir: Path = Field(Path("datasets"), description="folder of dataset spec YAML files")
    spark_master: str = Field("local[*]", description="local[N], spark://host:port or k8s://...")
    jars_dir: Path = Field(Path("vendor/jars"), description="folder with the S3A connector jars")
    driver_memory: str = Field("2g", description="Spark driver memory")
    s3a_signer: Signer = Field(
        "auto", description="how Spark signs S3 requests: v4 (SigV4), v2 (the old S3 signer, for Ceph 16's gateway) "
        "or auto (v4 unless the endpoint is found to need v2)"
    )


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
        try:
            spark = spark_session(options.spark_master, self.settings.state_dir, self.settings.s3,
                                  options.jars_dir, driver_memory=options.driver_memory, signer=options.s3a_signer)
        except SparkJarsMissing as error:
            raise StartupError(f"STREAMML_PREP_JARS_DIR={str(options.jars_dir)!r}: {error}") from None
        except (OSError, StoreError) as error:  # asking the endpoint which signer it needs
            raise StartupError(f"choosing the S3A signer for STREAMML_S3_ENDPOINT={self.settings.s3.endpoint}: "
                               f"{error}; or set STREAMML_PREP_S3A_SIGNER to v4 or v2") from None
        self.builder = DatasetBuilder(self.store, self.settings.s3, spark)
        self.marked: set[str] = set(self.specs)  # look at every dataset once after a start
        self.first_seen: dict[str, float] = {}
        self.last_check = 0.0

    def handle_event(self, event: Event, context: dict) -> None:
        if event.dataset not in self.specs:
            raise ValueError(f"no dataset spec for {event.dataset!r} in STREAMML_PREP_SPECS_DIR")
        if isinstance(event, DataLanded):
            self.marked.add(event.dataset)
        elif isinstance(event, DriftDetected):
            # Retraining needs data from the drifted world: the build waits for
            # new landed data, then runs at once whatever the row policy says.
            # Drift events of one episode (covariate, prediction, performance)
            # arriving before that build share it.
            # The request is kept in the store, so a restart does not forget it.
            if not self.store.exists(drift_request_key(event.dataset)):
                self.store.put(drift_request_key(event.dataset), f"drift:{context['event_id']}".encode())
            self.marked.add(event.dataset)

    def tick(self) -> None:
        now = time.monotonic()
        if now - self.last_check < CHECK_EVERY_S:
            return
        self.last_check = now
        for name in sorted(self.marked):
            spec = self.specs[name]
            waiting = pending(self.store, name, latest_manifest(self.store, name))
            records = sum(raw.records for raw in waiting)
            if not waiting:
                self.marked.discard(name)
                self.first_seen.pop(name, None)
                continue
            self.first_seen.setdefault(name, now)
            drift = self._drift_request(name)
            trigger = drift or trigger_for(records, self.first_seen[name], now, spec.prep)
            if trigger is not None:
                # An outage raises out of here with the dataset still marked: the retry builds it.
                try:
                    self._build(spec, trigger)
                except BuildFailed:
                    pass  # logged and counted; the next landed batch retries
                else:
                    if drift:
                        self.store.delete(drift_request_key(name))
                self.marked.discard(name)  # looked at again on the next data.landed
                self.first_seen.pop(name, None)

    def _drift_request(self, dataset: str) -> str | None:
        try:
            return self.store.get_bytes(drift_request_key(dataset)).decode()
        except ObjectNotFound:
            return None

    def _build(self, spec: DatasetSpec, trigger: str) -> None:
        started = time.monotonic()
        kind = trigger.split(":")[0]
        try:
            manifest = self.consumer.work_while_polling(lambda: self.builder.build(spec, trigger))
        except BuildFailed as error:
            BUILDS.labels(spec.name, kind, "failed").inc()
            log.error("build failed; no version published", extra={"dataset": spec.name, "reason": str(error)})
            raise
        BUILDS.labels(spec.name, kind, "published").inc()
        BUILD_SECONDS.labels(spec.name).observe(time.monotonic() - started)
        self.producer.send(DatasetReady.of(manifest, kind))
        self.retry(self.producer.flush)
        log.info("dataset ready", extra={"dataset": spec.name, "version": manifest.version, "rows": manifest.rows,
                                         "trigger": trigger, "seconds": round(time.monotonic() - started, 1)})


def main() -> None:
    run(PrepService, PrepSettings)
