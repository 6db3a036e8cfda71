"""A registered model version, loaded for serving without streamml's training code.

    loaded = load_version(store, "fraud", "20240601-1")
    loaded.snapshot.predict([{"amount": 12.5, "channel": "web"}])
    loaded.card["metrics"]

The portable program is the file the card names (``artifacts.portable``) in
the format it names (``artifacts.format``): a ``torch.export`` archive, or
TorchScript where export failed. A version is loaded only once its
``manifest.json`` exists, because the registry writes that file last, and
only when every file it names has the sha256 it records: a damaged or
half-overwritten version is refused with a ``RegistryError`` naming the file.
The inputs are checked against the rules of the dataset spec its training
data was built with (``input_checks.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from streamml.portable import load_program
from streamml.registry.documents import json_object
from streamml.registry.keys import CARD_FILE, VERSION, RegistryError
from streamml.registry.models import read_version_files
from streamml.sdk.input_checks import input_rules
from streamml.sdk.preprocess import FeatureTransform
from streamml.sdk.swap import ModelSnapshot
from streamml.store import ReadableStore

@dataclass(frozen=True)
class LoadedVersion:
    card: dict[str, Any]
    snapshot: ModelSnapshot

    @property
    def version(self) -> str:
        return self.snapshot.version


def portable_file(card: dict[str, Any], where: str) -> tuple[str, str]:
    """(file name, format) of the portable program a card names."""
    artifacts = card.get("artifacts")
    if not isinstance(artifacts, dict) or not artifacts.get("portable") or not artifacts.get("format"):
        raise RegistryError(f"{where} lacks artifacts.portable and artifacts.format; it is not a model card")
    filename = str(artifacts["portable"])
    # The name becomes part of a key: it must not reach outside the version's folder.
    if not re.fullmatch(VERSION, filename):
        raise RegistryError(f"{where} names the portable program {filename!r}; it must be a file name in the "
                            f"version's folder (matching {VERSION})")
    return filename, str(artifacts["format"])


def summary(error: Exception) -> str:
    """``Type: first line`` of an error from torch, whose messages run to many lines."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:300] if lines else ''}"


def load_version(store: ReadableStore, name: str, version: str, *, warm_up: bool = True,
                 with_input_rules: bool = False) -> LoadedVersion:
    """Card, program, transform and input rules of one committed version.

    ``with_input_rules`` reads the rules of the dataset spec the card's dataset
    version was built with (``input_checks.input_rules``; None when not stored).

    ``warm_up`` predicts all-missing records (every feature imputed), so the
    first real request does not pay for lazy initialisation and a program that
    does not fit its card is refused here (``check_runs``).
    """
    manifest, files = read_version_files(store, name, version)
    where = manifest.key(CARD_FILE)
    if CARD_FILE not in files:
        raise RegistryError(f"version {version!r} of model {name!r} has no {CARD_FILE} (files: {manifest.files})")
    card = json_object(files[CARD_FILE], where)
    filename, format = portable_file(card, where)
    if filename not in files:
        raise RegistryError(f"{where} names the program {filename!r}, which the version does not hold "
                            f"(files: {manifest.files})")
    key = manifest.key(filename)
    try:
        program = load_program(files[filename], format)
    except RegistryError:
        raise
    except Exception as error:  # noqa: BLE001 - whatever torch makes of damaged bytes
        raise RegistryError(f"{key} is not a loadable {format} program ({summary(error)}); "
                            "train the version again or promote another") from None
    transform = FeatureTransform.from_card(card)
    rules = input_rules(store, card, transform.features) if with_input_rules else None
    snapshot = ModelSnapshot(version, program, transform, rules)
    if warm_up:
        check_runs(snapshot, name)
    return LoadedVersion(card, snapshot)


def check_runs(snapshot: ModelSnapshot, name: str) -> None:
    """Refuse a program that does not answer one row per record on the inputs its card describes.

    Serving skips torch.export's per-call input checks (see ``portable``): these calls, with two
    batch sizes, are where a program exported for other shapes or a fixed batch is found."""
    for count in (1, 3):
        try:
            rows = len(snapshot.predict([{}] * count).output)
        except Exception as error:  # noqa: BLE001 - a program that does not fit its card
            raise RegistryError(f"version {snapshot.version!r} of model {name!r} does not run on the inputs its "
                                f"card describes ({summary(error)}); train it again or promote another") from None
        if rows != count:
            raise RegistryError(f"version {snapshot.version!r} of model {name!r} answers {rows} rows to "
                                f"{count} record{'s' * (count > 1)}; a program must answer one per record (export it "
                                "with a dynamic batch dimension); train it again or promote another")
