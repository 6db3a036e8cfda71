"""The world of an ingest test: its own topic prefix, consumer group, bucket and specs folder."""

import shutil

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from ingest_checks import SPEC


@pytest.fixture
def world(stack, unique, bucket, tmp_path):
    prefix = f"t{unique}."
    kafka = stack.settings().kafka.model_copy(update={"topic_prefix": prefix})
    specs = tmp_path / "specs"
    specs.mkdir()
    shutil.copy(SPEC, specs / "transactions.yaml")
    topics = {"ingest": kafka.topic("ingest.transactions"), "landed": kafka.topic("data.landed"),
              "dlq": kafka.topic("dlq.ingest"), "unknown": kafka.topic("ingest.nosuchdataset")}
    admin = AdminClient(kafka.client_config())
    partitions = {"ingest": 3, "landed": 1, "dlq": 1, "unknown": 1}
    for future in admin.create_topics([NewTopic(topics[k], partitions[k], 1) for k in topics]).values():
        future.result()
    # A group per test too: Tansu can leave a group stuck after its members leave (see the stack's client_env).
    env = {"STREAMML_KAFKA_TOPIC_PREFIX": prefix, "STREAMML_KAFKA_GROUP_PREFIX": prefix,
           "STREAMML_INGEST_SPECS_DIR": str(specs)}
    return kafka, topics, env

