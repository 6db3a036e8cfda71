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
import re
from dataclasses import dataclass

from streamml.manifest import DatasetManifest, manifest_key
from streamml.store import ObjectConflict, ObjectNotFound, ObjectStore

VERSION = re.compile(r"/v(\d+)/$")
RAW_RANGE = re.compile(r"/(?P<topic>[^/]+)/p(?P<partition>\d+)/(?P<first>\d+)-(?P<last>\d+)\.parquet$")


@dataclass(frozen=True)
class RawObject:
    key: str
    topic: str
    partition: int
    first_offset: int
    last_offset: int

    @property
    def records(self) -> int:
        """Records of the offset range: an upper bound of the rows (dead letters included)."""
        return self.last_offset - self.first_offset + 1


def parse_raw_key(key: str) -> RawObject | None:
    match = RAW_RANGE.search(key)
    if match is None:
        return None
    return RawObject(key, match["topic"], int(match["partition"]), int(match["first"]), int(match["last"]))


def raw_objects(store: ObjectStore, dataset: str) -> list[RawObject]:
    return [raw for key in store.list(f"raw/{dataset}/") if (raw := parse_raw_key(key))]


def version_numbers(store: ObjectStore, dataset: str) -> list[int]:
    """Every claimed version number (committed or not), ascending."""
    found = (VERSION.search(prefix) for prefix in store.list_prefixes(f"datasets/{dataset}/"))
    return sorted(int(match[1]) for match in found if match)


def latest_manifest(store: ObjectStore, dataset: str) -> DatasetManifest | None:
    for number in reversed(version_numbers(store, dataset)):
        try:
            return DatasetManifest.model_validate_json(store.get_bytes(manifest_key(dataset, number)))
        except ObjectNotFound:
            continue  # claimed, never committed
    return None


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
        key = f"datasets/{dataset}/v{number}/_claim.json"
        try:
            store.create(key, json.dumps({"build": build}).encode())
            return number
        except ObjectConflict:
            mine = json.loads(store.get_bytes(key)).get("build") == build
            if mine and not store.exists(manifest_key(dataset, number)):
                return number  # our own earlier attempt crashed: take it back
            number += 1
