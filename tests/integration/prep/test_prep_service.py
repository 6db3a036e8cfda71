"""The prep service with real ingest, broker, Ceph, DuckDB and Spark: versions, lineage, drift, crash
mid-build, and which engine builds."""

import io
import os
import subprocess
import sys
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
from prep_world import next_ready, publish, transactions_world, wait_until_handled

from services.prep.content import content_sha256
from services.prep.rules import prepared_schema
from services.prep.service import GROUP
from streamml.events import DatasetReady, DriftDetected, DriftWindow, decode
from streamml.kafka import BatchConsumer, EventProducer
from streamml.manifest import DatasetManifest
from streamml.registry.drift_requests import DriftRequest, read_drift_request
from streamml.specs import load_dataset_spec

pytestmark = pytest.mark.integration


@pytest.fixture
def world(stack, unique, tmp_path):
    kafka, env, spec = transactions_world(
        stack, f"t{unique}.", tmp_path,
        {"min_new_rows": 3000, "max_staleness_s": 3600,
         "on_drift": {"min_rows_after": 1200, "max_wait_s": 3600, "window": "all"}},
        {"STREAMML_PREP_SPARK_MASTER": "local[2]",
         # Spark: its builds of these few rows last seconds, long enough to kill or stall one mid-build.
         "STREAMML_PREP_ENGINE": "spark",
         "STREAMML_PREP_JARS_DIR": str(Path.cwd() / "vendor" / "jars"),
         "STREAMML_INGEST_FLUSH_ROWS": "1500", "STREAMML_INGEST_FLUSH_AGE_S": "1"})
    return kafka, env, load_dataset_spec(spec)


def check_manifest(store, spec, event: DatasetReady) -> DatasetManifest:
    manifest = DatasetManifest.model_validate_json(store.get_bytes(event.manifest_key))
    assert manifest.version == event.version and manifest.rows == event.rows
    raw_keys = sorted(store.list("raw/transactions/"))
    assert sorted(source.key for source in manifest.lineage) == raw_keys[: len(manifest.lineage)]
    landed = sum(pq.read_metadata(io.BytesIO(store.get_bytes(k))).num_rows for k in (s.key for s in manifest.lineage))
    assert sum(source.rows for source in manifest.lineage) == landed
    schema = prepared_schema(spec, weighted=manifest.weight is not None)
    for split, files in manifest.files.items():
        tables = [pq.read_table(io.BytesIO(store.get_bytes(f.key))).select(schema.names).cast(schema) for f in files]
        assert sum(t.num_rows for t in tables) == manifest.rows[split]
        import pyarrow as pa
        assert content_sha256(pa.concat_tables(tables), schema, spec.key) == manifest.content_sha256[split]
    # Every distinct key published so far is in exactly one split (dedupe by key).
    assert sum(manifest.rows.values()) <= landed
    return manifest


