"""Dataset versions in the object store: what is pending, and claiming a number.

Pending data is derived, never stored: the raw objects of a dataset minus
those in the newest manifest's lineage. So a restart, or a second replica,
sees the same pending set without sharing any state.

A build claims its version number by creating ``v<N>/_claim.json`` with
If-None-Match, before writing anything under ``v<N>/``: two builders can
never write the same version. The claim names the build (a hash of its
input objects); a build that crashed and is retried with the same inputs
takes its own claim back. A version is visible only once its manifest exists.
"""

from __future__ import annotations

import hashlib
import json

from streamml.manifest import DatasetManifest
from streamml.registry.datasets import raw_objects, version_numbers
from streamml.registry.keys import RawObject, claim_key, dataset_manifest_key
from streamml.store import ObjectConflict, ObjectStore


def pending(store: ObjectStore, dataset: str, latest: DatasetManifest | None) -> list[RawObject]:
    done = {source.key for source in latest.lineage} if latest else set()
    done |= set(latest.quarantined) if latest else set()
    return [raw for raw in raw_objects(store, dataset) if raw.key not in done]


def build_id(inputs: list[str], trigger: str) -> str:
    digest = hashlib.sha256("\n".join(sorted(inputs) + [trigger]).encode())
    return digest.hexdigest()[:16]


def claim_version(store: ObjectStore, dataset: str, build: str) -> int:
    """The version number this build owns from now on (always above every committed one)."""
    numbers = version_numbers(store, dataset)
    number = numbers[-1] if numbers else 1
    while True:
        key = claim_key(dataset, number)
        try:
            store.create(key, json.dumps({"build": build}).encode())
            return number
        except ObjectConflict:
            mine = json.loads(store.get_bytes(key)).get("build") == build
            if mine and not store.exists(dataset_manifest_key(dataset, number)):
                return number  # our own earlier attempt crashed: take it back
            number += 1
