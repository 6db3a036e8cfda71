"""A malformed event reaches the service's dead-letter topic with its error and source."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from streamml.kafka import BatchConsumer, EventProducer
from streamml.stack.ports import free_port

pytestmark = pytest.mark.integration


def test_malformed_event_goes_to_dlq_and_partition_keeps_flowing(stack, unique):
    prefix = f"t{unique}."
    settings = stack.settings().kafka.model_copy(update={"topic_prefix": prefix})
    admin = AdminClient(settings.client_config())
    topics = [settings.topic("model.trained"), settings.topic("dlq.validator")]
    for future in admin.create_topics([NewTopic(t, 1, 1) for t in topics]).values():
        future.result()

    policies = Path(__file__).resolve().parents[3] / "examples" / "policies"
    env = {**os.environ, **stack.env(), "STREAMML_KAFKA_TOPIC_PREFIX": prefix,
           "STREAMML_HTTP_PORT": str(free_port()), "STREAMML_VALIDATOR_POLICIES_DIR": str(policies),
           # Its own group: the validator tests reuse streamml-validator on other topics.
           "STREAMML_KAFKA_GROUP_PREFIX": f"t{unique}."}
    service = subprocess.Popen([sys.executable, "-m", "services.validator"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        producer = EventProducer(settings, "test")
        producer.produce(topics[0], b"{not json", b"fraud", [("ce_type", b"streamml.model.trained.v1"),
                         ("ce_specversion", b"1.0"), ("ce_id", b"1"), ("ce_source", b"/test"),
                         ("content-type", b"application/json")])
        producer.produce(topics[0], b'{"model": "fraud"}', b"fraud", [("ce_type", b"nope")])
        producer.flush()

        dlq = BatchConsumer(settings, f"check-{unique}", [topics[1]])
        received = []
        deadline = time.monotonic() + 60
        while len(received) < 2 and time.monotonic() < deadline:
            received += dlq.poll(10, 1.0)
        dlq.close()
        assert len(received) == 2, service.stderr.read1().decode() if service.poll() is not None else ""
        headers = [dict(m.headers()) for m in received]
        assert b"body is not JSON" in headers[0]["dlq_error"]
        assert b"unknown event type" in headers[1]["dlq_error"]
        assert headers[0]["dlq_source_topic"] == topics[0].encode()
        assert [h["dlq_source_offset"] for h in headers] == [b"0", b"1"]
        assert received[0].value() == b"{not json"  # the original bytes, untouched
        # The poison messages were committed, so the partition is not stuck on them.
        deadline = time.monotonic() + 20
        committed = None
        while time.monotonic() < deadline and committed != 2:
            probe = BatchConsumer(settings, f"t{unique}.streamml-validator", [topics[0]])
            committed = probe.committed([(topics[0], 0)])[(topics[0], 0)]
            probe.close()
            time.sleep(0.5)
        assert committed == 2
    finally:
        service.terminate()
        assert service.wait(timeout=20) == 0
