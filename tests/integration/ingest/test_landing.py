"""The ingest service against a real broker and Ceph: exactly once under SIGKILL, and dead letters."""

import random
import signal
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest

from ingest_checks import (
    SPEC,
    assert_exactly,
    consume_all,
    landed_rows,
    publish_transactions,
    wait_for_log,
    wait_until_committed,
    wait_until_landed,
)
from service_logs import log_lines
from services.ingest.landing import PartitionBuffer, landing_schema, parquet_bytes, with_kafka_columns
from services.ingest.member import GROUP
from services.ingest.records import decode_batch
from streamml.datagen import to_json_records, transactions
from streamml.events import DataLanded, decode
from streamml.kafka import BatchConsumer, EventProducer
from streamml.specs import load_dataset_spec
from streamml.stack.ports import free_port

pytestmark = pytest.mark.integration


def test_sigkill_three_times_lands_every_record_exactly_once(world, services, store, bucket):
    kafka, topics, env = world
    total = 200_000
    published = publish_transactions(kafka, topics["ingest"], total)
    env = {**env, "STREAMML_INGEST_FLUSH_ROWS": "2500", "STREAMML_INGEST_POLL_BATCH": "2000"}
    rng = random.Random(7)
    ingest = services.start("ingest", bucket, **env)
    for _ in range(3):
        # Kill once this process has landed a few batches, at a random moment after that.
        seen = len(list(store.list("raw/transactions/")))
        deadline = time.monotonic() + 60
        while len(list(store.list("raw/transactions/"))) < seen + 3 and time.monotonic() < deadline:
            assert ingest.poll() is None, ingest.log_path.read_text()[-3000:]
            time.sleep(0.05)
        time.sleep(rng.uniform(0, 0.3))
        members = psutil.Process(ingest.pid).children(recursive=True)
        ingest.send_signal(signal.SIGKILL)
        ingest.wait()
        # Its member processes leave with it: a new replica owns the partitions now.
        gone, alive = psutil.wait_procs(members, timeout=10)
        assert members and not alive, f"orphaned ingest processes: {alive}"
        ingest = services.start("ingest", bucket, **env)

    deadline = time.monotonic() + 180
    rows = []
    while time.monotonic() < deadline:
        assert ingest.poll() is None, ingest.log_path.read_text()[-3000:]
        rows = landed_rows(store)
        if len(set(rows)) >= total:
            break
        time.sleep(2)
    assert_exactly(rows, published)

    # Every object was announced; a replayed range announces its object again, never another one.
    announced = consume_all(kafka, topics["landed"], f"check-{bucket}", 10_000, timeout=10)
    keys = {decode(m.headers(), m.key(), m.value())[0].object_key for m in announced}
    assert keys == set(store.list("raw/transactions/"))


