"""Datasets and model versions written to a real object store the way prep and the trainer write them.

Models are trained with the trainer's own code on its synthetic prepared
dataset (a learnable binary label), in a second or two each, and cached for
the test session. A "weak" model is trained on permuted labels, so it has
learnt nothing. ``World`` gives a test its own topic prefix and bucket, and
sends and reads events there. The SDK's integration tests use this module too.
"""

from __future__ import annotations

import functools
import io
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from confluent_kafka import Message
from confluent_kafka.admin import AdminClient, NewTopic

from services.trainer.artifact import PortableModel, export_portable, model_card, state_dict_bytes
from services.trainer.data import FeatureLayout, tensors_from_table
from services.trainer.model import build_model
from services.trainer.spec import ModelSpec
from services.trainer.synthetic import synthetic_dataset
from services.trainer.train import TrainResult, train
from streamml.events import Event, decode, encode
from streamml.kafka import BatchConsumer, EventProducer
from streamml.manifest import CategoryTransform, DatasetManifest, FileEntry, NumericTransform
from streamml.registry.keys import dataset_manifest_key, version_key
from streamml.settings import KafkaSettings
from streamml.store import ObjectStore

DATASET = "transactions"
MODEL = "fraud"
ROWS = 20_000

POLICY = """
model: fraud
min: {auc: 0.80}
max: {log_loss: 0.5}
min_improvement: {auc: 0.01}
max_regression: {log_loss: 0.02}
slices:
  - {feature: cat_0, min: {auc: 0.70}, min_rows: 50}
latency: {p95_ms: 500, batch_size: 64}
"""

PIPELINE_TOPICS = ("model.trained", "model.promoted", "model.rejected", "dlq.validator",
                   f"predictions.{MODEL}", f"feedback.{MODEL}")


@dataclass(frozen=True)
class Trained:
    manifest: DatasetManifest
    layout: FeatureLayout
    spec: ModelSpec
    result: TrainResult
    portable: PortableModel


def create_topics(kafka, partitions: dict[str, int] | None = None) -> dict[str, str]:
    """The prefixed pipeline topics, created on the broker (one partition unless ``partitions`` says)."""
    topics = {name: kafka.topic(name) for name in PIPELINE_TOPICS}
    counts = partitions or {}
    admin = AdminClient(kafka.client_config())
    new = [NewTopic(topic, counts.get(name, 1), 1) for name, topic in topics.items()]
    for future in admin.create_topics(new).values():
        future.result()
    return topics


@functools.cache
def dataset(version: int = 1) -> tuple[DatasetManifest, dict[str, pa.Table]]:
    """Version 1 as the synthetic generator makes it; later versions hold the same rows
    prepared with another transform (shifted, scaled, vocabulary reversed)."""
    manifest, splits = synthetic_dataset(ROWS, seed=1, name=DATASET)
    if version == 1:
        return manifest, splits
    return reexpress(manifest, splits, version)


def reexpress(manifest: DatasetManifest, splits: dict[str, pa.Table], version: int):
    shift, scale = 0.5 * version, 1.0 + version
    transform, columns = dict(manifest.transform), {}
    for name, old in manifest.transform.items():
        if isinstance(old, NumericTransform):
            transform[name] = NumericTransform(mean=shift, std=scale)
            columns[name] = lambda values, old=old: (values * old.std + old.mean - shift) / scale
        else:
            reversed_vocabulary = list(reversed(old.vocabulary))
            transform[name] = CategoryTransform(vocabulary=reversed_vocabulary)
            mapping = np.array([0, *(reversed_vocabulary.index(v) + 1 for v in old.vocabulary)])
            columns[name] = lambda codes, mapping=mapping: mapping[codes]
    new_splits = {}
    for split, table in splits.items():
        for name, recode in columns.items():
            index = table.schema.get_field_index(name)
            table = table.set_column(index, name, pa.array(recode(table.column(name).to_numpy())))
        new_splits[split] = table
    files = {split: [FileEntry(key=f"datasets/{DATASET}/v{version}/{split}/part-0.parquet",
                               rows=entries[0].rows, sha256=entries[0].sha256)]
             for split, entries in manifest.files.items()}
    return manifest.model_copy(update={"version": version, "transform": transform, "files": files}), new_splits


def put_dataset(store, version: int = 1) -> DatasetManifest:
    manifest, splits = dataset(version)
    for split, entries in manifest.files.items():
        buffer = io.BytesIO()
        pq.write_table(splits[split], buffer)
        store.put(entries[0].key, buffer.getvalue())
    store.put(dataset_manifest_key(DATASET, version), manifest.model_dump_json(by_alias=True).encode())
    return manifest


@functools.cache
def trained(kind: str, dataset_version: int = 1) -> Trained:
    """``strong``: learnt the signal; ``weak``: trained on permuted labels."""
    manifest, splits = dataset(dataset_version)
    train_split = splits["train"]
    if kind == "weak":
        labels = np.random.default_rng(3).permutation(train_split.column("label").to_numpy())
        train_split = train_split.set_column(train_split.schema.get_field_index("label"), "label", pa.array(labels))
    layout = FeatureLayout.from_manifest(manifest, "binary")
    spec = ModelSpec(name=MODEL, dataset=DATASET, task="binary", max_epochs=3, batch_size=512,
                     architecture={"hidden": [16]}, optimiser={"lr": 0.01}, seed=7)
    result = train(spec, layout, tensors_from_table(train_split, layout),
                   tensors_from_table(splits["validation"], layout), device="cpu")
    return Trained(manifest, layout, spec, result, export_portable(result.net, layout))


