"""What the prep service tests share: the example transactions dataset on topics of their own, records
published to it, and waiting for prep's events."""

from __future__ import annotations

import time
from pathlib import Path

import yaml
from confluent_kafka.admin import AdminClient, NewTopic

from streamml.datagen import to_json_records, transactions
from streamml.events import decode
from streamml.kafka import EventProducer
from streamml.lag import partition_lags
from streamml.settings import KafkaSettings

SPEC = Path(__file__).resolve().parents[3] / "examples" / "datasets" / "transactions.yaml"
TOPICS = ("ingest.transactions", "data.landed", "dataset.ready", "drift.detected", "dlq.ingest", "dlq.prep")


def transactions_world(stack, prefix: str, folder: Path, prep: dict, env: dict[str, str]
                       ) -> tuple[KafkaSettings, dict[str, str], Path]:
    """Topics under ``prefix`` (2 partitions each), the example spec with ``prep`` merged into its policy,
    and the environment of ingest and prep (``env`` added); the spec file's path."""
    kafka = stack.settings().kafka.model_copy(update={"topic_prefix": prefix})
    specs = folder / "specs"
    specs.mkdir()
    document = yaml.safe_load(SPEC.read_text())
    document["prep"].update(prep)
    (specs / "transactions.yaml").write_text(yaml.safe_dump(document))
    admin = AdminClient(kafka.client_config())
    for future in admin.create_topics([NewTopic(kafka.topic(n), 2, 1) for n in TOPICS]).values():
        future.result()
    return kafka, {"STREAMML_KAFKA_TOPIC_PREFIX": prefix, "STREAMML_KAFKA_GROUP_PREFIX": prefix,
                   "STREAMML_INGEST_SPECS_DIR": str(specs), "STREAMML_PREP_SPECS_DIR": str(specs),
                   "STREAMML_STATE_DIR": str(folder / "state"), **env}, specs / "transactions.yaml"


def publish(kafka: KafkaSettings, start: int, count: int, shift: float = 0.0) -> None:
    producer = EventProducer(kafka, "test")
    columns = transactions(count, seed=3, start=start, shift=shift)
    for record, key in zip(to_json_records(columns), columns["tx_id"], strict=True):
        producer.produce(kafka.topic("ingest.transactions"), record, key)
    producer.flush()


def next_ready(consumer, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in consumer.poll(10, 1.0):
            return decode(message.headers(), message.key(), message.value())[0]
    raise AssertionError(f"no dataset.ready within {timeout}s")


def wait_until_handled(kafka: KafkaSettings, group: str, topic: str, events: int, timeout: float = 120) -> None:
    """Until ``group`` has committed ``events`` records of ``topic``: the service handled them."""
    deadline = time.monotonic() + timeout
    while sum(p.committed or 0 for p in partition_lags(kafka, group) if p.topic == kafka.topic(topic)) < events:
        assert time.monotonic() < deadline, f"{group} did not handle {events} events of {topic} within {timeout}s"
        time.sleep(0.2)
