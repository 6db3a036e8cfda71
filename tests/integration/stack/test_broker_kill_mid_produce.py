"""A broker SIGKILLed after it counted an idempotent batch and before it stored
it (twice in a row) loses no acknowledged record: the producer's retry is stored once the
broker is back (the restart puts Tansu's producer sequences back in line with
the stored batches; see streamml/stack/tansu_sequences.py)."""

import os
import signal
import sys
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from fault_proxy import FaultProxy

from streamml.stack import procs
from streamml.stack.ceph import CephCluster, CephEndpoint
from streamml.stack.ports import free_port, wait_for_port
from streamml.stack.tansu import TansuBroker

pytestmark = pytest.mark.integration
TOPIC, BATCH = "kill-mid-produce", 10


def read_all(bootstrap: str) -> list[bytes]:
    """Every record of the partition: up to its end, or up to 20 s without one."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex,
                         "enable.auto.commit": False, "enable.partition.eof": True})
    consumer.assign([TopicPartition(TOPIC, 0, 0)])
    values: list[bytes] = []
    try:
        # A partition whose watermark is past its last stored batch never reports its end.
        while (message := consumer.poll(20)) is not None:
            if message.error() is None:
                values.append(message.value())
            elif message.error().code() == KafkaError._PARTITION_EOF:
                break
            else:
                raise AssertionError(message.error().str())
    finally:
        consumer.close()
    return values


def test_an_acknowledged_batch_survives_a_broker_killed_before_storing_it(tmp_path):
    ceph = CephCluster(tmp_path, free_port())
    endpoint = ceph.start()
    proxy_port = free_port()
    proxy = procs.spawn([sys.executable, "-m", "streamml.stack.rgw_proxy", "--listen-port", str(proxy_port),
                         "--rgw-port", str(ceph.rgw_port), "--keys", str(ceph.dir / "s3.json")],
                        log_path=tmp_path / "rgw-proxy.log", pid_path=tmp_path / "rgw-proxy.pid",
                        env=dict(os.environ))
    faults = None
    broker = None
    try:
        wait_for_port("127.0.0.1", proxy_port, 10)
        # Between the broker and the proxy: stalls the PUT of a record batch on request.
        faults = FaultProxy(proxy_port)
        broker = TansuBroker(tmp_path, free_port(), storage="s3://tansu/", s3=CephEndpoint(
            f"http://127.0.0.1:{faults.port}", endpoint.access_key, endpoint.secret_key, endpoint.region))
        bootstrap = broker.start()
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for future in admin.create_topics([NewTopic(TOPIC, 1, 1)]).values():
            future.result(timeout=20)

        delivered, failed = [], []
        producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                             "linger.ms": 5, "message.timeout.ms": 0})

        def report(error, message) -> None:
            (failed if error else delivered).append(message.value())

        for i in range(BATCH):
            producer.produce(TOPIC, f"before-{i}".encode(), on_delivery=report)
        assert producer.flush(30) == 0

        # Twice (the second restart checks only what changed since the first):
        # the broker counts a batch in meta.json and the watermark, then dies
        # while the batch object is on its way to the store.
        for kill in range(2):
            held = faults.hold(b"PUT ", b"/records/")
            for i in range(BATCH):
                producer.produce(TOPIC, f"in-flight-{kill}-{i}".encode(), on_delivery=report)
            while not held.is_set():
                producer.poll(0.05)
            killed = broker.pid()
            os.kill(killed, signal.SIGKILL)
            while procs.pid_alive(killed):
                time.sleep(0.01)
            faults.heal()
            broker.start()
            assert producer.flush(60) == 0

        assert not failed
        assert len(delivered) == 3 * BATCH
        stored = read_all(bootstrap)
        lost = sorted(set(delivered) - set(stored))
        assert lost == [], f"{len(lost)} acknowledged records are not in the topic"
        assert len(stored) == len(delivered), "a record is in the topic twice"
    finally:
        if broker is not None:
            broker.stop()
        if faults is not None:
            faults.close()
        procs.terminate(proxy, 5)
        ceph.stop()
