"""`python -m services.serve` against a real broker and Ceph: the Open Inference Protocol, metrics, promotion."""

from __future__ import annotations

import http.client
import json
import time

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from registry_world import MODEL, direct_predictions, now, put_dataset, put_version, raw_records, trained
from services.validator.promote import set_champion
from streamml.events import FeedbackRecord, ModelPromoted
from streamml.stack.ports import free_port

pytestmark = pytest.mark.integration


def call(port: int, method: str, path: str, body: object = None) -> tuple[int, dict | str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, body=None if body is None else json.dumps(body),
                           headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        data = response.read().decode()
    finally:
        connection.close()
    try:
        return response.status, json.loads(data)
    except ValueError:
        return response.status, data


def tensors(records: list[dict]) -> list[dict]:
    inputs = []
    for name in records[0]:
        numeric = name.startswith("num_")
        inputs.append({"name": name, "datatype": "FP64" if numeric else "BYTES", "shape": [len(records)],
                       "data": [record[name] for record in records]})
    return inputs


def output(body: dict) -> np.ndarray:
    tensor = next(t for t in body["outputs"] if t["name"] == "output")
    return np.array(tensor["data"], dtype=np.float32).reshape(tensor["shape"])


@pytest.fixture
def server(world, services):
    put_dataset(world.store, 1)
    put_version(world.store, "v1", trained("weak", 1))
    put_version(world.store, "v2", trained("strong", 1))
    set_champion(world.store, MODEL, "v1", expected=None, actor="test", reason="seed", time=now())
    api, health = free_port(), free_port()
    process = services.start("serve", world.bucket, **world.env, STREAMML_SERVE_MODEL=MODEL,
                             STREAMML_SERVE_PORT=str(api), STREAMML_HTTP_PORT=str(health))
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, process.log_path.read_text()[-3000:]
        try:
            if call(api, "GET", "/v2/health/ready")[0] == 200:
                return api, health
        except OSError:
            pass
        assert time.monotonic() < deadline, process.log_path.read_text()[-3000:]
        time.sleep(0.2)


def test_the_server_answers_the_open_inference_protocol_and_follows_promotions(world, server):
    api, health = server
    records = raw_records()[:50]
    expected = {"v1": direct_predictions(trained("weak", 1))[:50], "v2": direct_predictions(trained("strong", 1))[:50]}

    assert call(api, "GET", "/v2/health/live") == (200, {"live": True})
    assert call(api, "GET", f"/v2/models/{MODEL}/ready") == (200, {"ready": True})
    status, metadata = call(api, "GET", f"/v2/models/{MODEL}")
    assert status == 200 and metadata["versions"] == ["v1"]
    assert [i["name"] for i in metadata["inputs"]] == [*(f"num_{i}" for i in range(6)), "cat_0", "cat_1"]
    assert [i["datatype"] for i in metadata["inputs"]][-2:] == ["BYTES", "BYTES"]

    status, by_tensor = call(api, "POST", f"/v2/models/{MODEL}/infer", {"id": "r1", "inputs": tensors(records)})
    assert status == 200, by_tensor
    assert (by_tensor["id"], by_tensor["model_name"], by_tensor["model_version"]) == ("r1", MODEL, "v1")
    np.testing.assert_allclose(output(by_tensor), expected["v1"], rtol=1e-5, atol=1e-6)
    ids = [f"req-{i}" for i in range(len(records))]
    status, by_record = call(api, "POST", f"/v2/models/{MODEL}/infer", {"inputs": [
        {"name": "records", "datatype": "BYTES", "shape": [len(records)], "data": [json.dumps(r) for r in records]},
        {"name": "request_id", "datatype": "BYTES", "shape": [len(records)], "data": ids}]})
    assert status == 200, by_record
    np.testing.assert_array_equal(output(by_record), output(by_tensor))
    assert next(t for t in by_record["outputs"] if t["name"] == "request_id")["data"] == ids

    status, error = call(api, "POST", f"/v2/models/{MODEL}/infer", {"inputs": [
        {"name": "amount", "datatype": "FP64", "shape": [1], "data": [1.0]}]})
    assert status == 400 and "'amount'" in error["error"] and "num_0" in error["error"]
    status, error = call(api, "POST", f"/v2/models/{MODEL}/infer", {"inputs": [
        {"name": "num_0", "datatype": "BYTES", "shape": [1], "data": ["lots"]}]})
    assert status == 400 and "num_0" in error["error"] and "'lots'" in error["error"]
    assert call(api, "POST", "/v2/models/churn/infer", {"inputs": tensors(records)})[0] == 404

    assert call(api, "POST", f"/v2/models/{MODEL}/feedback", {"request_id": "req-3", "label": 1})[0] == 200
    feedback = world.events(f"feedback.{MODEL}", 1)
    assert isinstance(feedback[0], FeedbackRecord) and (feedback[0].request_id, feedback[0].label) == ("req-3", 1)

    set_champion(world.store, MODEL, "v2", expected="v1", actor="test", reason="test", time=now())
    world.send(ModelPromoted(model=MODEL, version="v2", artifact_prefix=f"models/{MODEL}/v2/", metrics={},
                             previous_champion="v1", actor="test", reason="test"))
    deadline = time.monotonic() + 30
    infer = f"/v2/models/{MODEL}/infer"
    while (body := call(api, "POST", infer, {"inputs": tensors(records)})[1])["model_version"] != "v2":
        assert time.monotonic() < deadline, "the server did not swap to v2"
        time.sleep(0.1)
    np.testing.assert_allclose(output(body), expected["v2"], rtol=1e-5, atol=1e-6)

    status, text = call(health, "GET", "/metrics")
    assert status == 200
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("streamml_sdk_model_version", (("model", MODEL), ("version", "v2")))] == 1
    assert ("streamml_sdk_model_version", (("model", MODEL), ("version", "v1"))) not in samples
    assert samples[("streamml_serve_requests_total", (("endpoint", "infer"), ("model", MODEL), ("status", "400")))] == 2
    infer_count = samples[("streamml_serve_request_seconds_count", (("endpoint", "infer"), ("model", MODEL)))]
    assert infer_count >= 6  # two good, two bad, one for another model, at least one after the promotion
