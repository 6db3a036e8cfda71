"""Build one dataset version: check the raw objects, claim a number, run the
Spark job, and write the manifest last (If-None-Match) as the commit marker."""

from __future__ import annotations

import logging

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import SparkSession

from services.prep.job import prepare_with_spark
from services.prep.result import build_manifest
from services.prep.rules import PrepError
from services.prep.spark import error_summary, lost_the_store
from services.prep.versions import build_id, claim_version
from streamml import code_version
from streamml.manifest import DatasetManifest, RawSource
from streamml.registry.datasets import raw_objects
from streamml.registry.keys import RawObject, dataset_manifest_key, dataset_prefix
from streamml.settings import S3Settings
from streamml.specs import DatasetSpec
from streamml.store import ObjectStore, StoreUnavailable

log = logging.getLogger("streamml.prep")


class BuildFailed(Exception):
    """No version was published; the message says why."""


class DatasetBuilder:
    def __init__(self, store: ObjectStore, s3: S3Settings, spark: SparkSession) -> None:
        self.store, self.s3, self.spark = store, s3, spark
        self._rows: dict[str, int] = {}  # raw key -> rows, for objects already checked
        self._bad: dict[str, str] = {}  # raw key -> why it cannot be read

    def check(self, raw: RawObject) -> str | None:
        """Why a raw object cannot be used, or None; each object is read once per process."""
        if raw.key in self._rows:
            return None
        if raw.key not in self._bad:
            try:
                metadata = pq.read_metadata(pa.BufferReader(self.store.get_bytes(raw.key)))
                self._rows[raw.key] = metadata.num_rows
                return None
            except (pa.ArrowException, OSError) as error:
                self._bad[raw.key] = f"unreadable Parquet: {error}"
                log.warning("raw object quarantined", extra={"object_key": raw.key, "reason": self._bad[raw.key]})
        return self._bad[raw.key]

    def build(self, spec: DatasetSpec, trigger: str) -> DatasetManifest:
        raws = raw_objects(self.store, spec.name)
        quarantined = {raw.key: reason for raw in raws if (reason := self.check(raw))}
        if quarantined and spec.prep.on_bad_object == "fail":
            raise BuildFailed(f"{len(quarantined)} unreadable raw object(s), e.g. {next(iter(quarantined.items()))}; "
                              f"dataset {spec.name!r} has on_bad_object: fail")
        usable = [raw for raw in raws if raw.key not in quarantined]
        if not usable:
            raise BuildFailed(f"dataset {spec.name!r} has no readable raw data")
        build = build_id([raw.key for raw in usable], trigger)
        version = claim_version(self.store, spec.name, build)
        out = f"s3a://{self.s3.bucket}/{dataset_prefix(spec.name, version).rstrip('/')}"
        log.info("building", extra={"dataset": spec.name, "version": version, "trigger": trigger,
                                    "raw_objects": len(usable), "quarantined": len(quarantined)})
        try:
            result = prepare_with_spark(
                self.spark, spec, [f"s3a://{self.s3.bucket}/{raw.key}" for raw in usable], out, self.s3
            )
        except PrepError as error:
            raise BuildFailed(str(error)) from None
        except Exception as error:
            if lost_the_store(error):
                raise StoreUnavailable(f"the Spark job lost the object store: {error_summary(error)}") from error
            raise
        manifest = build_manifest(
            result, spec, version=version, trigger=trigger, code_version=code_version(), quarantined=quarantined,
            lineage=[RawSource(key=r.key, topic=r.topic, partition=r.partition, first_offset=r.first_offset,
                               last_offset=r.last_offset, rows=self._rows[r.key]) for r in usable],
        )
        self.store.create(dataset_manifest_key(spec.name, version),
                          manifest.model_dump_json(by_alias=True, indent=1).encode())
        return manifest