def test_versions_from_landed_data_drift_and_a_crash_mid_build(world, services, store, bucket):
    kafka, env, spec = world
    ready = BatchConsumer(kafka, f"ready-{bucket}", [kafka.topic("dataset.ready")])
    services.start("ingest", bucket, **env)
    # A short lease: the replica started after the kill mid-build takes the dead one's claim over soon.
    env = {**env, "STREAMML_PREP_LEASE_S": "10"}
    # DuckDB until v4, whose build must last long enough to be killed midway.
    duckdb = {**env, "STREAMML_PREP_ENGINE": "duckdb"}
    prep = services.start("prep", bucket, **duckdb)

    # Exactly min_new_rows each time: a version can only start once all of them landed.
    publish(kafka, 0, 3000)
    v1 = next_ready(ready)
    assert (v1.version, v1.trigger) == (1, "rows")
    m1 = check_manifest(store, spec, v1)
    assert sum(m1.rows.values()) == 3000

    publish(kafka, 3000, 3000)
    v2 = next_ready(ready)
    assert (v2.version, v2.trigger) == (2, "rows")
    m2 = check_manifest(store, spec, v2)
    assert sum(m2.rows.values()) == 6000
    assert {s.key for s in m1.lineage} < {s.key for s in m2.lineage}
    # A record never moves between splits across versions.
    def split_keys(manifest, split):
        return set().union(*(pq.read_table(io.BytesIO(store.get_bytes(f.key)), columns=["tx_id"]).column(0).to_pylist()
                             for f in manifest.files[split]))
    assert split_keys(m1, "test") <= split_keys(m2, "test")

    # A drift build waits for min_rows_after (1200) rows landed after the drift point, whatever the
    # row policy says; rows landed before it do not count.
    now = datetime.now(UTC)
    drift = DriftDetected(model="fraud", dataset="transactions", kind="covariate", severity="high", features=[],
                          window=DriftWindow(start=now, end=now, count=1))
    EventProducer(kafka, "test").send_now(drift)
    EventProducer(kafka, "test").send_now(drift.model_copy(update={"kind": "prediction"}))  # same episode
    # Both handled before new data lands: the second must find the first's request, not start another.
    wait_until_handled(kafka, env["STREAMML_KAFKA_GROUP_PREFIX"] + GROUP, "drift.detected", 2)
    publish(kafka, 6000, 500, shift=0.6)
    request = wait_for_drift_wait(store, rows_after=500)
    assert request.kind == "covariate" and "500 of min_rows_after 1200" in request.status.reason
    listed = cli(services, bucket, "datasets", "list", "transactions")
    assert "drift build pending" in listed and "500 of min_rows_after 1200" in listed

    # The wait is kept in the store: a restarted prep goes on with it.
    assert store.get_bytes("datasets/transactions/_announced") == b"2"
    prep.send_signal(signal.SIGKILL)
    prep.wait()
    # As if the kill had come after v2 was committed and before it was announced: the restarted
    # prep announces it (again, with the same event id), or the trainer would never hear of it.
    store.put("datasets/transactions/_announced", b"1")
    prep = services.start("prep", bucket, **duckdb)
    again = next_ready(ready)
    assert (again.version, again.trigger, again.manifest_key) == (2, "rows", v2.manifest_key)
    assert store.get_bytes("datasets/transactions/_announced") == b"2"
    publish(kafka, 6500, 700, shift=0.6)
    v3 = next_ready(ready)
    assert (v3.version, v3.trigger) == (3, "drift")
    m3 = check_manifest(store, spec, v3)
    answered = m3.drift
    assert answered is not None and answered.model == "fraud" and answered.training_window == "all"
    assert answered.window_start == now and answered.landed_rows_after == 1200 and not answered.waited_out
    # Window all weighs its rows by recency (the default half-life): the post-drift rows weigh 1, older ones less.
    assert answered.half_life_s == 3600 and m3.weight == "_weight" and m2.weight is None
    weights = pq.read_table(io.BytesIO(store.get_bytes(m3.files["train"][0].key)), columns=["tx_id", "_weight"])
    by_side = {int(key.removeprefix("tx-")) >= 6000: weight
               for key, weight in zip(weights["tx_id"].to_pylist(), weights["_weight"].to_pylist(), strict=True)}
    assert by_side[True] == 1.0 and 0 < by_side[False] < 1.0
    # Both sides: 6000 rows from before the drift (less the test split's share), 1200 from after it.
    assert answered.rows_after == 1200
    assert answered.rows_before + answered.test_rows_left_out == 6000 and answered.test_rows_left_out > 0
    assert sum(m3.rows.values()) == answered.rows_before + answered.rows_after
    test_keys = set().union(*(pq.read_table(io.BytesIO(store.get_bytes(f.key)), columns=["tx_id"]).column(0)
                              .to_pylist() for f in m3.files["test"]))
    assert test_keys and all(int(key.removeprefix("tx-")) >= 6000 for key in test_keys), "a pre-drift test row"
    assert not store.exists("datasets/transactions/_drift_request")
    assert "drift build pending" not in cli(services, bucket, "datasets", "list", "transactions")

    # Kill prep while it builds v4 on Spark: no partial version becomes visible, and the rebuild is correct.
    prep.terminate()
    prep.wait()
    prep = services.start("prep", bucket, **env)
    publish(kafka, 7200, 3000)
    deadline = time.monotonic() + 120
    log_path = prep.log_path
    while '"message": "building", "dataset": "transactions", "version": 4' not in log_path.read_text():
        assert time.monotonic() < deadline, "prep never started building v4"
        time.sleep(0.2)
    time.sleep(3)
    prep.send_signal(signal.SIGKILL)
    prep.wait()
    assert not store.exists("datasets/transactions/v4/manifest.json")
    services.start("prep", bucket, **duckdb)
    v4 = next_ready(ready)
    assert v4.version == 4
    m4 = check_manifest(store, spec, v4)
    assert sum(m4.rows.values()) == 10200 and m4.drift is None
    ready.close()

    listed = cli(services, bucket, "datasets", "list", "transactions")
    assert all(f"v{n}" in listed for n in (1, 2, 3, 4))
    assert "drift:" in listed and "1200 after" in listed
    shown = cli(services, bucket, "datasets", "show", "transactions:2")
    assert "transactions v2" in shown and m2.content_sha256["train"][:16] in shown
    shown = cli(services, bucket, "datasets", "show", "transactions:3")
    assert "built for the covariate drift of fraud" in shown and "1200 after" in shown
    assert "rows weighed by recency: half_life_s 3600" in shown


