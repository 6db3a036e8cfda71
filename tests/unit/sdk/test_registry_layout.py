from datetime import UTC, datetime

import pytest

from streamml.sdk.registry import (
    ChampionPointer,
    RegistryError,
    champion_key,
    read_card,
    read_champion,
    version_key,
    version_prefix,
)
from streamml.store import ObjectNotFound, StoredObject

pytestmark = pytest.mark.unit


class DictStore:
    def __init__(self, objects):
        self.objects = objects

    def get(self, key):
        if key not in self.objects:
            raise ObjectNotFound(f"no object {key!r}")
        return StoredObject(key, self.objects[key], '"etag-1"')


def test_keys_follow_the_layout():
    assert version_prefix("fraud", "20240601-3") == "models/fraud/20240601-3/"
    assert version_key("fraud", "v1", "card.json") == "models/fraud/v1/card.json"
    assert champion_key("fraud") == "models/fraud/champion.json"


@pytest.mark.parametrize("version", ["../other", "a/b", "", ".hidden", "x" * 129])
def test_versions_that_would_escape_their_folder_are_refused(version):
    with pytest.raises(RegistryError, match="model version"):
        version_prefix("fraud", version)


def test_names_must_be_dataset_style():
    with pytest.raises(RegistryError, match="model name 'Fraud/x'"):
        champion_key("Fraud/x")


def test_champion_pointer_round_trips_and_absence_is_not_an_error():
    pointer = ChampionPointer(version="v2", previous="v1", actor="validator-0", reason="better",
                              time=datetime(2024, 6, 1, tzinfo=UTC))
    store = DictStore({champion_key("fraud"): pointer.to_bytes()})
    assert read_champion(store, "fraud") == (pointer, '"etag-1"')
    assert read_champion(store, "churn") == (None, None)


def test_cards_must_be_json_objects():
    store = DictStore({version_key("fraud", "v1", "card.json"): b'{"model": "fraud"}',
                       version_key("fraud", "v2", "card.json"): b"[1]",
                       version_key("fraud", "v3", "card.json"): b"{oops"})
    assert read_card(store, "fraud", "v1") == {"model": "fraud"}
    with pytest.raises(RegistryError, match="card.json must hold a JSON object, found list"):
        read_card(store, "fraud", "v2")
    with pytest.raises(RegistryError, match="models/fraud/v3/card.json is not JSON"):
        read_card(store, "fraud", "v3")
    with pytest.raises(ObjectNotFound):
        read_card(store, "fraud", "v4")
