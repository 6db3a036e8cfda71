"""`python -m services.serve` against a real broker and Ceph: the Open Inference Protocol, metrics, promotion."""

from __future__ import annotations

import json
import socket
import time

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from registry_world import MODEL, direct_predictions, now, put_dataset, put_version, raw_records, trained
from registry_world import put_spec
from oip_calls import call, output, tensors
from services.validator.promote import set_champion
from streamml.events import FeedbackRecord, ModelPromoted
from streamml.stack.ports import free_port

pytestmark = pytest.mark.integration


def start_server(world, services, **env: str) -> tuple[int, int]:
    put_dataset(world.store, 1)
    put_version(world.store, "v1", trained("weak", 1))
    put_version(world.store, "v2", trained("strong", 1))
    set_champion(world.store, MODEL, "v1", expected=None, actor="test", reason="seed", time=now())
    api, health = free_port(), free_port()
    process = services.start("serve", world.bucket, **world.env, STREAMML_SERVE_MODEL=MODEL,
                             STREAMML_SERVE_PORT=str(api), STREAMML_HTTP_PORT=str(health), **env)
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


@pytest.fixture
def server(world, services):
    return start_server(world, services)


@pytest.fixture
def strict_server(world, services):
    """Small limits, so that a test can reach each of them."""
    return start_server(world, services, STREAMML_SERVE_MAX_REQUEST_BYTES="4096", STREAMML_SERVE_MAX_ROWS="5",
                        STREAMML_SERVE_BODY_TIMEOUT_S="1", STREAMML_SERVE_HEAD_TIMEOUT_S="1")


def test_the_server_answers_the_open_inference_protocol_and_follows_promotions(world, services, server):
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
    (process,) = services.running
    while True:
        status, body = call(api, "POST", infer, {"inputs": tensors(records)})
        assert status == 200, f"{status} {body} while swapping; the server's log:\n{process.log_path.read_text()[-3000:]}"
        if body["model_version"] == "v2":
            break
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

    # SIGTERM: a request in flight is still answered, then the server exits cleanly.
    body = json.dumps({"inputs": tensors(records)}).encode()
    slow = socket.create_connection(("127.0.0.1", api), timeout=30)
    slow.sendall(head(infer, f"Content-Length: {len(body)}", "Connection: close") + body[:10])
    time.sleep(1)  # the request is in flight
    process.terminate()
    time.sleep(1)  # the server is stopping
    slow.sendall(body[10:])
    status, answer = status_and_body(read_answer(slow))
    assert status == 200 and answer["model_version"] == "v2"
    assert process.wait(timeout=30) == 0


def by_records(records: list[dict], request_ids: list[str]) -> dict:
    return {"inputs": [
        {"name": "records", "datatype": "BYTES", "shape": [len(records)], "data": [json.dumps(r) for r in records]},
        {"name": "request_id", "datatype": "BYTES", "shape": [len(records)], "data": request_ids}]}


def metric_samples(port: int) -> dict[tuple[str, tuple], float]:
    status, text = call(port, "GET", "/metrics")
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_with_input_checks_reject_a_record_the_dataset_spec_forbids_gets_400_naming_the_field(world, services):
    put_spec(world.store)
    api, _ = start_server(world, services, STREAMML_SERVE_INPUT_CHECKS="reject")
    infer = f"/v2/models/{MODEL}/infer"
    records = raw_records()[:5]
    assert call(api, "POST", infer, {"inputs": tensors(records)})[0] == 200

    too_large = [*records[:2], {**records[2], "num_0": 50.0}]
    status, error = call(api, "POST", infer, {"inputs": tensors(too_large)})
    assert (status, error) == (400, {"error": "record 2 breaks the rules of dataset 'transactions': "
                                              "num_0: above the maximum 10 (got 50.0)"})
    missing = {name: value for name, value in records[0].items() if name != "num_1"}
    status, error = call(api, "POST", infer, by_records([missing, {**records[1], "cat_0": 7}], ["a", "b"]))
    assert (status, error) == (400, {"error": "record 0 breaks the rules of dataset 'transactions': "
                                              "num_1: required value missing or null; 1 more records break them too"})


def test_by_default_a_record_the_dataset_spec_forbids_is_predicted_counted_and_marked_in_the_log(world, services):
    put_spec(world.store)
    api, health = start_server(world, services)
    records = raw_records()[:3]
    flagged = {**records[1], "num_0": 50.0, "cat_0": "fax"}
    status, body = call(api, "POST", f"/v2/models/{MODEL}/infer", by_records([records[0], flagged, records[2]],
                                                                             ["a", "b", "c"]))
    assert status == 200 and output(body).shape == (3,)

    samples = metric_samples(health)
    flagged_total = "streamml_sdk_flagged_inputs_total"
    assert samples[(flagged_total, (("feature", "num_0"), ("model", MODEL), ("rule", "max")))] == 1
    assert samples[(flagged_total, (("feature", "cat_0"), ("model", MODEL), ("rule", "category")))] == 1
    assert not [key for key in samples if key[0] == flagged_total and ("feature", "num_1") in key[1]]
    logged = world.predictions(MODEL, 3)
    assert {event.request_id: event.flags for event in logged} == {"a": [], "b": ["num_0:max", "cat_0:category"],
                                                                   "c": []}


