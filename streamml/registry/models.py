"""Reading model versions and the champion pointer.

A version is its ``manifest.json``: the trainer writes a version's files
under the folder of its own attempt, then creates the manifest (If-None-Match)
naming that folder and every file's sha256. Of two trainers that finish the
same version, the one whose manifest is created first published it; the
other's files are never named. Every file is read through the manifest and
checked against its sha256 (``VersionMismatch`` otherwise), so nothing reads
a file another attempt overwrote or a damaged copy.

Only the champion pointer changes, and only by a conditional write on its
ETag, so of two writers that read the same pointer exactly one succeeds. The
trainer writes versions (``services/trainer/publish.py``), the validator and
``streamml models`` and the console move the pointer (``streamml/registry/champion.py``).

    pointer, etag = read_champion(store, "fraud")    # (None, None) before any promotion
    card = read_card(store, "fraud", pointer.version)
    manifest, files = read_version_files(store, "fraud", pointer.version)   # every file, checked
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from streamml.registry.documents import json_object, parse_document
from streamml.registry.keys import (
    CARD_FILE,
    MODELS_ROOT,
    VERSION,
    RegistryError,
    champion_key,
    last_part,
    model_manifest_key,
    model_root,
    version_prefix,
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


class VersionManifest(BaseModel):
    """The content of ``models/<name>/<version>/manifest.json``: which files make the version."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    version: str = Field(pattern=VERSION)
    created: datetime
    prefix: str | None = Field(
        None, description="the folder of the attempt that published the version; none: the version's own folder"
    )
    files: list[str]
    sha256: dict[str, str]
    bytes: dict[str, int]

    @classmethod
    def of(cls, model: str, version: str, prefix: str, files: Mapping[str, bytes], created: datetime) -> VersionManifest:
        return cls(
            model=model, version=version, created=created, prefix=prefix, files=list(files),
            sha256={name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
            bytes={name: len(data) for name, data in files.items()},
        )

    def key(self, filename: str) -> str:
        """Where ``filename`` of this version is stored."""
        return (self.prefix or version_prefix(self.model, self.version)) + filename

    def to_bytes(self) -> bytes:
        return self.model_dump_json(indent=2, exclude_none=True).encode()


class VersionMismatch(RegistryError):
    """A file of a committed version is missing or is not the one its manifest names."""


def read_version_manifest(store: ReadableStore, name: str, version: str) -> VersionManifest:
    """The manifest of a committed version; ObjectNotFound when the version is not committed."""
    key = model_manifest_key(name, version)
    return parse_document(store.get(key).data, key, VersionManifest, "a model version manifest",
                          "delete it so the trainer publishes the version again")


def read_version_file(store: ReadableStore, manifest: VersionManifest, filename: str) -> bytes:
    """One file of a version, checked against the sha256 its manifest records."""
    if filename not in manifest.sha256:
        raise VersionMismatch(
            f"{model_manifest_key(manifest.model, manifest.version)} names no file {filename!r} "
            f"(it has {', '.join(manifest.files)})"
        )
    key = manifest.key(filename)
    fix = (f"the version is damaged: delete {model_manifest_key(manifest.model, manifest.version)} "
           "so the trainer publishes it again")
    try:
        data = store.get(key).data
    except ObjectNotFound:
        raise VersionMismatch(f"{key}, named by the manifest of {manifest.model} {manifest.version}, "
                              f"does not exist; {fix}") from None
    found = hashlib.sha256(data).hexdigest()
    if found != manifest.sha256[filename]:
        raise VersionMismatch(f"{key} does not match the manifest of {manifest.model} {manifest.version}: "
                              f"sha256 {found[:16]}… where the manifest records {manifest.sha256[filename][:16]}…; "
                              f"{fix}")
    return data


def read_version_files(store: ReadableStore, name: str, version: str) -> tuple[VersionManifest, dict[str, bytes]]:
    """The manifest and every file it names, each checked; RegistryError when the version is not committed."""
    try:
        manifest = read_version_manifest(store, name, version)
    except ObjectNotFound:
        raise RegistryError(
            f"version {version!r} of model {name!r} is not committed: {model_manifest_key(name, version)} "
            "does not exist (the trainer writes it last; a version without it is incomplete)"
        ) from None
    return manifest, {filename: read_version_file(store, manifest, filename) for filename in manifest.files}


def read_card(store: ReadableStore, name: str, version: str) -> dict[str, Any]:
    """The model card of a committed version (see ``services/trainer/artifact.py``), checked against the
    manifest; ObjectNotFound when the version is not committed."""
    manifest = read_version_manifest(store, name, version)
    return json_object(read_version_file(store, manifest, CARD_FILE), manifest.key(CARD_FILE))




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
