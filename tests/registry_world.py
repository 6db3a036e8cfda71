"""The trainer's, validator's and SDK's tests on the real stack: one world per test,
and dataset and model versions written to the object store the way prep and the
trainer write them.

``World`` gives a test its own topic prefix, bucket and folder (model specs
for the trainer, policies for the validator), and sends and reads events there.
Datasets come from the trainer's synthetic generator (a learnable binary
label); a later version of the standard dataset holds the same rows prepared
with another transform. Models are trained with the trainer's own code in a
second or two each and cached for the test session; a "weak" model is trained
on permuted labels, so it has learnt nothing.
"""

from __future__ import annotations

import functools
import json
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
import yaml
from confluent_kafka import Message
from confluent_kafka.admin import AdminClient, NewTopic

from service_logs import log_lines
from services.trainer.artifact import PortableModel, export_portable, model_card, state_dict_bytes
from services.trainer.data import FeatureLayout, tensors_from_table
from services.trainer.model import build_model
from services.trainer.publish import VersionFile, publish_version
from services.trainer.spec import ModelSpec, parse_model_spec
from services.trainer.synthetic import synthetic_dataset
from services.trainer.synthetic_store import commit_version
from services.trainer.train import TrainResult, train
from streamml.events import Event, ModelTrained, PredictionRecord, decode, encode
from streamml.kafka import BatchConsumer, EventProducer
from streamml.manifest import CategoryTransform, DatasetManifest, NumericTransform
from streamml.portable import load_program
from streamml.prediction_events import prediction_records
from streamml.registry.keys import CARD_FILE, STATE_DICT_FILE, dataset_spec_key, version_prefix
from streamml.settings import KafkaSettings
from streamml.specs import DatasetSpec, parse_dataset_spec
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


# -- a world per test ---------------------------------------------------------------


@dataclass
class World:
    kafka: KafkaSettings
    store: ObjectStore
    bucket: str
    folder: Path  # what the service under test reads: model specs (trainer) or policies (validator)
    env: dict[str, str]

    def send(self, *events: Event, partitions: list[int] | None = None) -> None:
        """Produce ``events`` in one flush, each to its partition when ``partitions`` are given."""
        producer = EventProducer(self.kafka, "test")
        for index, event in enumerate(events):
            message = encode(event, "/test")
            extra = {} if partitions is None else {"partition": partitions[index]}
            producer._producer.produce(self.kafka.topic(event.default_topic()), message.value, message.key,
                                       headers=list(message.headers.items()), **extra)
        producer.flush()

    def read(self, topic: str, expected: int, timeout: float = 60) -> list[Message]:
        """At least ``expected`` messages of ``topic`` (from its start), or what came within ``timeout``."""
        consumer = BatchConsumer(self.kafka, f"read-{topic}-{time.monotonic_ns()}", [self.kafka.topic(topic)])
        received, deadline = [], time.monotonic() + timeout
        while len(received) < expected and time.monotonic() < deadline:
            received += consumer.poll(100, 0.2)
        consumer.close()
        return received

    def events(self, topic: str, expected: int, timeout: float = 60) -> list[Event]:
        return [decode(m.headers(), m.key(), m.value())[0] for m in self.read(topic, expected, timeout)]

    def predictions(self, model: str, expected: int, timeout: float = 60) -> list[PredictionRecord]:
        """At least ``expected`` predictions logged to ``predictions.<model>`` (from its start), or what came
        within ``timeout``, each batch split as every reader of the topic splits it."""
        consumer = BatchConsumer(self.kafka, f"read-predictions-{time.monotonic_ns()}",
                                 [self.kafka.topic(f"predictions.{model}")])
        received: list[PredictionRecord] = []
        deadline = time.monotonic() + timeout
        while len(received) < expected and time.monotonic() < deadline:
            for message in consumer.poll(100, 0.2):
                received += prediction_records(message.headers(), message.key(), message.value())
        consumer.close()
        return received

    def write_spec(self, **overrides: object) -> ModelSpec:
        """A model spec in the trainer's folder: ``spec_document`` with ``overrides``."""
        document = spec_document(**overrides)
        (self.folder / f"{document['name']}.yaml").write_text(yaml.safe_dump(document))
        return parse_model_spec(document)


