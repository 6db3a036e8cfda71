"""Reading model versions and the champion pointer.

A version's files never change once its manifest is written. Only the
champion pointer changes, and only by a conditional write on its ETag, so of
two writers that read the same pointer exactly one succeeds. The trainer
writes versions (``services/trainer/publish.py``); the validator,
``streamml models`` and the console move the pointer (``streamml/registry/champion.py``).

    pointer, etag = read_champion(store, "fraud")    # (None, None) before any promotion
    card = read_card(store, "fraud", pointer.version)
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from streamml.registry.documents import json_object, parse_document
from streamml.registry.keys import (
    MODELS_ROOT,
    VERSION,
    card_key,
    champion_key,
    last_part,
    model_manifest_key,
    model_root,
)
from streamml.store import ObjectNotFound, ObjectStore, ReadableStore


class ChampionPointer(BaseModel):
    """The content of ``models/<name>/champion.json``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str = Field(pattern=VERSION)
    previous: str | None = Field(None, description="the champion this one replaced: where a rollback goes")
    actor: str = Field(description="validator instance, or the user who forced the change")
    reason: str
    time: datetime

    def to_bytes(self) -> bytes:
        return self.model_dump_json(indent=2).encode()


def read_champion(store: ReadableStore, name: str) -> tuple[ChampionPointer | None, str | None]:
    """The champion pointer and its ETag, or ``(None, None)`` before any promotion."""
    key = champion_key(name)
    try:
        stored = store.get(key)
    except ObjectNotFound:
        return None, None
    pointer = parse_document(stored.data, key, ChampionPointer, "a champion pointer", "rewrite it or delete it")
    return pointer, stored.etag


def read_card(store: ReadableStore, name: str, version: str) -> dict[str, Any]:
    """The model card of a version (see ``services/trainer/artifact.py``); ObjectNotFound when absent."""
    key = card_key(name, version)
    return json_object(store.get(key).data, key)


def read_version_manifest(store: ReadableStore, name: str, version: str) -> dict[str, Any]:
    """The commit marker of a version: its files with their sha256 and size; ObjectNotFound while uncommitted."""
    key = model_manifest_key(name, version)
    return json_object(store.get(key).data, key)


def is_committed(store: ReadableStore, name: str, version: str) -> bool:
    """Whether the version's manifest, which the trainer writes last, exists."""
    try:
        store.get(model_manifest_key(name, version))
    except ObjectNotFound:
        return False
    return True


def model_names(store: ObjectStore) -> list[str]:
    """Every model with at least one version or a champion, in name order."""
    return [last_part(prefix) for prefix in store.list_prefixes(MODELS_ROOT)]


def model_versions(store: ObjectStore, name: str) -> list[str]:
    """Every version "folder" of a model (committed or not), in key order."""
    return [last_part(prefix) for prefix in store.list_prefixes(model_root(name))]
