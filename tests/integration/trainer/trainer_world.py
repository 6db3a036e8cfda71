"""A trainer world on the real stack: prefixed topics, a bucket holding a prepared
dataset version the way prep writes it, a model spec folder, and event helpers."""

from __future__ import annotations

import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml
from confluent_kafka import Message
from confluent_kafka.admin import AdminClient, NewTopic

from service_logs import log_lines
from services.trainer.spec import ModelSpec, parse_model_spec
from services.trainer.synthetic_store import write_synthetic_version
from streamml.events import Event, decode
from streamml.kafka import BatchConsumer, EventProducer
from streamml.manifest import DatasetManifest
from streamml.registry.keys import dataset_manifest_key
from streamml.settings import KafkaSettings
from streamml.store import ObjectStore

DATASET = "payments"
TOPICS = ("dataset.ready", "model.trained", "dlq.trainer")


def spec_document(**overrides: object) -> dict:
    document = {
        "name": "risk",
        "dataset": DATASET,
        "task": "binary",
        "architecture": {"hidden": [16, 8], "dropout": 0.1, "normalisation": "batch"},
        "optimiser": {"name": "adamw", "lr": 0.01},
        "schedule": {"kind": "cosine"},
        "batch_size": 256,
        "max_epochs": 3,
        "early_stopping": {"patience": None},
        "seed": 5,
    }
    document.update(overrides)
    return document


def put_dataset(store: ObjectStore, rows: int, version: int = 1, seed: int = 2) -> tuple[DatasetManifest, dict]:
    """Split Parquet files, then the manifest (last), as prep commits a version."""
    manifest, splits = write_synthetic_version(store, DATASET, version, rows, seed=seed)
    # What the trainer reads must validate as a manifest.
    stored = DatasetManifest.model_validate_json(store.get_bytes(dataset_manifest_key(DATASET, version)))
    assert stored == manifest and stored.files["train"][0].key.startswith(f"datasets/{DATASET}/v{version}/")
    return manifest, splits


@dataclass
class World:
    kafka: KafkaSettings
    store: ObjectStore
    bucket: str
    models_dir: Path
    env: dict[str, str]

    def write_spec(self, **overrides: object) -> ModelSpec:
        document = spec_document(**overrides)
        (self.models_dir / f"{document['name']}.yaml").write_text(yaml.safe_dump(document))
        return parse_model_spec(document)

    def send(self, event: Event) -> None:
        producer = EventProducer(self.kafka, "test")
        producer.send(event)
        producer.flush()

    def read(self, topic: str, expected: int, timeout: float = 60) -> list[Message]:
        """At least ``expected`` messages of ``topic`` from its start, or what came within ``timeout``."""
        consumer = BatchConsumer(self.kafka, f"read-{time.monotonic_ns()}", [self.kafka.topic(topic)])
        received, deadline = [], time.monotonic() + timeout
        while len(received) < expected and time.monotonic() < deadline:
            received += consumer.poll(100, 0.2)
        consumer.close()
        return received

    def events(self, topic: str, expected: int, timeout: float = 60) -> list[Event]:
        return [decode(m.headers(), m.key(), m.value())[0] for m in self.read(topic, expected, timeout)]


def create_topics(kafka: KafkaSettings) -> None:
    admin = AdminClient(kafka.client_config())
    for future in admin.create_topics([NewTopic(kafka.topic(name), 1, 1) for name in TOPICS]).values():
        future.result()


def messages(path: Path, message: str) -> list[dict]:
    return [line for line in log_lines(path) if line.get("message") == message]


def wait_for(condition, timeout: float, process=None, what: str = "condition", interval: float = 0.05):
    """Poll ``condition`` until it returns something truthy; fail with the service log if it dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"service exited ({process.returncode}) while waiting for {what}:\n"
                                 + process.log_path.read_text()[-4000:])
        value = condition()
        if value:
            return value
        time.sleep(interval)
    tail = process.log_path.read_text()[-4000:] if process is not None else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tail}")


def metric(port: int, name: str, labels: str) -> float | None:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in body.splitlines():
        if line.startswith(f"{name}{{{labels}}} "):
            return float(line.rsplit(" ", 1)[1])
    return None
