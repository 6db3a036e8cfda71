"""An in-memory object store with the conditional-write semantics of S3/RGW."""

from __future__ import annotations

import hashlib
import itertools
import threading
from collections.abc import Callable

import pytest

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