@functools.cache
def untrained(hidden: tuple[int, ...], dataset_version: int = 1) -> Trained:
    """A randomly initialised network: as weak as the permuted-label one, but as wide as asked,
    so evaluating it takes a while."""
    manifest, _ = dataset(dataset_version)
    layout = FeatureLayout.from_manifest(manifest, "binary")
    spec = ModelSpec(name=MODEL, dataset=DATASET, task="binary", architecture={"hidden": list(hidden)}, seed=7)
    torch.manual_seed(7)
    net = build_model(layout, spec.architecture).eval()
    result = TrainResult(net=net, metrics={}, best_epoch=0, epochs=0, stopped_early=False, history=[],
                         device="cpu", train_seconds=0.0)
    return Trained(manifest, layout, spec, result, export_portable(net, layout))


def put_version(store, version: str, model: Trained, name: str = MODEL) -> dict:
    """The files of one model version, manifest.json last; returns the card."""
    card = model_card(spec=model.spec.model_copy(update={"name": name}), manifest=model.manifest,
                      layout=model.layout, result=model.result, portable=model.portable,
                      model_version=version, code_version="test")
    store.put(version_key(name, version, model.portable.filename), model.portable.data)
    store.put(version_key(name, version, "state_dict.pt"), state_dict_bytes(model.result.net))
    store.put(version_key(name, version, "card.json"), json.dumps(card).encode())
    files = [model.portable.filename, "state_dict.pt", "card.json"]
    store.put(version_key(name, version, "manifest.json"), json.dumps({"files": files}).encode())
    return card


def trained_event(version: str, model: Trained, name: str = MODEL):
    from streamml.events import ModelTrained

    return ModelTrained(model=name, version=version, dataset=DATASET, dataset_version=model.manifest.version,
                        artifact_prefix=f"models/{name}/{version}/", metrics=model.result.metrics,
                        device="cpu", training_seconds=model.result.train_seconds)


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class World:
    kafka: KafkaSettings
    topics: dict[str, str]
    env: dict[str, str]
    store: ObjectStore
    bucket: str
    policies: Path

    def send(self, *events: Event, partitions: list[int] | None = None) -> None:
        """Produce ``events`` in one flush, each to its partition when ``partitions`` are given."""
        producer = EventProducer(self.kafka, "test")
        for index, event in enumerate(events):
            message = encode(event, "/test")
            extra = {} if partitions is None else {"partition": partitions[index]}
            producer._producer.produce(self.kafka.topic(event.default_topic()), message.value, message.key,
                                       headers=list(message.headers.items()), **extra)
        producer.flush()

    def read(self, name: str, expected: int, timeout: float = 60) -> list[Message]:
        """At least ``expected`` messages of topic ``name`` (from its start), or what came within ``timeout``."""
        consumer = BatchConsumer(self.kafka, f"read-{name}-{time.monotonic_ns()}", [self.topics[name]])
        received, deadline = [], time.monotonic() + timeout
        while len(received) < expected and time.monotonic() < deadline:
            received += consumer.poll(100, 0.2)
        consumer.close()
        return received

    def events(self, name: str, expected: int, timeout: float = 60) -> list[Event]:
        return [decode(m.headers(), m.key(), m.value())[0] for m in self.read(name, expected, timeout)]


def make_world(stack, unique: str, store: ObjectStore, bucket: str, tmp_path: Path) -> World:
    """Prefixed topics, a bucket and a policy folder for one test."""
    prefix = f"t{unique}."
    kafka = stack.settings().kafka.model_copy(update={"topic_prefix": prefix})
    # Two partitions, so two validators can each own one (a race on one model's champion).
    topics = create_topics(kafka, partitions={"model.trained": 2})
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "fraud.yaml").write_text(POLICY)
    env = {"STREAMML_KAFKA_TOPIC_PREFIX": prefix, "STREAMML_VALIDATOR_POLICIES_DIR": str(policies)}
    return World(kafka, topics, env, store, bucket, policies)


def raw_records() -> list[dict]:
    """The test rows as an application has them: numbers, and category names (an unseen name for code 0)."""
    manifest, splits = dataset(1)
    test = splits["test"]
    records: list[dict] = [{} for _ in range(test.num_rows)]
    for name, transform in manifest.transform.items():
        for record, value in zip(records, test.column(name).to_pylist(), strict=True):
            if isinstance(transform, NumericTransform):
                record[name] = value * transform.std + transform.mean
            else:
                record[name] = transform.vocabulary[value - 1] if value > 0 else "never-seen"
    return records


def prepared(dataset_version: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The same test rows as dataset version ``dataset_version`` prepared them: a model's direct inputs."""
    manifest, splits = dataset(dataset_version)
    test = splits["test"]
    numeric = [n for n in manifest.features if isinstance(manifest.transform[n], NumericTransform)]
    categorical = [n for n in manifest.features if n not in numeric]
    return (
        torch.tensor(np.column_stack([test.column(n).to_numpy() for n in numeric]), dtype=torch.float32),
        torch.tensor(np.column_stack([test.column(n).to_numpy() for n in categorical]), dtype=torch.int64),
    )


def direct_predictions(model: Trained) -> np.ndarray:
    """What ``model``'s portable program answers for the test rows, without any streamml preprocessing."""
    from streamml.portable import load_program

    with torch.inference_mode():
        return load_program(model.portable.data, model.portable.format)(*prepared(model.manifest.version)).numpy()
