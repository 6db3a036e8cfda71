"""The lightgbm flavour: training, the portable text model, the card, and loading it as the SDK does."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from memory_store import MemoryStore
from services.trainer.candidates import version_files
from services.trainer.data import TabularTensors
from services.trainer.gbm import features, train_lightgbm
from services.trainer.metrics import auc
from services.trainer.publish import publish_version
from services.trainer.spec import parse_model_spec
from streamml.portable import load_program
from streamml.registry.keys import RegistryError
from streamml.sdk.loader import load_version

pytestmark = pytest.mark.unit


def gbm_spec(task: str = "binary", **overrides: object):
    return parse_model_spec({"name": "trees", "dataset": "synthetic", "task": task, "flavour": "lightgbm",
                             "lightgbm": {"num_boost_round": 60, "num_leaves": 8, "learning_rate": 0.2},
                             "early_stopping": {"patience": 5}, "seed": 3, **overrides})


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_the_portable_model_answers_what_the_card_measured(make_prepared, task):
    data = make_prepared(task)
    spec = gbm_spec(task)
    result = train_lightgbm(spec, data.layout, data.train, data.validation, threads=1)
    files, card = version_files(spec, data.manifest, data.layout, result, "d1-x", "test")
    assert [file.name for file in files] == ["model.lightgbm.txt", "card.json"]
    assert json.loads(files[-1].data) == card
    program = load_program(files[0].data, card["artifacts"]["format"])
    outputs = program(data.validation.numeric, data.validation.categorical).numpy()
    labels = data.validation.label.numpy()
    if task == "binary":
        assert outputs.shape == (len(labels),) and ((outputs >= 0) & (outputs <= 1)).all()
        assert auc(outputs, labels) == pytest.approx(card["metrics"]["auc"], abs=1e-4)  # float32 ties aside
        assert card["metrics"]["auc"] > 0.75
    elif task == "multiclass":
        assert outputs.shape == (len(labels), 3) and np.allclose(outputs.sum(axis=1), 1, atol=1e-5)
        assert np.mean(outputs.argmax(axis=1) == labels) == pytest.approx(card["metrics"]["accuracy"], abs=1e-3)
    else:
        rmse = float(np.sqrt(np.mean((outputs - labels) ** 2)))
        assert rmse == pytest.approx(card["metrics"]["rmse"], rel=1e-4)
    assert card["flavour"] == "lightgbm" and card["artifacts"] == {
        "portable": "model.lightgbm.txt", "format": "lightgbm", "flavour": "lightgbm"}
    assert card["params"]["lightgbm"]["num_leaves"] == 8 and card["lightgbm"]["params"]["num_leaves"] == 8
    assert card["lightgbm"]["params"]["objective"] == task and card["lightgbm"]["params"]["seed"] == 3
    assert card["selection"]["metric"] == spec.metric and card["lightgbm"]["trees"] >= 1
    assert card["parameter_count"] > 0 and card["expected_features"]


def test_boosting_stops_at_the_best_round_and_keeps_only_its_trees(binary):
    spec = gbm_spec(lightgbm={"num_boost_round": 400, "num_leaves": 31, "learning_rate": 0.5},
                    early_stopping={"patience": 3})
    rounds = []
    result = train_lightgbm(spec, binary.layout, binary.train, binary.validation, threads=1,
                            on_round=lambda round_, value: rounds.append((round_, value)))
    assert result.stopped_early and result.rounds == len(rounds) < 400
    assert result.best_round == max(rounds, key=lambda r: r[1])[0]  # auc: higher is better
    assert result.rounds - result.best_round == 3 and result.booster.num_trees() == result.best_round
    assert result.metrics["auc"] == pytest.approx(max(value for _, value in rounds), abs=1e-9)


def test_the_same_spec_and_data_give_the_same_trees_whatever_the_thread_count(binary):
    spec = gbm_spec(lightgbm={"num_boost_round": 20, "feature_fraction": 0.7, "bagging_fraction": 0.8,
                              "bagging_freq": 1})
    first, second = (train_lightgbm(spec, binary.layout, binary.train, binary.validation, threads=threads)
                     for threads in (1, 2))
    assert first.booster.dump_model()["tree_info"] == second.booster.dump_model()["tree_info"]


def test_a_lightgbm_version_loads_and_predicts_raw_records_like_a_torch_one(binary):
    spec = gbm_spec()
    result = train_lightgbm(spec, binary.layout, binary.train, binary.validation, threads=1)
    files, card = version_files(spec, binary.manifest, binary.layout, result, "d1-x", "test")
    store = MemoryStore()
    assert publish_version(store, "trees", "d1-x", files)
    loaded = load_version(store, "trees", "d1-x")  # warms up on an all-missing record
    record = {name: 0.3 for name in binary.layout.numeric} | {name: "never-seen" for name in binary.layout.categorical}
    prediction = loaded.snapshot.predict([record, {}])
    numeric, categorical = loaded.snapshot.transform.apply([record, {}]).tensors()
    direct = result.booster.predict(features(type(binary.train)(numeric, categorical, torch.zeros(2))))
    assert prediction.version == "d1-x" and np.allclose(prediction.output, direct, atol=1e-6)


def test_a_damaged_lightgbm_model_is_refused_naming_the_file(binary):
    spec = gbm_spec(lightgbm={"num_boost_round": 3})
    result = train_lightgbm(spec, binary.layout, binary.train, binary.validation, threads=1)
    files, _ = version_files(spec, binary.manifest, binary.layout, result, "d1-x", "test")
    files[0] = type(files[0])(files[0].name, b"tree\nnot a model")
    store = MemoryStore()
    publish_version(store, "trees", "d1-x", files)
    with pytest.raises(RegistryError, match=r"model.lightgbm.txt is not a loadable lightgbm program"):
        load_version(store, "trees", "d1-x")


def test_a_spec_of_another_flavour_is_not_boosted(binary, make_spec):
    with pytest.raises(ValueError, match="flavour torch, not lightgbm"):
        train_lightgbm(make_spec(), binary.layout, binary.train, binary.validation, threads=1)


def test_row_weights_let_new_rows_outweigh_old_ones_of_the_opposite_rule_in_boosting(binary):
    """As in the torch loop: each train row as it is and with its label flipped; the flipped copies weigh 0.05."""
    new = binary.train
    both = TabularTensors(*(torch.cat([a, b]) for a, b in zip(
        new.tensors(), (new.numeric, new.categorical, 1.0 - new.label), strict=True)))
    weights = torch.cat([torch.ones(len(new)), torch.full((len(new),), 0.05)]).double()
    spec = gbm_spec(early_stopping={"patience": None})
    weighted = train_lightgbm(spec, binary.layout, both, binary.validation, threads=1, train_weights=weights)
    unweighted = train_lightgbm(spec, binary.layout, both, binary.validation, threads=1)
    assert weighted.metrics["auc"] > 0.85 and unweighted.metrics["auc"] < weighted.metrics["auc"] - 0.1