def test_members_share_one_metrics_endpoint_and_a_dead_member_stops_the_replica(world, services, store, bucket):
    kafka, topics, env = world
    published = publish_transactions(kafka, topics["ingest"], 10_000)
    port = free_port()
    env = {**env, "STREAMML_INGEST_FLUSH_ROWS": "2000", "STREAMML_INGEST_FLUSH_AGE_S": "0.5",
           "STREAMML_HTTP_PORT": str(port)}
    ingest = services.start("ingest", bucket, **env)
    wait_until_landed(ingest, store, published)
    # Both members landed some of the 3 partitions; /metrics adds up what each counted.
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'streamml_ingest_records_total{dataset="transactions",outcome="landed"} 10000.0' in metrics
    assert 'streamml_service_ready{service="ingest"} 1.0' in metrics
    rows_by_member = {0: 0, 1: 0}
    for line in log_lines(ingest.log_path):
        if line["message"] == "landed":
            rows_by_member[line["member"]] += line["rows"]
    assert sum(rows_by_member.values()) == 10_000
    assert all(rows_by_member.values()), f"one member landed nothing: {rows_by_member}"
    # A batch is committed just after it lands: wait for that, so the restart resumes past it.
    last_landed = {(topics["ingest"], partition): offset for partition, offset in sorted(published)}
    group = env["STREAMML_KAFKA_GROUP_PREFIX"] + GROUP
    wait_until_committed(ingest, kafka, group, {tp: offset + 1 for tp, offset in last_landed.items()})
    # Killed as the kernel's OOM killer would, while the replica waits for records.
    members = [p for p in psutil.Process(ingest.pid).children() if "spawn_main" in " ".join(p.cmdline())]
    assert len(members) == 2
    members[0].kill()
    assert ingest.wait(timeout=60) == 1
    assert "an ingest process exited" in ingest.log_path.read_text()
    gone, alive = psutil.wait_procs(members[1:], timeout=10)
    assert not alive, "the other member outlived its replica"

    # Restarted, each partition resumes right after the last record landed before the kill.
    resume_at = {f"{topic}[{partition}]": offset + 1 for (topic, partition), offset in last_landed.items()}
    published.update(publish_transactions(kafka, topics["ingest"], 10_000, seed=2, first=10_000))
    ingest = services.start("ingest", bucket, **env)
    wait_until_landed(ingest, store, published)
    assert_exactly(landed_rows(store), published)
    resumed = {}
    for line in log_lines(ingest.log_path):
        if line["message"] == "consuming":
            resumed.setdefault(line["partition"], line["offset"])
    assert resumed == resume_at


def test_partitions_moving_between_replicas_lose_and_duplicate_nothing(world, services, store, bucket):
    """A second replica joins mid-stream, then the first leaves: each hand-over revokes partitions
    with batches sealed, landing and buffered, and the landed rows stay exact."""
    kafka, topics, env = world
    # One process per replica: when two members of a group leave at once, Tansu's coordinator can keep
    # the departed leader as the group's leader, and the remaining members never get an assignment.
    env = {**env, "STREAMML_INGEST_FLUSH_ROWS": "1500", "STREAMML_INGEST_POLL_BATCH": "500",
           "STREAMML_INGEST_PROCESSES": "1"}
    publishing, handed_over = ThreadPoolExecutor(1), threading.Event()
    published = publishing.submit(publish_until, kafka, topics["ingest"], handed_over)
    first = services.start("ingest", bucket, **env)
    wait_for_log(first, "landed")
    second = services.start("ingest", bucket, **env)
    wait_for_log(second, "landed")  # it owns partitions now: the first one gave them up
    first.terminate()
    assert first.wait(timeout=30) == 0, first.log_path.read_text()[-3000:]
    handed_over.set()
    published = published.result()
    deadline = time.monotonic() + 120
    while len(set(landed_rows(store))) < len(published) and time.monotonic() < deadline:
        assert second.poll() is None, second.log_path.read_text()[-3000:]
        time.sleep(1)
    assert_exactly(landed_rows(store), published)
    assert "partitions revoked" in first.log_path.read_text()


def publish_until(kafka, topic, done: threading.Event, per_step=4000, pause_s=1.0, max_steps=120):
    """Records every ``pause_s`` until ``done``: the stream still flows during both hand-overs,
    however long the replicas take to start on a busy machine."""
    published = {}
    for step in range(max_steps):
        published.update(publish_transactions(kafka, topic, per_step, seed=step + 10))
        if done.is_set():
            return published
        time.sleep(pause_s)
    raise AssertionError(f"the hand-overs did not happen within {max_steps} steps of publishing")


