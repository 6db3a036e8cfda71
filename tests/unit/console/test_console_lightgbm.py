"""A lightgbm version's page names its library and its search, not torch."""

from __future__ import annotations

import re

import pytest
from conftest import make_console
from memory_store import MemoryStore
from starlette.testclient import TestClient

from registry_world import DATASET, MODEL, dataset
from services.trainer.candidates import train_candidate
from services.trainer.data import FeatureLayout, tensors_from_table
from services.trainer.publish import publish_version
from services.trainer.spec import parse_model_spec
from streamml.console import links
from streamml.console.app import console_app

pytestmark = pytest.mark.unit


def test_a_lightgbm_version_page_names_lightgbm_and_the_search(filled):
    store = MemoryStore()
    store.objects = dict(filled[0].objects)  # a copy: the shared world stays as the other tests know it
    manifest, splits = dataset(1)
    layout = FeatureLayout.from_manifest(manifest, "binary")
    spec = parse_model_spec({"name": MODEL, "dataset": DATASET, "task": "binary", "flavour": "lightgbm",
                             "lightgbm": {"num_boost_round": 5},
                             "search": {"trials": 2, "space": {"lightgbm.num_leaves": {"low": 2, "high": 8}}}})
    files, _, _ = train_candidate(spec, manifest, layout, tensors_from_table(splits["train"], layout),
                                  tensors_from_table(splits["validation"], layout), device="cpu", threads=1,
                                  should_stop=lambda: False, model_version="d1-trees", code_version="test")
    assert publish_version(store, MODEL, "d1-trees", files)
    console = make_console(store, None)
    with TestClient(console_app(console)) as client:
        page = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", client.get(links.version(MODEL, "d1-trees")).text))
    console.registry.close()
    assert re.search(r"code test, lightgbm \d+\.\d+", page) and "torch" not in page.split("code test")[1][:40]
    assert re.search(r"search 2 trials, best trial [01] by auc", page)
    assert "model.lightgbm.txt" in page
