import io
import json

import pytest
import torch

from services.trainer.artifact import PortableModel, model_card, state_dict_bytes
from services.trainer.model import Predictor, build_model
from services.trainer.train import train

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def trained(binary):
    from services.trainer.spec import parse_model_spec

    spec = parse_model_spec({"name": "tiny", "dataset": "synthetic", "task": "binary", "max_epochs": 2,
                             "architecture": {"hidden": [8]}, "batch_size": 256, "seed": 4})
    return spec, train(spec, binary.layout, binary.train, binary.validation, device="cpu")


def test_card_records_dataset_metrics_parameters_and_expected_features(binary, trained):
    spec, result = trained
    portable = PortableModel("torch.export", b"")
    card = model_card(spec=spec, manifest=binary.manifest, layout=binary.layout, result=result,
                      portable=portable, model_version="20260101T000000Z", code_version="streamml 0.1.0")
    card = json.loads(json.dumps(card))  # stored as JSON: everything must survive the round trip

    assert card["dataset"] == {
        "name": "synthetic", "version": 1, "manifest_key": "datasets/synthetic/v1/manifest.json",
        "rows": binary.manifest.rows, "content_sha256": binary.manifest.content_sha256,
    }
    assert card["metrics"] == result.metrics and card["selection"]["metric"] == "auc"
    assert card["metrics_split"] == "validation"  # the test split is the validator's
    assert card["params"]["architecture"]["hidden"] == [8] and card["seed"] == 4
    assert card["device"].startswith("cpu") and card["code_version"] == "streamml 0.1.0"
    assert card["training_seconds"] > 0 and card["samples_per_s"] > 0
    assert card["parameter_count"] == sum(p.numel() for p in result.net.parameters())
    assert card["inputs"]["numeric"] == list(binary.layout.numeric)
    assert [c["codes"] for c in card["inputs"]["categorical"]] == list(binary.layout.cardinalities)
    features = [*binary.layout.numeric, *binary.layout.categorical]
    assert card["expected_features"] == {f: binary.manifest.reference[f].model_dump(mode="json") for f in features}
    assert card["inputs"]["transform"]["cat_0"]["vocabulary"] == binary.manifest.transform["cat_0"].vocabulary
    assert card["artifacts"] == {"portable": "model.pt2", "format": "torch.export", "flavour": "torch",
                                 "state_dict": "state_dict.pt"}
    assert card["flavour"] == "torch"


def test_state_dict_rebuilds_the_same_network(binary, trained):
    spec, result = trained
    rebuilt = build_model(binary.layout, spec.architecture)
    rebuilt.load_state_dict(torch.load(io.BytesIO(state_dict_bytes(result.net)), weights_only=True))
    rebuilt.eval()
    with torch.no_grad():
        expected = Predictor(result.net, "binary")(binary.validation.numeric, binary.validation.categorical)
        got = Predictor(rebuilt, "binary")(binary.validation.numeric, binary.validation.categorical)
    assert torch.equal(expected, got)
    assert ((got >= 0) & (got <= 1)).all()