def cli(services, bucket, *arguments: str) -> str:
    done = subprocess.run([sys.executable, "-m", "streamml.cli", *arguments], capture_output=True, text=True,
                          env={**os.environ, **services.stack.env(bucket), "COLUMNS": "400"}, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def wait_for_drift_wait(store, rows_after: int, timeout: float = 180) -> DriftRequest:
    """The drift request once prep has counted ``rows_after`` post-drift rows and said it waits."""
    deadline = time.monotonic() + timeout
    while True:
        request = read_drift_request(store, "transactions")
        if request is not None and request.status is not None and request.status.rows_after == rows_after:
            return request
        assert time.monotonic() < deadline, f"prep never reported waiting with {rows_after} rows: {request}"
        time.sleep(0.5)


def test_a_replica_that_stalls_mid_build_loses_the_version_and_leaves_nothing_behind(world, services, store, bucket):
    """Prep A claims v1 and stalls (SIGSTOP, with its Spark JVM) before writing anything. Prep B finds
    A's claim unrenewed past its lease, builds v1 and publishes it. Then A wakes up and finishes its
    build: it must not touch v1, and must leave nothing a reader could take for part of it.

    B builds on DuckDB: the claim, its lease and the conditional manifest are the same for both
    engines, and what must be left clean is the losing Spark build's files, so one Spark session is enough."""
    kafka, env, spec = world
    env = {**env, "STREAMML_PREP_LEASE_S": "4"}
    ready = BatchConsumer(kafka, f"ready-{bucket}", [kafka.topic("dataset.ready")])
    services.start("ingest", bucket, **env)
    stalled = services.start("prep", bucket, **env)
    publish(kafka, 0, 3000)
    deadline = time.monotonic() + 180
    while '"message": "building", "dataset": "transactions", "version": 1' not in stalled.log_path.read_text():
        assert time.monotonic() < deadline and stalled.poll() is None, stalled.log_path.read_text()[-3000:]
        time.sleep(0.1)
    frozen = [psutil.Process(stalled.pid), *psutil.Process(stalled.pid).children(recursive=True)]
    for process in frozen:
        process.suspend()
    try:
        taker = services.start("prep", bucket, **{**env, "STREAMML_PREP_ENGINE": "duckdb"})
        v1 = next_ready(ready)
        assert v1.version == 1
    finally:
        for process in frozen:
            process.resume()
    deadline = time.monotonic() + 240
    while "another attempt published this version first" not in stalled.log_path.read_text():
        assert time.monotonic() < deadline, "the stalled build never finished:\n" + stalled.log_path.read_text()[-3000:]
        time.sleep(0.5)

    manifest = check_manifest(store, spec, v1)  # every file it names is there, with its rows and hashes
    named = {entry.key for files in manifest.files.values() for entry in files}
    winner = os.path.commonpath(sorted(named)) + "/"
    left = [key for key in store.list("datasets/transactions/v1/")
            if key not in ("datasets/transactions/v1/_claim.json", "datasets/transactions/v1/manifest.json")
            and not key.startswith(winner)]
    assert left == [], "the losing attempt left files behind"
    assert '"message": "took over an expired claim"' in taker.log_path.read_text()
    more = [decode(m.headers(), m.key(), m.value())[0] for m in ready.poll(10, 10.0)]
    assert [event.version for event in more] == [], "v1 was announced twice"
    ready.close()


def test_auto_builds_on_duckdb_without_starting_spark_and_on_spark_above_the_limit(world, services, store, bucket):
    kafka, env, spec = world
    env = {key: value for key, value in env.items() if key != "STREAMML_PREP_ENGINE"}  # the default: auto
    ready = BatchConsumer(kafka, f"ready-{bucket}", [kafka.topic("dataset.ready")])
    services.start("ingest", bucket, **env)
    prep = services.start("prep", bucket, **env)
    publish(kafka, 0, 3000)
    m1 = check_manifest(store, spec, next_ready(ready))
    assert m1.engine == "duckdb" and sum(m1.rows.values()) == 3000
    assert m1.engine_reason.startswith("STREAMML_PREP_ENGINE is auto: ") and "<= STREAMML_PREP_DUCKDB_MAX_BYTES" in m1.engine_reason
    assert not [child for child in psutil.Process(prep.pid).children(recursive=True) if "java" in child.name()]
    assert "starting the Spark session" not in prep.log_path.read_text()

    prep.terminate()
    prep.wait(timeout=30)
    prep = services.start("prep", bucket, **env, STREAMML_PREP_DUCKDB_MAX_BYTES="1000")
    publish(kafka, 3000, 3000)
    m2 = check_manifest(store, spec, next_ready(ready))
    assert m2.engine == "spark" and sum(m2.rows.values()) == 6000
    assert "> STREAMML_PREP_DUCKDB_MAX_BYTES (1.0 KiB)" in m2.engine_reason
    assert "starting the Spark session" in prep.log_path.read_text()
    ready.close()

