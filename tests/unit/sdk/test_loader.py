"""Loading a registered version: only committed versions, in the format the card names."""

import io
import json

import pytest
import torch
from torch import nn

from streamml.manifest import CategoryTransform, NumericTransform
from streamml.portable import load_program
from datetime import UTC, datetime

from streamml.registry.keys import RegistryError
from streamml.registry.models import VersionManifest
from streamml.sdk.loader import load_version
from streamml.store import ObjectNotFound, StoredObject

pytestmark = pytest.mark.unit


class DictStore:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def get(self, key: str) -> StoredObject:
        if key not in self.objects:
            raise ObjectNotFound(f"no object {key!r}")
        return StoredObject(key, self.objects[key], '"etag"')

    def exists(self, key: str) -> bool:
        return key in self.objects


class Doubler(nn.Module):
    def forward(self, numeric, categorical):
        return numeric[:, 0] * 2 + categorical[:, 0]


CARD = {
    "inputs": {
        "numeric": ["amount"],
        "categorical": [{"name": "channel", "codes": 3}],
        "transform": {"amount": NumericTransform(mean=1, std=2).model_dump(mode="json"),
                      "channel": CategoryTransform(vocabulary=["web", "pos"]).model_dump(mode="json")},
    },
    "artifacts": {"portable": "model.pt2", "format": "torch.export"},
}


def exported() -> bytes:
    batch = torch.export.Dim("batch")
    program = torch.export.export(Doubler(), (torch.zeros(2, 1), torch.zeros(2, 1, dtype=torch.int64)),
                                  dynamic_shapes={"numeric": {0: batch}, "categorical": {0: batch}})
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


PREFIX = "models/fraud/v1/attempts/a1/"


def registry(card: dict = CARD, committed: bool = True) -> DictStore:
    store = DictStore()
    files = {"card.json": json.dumps(card).encode(), "model.pt2": exported()}
    store.objects.update({PREFIX + name: data for name, data in files.items()})
    if committed:
        manifest = VersionManifest.of("fraud", "v1", PREFIX, files, datetime(2026, 1, 1, tzinfo=UTC))
        store.objects["models/fraud/v1/manifest.json"] = manifest.to_bytes()
    return store


def test_a_committed_version_loads_with_its_cards_transform():
    loaded = load_version(registry(), "fraud", "v1")
    assert loaded.version == "v1" and loaded.card["artifacts"]["format"] == "torch.export"
    # amount 5 -> (5 - 1) / 2 = 2 -> doubled 4; channel pos -> code 2.
    assert loaded.snapshot.predict([{"amount": 5.0, "channel": "pos"}]).output.tolist() == [6.0]


def test_a_version_without_its_manifest_is_not_loaded():
    with pytest.raises(RegistryError, match="not committed: models/fraud/v1/manifest.json does not exist"):
        load_version(registry(committed=False), "fraud", "v1")


def test_a_file_that_differs_from_the_manifest_is_refused_naming_it():
    store = registry()
    other = {**CARD, "inputs": {**CARD["inputs"], "numeric": ["amount", "hour"]}}
    store.objects[PREFIX + "card.json"] = json.dumps(other).encode()  # written over by another attempt
    with pytest.raises(RegistryError, match=r"attempts/a1/card.json does not match the manifest of fraud v1: sha256"):
        load_version(store, "fraud", "v1")
    store = registry()
    store.objects[PREFIX + "model.pt2"] = store.objects[PREFIX + "model.pt2"][:-1]  # a truncated upload
    with pytest.raises(RegistryError, match=r"attempts/a1/model.pt2 does not match"):
        load_version(store, "fraud", "v1")


def test_a_card_without_artifacts_or_with_an_unknown_format_is_refused():
    with pytest.raises(RegistryError, match="lacks artifacts.portable and artifacts.format"):
        load_version(registry({**CARD, "artifacts": {}}), "fraud", "v1")
    with pytest.raises(RegistryError, match="portable format 'onnx' is unknown"):
        load_program(b"", "onnx")
