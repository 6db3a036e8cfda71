"""The trainer service on a real broker and Ceph: dataset.ready in, a committed model
version and model.trained out; redelivery, SIGTERM and SIGKILL never train twice
or start over."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest
import torch
from confluent_kafka import Consumer, TopicPartition

from services.trainer.data import FeatureLayout, tensors_from_table
from services.trainer.metrics import validation_metrics
from services.trainer.model import build_model
from services.trainer.publish import VersionFile, model_version, publish_version
from services.trainer.train import load_checkpoint
from streamml.events import DatasetReady, ModelTrained
from streamml.registry.keys import checkpoint_key, dataset_manifest_key, model_manifest_key, version_key, version_prefix
from streamml.registry.models import read_card, read_version_files, read_version_manifest
from streamml.stack.ports import free_port
from registry_world import DATASET, messages, metric, put_dataset, spec_document, wait_for

pytestmark = pytest.mark.integration
torch.set_num_threads(2)

# Runs in a Python that can import torch and nothing of streamml: the folder holds
# what was downloaded from the registry.
LOADER = textwrap.dedent("""
    import json, sys
    import torch

    folder = sys.argv[1]
    card = json.load(open(f"{folder}/card.json"))
    assert card["artifacts"]["format"] == "torch.export", card["artifacts"]
    predict = torch.export.load(f"{folder}/{card['artifacts']['portable']}").module()
    numeric, categorical = torch.load(f"{folder}/inputs.pt")
    with torch.no_grad():
        torch.save(predict(numeric, categorical), f"{folder}/outputs.pt")
    ours = sorted(name for name in sys.modules if name.split(".")[0] in ("services", "streamml"))
    assert not ours, ours
