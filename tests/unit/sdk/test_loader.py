"""Loading a registered version: only committed versions, in the format the card names."""

import hashlib
import io
import re
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


class TwoAnswers(nn.Module):
    """Two rows whatever it is given: a program written for a fixed batch."""

    def forward(self, numeric, categorical):
        return (numeric[:, 0].sum() + categorical[:, 0].sum()).repeat(2)


def exported(module: nn.Module | None = None) -> bytes:
    batch = torch.export.Dim("batch")
    program = torch.export.export(module or Doubler(), (torch.zeros(2, 1), torch.zeros(2, 1, dtype=torch.int64)),
                                  dynamic_shapes={"numeric": {0: batch}, "categorical": {0: batch}})
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


PREFIX = "models/fraud/v1/attempts/a1/"


def registry(card: dict = CARD, committed: bool = True, program: bytes | None = None) -> DictStore:
    store = DictStore()
    files = {"card.json": json.dumps(card).encode(), "model.pt2": exported() if program is None else program}
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


def test_a_version_in_its_own_folder_whose_card_was_written_over_is_refused():
    """The layout before attempts (files in the version's folder, the manifest naming their sha256):
    a second trainer's late upload over the card is caught by its hash, not served."""
    files = {"card.json": json.dumps(CARD).encode(), "model.pt2": exported()}
    manifest = {"model": "fraud", "version": "v1", "created": "2026-01-01T00:00:00+00:00", "files": list(files),
                "sha256": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
                "bytes": {name: len(data) for name, data in files.items()}}
    store = DictStore()
    store.objects.update({"models/fraud/v1/" + name: data for name, data in files.items()})
    store.objects["models/fraud/v1/manifest.json"] = json.dumps(manifest).encode()
    other = with_inputs(transform={**CARD["inputs"]["transform"],
                                   "amount": NumericTransform(mean=7, std=3).model_dump(mode="json")})
    store.objects["models/fraud/v1/card.json"] = json.dumps(other).encode()  # loads, and scales amount otherwise
    with pytest.raises(RegistryError, match=r"models/fraud/v1/card.json does not match the manifest of fraud v1"):
        load_version(store, "fraud", "v1")


def test_a_card_without_artifacts_or_with_an_unknown_format_is_refused():
    with pytest.raises(RegistryError, match="lacks artifacts.portable and artifacts.format"):
        load_version(registry({**CARD, "artifacts": {}}), "fraud", "v1")
    with pytest.raises(RegistryError, match="portable format 'onnx' is unknown"):
        load_program(b"", "onnx")


def with_inputs(**changes) -> dict:
    return {**CARD, "inputs": {**CARD["inputs"], **changes}}


@pytest.mark.parametrize("card, problem", [
    (with_inputs(transform=["amount", "channel"]), "inputs.transform must map feature names to transforms, found list"),
    (with_inputs(categorical=[{"name": "channel", "codes": "3"}]), "'channel' has '3' codes but its vocabulary makes 3"),
    ({**CARD, "artifacts": {"portable": "../../datasets/x", "format": "torch.export"}},
     "names the portable program '../../datasets/x'; it must be a file name in the version's folder"),
    ({**CARD, "artifacts": {"portable": "model.pt2\n", "format": "torch.export"}}, "names the portable program"),
])
def test_a_hostile_card_is_refused_with_the_reason(card, problem):
    with pytest.raises(ValueError, match=re.escape(problem)):
        load_version(registry(card), "fraud", "v1")


def test_a_damaged_program_names_its_key():
    store = registry(program=b"not a torch archive")  # damaged before its sha256 was taken
    with pytest.raises(RegistryError, match=r"models/fraud/v1/attempts/a1/model.pt2 is not a loadable torch.export program "
                                            r"\(BadZipFile: .*\); train the version again"):
        load_version(store, "fraud", "v1")


def test_a_program_that_does_not_fit_its_card_is_refused_before_it_serves():
    # The card leaves out the category the program reads.
    card = with_inputs(categorical=[], transform={"amount": CARD["inputs"]["transform"]["amount"]})
    with pytest.raises(RegistryError, match=r"version 'v1' of model 'fraud' does not run on the inputs its card "
                                            r"describes \(\w+: .*\); train it again or promote another"):
        load_version(registry(card), "fraud", "v1")
    assert load_version(registry(card), "fraud", "v1", warm_up=False).version == "v1"


def test_a_program_that_does_not_answer_one_row_per_record_is_refused_before_it_serves():
    # Serving skips torch.export's per-call checks of the inputs, so the loader's own calls must catch it.
    with pytest.raises(RegistryError, match=r"version 'v1' of model 'fraud' answers 2 rows to 1 record; a program "
                                            r"must answer one per record \(export it with a dynamic batch dimension\)"):
        load_version(registry(program=exported(TwoAnswers())), "fraud", "v1")


def test_a_version_brings_the_rules_of_the_dataset_spec_its_training_data_was_built_with(caplog):
    from services.trainer.synthetic import synthetic_dataset
    from streamml.registry.keys import dataset_spec_key
    from streamml.specs import parse_dataset_spec

    manifest, _ = synthetic_dataset(100, seed=1, name="tx")
    spec = parse_dataset_spec({"name": "tx", "key": "id", "fields": [
        {"name": "id", "type": "string"}, {"name": "amount", "type": "float", "min": 0},
        {"name": "channel", "type": "category", "categories": ["web", "pos"]},
        {"name": "seen", "type": "timestamp"}, {"name": "unused", "type": "int"}]})
    card = {**CARD, "model": "fraud", "version": "v1", "dataset": {"manifest_key": "datasets/tx/v1/manifest.json"}}
    store = registry(card)
    assert load_version(store, "fraud", "v1", with_input_rules=True).snapshot.rules is None
    store.objects["datasets/tx/v1/manifest.json"] = manifest.model_dump_json(by_alias=True).encode()
    assert load_version(store, "fraud", "v1", with_input_rules=True).snapshot.rules is None
    assert "no spec of dataset 'tx' with fingerprint synthetic is stored" in caplog.text

    store.objects[dataset_spec_key("tx", manifest.spec_fingerprint)] = spec.model_dump_json().encode()
    rules = load_version(store, "fraud", "v1", with_input_rules=True).snapshot.rules
    # The model's features, as the spec declares them: not its other fields.
    assert rules.dataset == "tx" and [field.name for field in rules.fields] == ["amount", "channel"]
    assert list(rules.check([{"amount": -1.0, "channel": "web"}])) == [0]
    assert load_version(store, "fraud", "v1").snapshot.rules is None  # as the validator loads a version
