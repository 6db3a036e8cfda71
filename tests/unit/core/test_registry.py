"""The object store layout: keys built and parsed back, and the typed readers (in-memory store)."""

import json
from datetime import UTC, datetime

import pytest

from streamml.manifest import DatasetManifest
from streamml.registry.datasets import committed_manifests, latest_manifest, version_numbers
from streamml.registry.decisions import Evaluation, read_decision
from streamml.registry.keys import (
    RegistryError,
    champion_key,
    claim_key,
    dataset_manifest_key,
    decision_key,
    drift_request_key,
    monitor_state_key,
    parse_raw_key,
    raw_object_key,
    raw_partition_prefix,
    raw_range_start,
    split_prefix,
    version_key,
    version_prefix,
)
from streamml.registry.models import (
    ChampionPointer,
    VersionManifest,
    VersionMismatch,
    model_names,
    model_versions,
    read_card,
    read_champion,
    read_version_files,
)
from streamml.registry.monitor import MonitorState, read_monitor_state
from streamml.store import ObjectNotFound, StoredObject

pytestmark = pytest.mark.unit


class DictStore:
    """Objects by key; ``list``/``list_prefixes`` answer like S3 (sorted, "folders" by delimiter)."""

    def __init__(self, objects):
        self.objects = objects

    def get(self, key):
        if key not in self.objects:
            raise ObjectNotFound(f"no object {key!r}")
        return StoredObject(key, self.objects[key], '"etag-1"')

    def list(self, prefix):
        return iter(sorted(key for key in self.objects if key.startswith(prefix)))

    def list_prefixes(self, prefix):
        folders = {prefix + key[len(prefix):].split("/", 1)[0] + "/" for key in self.objects
                   if key.startswith(prefix) and "/" in key[len(prefix):]}
        return sorted(folders)


def test_keys_follow_the_layout():
    assert version_prefix("fraud", "20240601-3") == "models/fraud/20240601-3/"
    assert version_key("fraud", "v1", "card.json") == "models/fraud/v1/card.json"
    assert decision_key("fraud", "v1") == "models/fraud/v1/decision.json"
    assert champion_key("fraud") == "models/fraud/champion.json"
    assert dataset_manifest_key("tx", 3) == "datasets/tx/v3/manifest.json"
    assert split_prefix("tx", 3, "train") == "datasets/tx/v3/train/"
    assert claim_key("tx", 3) == "datasets/tx/v3/_claim.json"
    assert drift_request_key("tx") == "datasets/tx/_drift_request"
    assert monitor_state_key("fraud") == "monitor/fraud/latest.json"


def test_raw_keys_encode_their_offset_range_sort_by_offset_and_parse_back():
    prefix = raw_partition_prefix("tx", "ingest.tx", 2, 1767225600000)
    assert prefix == "raw/tx/date=2026-01-01/ingest.tx/p00002/"
    keys = [raw_object_key(prefix, a, b) for a, b in [(100, 199), (0, 99), (1000, 1999)]]
    assert sorted(keys) == [keys[1], keys[0], keys[2]]
    assert keys[2].startswith(raw_range_start(prefix, 1000))
    raw = parse_raw_key(keys[0])
    assert (raw.key, raw.topic, raw.partition, raw.first_offset, raw.last_offset, raw.records) == (
        keys[0], "ingest.tx", 2, 100, 199, 100)
    assert parse_raw_key("raw/tx/something-else.json") is None


@pytest.mark.parametrize("version", ["../other", "a/b", "", ".hidden", "x" * 129])
def test_versions_that_would_escape_their_folder_are_refused(version):
    with pytest.raises(RegistryError, match="model version"):
        version_prefix("fraud", version)


def test_names_must_be_dataset_style():
    with pytest.raises(RegistryError, match="model name 'Fraud/x'"):
        champion_key("Fraud/x")


def test_champion_pointer_round_trips_and_absence_is_not_an_error():
    pointer = ChampionPointer(version="v2", previous="v1", actor="validator-0", reason="better",
                              time=datetime(2024, 6, 1, tzinfo=UTC))
    store = DictStore({champion_key("fraud"): pointer.to_bytes()})
    assert read_champion(store, "fraud") == (pointer, '"etag-1"')
    assert read_champion(store, "churn") == (None, None)


def committed(objects: dict, version: str, files: dict[str, bytes], attempt: str = "a1") -> VersionManifest:
    """A version as the trainer commits one: files under the attempt's folder, then the manifest."""
    prefix = f"models/fraud/{version}/attempts/{attempt}/"
    objects.update({prefix + name: data for name, data in files.items()})
    manifest = VersionManifest.of("fraud", version, prefix, files, datetime(2026, 1, 1, tzinfo=UTC))
    objects[f"models/fraud/{version}/manifest.json"] = manifest.to_bytes()
    return manifest


def test_cards_must_be_json_objects():
    objects = {}
    committed(objects, "v1", {"card.json": b'{"model": "fraud"}'})
    committed(objects, "v2", {"card.json": b"[1]"})
    committed(objects, "v3", {"card.json": b"{oops"})
    store = DictStore(objects)
    assert read_card(store, "fraud", "v1") == {"model": "fraud"}
    with pytest.raises(RegistryError, match="card.json must hold a JSON object, found list"):
        read_card(store, "fraud", "v2")
    with pytest.raises(RegistryError, match="models/fraud/v3/attempts/a1/card.json is not JSON"):
        read_card(store, "fraud", "v3")
    with pytest.raises(ObjectNotFound):
        read_card(store, "fraud", "v4")


