from types import SimpleNamespace

import pytest

from streamml.store import ObjectStore
from tests.memory_store import MemoryStore


@pytest.fixture
def store(monkeypatch) -> MemoryStore:
    """The store every `streamml models` command connects to, in memory."""
    store = MemoryStore()
    monkeypatch.setattr("streamml.cli.common.client_settings", lambda state_dir=None: SimpleNamespace(s3=None))
    monkeypatch.setattr(ObjectStore, "connect", classmethod(lambda cls, settings: store))
    return store
