"""An in-memory object store (``tests/memory_store.py``) and a small dataset manifest."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from memory_store import MemoryStore

from streamml.manifest import CategoryTransform, DatasetManifest, NumericTransform


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
