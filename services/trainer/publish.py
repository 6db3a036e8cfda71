"""Model versions in the registry: their names, their files, and the commit marker.

A version name is a function of what was trained, ``d<dataset version>-<spec
fingerprint, 8 hex>``, so a redelivered ``dataset.ready`` maps to the version
it produced before and is never trained twice. A version's files are written
first and ``manifest.json`` last, with ``If-None-Match: *``: the version exists
once the manifest does, and of two trainers that finish the same version only
one commits it.

    version = model_version(spec, dataset_version=3)          # "d3-1f2e3d4c"
    publish_version(store, spec.name, version, files)         # False: someone else committed it first
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services.trainer.spec import ModelSpec
from streamml.events import ModelTrained
from streamml.registry.keys import CARD_FILE, card_key, model_manifest_key, version_key, version_prefix
from streamml.registry.models import is_committed
from streamml.store import ObjectConflict, ObjectNotFound, ObjectStore


def model_version(spec: ModelSpec, dataset_version: int) -> str:
    return f"d{dataset_version}-{spec.fingerprint()[:8]}"


@dataclass(frozen=True)
class VersionFile:
    name: str
    data: bytes


def version_manifest(model: str, version: str, files: list[VersionFile], created: datetime) -> dict[str, Any]:
    """The commit marker's content: what the version holds, so a reader can check it."""
    return {
        "model": model,
        "version": version,
        "created": created.isoformat(),
        "files": [file.name for file in files],
        "sha256": {file.name: hashlib.sha256(file.data).hexdigest() for file in files},
        "bytes": {file.name: len(file.data) for file in files},
    }


def publish_version(store: ObjectStore, model: str, version: str, files: list[VersionFile]) -> bool:
    """Write the files, then the manifest; False when another writer committed the version first."""
    marker_key = model_manifest_key(model, version)
    # A partition that moved to another member mid-training can leave two trainers on one
    # version; the later one must not overwrite files of a version committed meanwhile.
    if store.exists(marker_key):
        return False
    for file in files:
        store.put(version_key(model, version, file.name), file.data)
    marker = version_manifest(model, version, files, datetime.now(UTC))
    try:
        store.create(marker_key, json.dumps(marker, indent=2).encode())
    except ObjectConflict:
        return False
    return True


def committed_card(store: ObjectStore, model: str, version: str) -> dict[str, Any] | None:
    """The card of a committed version, or None while its manifest does not exist."""
    if not is_committed(store, model, version):
        return None
    try:
        return json.loads(store.get_bytes(card_key(model, version)))
    except ObjectNotFound:
        raise ValueError(
            f"{version_prefix(model, version)} has a manifest but no {CARD_FILE}; "
            "the version is damaged: delete its manifest.json so it is trained again"
        ) from None


def trained_event(card: dict[str, Any]) -> ModelTrained:
    """The ``model.trained`` announcement of a version, from its card alone (so it can be re-sent)."""
    return ModelTrained(
        model=card["model"],
        version=card["version"],
        dataset=card["dataset"]["name"],
        dataset_version=card["dataset"]["version"],
        artifact_prefix=version_prefix(card["model"], card["version"]),
        # A metric can be undefined (AUC of a one-class split); JSON events carry only numbers.
        metrics={name: value for name, value in card["metrics"].items() if math.isfinite(value)},
        device=card["device"],
        training_seconds=card["training_seconds"],
    )

