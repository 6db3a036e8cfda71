"""An in-memory object store with the conditional-write semantics of S3/RGW, and a small dataset manifest."""

from __future__ import annotations

import hashlib
import itertools
import threading
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from streamml.manifest import CategoryTransform, DatasetManifest, NumericTransform

from streamml.store import ObjectConflict, ObjectNotFound, StoredObject


class MemoryStore:
    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, str]] = {}
        self.writes: list[str] = []
        self._lock = threading.Lock()
        self._counter = itertools.count()
        self.before_write: Callable[[str], None] = lambda key: None

    def get(self, key: str) -> StoredObject:
        with self._lock:
            if key not in self.objects:
                raise ObjectNotFound(f"no object {key!r}")
            data, etag = self.objects[key]
        return StoredObject(key, data, etag)

    def create(self, key: str, data: bytes) -> str:
        self.before_write(key)
        with self._lock:
            if key in self.objects:
                raise ObjectConflict(f"conditional write of {key!r} lost")
            return self._put(key, data)

    def replace(self, key: str, data: bytes, etag: str) -> str:
        self.before_write(key)
        with self._lock:
            if key not in self.objects or self.objects[key][1] != etag:
                raise ObjectConflict(f"conditional write of {key!r} lost")
            return self._put(key, data)

    def _put(self, key: str, data: bytes) -> str:
        etag = f'"{hashlib.md5(data).hexdigest()}-{next(self._counter)}"'
        self.objects[key] = (data, etag)
        self.writes.append(key)
        return etag


@pytest.fixture
def memory_store() -> MemoryStore:
    return MemoryStore()


def tx_manifest(label: str | None = "label") -> DatasetManifest:
    """Dataset tx v3: features channel (category), amount (mean 10, std 2), hour (mean 12, std 6)."""
    return DatasetManifest(
        dataset="tx", version=3, created=datetime(2024, 1, 1, tzinfo=UTC), spec_fingerprint="f", schema={},
        key="id", event_time="ts", label=label, features=["channel", "amount", "hour"], files={}, rows={},
        content_sha256={},
        transform={"amount": NumericTransform(mean=10, std=2), "hour": NumericTransform(mean=12, std=6),
                   "channel": CategoryTransform(vocabulary=["web", "pos"])},
        reference={}, lineage=[], trigger="manual", code_version="x",
    )


@pytest.fixture
def manifest_of():
    return tx_manifest
