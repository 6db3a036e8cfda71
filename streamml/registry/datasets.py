"""Reading raw objects and dataset versions.

Ingest writes the raw objects (``services/ingest``) and the dataset specs
it enforces (``publish_spec``, read back by the SDK), prep claims version
numbers and commits versions (``services/prep/versions.py``); the trainer,
validator, SDK, monitor and CLI read them through these functions.

    manifest = latest_manifest(store, "transactions")    # None before the first version
    for manifest in committed_manifests(store, "transactions"): ...
"""

from __future__ import annotations

from collections.abc import Iterator

from streamml.manifest import DatasetManifest
from streamml.registry.documents import parse_document, read_document
from streamml.registry.keys import (
    DATASETS_ROOT,
    RawObject,
    dataset_manifest_key,
    dataset_root,
    dataset_spec_key,
    last_part,
    parse_dataset_version,
    parse_raw_key,
    raw_prefix,
)
from streamml.specs import DatasetSpec
from streamml.store import ObjectConflict, ObjectNotFound, ObjectStore, ReadableStore


def raw_objects(store: ObjectStore, dataset: str) -> list[RawObject]:
    """Every landed batch of a dataset, in key order (keys that are not batches are skipped)."""
    return [raw for key in store.list(raw_prefix(dataset)) if (raw := parse_raw_key(key))]


def raw_object_hashes(store: ObjectStore, dataset: str) -> dict[str, str]:
    """Raw key -> its ETag, the MD5 of its bytes (ingest writes each batch in one part), from one listing."""
    return {item.key: item.etag for item in store.list_details(raw_prefix(dataset)) if parse_raw_key(item.key)}


def dataset_names(store: ObjectStore) -> list[str]:
    """Every dataset with at least one claimed version, in name order."""
    return [last_part(prefix) for prefix in store.list_prefixes(DATASETS_ROOT)]


def version_numbers(store: ObjectStore, dataset: str) -> list[int]:
    """Every claimed version number (committed or not), ascending."""
    found = (parse_dataset_version(prefix) for prefix in store.list_prefixes(dataset_root(dataset)))
    return sorted(number for number in found if number is not None)


def manifest_at(store: ReadableStore, key: str) -> DatasetManifest:
    """The manifest stored at ``key``; ObjectNotFound when the version is not committed."""
    fix = "delete the version's manifest so prep builds it again"
    return parse_document(store.get(key).data, key, DatasetManifest, "a dataset manifest", fix)


def read_manifest(store: ReadableStore, dataset: str, version: int) -> DatasetManifest:
    """The manifest of a committed version; ObjectNotFound when it is not committed."""
    return manifest_at(store, dataset_manifest_key(dataset, version))


def committed_manifests(store: ObjectStore, dataset: str) -> Iterator[DatasetManifest]:
    """The manifest of every committed version, oldest first (claimed, uncommitted ones are skipped)."""
    for number in version_numbers(store, dataset):
        try:
            yield read_manifest(store, dataset, number)
        except ObjectNotFound:
            continue  # claimed by a build that has not committed


def latest_manifest(store: ObjectStore, dataset: str) -> DatasetManifest | None:
    """The newest committed version's manifest; None before the first one."""
    for number in reversed(version_numbers(store, dataset)):
        try:
            return read_manifest(store, dataset, number)
        except ObjectNotFound:
            continue  # claimed, never committed
    return None


def publish_spec(store: ObjectStore, spec: DatasetSpec) -> bool:
    """Store ``spec`` under the fingerprint its manifests will record, unless there already; True if stored now."""
    try:
        store.create(dataset_spec_key(spec.name, spec.fingerprint()), spec.model_dump_json().encode())
    except ObjectConflict:
        return False  # the same record shape, stored by an earlier start or another replica
    return True


def read_spec(store: ReadableStore, dataset: str, fingerprint: str) -> DatasetSpec | None:
    """The spec of ``dataset`` whose fingerprint is ``fingerprint``; None when ingest never stored it."""
    return read_document(store, dataset_spec_key(dataset, fingerprint), DatasetSpec, "a dataset spec",
                         "delete it: ingest stores it again when it starts")
