"""Model versions in the registry: their names, their files, and the commit marker.

A version name is a function of what was trained, ``d<dataset version>-<spec
fingerprint, 8 hex>``, so a redelivered ``dataset.ready`` maps to the version
it produced before and is never trained twice. Each attempt to publish a
version writes its files under a folder of its own
(``models/<name>/<version>/attempts/<attempt>/``), then creates
``manifest.json`` with ``If-None-Match: *`` naming that folder and each
file's sha256. The version exists once the manifest does. Of two trainers
that finish the same version (a partition that moved mid-training), the
first manifest wins; the other attempt's files are never named by it, and
the losing attempt deletes them.

    version = model_version(spec, dataset_version=3)          # "d3-1f2e3d4c"
    publish_version(store, spec.name, version, files)         # False: someone else committed it first
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services.trainer.spec import ModelSpec
from streamml.events import ModelTrained, stable_id
from streamml.registry.keys import attempt_prefix, model_manifest_key, new_attempt, version_prefix
from streamml.registry.models import VersionManifest, is_committed, read_card
from streamml.store import ObjectConflict, ObjectStore


def model_version(spec: ModelSpec, dataset_version: int, code_sha256: str | None = None) -> str:
    """``code_sha256``: the digest of the spec's own code, so changed code trains a new version."""
    if code_sha256 is None:
        return f"d{dataset_version}-{spec.fingerprint()[:8]}"
    return f"d{dataset_version}-{hashlib.sha256((spec.fingerprint() + code_sha256).encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class VersionFile:
    name: str
    data: bytes


def publish_version(
    store: ObjectStore, model: str, version: str, files: list[VersionFile], attempt: str | None = None
) -> bool:
    """Write the files under this attempt's folder, then create the manifest; False when another
    attempt committed the version first (this attempt's files are deleted then)."""
    marker_key = model_manifest_key(model, version)
    if store.exists(marker_key):
        return False  # committed meanwhile: nothing to write
    prefix = attempt_prefix(model, version, attempt or new_attempt())
    for file in files:
        store.put(prefix + file.name, file.data)
    manifest = VersionManifest.of(model, version, prefix, {file.name: file.data for file in files}, datetime.now(UTC))
    try:
        store.create(marker_key, manifest.to_bytes())
    except ObjectConflict:
        for file in files:
            store.delete(prefix + file.name)
        return False
    return True


def committed_card(store: ObjectStore, model: str, version: str) -> dict[str, Any] | None:
    """The card of a committed version (checked against its manifest), or None while it is not committed."""
    if not is_committed(store, model, version):
        return None
    return read_card(store, model, version)


def trained_id(model: str, version: str) -> str:
    """The id of a version's ``model.trained``: the same each time the version is announced."""
    return stable_id("model.trained", model, version)


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