""")

# Enough rows that an epoch takes a second or more here, so the tests can act between epochs.
SLOW = {"max_epochs": 6, "batch_size": 64, "architecture": {"hidden": [32, 32]}}
SLOW_ROWS = 25_000


def test_dataset_ready_commits_a_version_that_predicts_the_same_without_streamml(world, services, tmp_path):
    spec = world.write_spec()
    manifest, splits = put_dataset(world.store, rows=4000)
    world.send(DatasetReady.of(manifest, "manual"))
    trainer = services.start("trainer", world.bucket, **world.env)

    [event] = world.events("model.trained", 1, timeout=90) or [None]
    assert event is not None, trainer.log_path.read_text()[-4000:]
    version = model_version(spec, manifest.version)
    assert isinstance(event, ModelTrained)
    assert (event.model, event.version, event.dataset, event.dataset_version, event.artifact_prefix) == (
        "risk", version, manifest.dataset, manifest.version, version_prefix("risk", version))

    marker, files = read_version_files(world.store, "risk", version)
    assert sorted(marker.files) == ["card.json", "model.pt2", "state_dict.pt"]
    assert marker.prefix.startswith(f"models/risk/{version}/attempts/")
    for name in marker.files:
        assert marker.bytes[name] == len(files[name])

    def stored(name: str) -> bytes:
        return files[name]

    card = json.loads(stored("card.json"))
    assert card["dataset"]["name"] == manifest.dataset and card["dataset"]["version"] == manifest.version
    assert card["params"] == spec.model_dump(mode="json") and card["seed"] == spec.seed
    assert card["device"].startswith("cpu") and card["code_version"] and card["samples_per_s"] > 0
    assert card["expected_features"] == {name: manifest.reference[name].model_dump(mode="json")
                                         for name in manifest.features}
    assert card["inputs"]["transform"]["cat_1"] == manifest.transform["cat_1"].model_dump(mode="json")
    assert event.metrics == card["metrics"] and event.device == card["device"]
    assert len(card["history"]) == spec.max_epochs

    # The stored weights give the metrics the card reports on the validation split...
    layout = FeatureLayout.from_manifest(manifest, "binary")
    validation = tensors_from_table(splits["validation"], layout)
    net = build_model(layout, spec.architecture)
    net.load_state_dict(torch.load(io.BytesIO(stored("state_dict.pt")), weights_only=True))
    net.eval()
    with torch.no_grad():
        scores = net(validation.numeric, validation.categorical)
    assert validation_metrics("binary", scores.numpy(), validation.label.numpy()) == pytest.approx(
        card["metrics"], rel=1e-6)
    assert card["metrics"]["auc"] > 0.7  # it learnt the synthetic signal

    # ...and the portable program, in a Python without streamml, predicts what they do.
    for name in ("card.json", "model.pt2"):
        (tmp_path / name).write_bytes(stored(name))
    torch.save((validation.numeric, validation.categorical), tmp_path / "inputs.pt")
    loaded = subprocess.run([sys.executable, "-c", LOADER, str(tmp_path)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    outputs = torch.load(tmp_path / "outputs.pt")
    assert torch.allclose(outputs, torch.sigmoid(scores), rtol=0, atol=1e-6)


def test_a_redelivered_dataset_ready_is_announced_again_not_trained_again(world, services):
    spec = world.write_spec(max_epochs=2)
    manifest, _ = put_dataset(world.store, rows=3000)
    event = DatasetReady.of(manifest, "manual")
    world.send(event)
    first = services.start("trainer", world.bucket, **world.env)
    [trained] = world.events("model.trained", 1, timeout=90) or [None]
    assert trained is not None, first.log_path.read_text()[-4000:]
    card_before = world.store.get(read_version_manifest(world.store, "risk", trained.version).key("card.json"))
    first.terminate()
    assert first.wait(timeout=60) == 0

    # The same event again, handled by a new process: nothing in memory tells it what happened.
    world.send(event)
    second = services.start("trainer", world.bucket, **world.env)
    announced = world.events("model.trained", 2, timeout=90)
    assert [e.version for e in announced] == [model_version(spec, 1)] * 2
    assert announced[1].metrics == announced[0].metrics
    wait_for(lambda: messages(second.log_path, "trained before; announcing it again"), 10, second, "the log line")
    assert messages(second.log_path, "training") == []
    assert len(messages(first.log_path, "training")) == 1
    assert world.store.get(read_version_manifest(world.store, "risk", trained.version).key("card.json")).etag == \
        card_before.etag


def test_sigkill_after_a_checkpoint_resumes_from_it(world, services):
    spec = world.write_spec(**SLOW)
    manifest, _ = put_dataset(world.store, rows=SLOW_ROWS)
    version = model_version(spec, manifest.version)
    world.send(DatasetReady.of(manifest, "manual"))
    trainer = services.start("trainer", world.bucket, **world.env)

    key = checkpoint_key("risk", version)
    wait_for(lambda: world.store.exists(key), 120, trainer, "the first checkpoint")
    trainer.send_signal(signal.SIGKILL)
    trainer.wait()
    checkpoint = load_checkpoint(world.store.get_bytes(key))
    killed_after = checkpoint["epoch"]
    assert 1 <= killed_after < spec.max_epochs
    assert not world.store.exists(version_key("risk", version, "manifest.json"))

    port = free_port()
    restarted = services.start("trainer", world.bucket, **world.env, STREAMML_HTTP_PORT=str(port))
    [trained] = world.events("model.trained", 1, timeout=120) or [None]
    assert trained is not None, restarted.log_path.read_text()[-4000:]
    [resumed] = messages(restarted.log_path, "resuming from checkpoint")
    assert (resumed["epoch"], resumed["next_epoch"]) == (killed_after, killed_after + 1)
    epochs = [line["epoch"] for line in messages(restarted.log_path, "epoch")]
    assert epochs == list(range(killed_after + 1, spec.max_epochs + 1))
    assert metric(port, "streamml_trainer_resumed_from_epoch", 'model="risk"') == killed_after
    assert metric(port, "streamml_trainer_epoch", 'model="risk"') == spec.max_epochs

    card = read_card(world.store, "risk", version)
    assert [entry["epoch"] for entry in card["history"]] == list(range(1, spec.max_epochs + 1))
    # The epochs before the kill are the killed process's, carried over by the checkpoint.
    assert [entry["train_loss"] for entry in card["history"][:killed_after]] == [
        entry["train_loss"] for entry in checkpoint["history"]]


def test_sigterm_stops_after_the_epoch_checkpoint_and_leaves_the_event_uncommitted(world, services):
    spec = world.write_spec(**SLOW)
    manifest, _ = put_dataset(world.store, rows=SLOW_ROWS)
    version = model_version(spec, manifest.version)
    world.send(DatasetReady.of(manifest, "manual"))
    trainer = services.start("trainer", world.bucket, **world.env)

    key = checkpoint_key("risk", version)
    wait_for(lambda: world.store.exists(key), 120, trainer, "the first checkpoint")
    trainer.send_signal(signal.SIGTERM)
    assert trainer.wait(timeout=60) == 0
    [stopped] = messages(trainer.log_path, "training stopped on request; the event stays uncommitted and "
                                           "resumes from the checkpoint")
    assert load_checkpoint(world.store.get_bytes(key))["epoch"] == stopped["epoch"] < spec.max_epochs
    assert not world.store.exists(version_key("risk", version, "manifest.json"))
    assert committed_offset(world, "dataset.ready") is None

    restarted = services.start("trainer", world.bucket, **world.env)
    [trained] = world.events("model.trained", 1, timeout=120) or [None]
    assert trained is not None, restarted.log_path.read_text()[-4000:]
    [resumed] = messages(restarted.log_path, "resuming from checkpoint")
    assert resumed["next_epoch"] == stopped["epoch"] + 1
    wait_for(lambda: committed_offset(world, "dataset.ready") == 1, 20, restarted, "the commit")


def committed_offset(world, topic: str) -> int | None:
    """The trainer group's committed offset on the topic's only partition (None: nothing committed)."""
    group = world.env["STREAMML_KAFKA_GROUP_PREFIX"] + "streamml-trainer"
    consumer = Consumer({**world.kafka.client_config(), "group.id": group})
    try:
        [found] = consumer.committed([TopicPartition(world.kafka.topic(topic), 0)], timeout=10)
    finally:
        consumer.close()
    return found.offset if found.offset >= 0 else None


def test_a_bad_model_spec_stops_the_start_naming_file_and_field(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    (models / "risk.yaml").write_text(json.dumps(spec_document(optimiser={"name": "rmsprop"})))
    process = subprocess.run(
        [sys.executable, "-m", "services.trainer"], capture_output=True, text=True, timeout=120,
        env={**os.environ, "STREAMML_TRAINER_MODELS_DIR": str(models), "STREAMML_HTTP_PORT": "0"},
    )
    assert process.returncode == 3, process.stderr[-3000:]
    assert "STREAMML_TRAINER_MODELS_DIR" in process.stderr
    assert "risk.yaml: optimiser.name" in process.stderr and "rmsprop" in process.stderr


def test_a_dataset_ready_without_its_files_is_dead_lettered_and_the_next_one_trains(world, services):
    world.write_spec(max_epochs=1)
    manifest, _ = put_dataset(world.store, rows=2000, version=2)
    missing = DatasetReady.of(manifest, "manual").model_copy(update={"version": 1, "manifest_key": dataset_manifest_key(DATASET, 1)})
    world.send(missing)
    world.send(DatasetReady.of(manifest, "manual"))
    trainer = services.start("trainer", world.bucket, **world.env)

    [trained] = world.events("model.trained", 1, timeout=90) or [None]
    assert trained is not None, trainer.log_path.read_text()[-4000:]
    assert trained.dataset_version == 2
    [dead] = world.read("dlq.trainer", 1, timeout=10)
    headers = dict(dead.headers())
    assert dataset_manifest_key(DATASET, 1).encode() in headers["dlq_error"]
    assert headers["dlq_error_type"] == b"processing_error" and headers["dlq_source_offset"] == b"0"


def test_publishing_never_overwrites_a_committed_version(store):
    first = [VersionFile("card.json", b'{"n": 1}'), VersionFile("model.pt2", b"first")]
    second = [VersionFile("card.json", b'{"n": 2}'), VersionFile("model.pt2", b"second")]
    assert publish_version(store, "risk", "d1-00000000", first) is True
    assert publish_version(store, "risk", "d1-00000000", second) is False
    manifest, files = read_version_files(store, "risk", "d1-00000000")
    assert files == {"card.json": b'{"n": 1}', "model.pt2": b"first"}
    assert manifest.sha256["model.pt2"] == hashlib.sha256(b"first").hexdigest()
    assert sorted(store.list("models/risk/d1-00000000/")) == sorted(
        [model_manifest_key("risk", "d1-00000000")] + [manifest.key(name) for name in ("card.json", "model.pt2")])


class _Paused:
    """The store as one trainer sees it: its manifest create waits for ``go``; ``arrived`` says it got there."""

    def __init__(self, store, arrived: threading.Event, go: threading.Event | None = None):
        self.store, self.arrived, self.go = store, arrived, go

    def __getattr__(self, name):
        return getattr(self.store, name)

    def create(self, key, data):
        self.arrived.set()
        if self.go is not None:
            assert self.go.wait(60), "the other trainer never got to its commit"
        return self.store.create(key, data)


def test_two_trainers_finishing_one_version_leave_the_files_of_the_one_that_committed(store):
    """Trainer B writes its files after A wrote its own and before A commits (a partition that moved
    mid-training); A commits first. The version must be A's files, whole: every file the manifest
    names has the bytes and sha256 it records."""
    a_files = [VersionFile("card.json", b'{"by": "a"}'), VersionFile("model.pt2", b"a" * 1000)]
    b_files = [VersionFile("card.json", b'{"by": "b"}'), VersionFile("model.pt2", b"b" * 1000)]
    a_at_commit, b_at_commit, a_committed = threading.Event(), threading.Event(), threading.Event()
    results = {}

    def a() -> None:
        try:
            results["a"] = publish_version(_Paused(store, a_at_commit, b_at_commit), "risk", "d1-0000000a", a_files)
        finally:
            a_committed.set()

    writer_a = threading.Thread(target=a)
    writer_a.start()
    assert a_at_commit.wait(60)
    results["b"] = publish_version(_Paused(store, b_at_commit, a_committed), "risk", "d1-0000000a", b_files)
    writer_a.join(60)
    assert results == {"a": True, "b": False}

    marker = json.loads(store.get_bytes(model_manifest_key("risk", "d1-0000000a")))
    folder = marker.get("prefix") or version_prefix("risk", "d1-0000000a")
    for name in marker["files"]:
        data = store.get_bytes(folder + name)
        assert hashlib.sha256(data).hexdigest() == marker["sha256"][name], f"{name} is not the committed one"
    assert store.get_bytes(folder + "card.json") == b'{"by": "a"}'
    # The losing attempt left nothing behind.
    assert not [key for key in store.list("models/risk/d1-0000000a/") if b"b" * 10 in store.get_bytes(key)]
