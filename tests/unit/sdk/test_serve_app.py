"""The inference server's routes and error answers, with a stand-in for the model client.

The real server, with a real client, broker and store, is tested in
tests/integration/sdk/test_inference_server.py; here only what the HTTP
layer decides: which endpoint a path is counted under, and what an error
becomes.
"""

import asyncio
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from prometheus_client import REGISTRY

from services.serve.server import Limits, inference_app, route

pytestmark = pytest.mark.unit


class StandIn:
    """What the app uses of a ModelClient; ``predict`` raises what a test tells it to."""

    def __init__(self, error: Exception | None = None) -> None:
        self.model = f"m{uuid.uuid4().hex[:8]}"
        self.version, self.ready, self.error = "v1", True, error
        self.threads: list[str] = []
        self.slot = SimpleNamespace(current=lambda: SimpleNamespace(version="v1",
                                                                     transform=SimpleNamespace(features=("x",))))

    def card(self, version):
        return {}

    def predict(self, records, request_ids=None):
        self.threads.append(threading.current_thread().name)
        if self.error is not None:
            raise self.error
        return SimpleNamespace(version="v1", outputs=np.zeros(len(records)), request_ids=["r"] * len(records))

    def feedback(self, request_id, label):
        return True


class InProcess:
    """Requests to the app in this process, without a server."""

    def __init__(self, client: StandIn, inline_rows: int = 256) -> None:
        limits = Limits(max_request_bytes=4096, max_rows=100, body_timeout_s=5, inline_rows=inline_rows)
        self.asgi = inference_app(client, limits, ThreadPoolExecutor(1, thread_name_prefix="predict"))

    def request(self, method: str, path: str, json: object = None) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.asgi)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                return await http.request(method, path, json=json)

        return asyncio.run(send())

    def get(self, path: str) -> httpx.Response:
        return self.request("GET", path)

    def post(self, path: str, json: object) -> httpx.Response:
        return self.request("POST", path, json)


def counted(model: str, endpoint: str, status: str) -> float:
    return REGISTRY.get_sample_value("streamml_serve_requests_total",
                                     {"model": model, "endpoint": endpoint, "status": status}) or 0


BODY = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1], "data": [1.0]}]}


def test_each_path_is_counted_under_its_endpoint():
    client = StandIn()
    http = InProcess(client)
    m = client.model
    calls = [("GET", "/v2/health/live", "live"), ("GET", "/v2/health/ready", "ready"), ("GET", "/v2", "metadata"),
             ("GET", f"/v2/models/{m}", "metadata"), ("GET", f"/v2/models/{m}/ready", "ready"),
             ("POST", f"/v2/models/{m}/infer", "infer"), ("POST", f"/v2/models/{m}/versions/v1/infer", "infer"),
             ("POST", f"/v2/models/{m}/feedback", "feedback")]
    for method, path, endpoint in calls:
        body = {"request_id": "r", "label": 1} if path.endswith("feedback") else BODY
        answer = http.request(method, path, json=body if method == "POST" else None)
        assert answer.status_code == 200, (path, answer.text)
    assert counted(m, "infer", "200") == 2 and counted(m, "metadata", "200") == 2 and counted(m, "ready", "200") == 2


def test_another_model_version_or_route_is_a_json_404_and_a_wrong_method_a_405():
    client = StandIn()
    http = InProcess(client)
    assert http.post("/v2/models/churn/infer", json=BODY).json()["error"].startswith("model 'churn' is not served")
    answer = http.post(f"/v2/models/{client.model}/versions/v9/infer", json=BODY)
    assert answer.status_code == 404 and "'v9'" in answer.json()["error"]
    answer = http.get("/v1/models/fraud:predict")
    assert answer.status_code == 404 and "no route GET /v1/models/fraud:predict" in answer.json()["error"]
    answer = http.get(f"/v2/models/{client.model}/infer")
    assert answer.status_code == 405 and "does not take GET" in answer.json()["error"]
    assert counted(client.model, "other", "404") == 1


def test_an_unexpected_error_is_a_500_that_shows_nothing_of_it(caplog):
    client = StandIn(RuntimeError("token=s3cr3t at /srv/models/fraud"))
    answer = InProcess(client).post(f"/v2/models/{client.model}/infer", json=BODY)
    assert answer.status_code == 500
    assert answer.json() == {"error": "internal error; the server's log has the details"}
    assert "s3cr3t" not in answer.text and "RuntimeError" not in answer.text
    assert "s3cr3t" in caplog.text  # the operator sees it in the log
    assert counted(client.model, "infer", "500") == 1


def test_small_requests_are_predicted_on_the_event_loop_and_larger_ones_in_the_worker_threads():
    client = StandIn()
    app = InProcess(client, inline_rows=2)
    two = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [2], "data": [1.0, 2.0]}]}
    three = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [3], "data": [1.0, 2.0, 3.0]}]}
    for body in (BODY, two, three):
        assert app.post(f"/v2/models/{client.model}/infer", json=body).status_code == 200
    assert [name.split("_")[0] for name in client.threads] == ["MainThread", "MainThread", "predict"]


@pytest.mark.parametrize("path", ["/v2/models", "/v2/models/", "/v2/models//infer", "/v2/models/m/versions",
                                  "/v2/models/m/versions/", "/v2/models/m/infer/more", "/v2/health", "/v3/models/m"])
def test_a_path_near_a_route_is_no_route(path):
    assert route(path) is None


def test_a_path_names_its_endpoint_model_and_version():
    assert route("/v2/models/fraud/versions/d3-abc/infer") == ("infer", "POST", "fraud", "d3-abc")
    assert route("/v2/models/fraud") == ("metadata", "GET", "fraud", None)
    assert route("/v2/models/fraud/versions/v2") == ("metadata", "GET", "fraud", "v2")
    assert route("/v2/health/ready") == ("ready", "GET", None, None)
