"""The inference server's Open Inference Protocol codec: both request forms, every refusal, the response."""

import json

import numpy as np
import pytest

from services.serve.protocol import BadRequest, infer_response, model_metadata, parse_infer

pytestmark = pytest.mark.unit
FEATURES = ("amount", "hour", "channel")


def tensor(name, data, datatype="FP64", shape=None):
    return {"name": name, "datatype": datatype, "shape": shape or [len(data)], "data": data}


def test_one_tensor_per_feature_becomes_one_record_per_row_and_unsent_features_are_missing():
    request = parse_infer({"id": 7, "inputs": [
        tensor("amount", [[1.5], [2.5]], shape=[2, 1]),
        tensor("channel", ["web", None], "BYTES"),
    ]}, FEATURES, max_rows=10)
    assert request.records == [{"amount": 1.5, "channel": "web"}, {"amount": 2.5, "channel": None}]
    assert request.id == "7" and request.request_ids is None


def test_a_records_tensor_takes_json_strings_or_objects_and_request_ids_ride_along():
    request = parse_infer({"inputs": [
        tensor("records", [json.dumps({"amount": 1, "channel": "pos"}), {"hour": 3}], "BYTES"),
        tensor("request_id", ["a", "b"], "BYTES"),
    ]}, FEATURES, max_rows=10)
    assert request.records == [{"amount": 1, "channel": "pos"}, {"hour": 3}]
    assert request.request_ids == ["a", "b"]


@pytest.mark.parametrize(("body", "message"), [
    ({}, '"inputs" list'),
    ({"inputs": [tensor("amount", [1.0]), tensor("amount", [2.0])]}, "given twice"),
    ({"inputs": [tensor("price", [1.0])]}, r"\['price'\] are not features of the model; its features are"),
    ({"inputs": [tensor("amount", [1.0], "FLOAT")]}, "datatype 'FLOAT'"),
    ({"inputs": [tensor("amount", [1.0, 2.0], shape=[2, 3])]}, "shape \\[2, 3\\]"),
    ({"inputs": [tensor("amount", [1.0, 2.0], shape=[3])]}, "has 2 values for shape \\[3\\]"),
    ({"inputs": [tensor("amount", [1.0, 2.0]), tensor("hour", [1.0])]}, "different row counts"),
    ({"inputs": [tensor("records", ["{broken"], "BYTES")]}, r"records\[0\] is not JSON"),
    ({"inputs": [tensor("records", [[1, 2]], "BYTES")]}, r"records\[0\] is a list"),
    ({"inputs": [tensor("records", ["{}"], "BYTES"), tensor("amount", [1.0])]}, "not both"),
    ({"inputs": [tensor("amount", [1.0]), tensor("request_id", ["a", "b"], "BYTES")]}, "2 request ids for 1 rows"),
    ({"inputs": [tensor("amount", [1.0] * 11)]}, "11 rows in one request; the limit is 10"),
])
def test_requests_outside_the_protocol_are_refused_saying_what_to_change(body, message):
    with pytest.raises(BadRequest, match=message):
        parse_infer(body, FEATURES, max_rows=10)


def test_the_response_carries_outputs_in_their_shape_and_the_request_ids():
    response = infer_response("fraud", "v2", np.array([[0.1, 0.9], [0.7, 0.3]]), ["a", "b"], "r1")
    output, ids = response["outputs"]
    assert (response["model_name"], response["model_version"], response["id"]) == ("fraud", "v2", "r1")
    assert output["shape"] == [2, 2] and output["datatype"] == "FP32"
    np.testing.assert_allclose(output["data"], [0.1, 0.9, 0.7, 0.3], rtol=1e-6)
    assert ids == {"name": "request_id", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]}
    assert "id" not in infer_response("fraud", "v2", np.zeros(1), ["a"], None)


def test_metadata_lists_numeric_then_category_inputs_and_the_output_shape():
    card = {"inputs": {"numeric": ["amount"], "categorical": [{"name": "channel", "codes": 4}]},
            "outputs": {"classes": ["a", "b", "c"]}, "artifacts": {"format": "torch.export"}}
    metadata = model_metadata("fraud", "v2", card)
    assert metadata["inputs"] == [{"name": "amount", "datatype": "FP64", "shape": [-1]},
                                  {"name": "channel", "datatype": "BYTES", "shape": [-1]}]
    assert metadata["outputs"][0]["shape"] == [-1, 3] and metadata["platform"] == "pytorch_torch.export"
    assert model_metadata("fraud", "v1", {"artifacts": {"format": "lightgbm"}})["platform"] == "lightgbm"
