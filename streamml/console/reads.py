"""What the console reads from the object store, through ``streamml.registry``, with what never changes cached.

A committed dataset manifest, a model card and a version's commit marker are
immutable, so each is fetched once. A decision stands once written, unless a
person deletes it to have the version judged again, which the validator then
announces: the live feed forgets the cached decision of a version whenever
an event about it arrives (``forget_version``). Listings, champion pointers
and the monitor's state change and are read on every request. Documents
missing from the cache are fetched in parallel, so the first look at a model
with fifty versions costs one round trip per few versions, not per file.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from streamml.manifest import DatasetManifest
from streamml.registry.datasets import raw_object_hashes, read_manifest, version_numbers
from streamml.registry.datasets import dataset_names as stored_dataset_names
from streamml.registry.decisions import DecisionRecord, read_decision
from streamml.registry.models import (
    ChampionPointer,
    model_names,
    model_versions,
    read_card,
    read_champion,
    read_version_manifest,
)
from streamml.registry.monitor import MonitorState, read_monitor_history, read_monitor_state
from streamml.store import ObjectNotFound, ObjectStore

T = TypeVar("T")
PARALLEL_READS = 8
CHAMPIONS_SHOWN = 3  # the drift page shows the windows of this many champions, the current one last


@dataclass(frozen=True)
class ModelVersion:
    """One version "folder" of a model: its card once committed, and the validator's decision once judged."""

    model: str
    version: str
    card: dict[str, Any] | None  # None while the version is not committed
    decision: DecisionRecord | None

    @property
    def committed(self) -> bool:
        return self.card is not None

    @property
    def created(self) -> str:
        return self.card["created"] if self.card else ""

    @property
    def dataset(self) -> tuple[str, int] | None:
        if not self.card:
            return None
        return self.card["dataset"]["name"], self.card["dataset"]["version"]

    def test_metrics(self) -> dict[str, float | None]:
        """The validator's test metrics, or the card's validation metrics before it judged."""
        if self.decision is not None:
            return dict(self.decision.candidate.metrics)
        return dict(self.card["metrics"]) if self.card else {}


class ConsoleRegistry:
    """The registry as the console reads it; safe to share between request threads."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._cards: dict[tuple[str, str], dict[str, Any]] = {}
        self._markers: dict[tuple[str, str], dict[str, Any]] = {}
        self._decisions: dict[tuple[str, str], DecisionRecord] = {}
        self._manifests: dict[tuple[str, int], DatasetManifest] = {}
        self._pool = ThreadPoolExecutor(PARALLEL_READS, thread_name_prefix="registry-read")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- models -------------------------------------------------------------------

    def model_names(self) -> list[str]:
        return model_names(self.store)

    def champion(self, model: str) -> ChampionPointer | None:
        return read_champion(self.store, model)[0]

    def versions(self, model: str) -> list[ModelVersion]:
        """Every version of ``model``, oldest first (committed ones by creation time, then the rest)."""
        names = model_versions(self.store, model)
        found = self._parallel(lambda name: self._version(model, name), names)
        return sorted(found, key=lambda v: (not v.committed, v.created, v.version))

    def version(self, model: str, version: str) -> ModelVersion | None:
        """One version; None when the model has no such version folder."""
        if version not in model_versions(self.store, model):
            return None
        return self._version(model, version)

    def version_marker(self, model: str, version: str) -> dict[str, Any] | None:
        """The version's commit marker (files, sha256, bytes); None while uncommitted."""
        return self._cached(self._markers, (model, version), 
                            lambda: read_version_manifest(self.store, model, version).model_dump(mode="json"))

    def forget_version(self, model: str, version: str) -> None:
        """Drop the cached decision: an event says the version was judged (again)."""
        with self._lock:
            self._decisions.pop((model, version), None)

    def _version(self, model: str, version: str) -> ModelVersion:
        if self.version_marker(model, version) is None:
            return ModelVersion(model, version, None, None)
        card = self._cached(self._cards, (model, version), lambda: read_card(self.store, model, version))
        decision = self._cached(self._decisions, (model, version), lambda: read_decision(self.store, model, version))
        return ModelVersion(model, version, card, decision)

    # -- datasets -----------------------------------------------------------------

    def dataset_names(self) -> list[str]:
        return stored_dataset_names(self.store)

    def manifests(self, dataset: str) -> list[DatasetManifest]:
        """Every committed version of ``dataset``, oldest first."""
        numbers = version_numbers(self.store, dataset)
        found = self._parallel(lambda number: self.manifest(dataset, number), numbers)
        return [manifest for manifest in found if manifest is not None]

    def manifest(self, dataset: str, version: int) -> DatasetManifest | None:
        """A committed version's manifest; None when it is not committed."""
        return self._cached(self._manifests, (dataset, version), lambda: read_manifest(self.store, dataset, version))

    def raw_hashes(self, dataset: str) -> dict[str, str]:
        """Raw key -> its MD5, for the raw objects still in the store."""
        return raw_object_hashes(self.store, dataset)

    # -- monitor ------------------------------------------------------------------

    def monitor_state(self, model: str) -> MonitorState | None:
        return read_monitor_state(self.store, model)

    def monitor_history(self, model: str) -> list[MonitorState]:
        """The monitor's states of the last few champions, oldest first (``latest.json`` alone from an older
        monitor that kept no copy per version)."""
        history = read_monitor_history(self.store, model, CHAMPIONS_SHOWN)
        if history:
            return history
        latest = self.monitor_state(model)
        return [latest] if latest else []

    # -- helpers ------------------------------------------------------------------

    def _cached(self, cache: dict, key: tuple, read: Callable[[], T | None]) -> T | None:
        """``cache[key]``, else ``read()`` (None and ObjectNotFound are absent and not cached)."""
        with self._lock:
            if key in cache:
                return cache[key]
        try:
            value = read()
        except ObjectNotFound:
            return None
        if value is not None:
            with self._lock:
                cache[key] = value
        return value

    def _parallel(self, read: Callable[[Any], T], items: Iterable[Any]) -> list[T]:
        items = list(items)
        if len(items) <= 1:
            return [read(item) for item in items]
        return list(self._pool.map(read, items))


def created_time(card: dict[str, Any] | None) -> datetime | None:
    return datetime.fromisoformat(card["created"]) if card and card.get("created") else None