def test_files_are_read_through_the_manifest_and_each_must_match_its_sha256():
    objects = {}
    manifest = committed(objects, "v1", {"card.json": b"{}", "model.pt2": b"weights"})
    objects["models/fraud/v1/model.pt2"] = b"a file outside the attempt is never read"
    found, files = read_version_files(DictStore(objects), "fraud", "v1")
    assert found == manifest and files == {"card.json": b"{}", "model.pt2": b"weights"}
    # Another attempt's bytes under the published attempt's name: refused, naming the file and the fix.
    objects[manifest.key("model.pt2")] = b"another attempt"
    with pytest.raises(VersionMismatch, match=r"models/fraud/v1/attempts/a1/model.pt2 does not match the manifest "
                                              r"of fraud v1: sha256 .* delete models/fraud/v1/manifest.json"):
        read_version_files(DictStore(objects), "fraud", "v1")
    del objects[manifest.key("model.pt2")]
    with pytest.raises(VersionMismatch, match="model.pt2, named by the manifest of fraud v1, does not exist"):
        read_version_files(DictStore(objects), "fraud", "v1")
    with pytest.raises(RegistryError, match="version 'v2' of model 'fraud' is not committed"):
        read_version_files(DictStore(objects), "fraud", "v2")


def test_a_manifest_written_before_attempts_names_files_in_the_version_folder():
    manifest = VersionManifest(model="fraud", version="v1", created=datetime(2026, 1, 1, tzinfo=UTC),
                               files=["card.json"], sha256={"card.json": "0" * 64}, bytes={"card.json": 2})
    assert manifest.key("card.json") == "models/fraud/v1/card.json"


def manifest(version: int) -> DatasetManifest:
    return DatasetManifest(
        dataset="tx", version=version, created=datetime(2026, 1, 1, tzinfo=UTC), spec_fingerprint="f", schema={},
        key="id", event_time="ts", label=None, features=[], files={}, rows={}, content_sha256={}, transform={},
        reference={}, lineage=[], trigger="rows", code_version="test",
    )


def test_only_committed_dataset_versions_are_read_and_the_newest_is_latest():
    store = DictStore({
        claim_key("tx", 1): b"{}", dataset_manifest_key("tx", 1): manifest(1).model_dump_json(by_alias=True).encode(),
        claim_key("tx", 2): b"{}", dataset_manifest_key("tx", 2): manifest(2).model_dump_json(by_alias=True).encode(),
        claim_key("tx", 10): b"{}",  # claimed by a build that has not committed
        drift_request_key("tx"): b"drift:1",
    })
    assert version_numbers(store, "tx") == [1, 2, 10]
    assert [m.version for m in committed_manifests(store, "tx")] == [1, 2]
    assert latest_manifest(store, "tx") == manifest(2)
    assert latest_manifest(store, "other") is None


def test_models_and_versions_are_listed_from_their_folders():
    store = DictStore({version_key("fraud", "v1", "card.json"): b"{}", version_key("fraud", "v2", "card.json"): b"{}",
                       champion_key("fraud"): b"{}", version_key("churn", "v1", "card.json"): b"{}"})
    assert model_names(store) == ["churn", "fraud"]
    assert model_versions(store, "fraud") == ["v1", "v2"]


def test_a_decision_reads_back_typed_and_a_broken_one_names_its_key():
    evaluation = Evaluation(rows=10, metrics={"auc": float("nan"), "log_loss": 0.3})
    record = {"model": "fraud", "version": "v2", "promote": False, "reasons": ["auc 0.7 < floor 0.8"],
              "notes": [], "candidate": evaluation.model_dump(mode="json"), "champion_version": None,
              "champion": None, "policy": {"model": "fraud", "min": {"auc": 0.8}}, "actor": "validator@a",
              "time": "2026-01-01T00:00:00Z"}
    store = DictStore({decision_key("fraud", "v2"): json.dumps(record).encode(), decision_key("fraud", "v3"): b"{}"})
    decision = read_decision(store, "fraud", "v2")
    assert (decision.promote, decision.summary, decision.candidate.metrics) == (
        False, "auc 0.7 < floor 0.8", {"auc": None, "log_loss": 0.3})
    assert read_decision(store, "fraud", "v1") is None
    with pytest.raises(RegistryError, match="models/fraud/v3/decision.json is not a decision record"):
        read_decision(store, "fraud", "v3")


def test_the_monitor_state_reads_back_typed_and_a_broken_one_names_its_key():
    state = MonitorState(model="fraud", version="v1", dataset="tx", dataset_version=3,
                         updated=datetime(2026, 1, 1, tzinfo=UTC))
    store = DictStore({monitor_state_key("fraud"): state.model_dump_json().encode(),
                       monitor_state_key("churn"): b'{"model": "churn"}'})
    assert read_monitor_state(store, "fraud") == state
    assert read_monitor_state(store, "other") is None
    with pytest.raises(RegistryError, match="monitor/churn/latest.json is not a monitor state"):
        read_monitor_state(store, "churn")


def test_the_monitor_keeps_a_state_per_champion_and_the_history_lists_the_last_ones_oldest_first():
    from memory_store import MemoryStore

    from services.monitor.state import write_state
    from streamml.registry.monitor import read_monitor_history

    store = MemoryStore()
    at = datetime(2024, 6, 1, tzinfo=UTC)
    etag = None
    for version in ("v1", "v2", "v3"):
        etag = write_state(store, MonitorState(model="fraud", version=version, dataset="tx", dataset_version=1,
                                               updated=at), etag)
    assert read_monitor_state(store, "fraud").version == "v3"
    assert [s.version for s in read_monitor_history(store, "fraud", champions=2)] == ["v2", "v3"]
    assert sorted(store.objects) == ["monitor/fraud/latest.json", *(f"monitor/fraud/versions/v{i}.json" for i in (1, 2, 3))]
