"""What the ingest tests check against the real broker and Ceph: landed rows, announcements, commits."""

import io
import time
from pathlib import Path

import pyarrow.parquet as pq
from confluent_kafka import Consumer, TopicPartition

from streamml.datagen import to_json_records, transactions
from streamml.kafka import BatchConsumer, EventProducer

SPEC = Path(__file__).resolve().parents[3] / "examples" / "datasets" / "transactions.yaml"


def landed_rows(store) -> list[tuple[int, int, str]]:
    rows = []
    for key in store.list("raw/transactions/"):
        table = pq.read_table(io.BytesIO(store.get_bytes(key)), columns=["_partition", "_offset", "tx_id"])
        rows += zip(*(table.column(c).to_pylist() for c in ("_partition", "_offset", "tx_id")))
    return rows


def consume_all(kafka, topic, group, expected, timeout=60):
    consumer = BatchConsumer(kafka, group, [topic])
    received, deadline = [], time.monotonic() + timeout
    while len(received) < expected and time.monotonic() < deadline:
        received += consumer.poll(500, 0.5)
    consumer.close()
    return received


def consume_keys(kafka, topic, group, wanted: set[str], timeout=60) -> set[str]:
    """The keys on ``topic``, read until every one of ``wanted`` was seen (a replay may repeat some,
    so a count of messages would stop short of the last ones)."""
    consumer = BatchConsumer(kafka, group, [topic])
    seen, deadline = set(), time.monotonic() + timeout
    while not wanted <= seen and time.monotonic() < deadline:
        seen |= {message.key().decode() for message in consumer.poll(500, 0.5)}
    consumer.close()
    return seen


def publish_transactions(kafka, topic, total, seed=1, first=0):
    """Publish ``total`` records, keys counting from ``first``; returns {(partition, offset): tx_id}."""
    producer = EventProducer(kafka, "test", **{"linger.ms": 50})
    published: dict[tuple[int, int], str] = {}

    def on_delivery(error, message):
        assert error is None
        published[(message.partition(), message.offset())] = message.key().decode()

    for start in range(0, total, 10_000):
        records = to_json_records(transactions(min(10_000, total - start), seed=seed, start=first + start))
        for i, record in enumerate(records, first + start):
            producer._producer.produce(topic, record, f"tx-{i:010d}", on_delivery=on_delivery)
            if len(producer._producer) > 50_000:
                producer._producer.poll(0.05)
    producer._producer.flush()
    assert len(published) == total
    return published


def wait_until_committed(ingest, kafka, group, expected, timeout=30):
    """Wait until ``group`` has committed ``expected`` ({(topic, partition): next offset})."""
    deadline = time.monotonic() + timeout
    probe = Consumer({**kafka.client_config(), "group.id": group})  # never subscribes: no rebalance
    try:
        while True:
            found = probe.committed([TopicPartition(t, p) for t, p in expected], timeout=10)
            committed = {(tp.topic, tp.partition): tp.offset for tp in found}
            if committed == expected:
                return
            assert ingest.poll() is None, ingest.log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, f"committed {committed}, expected {expected}"
            time.sleep(0.2)
    finally:
        probe.close()


def wait_until_landed(ingest, store, published, timeout=120):
    deadline = time.monotonic() + timeout
    while len(set(landed_rows(store))) < len(published):
        assert ingest.poll() is None, ingest.log_path.read_text()[-3000:]
        assert time.monotonic() < deadline, "not everything landed"
        time.sleep(0.5)


def wait_for_log(process, message, timeout=60):
    deadline = time.monotonic() + timeout
    while f'"message": "{message}"' not in process.log_path.read_text():
        assert process.poll() is None, process.log_path.read_text()[-3000:]
        assert time.monotonic() < deadline, f"no {message!r} in {process.log_path}"
        time.sleep(0.2)


def assert_exactly(rows, published):
    landed = [(p, o) for p, o, _ in rows]
    duplicates = len(landed) - len(set(landed))
    lost = set(published) - set(landed)
    assert duplicates == 0, f"{duplicates} rows landed twice"
    assert not lost, f"{len(lost)} records lost, e.g. {sorted(lost)[:3]}"
    assert {(p, o): k for p, o, k in rows} == published  # each offset carries its own record


