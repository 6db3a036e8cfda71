"""Batches cut when a partition is caught up and idle, and dead-letter-only batches between landed
ones, against a real broker and Ceph: every record still lands exactly once through SIGKILL."""

import random
import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
from confluent_kafka import Consumer, TopicPartition

from ingest_checks import (assert_exactly, consume_all, consume_keys, landed_rows, publish_transactions,
                           wait_until_landed)
from services.ingest.member import GROUP
from streamml.datagen import to_json_records, transactions
from streamml.events import decode
from streamml.kafka import EventProducer
from streamml.registry.keys import parse_raw_key

pytestmark = pytest.mark.integration


def test_a_burst_lands_once_its_partitions_are_caught_up_not_at_the_age_limit(world, services, store, bucket):
    kafka, topics, env = world
    published = publish_transactions(kafka, topics["ingest"], 6_000)
    # Neither the row nor the age limit can end these batches within the test's time.
    ingest = services.start("ingest", bucket, **env, STREAMML_INGEST_FLUSH_ROWS="1000000",
                            STREAMML_INGEST_FLUSH_AGE_S="3600", STREAMML_INGEST_FLUSH_IDLE_S="0.25")
    wait_until_landed(ingest, store, published)
    assert_exactly(landed_rows(store), published)
    # Each partition's records were waiting when ingest started: one batch each, not cut while behind.
    keys = list(store.list("raw/transactions/"))
    assert sorted(int(re.search(r"/p(\d+)/", key)[1]) for key in keys) == [0, 1, 2], keys


def test_sigkill_amid_dead_letter_only_batches_and_idle_and_age_cuts_lands_every_good_record_once(
    world, services, store, bucket
):
    """Runs of bad records make batches that write no object, between batches that do. Batches
    are cut by rows, by age (records trickling in) and when idle (between waves), with other row
    limits after each restart, so a replay cuts its ranges differently from the crashed run."""
    kafka, topics, env = world
    stop = threading.Event()
    publishing = ThreadPoolExecutor(1).submit(publish_waves, kafka, topics["ingest"], stop)
    rng = random.Random(26)
    row_limits = [100, 70, 130, 90, 110]

    def start(rows):
        return services.start("ingest", bucket, **env, STREAMML_INGEST_FLUSH_ROWS=str(rows),
                              STREAMML_INGEST_FLUSH_AGE_S="0.3", STREAMML_INGEST_FLUSH_IDLE_S="0.1")

    ingest = start(row_limits[0])
    committed = CommittedOffsets(kafka, env["STREAMML_KAFKA_GROUP_PREFIX"] + GROUP, topics["ingest"], partitions=3)
    for rows in row_limits[1:]:
        # Kill once this replica has landed a few batches, at the worst moment that comes soon:
        # an object has landed beyond its partition's committed offset (a replay must end where it
        # did, and whatever lies between, objects or dead letters only, must not land again).
        seen = len(list(store.list("raw/transactions/")))
        deadline = time.monotonic() + 60
        while len(list(store.list("raw/transactions/"))) < seen + 3:
            assert ingest.poll() is None, ingest.log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "ingest landed nothing new"
            time.sleep(0.05)
        give_up = time.monotonic() + rng.uniform(1, 3)
        while time.monotonic() < give_up and not committed.behind(store.list("raw/transactions/")):
            time.sleep(0.01)
        members = psutil.Process(ingest.pid).children(recursive=True)
        ingest.send_signal(signal.SIGKILL)
        ingest.wait()
        psutil.wait_procs(members, timeout=10)
        ingest = start(rows)
    stop.set()
    committed.close()
    good, bad = publishing.result()
    assert len(good) > 5_000 and len(bad) > 2_000, (len(good), len(bad))

    wait_until_landed(ingest, store, good, timeout=180)
    assert_exactly(landed_rows(store), good)
    # Every bad record was dead-lettered (a replayed one possibly twice).
    assert consume_keys(kafka, topics["dlq"], f"dlq-{bucket}", bad, timeout=60) >= bad
    # Every object was announced; a replayed range announces its object again, never another one.
    announced = consume_all(kafka, topics["landed"], f"landed-{bucket}", 100_000, timeout=10)
    keys = {decode(m.headers(), m.key(), m.value())[0].object_key for m in announced}
    assert keys == set(store.list("raw/transactions/"))


class CommittedOffsets:
    """Reads a group's committed offsets without joining it."""

    def __init__(self, kafka, group, topic, partitions):
        self.probe = Consumer({**kafka.client_config(), "group.id": group})
        self.partitions = [TopicPartition(topic, p) for p in range(partitions)]

    def behind(self, keys) -> bool:
        """Whether an object of ``keys`` starts beyond its partition's committed offset."""
        found = {tp.partition: max(tp.offset, 0) for tp in self.probe.committed(self.partitions, timeout=10)}
        return any(o.first_offset > found[o.partition] for o in map(parse_raw_key, keys))

    def close(self):
        self.probe.close()


def publish_waves(kafka, topic, stop):
    """Until ``stop``: waves of bad then good records, one partition at a time, more of each than
    any row limit of the test, and now and then bad records trickling in for longer than the age limit.

    Returns the good records as {(partition, offset): key} and the keys of the bad ones.
    """
    rng = random.Random(31)
    producer = EventProducer(kafka, "test", **{"linger.ms": 5})
    good: dict[tuple[int, int], str] = {}
    bad: set[str] = set()
    next_id = 0

    def on_delivery(error, message):
        assert error is None
        key = message.key().decode()
        if key.startswith("bad-"):
            bad.add(key)
        else:
            good[(message.partition(), message.offset())] = key

    def send(partition, count, valid):
        nonlocal next_id
        for record in to_json_records(transactions(count, seed=3, start=next_id)):
            key = re.search(rb'"tx_id":"([^"]*)"', record)[1].decode()
            if not valid:
                record, key = re.sub(rb'"hour":\d+', b'"hour":99', record), f"bad-{key}"
            producer._producer.produce(topic, record, key, partition=partition, on_delivery=on_delivery)
        next_id += count
        producer._producer.flush()

    wave = 0
    while not stop.is_set():
        partition = wave % 3
        if wave % 4 == 3:
            for _ in range(25):  # about 0.4 s of bad records, each sooner than the idle time
                send(partition, 1, valid=False)
                time.sleep(0.015)
        else:
            # A batch of dead letters only, then batches with valid rows, whatever the row limit.
            send(partition, rng.randint(130, 200), valid=False)
        send(partition, rng.randint(130, 300), valid=True)
        wave += 1
        time.sleep(rng.uniform(0.15, 0.3))  # idle: the partition is caught up
    return good, bad