def make_world(stack, store: ObjectStore, bucket: str, folder: Path, prefix: str, topics: dict[str, int],
               env: dict[str, str]) -> World:
    """``topics`` (name -> partitions) created under ``prefix``; ``env`` plus the prefix for the service.

    The prefix names the services' consumer groups too: a group that an earlier test's services left
    on the session's broker may never assign a partition to a new member."""
    kafka = stack.settings().kafka.model_copy(update={"topic_prefix": prefix})
    admin = AdminClient(kafka.client_config())
    for future in admin.create_topics([NewTopic(kafka.topic(name), count, 1) for name, count in topics.items()]).values():
        future.result()
    folder.mkdir(exist_ok=True)
    return World(kafka, store, bucket, folder,
                 {"STREAMML_KAFKA_TOPIC_PREFIX": prefix, "STREAMML_KAFKA_GROUP_PREFIX": prefix, **env})


def validator_world(stack, unique: str, store: ObjectStore, bucket: str, tmp_path: Path) -> World:
    """The pipeline's topics after training, and a policy folder holding ``POLICY``."""
    policies = tmp_path / "policies"
    topics = {name: 1 for name in ("model.trained", "model.promoted", "model.rejected", "dlq.validator",
                                   f"predictions.{MODEL}", f"feedback.{MODEL}")}
    # Two partitions, so two validators can each own one (a race on one model's champion).
    topics["model.trained"] = 2
    world = make_world(stack, store, bucket, policies, f"t{unique}.", topics,
                       {"STREAMML_VALIDATOR_POLICIES_DIR": str(policies)})
    (policies / f"{MODEL}.yaml").write_text(POLICY)
    return world


# -- dataset versions ---------------------------------------------------------------


@functools.cache
def dataset(version: int = 1, rows: int = ROWS, seed: int = 1) -> tuple[DatasetManifest, dict[str, pa.Table]]:
    """Version 1 as the synthetic generator makes it; later versions hold the same rows
    prepared with another transform (shifted, scaled, vocabulary reversed)."""
    manifest, splits = synthetic_dataset(rows, seed=seed, name=DATASET)
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
    return manifest.model_copy(update={"version": version, "transform": transform}), new_splits


def put_dataset(store, version: int = 1, rows: int = ROWS, seed: int = 1) -> tuple[DatasetManifest, dict]:
    """Dataset version ``version`` committed as prep commits one: split files, then the manifest."""
    manifest, splits = dataset(version, rows, seed)
    return commit_version(store, manifest, splits), splits


def put_spec(store) -> DatasetSpec:
    """A spec of the standard dataset with rules (num_0 within [-10, 10], cat_0 from its vocabulary or
    ``never-seen``), stored where ingest stores the spec a manifest's fingerprint names."""
    manifest, _ = dataset(1)
    numeric = [{"name": f"num_{i}", "type": "float"} for i in range(1, 6)]
    categories = [*manifest.transform["cat_0"].vocabulary, "never-seen"]
    spec = parse_dataset_spec({
        "name": DATASET, "key": "id", "event_time": "ts", "label": "label",
        "fields": [{"name": "id", "type": "int"}, {"name": "ts", "type": "timestamp"},
                   {"name": "num_0", "type": "float", "min": -10, "max": 10}, *numeric,
                   {"name": "cat_0", "type": "category", "categories": categories},
                   {"name": "cat_1", "type": "category"}, {"name": "label", "type": "int", "min": 0, "max": 1}],
    })
    store.put(dataset_spec_key(DATASET, manifest.spec_fingerprint), spec.model_dump_json().encode())
    return spec


# -- model versions -----------------------------------------------------------------


@dataclass(frozen=True)
class Trained:
    manifest: DatasetManifest
    layout: FeatureLayout
    spec: ModelSpec
    result: TrainResult
    portable: PortableModel


def spec_document(**overrides: object) -> dict:
    """A small model spec of the dataset, as a YAML document holds it."""
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
    """The files of one model version, committed as the trainer commits one; returns the card."""
    card = model_card(spec=model.spec.model_copy(update={"name": name}), manifest=model.manifest,
                      layout=model.layout, result=model.result, portable=model.portable,
                      model_version=version, code_version="test")
    files = [VersionFile(model.portable.filename, model.portable.data),
             VersionFile(STATE_DICT_FILE, state_dict_bytes(model.result.net)),
             VersionFile(CARD_FILE, json.dumps(card).encode())]
    assert publish_version(store, name, version, files), f"{name} {version} was committed before"
    return card


def trained_event(version: str, model: Trained, name: str = MODEL) -> ModelTrained:
    return ModelTrained(model=name, version=version, dataset=DATASET, dataset_version=model.manifest.version,
                        artifact_prefix=version_prefix(name, version), metrics=model.result.metrics,
                        device="cpu", training_seconds=model.result.train_seconds)


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
    with torch.inference_mode():
        return load_program(model.portable.data, model.portable.format)(*prepared(model.manifest.version)).numpy()


# -- waiting and looking ------------------------------------------------------------


def now() -> datetime:
    return datetime.now(UTC)


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
