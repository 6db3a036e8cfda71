"""``streamml datasets rebuild``: every version the prep service built, regular and drift builds, rebuilds
identically from its lineage; a lost raw object is landed again from its offsets, a changed one is named
and left as it is. Real ingest, broker, Ceph and DuckDB."""

import hashlib
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prep_world import next_ready, publish, transactions_world, wait_until_handled

from services.ingest.reland import NotRetained, land_again
from services.prep.service import GROUP
from streamml.events import DriftDetected, DriftWindow
from streamml.kafka import BatchConsumer, EventProducer
from streamml.registry.datasets import read_manifest
from streamml.registry.keys import REBUILDS_ROOT

pytestmark = pytest.mark.integration


JARS = Path.cwd() / "vendor" / "jars"


def rebuild_world(stack, unique, tmp_path, engine):
    kafka, env, _ = transactions_world(
        stack, f"r{unique}.", tmp_path,
        {"min_new_rows": 3000, "max_staleness_s": 3600, "engine": engine,
         "on_drift": {"min_rows_after": 1200, "max_wait_s": 3600, "window": "since_drift"}},
        {"STREAMML_INGEST_FLUSH_ROWS": "1000", "STREAMML_INGEST_FLUSH_AGE_S": "1",
         "STREAMML_PREP_SPARK_MASTER": "local[2]", "STREAMML_PREP_JARS_DIR": str(JARS)})
    return kafka, env


@pytest.fixture
def world(stack, unique, tmp_path):
    return rebuild_world(stack, unique, tmp_path, "duckdb")


@pytest.fixture
def spark_world(stack, unique, tmp_path):
    return rebuild_world(stack, unique, tmp_path, "spark")


def publish_with_a_dead_letter(kafka, start, count, shift=0.0):
    """``count`` transactions and one record that ingest dead-letters, inside a landed range."""
    publish(kafka, start, count, shift)
    producer = EventProducer(kafka, "test")
    producer.produce(kafka.topic("ingest.transactions"), b'{"tx_id": "bad"}', b"bad")
    producer.flush()


def first_version(kafka, env, services, bucket):
    """Ingest and prep running, and version 1 built from 3000 records."""
    ready = BatchConsumer(kafka, f"ready-{bucket}", [kafka.topic("dataset.ready")])
    services.start("ingest", bucket, **env)
    services.start("prep", bucket, **env)
    publish_with_a_dead_letter(kafka, 0, 3000)
    assert next_ready(ready).version == 1
    return ready


def rebuild(services, bucket, ref, *flags):
    return subprocess.run([sys.executable, "-m", "streamml.cli", "datasets", "rebuild", ref, *flags],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, **services.stack.env(bucket), "COLUMNS": "400"})


def test_every_version_of_a_prep_run_rebuilds_identically(world, services, store, bucket):
    kafka, env = world
    ready = first_version(kafka, env, services, bucket)
    publish_with_a_dead_letter(kafka, 3000, 3000)
    assert next_ready(ready).version == 2
    # A drift build on the rows after the drift only (since_drift), then a regular build that keeps its window.
    now = datetime.now(UTC)
    EventProducer(kafka, "test").send_now(DriftDetected(
        model="fraud", dataset="transactions", kind="covariate", severity="high", features=[],
        window=DriftWindow(start=now, end=now, count=1)))
    wait_until_handled(kafka, env["STREAMML_KAFKA_GROUP_PREFIX"] + GROUP, "drift.detected", 1)
    publish_with_a_dead_letter(kafka, 6000, 1200, shift=0.6)
    v3 = next_ready(ready)
    assert (v3.version, v3.trigger) == (3, "drift")
    publish_with_a_dead_letter(kafka, 7200, 3000, shift=0.6)
    assert next_ready(ready).version == 4
    ready.close()
    services.stop_all()
    manifests = [read_manifest(store, "transactions", n) for n in (1, 2, 3, 4)]
    assert manifests[2].drift is not None and manifests[2].rows_since is not None
    assert manifests[3].rows_since == manifests[2].rows_since and manifests[3].drift is None
    assert all(m.engine == "duckdb" and m.spec is not None and all(s.sha256 for s in m.lineage) for m in manifests)

    for manifest in manifests:
        done = rebuild(services, bucket, f"transactions:{manifest.version}", "--verify")
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"identical: rows, statistics and content hashes of transactions v{manifest.version}" in done.stdout
        assert f"{len(manifest.lineage)} ok" in done.stdout
    assert list(store.list(REBUILDS_ROOT)) == [], "a rebuild found identical left its scratch prefix"

    # Without --verify the rebuild stays where it was written, with a manifest naming its files.
    done = rebuild(services, bucket, "transactions:3")
    assert done.returncode == 0, done.stderr
    kept = [key for key in store.list(f"{REBUILDS_ROOT}transactions/v3/") if key.endswith("/manifest.json")]
    assert len(kept) == 1 and f"s3://{bucket}/{kept[0]}" in done.stdout.replace("\n", "")

    # A version that is not there, and a reference without a version, are refused with exit 2.
    assert rebuild(services, bucket, "transactions:9", "--verify").returncode == 2
    refused = rebuild(services, bucket, "transactions")
    assert refused.returncode == 2 and "give NAME:VERSION" in refused.stderr


