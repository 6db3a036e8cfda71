"""`streamml lag` reports the lag a test creates, on the real embedded broker."""

import json
import os
import subprocess
import sys

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from streamml.kafka import BatchConsumer, EventProducer
from streamml.lag import keda_replicas, partition_lags

pytestmark = pytest.mark.integration


def test_lag_of_produced_but_unconsumed_records(stack, unique):
    kafka = stack.settings().kafka
    topic, group = f"lag-{unique}", f"lag-group-{unique}"
    admin = AdminClient(kafka.client_config())
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result()
    producer = EventProducer(kafka, "test", **{"linger.ms": 100})
    for i in range(10):
        producer.produce(topic, b"x", None)
    producer.flush()
    # The group consumes and commits 4 records of partition 0..1 in total, then stops.
    consumer = BatchConsumer(kafka, group, [topic])
    taken = []
    while len(taken) < 4:
        taken += consumer.poll(4 - len(taken), 1.0)
    consumer.commit(taken)
    consumer.close()
    for i in range(30):
        producer.produce(topic, b"y", None)  # batched: the embedded broker's ListOffsets undercounts these
    producer.flush()

    lags = partition_lags(kafka, group)
    assert sum(p.lag for p in lags) == 36
    assert sum(p.end for p in lags) == 40  # exact ends, although ListOffsets undercounts batches here
    for p in lags:
        assert p.lag == p.end - (p.committed or 0)

    result = subprocess.run([sys.executable, "-m", "streamml.cli", "lag", group, "--json", "--interval", "0.5",
                             "--lag-threshold", "10"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, **stack.env()})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["topics"][0]["lag"] == 36
    assert report["topics"][0]["keda_replicas"] == 2  # ceil(36 / 10) = 4, capped at 2 partitions
    assert report["end_offsets_understated"] == any(p.end_understated for p in lags)


def test_keda_formula():
    assert keda_replicas(0, 4, 100) == 0
    assert keda_replicas(1, 4, 100) == 1
    assert keda_replicas(250, 4, 100) == 3
    assert keda_replicas(10_000, 4, 100) == 4
    assert keda_replicas(10_000, 12, 100, max_replicas=6) == 6
