"""An in-memory object store with the semantics of S3/RGW that streamml relies on, for unit tests.

Conditional writes (``create``: If-None-Match, ``replace``: If-Match on the
ETag) and listings in key order, with "folders" by delimiter.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

from streamml.store import ListedObject, ObjectConflict, ObjectNotFound, StoredObject


class MemoryStore:
    def __init__(self, bucket: str = "memory") -> None:
        self.bucket = bucket
        self.objects: dict[str, tuple[bytes, str]] = {}
        self.modified: dict[str, datetime] = {}
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

    def get_bytes(self, key: str) -> bytes:
        return self.get(key).data

    def exists(self, key: str) -> bool:
        return key in self.objects

    def put(self, key: str, data: bytes) -> str:
        self.before_write(key)
        with self._lock:
            return self._put(key, data)

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

    def delete(self, key: str) -> None:
        with self._lock:
            self.objects.pop(key, None)

    def list_details(self, prefix: str) -> Iterator[ListedObject]:
        with self._lock:
            found = sorted((key, data, etag) for key, (data, etag) in self.objects.items() if key.startswith(prefix))
        for key, data, etag in found:
            yield ListedObject(key, len(data), etag.strip('"'), self.modified[key])

    def list(self, prefix: str) -> Iterator[str]:
        return (item.key for item in self.list_details(prefix))

    def list_prefixes(self, prefix: str) -> list[str]:
        with self._lock:
            return sorted({prefix + key[len(prefix):].split("/", 1)[0] + "/" for key in self.objects
                           if key.startswith(prefix) and "/" in key[len(prefix):]})

    def _put(self, key: str, data: bytes) -> str:
        etag = f'"{hashlib.md5(data).hexdigest()}-{next(self._counter)}"'
        self.objects[key] = (data, etag)
        latest = max(self.modified.values(), default=datetime.min.replace(tzinfo=UTC))
        self.modified[key] = max(datetime.now(UTC), latest + timedelta(microseconds=1))  # later writes list later
        self.writes.append(key)
        return etag