def test_ranges_landed_before_a_crash_are_rewritten_with_the_same_boundaries(world, services, store, bucket):
    """Crash after uploads, before their commits: each replayed range must end where its upload did."""
    kafka, topics, env = world
    published = publish_transactions(kafka, topics["ingest"], 5_000)
    # What a crashed ingest with 700-row batches left behind: partition 0's first two ranges, uncommitted.
    reader = BatchConsumer(kafka, f"read-{bucket}", [topics["ingest"]])
    messages = []
    while len([m for m in messages if m.partition() == 0]) < 1_400:
        messages += reader.poll(1000, 1.0)
    reader.close()
    in_partition = sorted((m for m in messages if m.partition() == 0), key=lambda m: m.offset())
    spec = load_dataset_spec(SPEC)
    left_behind = {}
    for landed_range in (in_partition[:700], in_partition[700:1_400]):
        decoded = decode_batch([m.value() for m in landed_range], spec, 1 << 20)
        table = with_kafka_columns(decoded.table, 0, [m.offset() for m in landed_range],
                                   [m.timestamp()[1] for m in landed_range])
        buffer = PartitionBuffer("transactions", topics["ingest"], 0, landed_range[0].offset(),
                                 landed_range[0].timestamp()[1])
        buffer.add(landed_range, landed_range[-1].offset(), 0)
        left_behind[buffer.key] = parquet_bytes([table], *landing_schema(spec))
        store.put(buffer.key, left_behind[buffer.key])

    services.start("ingest", bucket, **env, STREAMML_INGEST_FLUSH_ROWS="50000", STREAMML_INGEST_FLUSH_AGE_S="1")
    deadline = time.monotonic() + 60
    while len(landed_rows(store)) < 5_000 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert_exactly(landed_rows(store), published)
    for key, data in left_behind.items():
        assert store.get_bytes(key) == data  # same key, same bytes
    assert len([k for k in store.list("raw/transactions/") if "/p00000/" in k]) == 3  # both ranges, then the rest


def test_poison_records_are_dead_lettered_and_the_partition_keeps_flowing(world, services, store, bucket):
    kafka, topics, env = world
    good = to_json_records(transactions(4, seed=2))
    poison = [
        (b'{"tx_id": "broken', "malformed JSON"),
        (good[1].replace(b'"hour":', b'"hour":"three","x":'), "not declared"),
        (good[1].replace(b'"amount":', b'"amount":"lots","y":').replace(b',"y"', b',"z"'), "not declared"),
        (good[2].replace(b'"channel":"', b'"channel":"carrier-pigeon'), "channel: not one of"),
        (b'{"tx_id":"big","pad":"' + b"x" * 2_000_000 + b'"}', "exceeds the 1048576-byte limit"),
    ]
    producer = EventProducer(kafka, "test", **{"message.max.bytes": 5_000_000})
    producer.produce(topics["ingest"], good[0], b"k0", None)
    for value, _ in poison:
        producer.produce(topics["ingest"], value, b"k0")
    producer.produce(topics["ingest"], good[3], b"k0")
    producer.produce(topics["unknown"], good[0], b"k0")
    producer.flush()
    services.start("ingest", bucket, **env, STREAMML_INGEST_FLUSH_AGE_S="1")

    dead = consume_all(kafka, topics["dlq"], f"dlq-{bucket}", len(poison) + 1)
    reasons = sorted(dict(m.headers())["dlq_error"].decode() for m in dead)
    assert len(dead) == len(poison) + 1
    for _, expected in poison:
        assert any(expected in reason for reason in reasons), (expected, reasons)
    assert any("no dataset spec serves topic" in reason for reason in reasons)
    for message in dead:
        headers = dict(message.headers())
        assert headers["dlq_source_topic"] in (topics["ingest"].encode(), topics["unknown"].encode())
        assert int(headers["dlq_source_offset"]) >= 0

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(landed_rows(store)) < 2:
        time.sleep(0.5)
    rows = landed_rows(store)
    assert sorted(tx for _, _, tx in rows) == sorted([transactions(4, seed=2)["tx_id"][0], transactions(4, seed=2)["tx_id"][3]])
    events = consume_all(kafka, topics["landed"], f"landed-{bucket}", 1)
    event = decode(events[0].headers(), events[0].key(), events[0].value())[0]
    assert isinstance(event, DataLanded) and event.rows == 2
    assert (event.first_offset, event.last_offset) == (0, len(poison) + 1)