def exchange(port: int, *parts: bytes, pause_s: float = 0.0) -> bytes:
    """Send ``parts`` on one connection (pausing between them), then read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        for part in parts:
            connection.sendall(part)
            time.sleep(pause_s)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


def head(path: str, *headers: str) -> bytes:
    return "".join([f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n",
                    *(f"{h}\r\n" for h in headers), "\r\n"]).encode()


def chunked(body: bytes, size: int = 1000) -> bytes:
    pieces = [body[i:i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"


def read_answer(connection: socket.socket) -> bytes:
    """One whole response: its head and then Content-Length bytes, however the reads split it."""
    answer = b""
    while b"\r\n\r\n" not in answer and (chunk := connection.recv(65536)):
        answer += chunk
    head_part, _, body = answer.partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head_part.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length and (chunk := connection.recv(65536)):
        body += chunk
    return head_part + b"\r\n\r\n" + body


def status_and_body(answer: bytes) -> tuple[int, dict]:
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2] or b"{}")


def test_the_server_holds_its_limits_whatever_the_request_says(world, strict_server):
    api, health = strict_server
    infer = f"/v2/models/{MODEL}/infer"
    good = json.dumps({"inputs": tensors(raw_records()[:2])}).encode()
    large = json.dumps({"inputs": tensors(raw_records()[:200])}).encode()
    assert len(good) < 4096 < len(large)

    status, error = call(api, "POST", infer)  # no body
    assert status == 400 and "inputs" in error["error"]
    status, error = status_and_body(exchange(api, head(infer, "Content-Length: 9", "Connection: close"), b"{not json"))
    assert status == 400 and error["error"].startswith("body is not JSON")
    status, error = call(api, "POST", infer, {"inputs": tensors(raw_records()[:6])})
    assert status == 400 and "the limit is 5" in error["error"]

    # A negative length, or a length with a chunked body, is refused on its head alone. (No body is sent: the
    # server closes such a connection at once, and bytes it never read would reset it before the answer arrives.)
    for headers in (["Content-Length: -5"], ["Content-Length: 10", "Transfer-Encoding: chunked"]):
        answer = exchange(api, head(infer, *headers))
        assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    # Too large, by its length (answered before the body is sent) or by what a chunked body turns out to hold.
    status, error = status_and_body(exchange(api, head(infer, f"Content-Length: {len(large)}")))
    assert status == 413 and "4096" in error["error"]
    status, error = status_and_body(exchange(api, head(infer, "Transfer-Encoding: chunked"), chunked(large)))
    assert status == 413 and "4096" in error["error"]

    # A chunked body is read as a body, not as the next request: the request after it gets its own answer.
    answer = exchange(api, head(infer, "Transfer-Encoding: chunked") + chunked(good, 100)
                      + head(infer, f"Content-Length: {len(good)}", "Connection: close") + good)
    assert answer.count(b"HTTP/1.1 200") == 2 and answer.count(b'"model_version":"v1"') == 2, answer[:300]

    assert call(api, "GET", "/v2/health/live") == (200, {"live": True})
    statuses = requests_by_status(health)
    assert statuses[("infer", "413")] == 2 and statuses[("infer", "400")] == 3 and statuses[("infer", "200")] == 2


def test_slow_clients_are_cut_off_and_hold_up_nobody(world, strict_server):
    api, health = strict_server
    infer = f"/v2/models/{MODEL}/infer"
    good = json.dumps({"inputs": tensors(raw_records()[:2])}).encode()
    slow_heads, slow_bodies = [], []
    for _ in range(20):
        connection = socket.create_connection(("127.0.0.1", api), timeout=30)
        connection.sendall(b"POST " + infer.encode() + b" HTTP/1.1\r\nHost: te")  # ...and never the rest
        slow_heads.append(connection)
        connection = socket.create_connection(("127.0.0.1", api), timeout=30)
        connection.sendall(head(infer, f"Content-Length: {len(good)}") + good[:10])  # ...and never the rest
        slow_bodies.append(connection)

    # Meanwhile everyone else is served.
    status, body = call(api, "POST", infer, json.loads(good))
    assert status == 200 and body["model_version"] == "v1"

    for connection in slow_heads:
        assert connection.recv(65536) == b""  # closed without an answer: no request ever arrived
        connection.close()
    for connection in slow_bodies:
        status, error = status_and_body(read_answer(connection))
        assert status == 408 and "did not arrive" in error["error"]
        connection.close()
    assert requests_by_status(health)[("infer", "408")] == 20



def requests_by_status(health: int) -> dict[tuple[str, str], float]:
    status, text = call(health, "GET", "/metrics")
    return {(s.labels["endpoint"], s.labels["status"]): s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == "streamml_serve_requests_total"}
