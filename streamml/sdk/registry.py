"""Where models live in the object store, and the champion pointer.

The validator writes this layout and applications read it::

    models/<name>/<version>/card.json        what the model is (see the trainer's model card)
    models/<name>/<version>/model.pt2        portable program (card["artifacts"]["portable"])
    models/<name>/<version>/state_dict.pt    weights
    models/<name>/<version>/manifest.json    written last: the version exists once this does
    models/<name>/<version>/decision.json    the validator's verdict on this version
    models/<name>/champion.json              which version applications serve

A version's files never change once its manifest is written. Only the
champion pointer changes, and only by a conditional write on its ETag, so of
two writers that read the same pointer exactly one succeeds.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streamml.specs import NAME
from streamml.store import ObjectNotFound

CARD_FILE = "card.json"
MANIFEST_FILE = "manifest.json"
DECISION_FILE = "decision.json"
CHAMPION_FILE = "champion.json"
# A version becomes part of object keys, so it must not contain "/" or "..".
VERSION = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class RegistryError(ValueError):
    """A registry name, version or object that is not what the layout says."""


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

    @classmethod
    def from_bytes(cls, data: bytes, key: str) -> ChampionPointer:
        try:
            return cls.model_validate_json(data)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(map(str, item['loc'])) or 'body'}: {item['msg']}"
                for item in error.errors(include_url=False)
            )
            raise RegistryError(f"{key} is not a champion pointer ({problems}); rewrite it or delete it") from None


def check_name(name: str) -> str:
    if not re.fullmatch(NAME, name):
        raise RegistryError(f"model name {name!r} must match {NAME} (lower case, digits, underscores)")
    return name


def check_version(version: str) -> str:
    if not re.fullmatch(VERSION, version):
        raise RegistryError(f"model version {version!r} must match {VERSION} (no slashes, at most 128 characters)")
    return version


def model_root(name: str) -> str:
    return f"models/{check_name(name)}/"


def version_prefix(name: str, version: str) -> str:
    return f"{model_root(name)}{check_version(version)}/"


def version_key(name: str, version: str, filename: str) -> str:
    return version_prefix(name, version) + filename


def champion_key(name: str) -> str:
    return model_root(name) + CHAMPION_FILE


class StoredBytes(Protocol):
    data: bytes
    etag: str


class ReadableStore(Protocol):
    """What reading the registry needs from ``streamml.store.ObjectStore``."""

    def get(self, key: str) -> StoredBytes: ...


def read_champion(store: ReadableStore, name: str) -> tuple[ChampionPointer | None, str | None]:
    """The champion pointer and its ETag, or ``(None, None)`` before any promotion."""
    key = champion_key(name)
    try:
        stored = store.get(key)
    except ObjectNotFound:
        return None, None
    return ChampionPointer.from_bytes(stored.data, key), stored.etag


def read_card(store: ReadableStore, name: str, version: str) -> dict:
    key = version_key(name, version, CARD_FILE)
    try:
        card = json.loads(store.get(key).data)
    except ValueError as error:
        raise RegistryError(f"{key} is not JSON: {error}") from None
    if not isinstance(card, dict):
        raise RegistryError(f"{key} must hold a JSON object, found {type(card).__name__}")
    return card