def test_a_lost_raw_object_is_landed_again_and_a_changed_one_is_named_and_kept(world, services, store, bucket):
    kafka, env = world
    first_version(kafka, env, services, bucket).close()
    services.stop_all()
    manifest = read_manifest(store, "transactions", 1)
    assert len(manifest.lineage) >= 3
    lost, changed = manifest.lineage[0], manifest.lineage[1]
    lost_bytes = store.get_bytes(lost.key)
    assert hashlib.sha256(lost_bytes).hexdigest() == lost.sha256
    store.delete(lost.key)
    other = store.get_bytes(manifest.lineage[2].key)  # readable Parquet, other records
    store.put(changed.key, other)

    done = rebuild(services, bucket, "transactions:1", "--verify")

    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert f"lost {lost.key}: not in the store; landed again from {lost.topic}[{lost.partition}] offsets " \
           f"{lost.first_offset}-{lost.last_offset} at {lost.key}: the same bytes as recorded" in out
    assert f"changed {changed.key}: sha256" in out and "the stored object was left as it is" in out
    assert "1 lost, 1 changed (2 landed again)" in out
    assert "identical: rows, statistics and content hashes of transactions v1" in out
    assert store.get_bytes(lost.key) == lost_bytes, "the lost object was not landed again as it was"
    assert store.get_bytes(changed.key) == other, "the changed object was overwritten"

    # Records the topic no longer holds, or other records than were landed, are never landed.
    spec = manifest.spec
    past_the_end = lost.model_copy(update={"first_offset": 10**6, "last_offset": 10**6 + 5,
                                           "key": lost.key.replace(f"{lost.first_offset:020d}", f"{10**6:020d}")})
    with pytest.raises(NotRetained, match="ends at offset"):
        land_again(store, kafka, spec, past_the_end)
    elsewhere = lost.model_copy(update={"key": lost.key.replace("date=", "date=1999-01-01/x")})
    with pytest.raises(NotRetained, match=f"would land at {lost.key}, not "):
        land_again(store, kafka, spec, elsewhere)
    assert not store.exists(past_the_end.key) and not store.exists(elsewhere.key)


def test_a_version_spark_built_is_rebuilt_with_spark(spark_world, services, store, bucket):
    kafka, env = spark_world
    first_version(kafka, env, services, bucket).close()
    services.stop_all()
    assert read_manifest(store, "transactions", 1).engine == "spark"

    done = rebuild(services, bucket, "transactions:1", "--verify", "--spark-master", "local[2]",
                   "--jars-dir", str(JARS))

    assert done.returncode == 0, done.stdout + done.stderr
    assert "rebuilding transactions v1 (spark," in done.stdout
    assert "identical: rows, statistics and content hashes of transactions v1" in done.stdout
