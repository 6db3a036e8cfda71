"""The Open Inference Protocol (V2) over HTTP/1.1, on the standard library's threaded server.

One thread per connection; connections are kept alive, so a client with a
pool of connections gets one serving thread per connection. Predictions run
without a lock (see ``streamml.sdk.swap``), and torch releases the GIL while
it computes.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import Counter, Histogram

from services.serve.protocol import BadRequest, infer_response, model_metadata, parse_infer
from streamml.sdk.client import ModelClient
from streamml.sdk.preprocess import PreprocessError
from streamml.sdk.swap import NoModelLoaded

log = logging.getLogger("streamml.serve")

MODEL_PATH = re.compile(
    r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?(?P<verb>/ready|/infer|/feedback)?$"
)

LATENCY = Histogram(
    "streamml_serve_request_seconds", "Time from request read to response written", ["model", "endpoint"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
)
REQUESTS = Counter(
    "streamml_serve_requests_total", "Requests by endpoint and HTTP status", ["model", "endpoint", "status"]
)
ROWS = Counter("streamml_serve_rows_total", "Rows predicted", ["model"])


class InferenceHTTPServer:
    def __init__(self, client: ModelClient, host: str, port: int, max_request_bytes: int, max_rows: int) -> None:
        handler = _handler(client, max_request_bytes, max_rows)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="oip-http", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(client: ModelClient, max_request_bytes: int, max_rows: int) -> type[BaseHTTPRequestHandler]:
    model = client.model

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: no new connection per request
        # Headers and body leave in two writes; with Nagle on, the body waits for the
        # client's delayed ACK of the headers (40 ms per response).
        disable_nagle_algorithm = True

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self._route("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._route("POST")

        def _route(self, method: str) -> None:
            started = time.perf_counter()
            path = self.path.split("?", 1)[0]
            endpoint = endpoint_of(path)
            try:
                status, body = self._dispatch(method, path, endpoint)
            except (BadRequest, PreprocessError) as error:
                status, body = HTTPStatus.BAD_REQUEST, {"error": str(error)}
            except NoModelLoaded as error:
                status, body = HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(error)}
            except Exception as error:  # noqa: BLE001 - a request must get an answer, never a dropped connection
                log.exception("request failed", extra={"path": self.path})
                status, body = HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"{type(error).__name__}: {error}"}
            self._reply(status, body)
            REQUESTS.labels(model, endpoint, str(int(status))).inc()
            LATENCY.labels(model, endpoint).observe(time.perf_counter() - started)

        def _dispatch(self, method: str, path: str, endpoint: str) -> tuple[HTTPStatus, Any]:
            body = self._read_body()
            if endpoint == "other":
                return HTTPStatus.NOT_FOUND, {"error": f"no route {method} {path}; see /v2/models/{model}"}
            wanted = "POST" if endpoint in ("infer", "feedback") else "GET"
            if method != wanted:
                return HTTPStatus.METHOD_NOT_ALLOWED, {"error": f"{path} takes {wanted}"}
            if path == "/v2/health/live":
                return HTTPStatus.OK, {"live": True}
            if path == "/v2/health/ready":
                return _readiness(client.ready)
            if path == "/v2":
                return HTTPStatus.OK, {"name": "streamml-serve", "version": "2", "extensions": ["feedback"]}
            match = MODEL_PATH.match(path)
            if match["name"] != model:
                return HTTPStatus.NOT_FOUND, {"error": f"model {match['name']!r} is not served here; {model!r} is"}
            if match["version"] is not None and match["version"] != client.version:
                return HTTPStatus.NOT_FOUND, {
                    "error": f"version {match['version']!r} is not served; {client.version!r} is (omit /versions/...)"}
            if endpoint == "ready":
                return _readiness(client.ready)
            if endpoint == "metadata":
                return HTTPStatus.OK, self._metadata()
            if endpoint == "feedback":
                return HTTPStatus.OK, self._feedback(body)
            return HTTPStatus.OK, self._infer(body)

        def _metadata(self) -> dict[str, Any]:
            snapshot = client.slot.current()
            return model_metadata(model, snapshot.version, client.card(snapshot.version) or {})

        def _infer(self, body: Any) -> dict[str, Any]:
            request = parse_infer(body, client.slot.current().transform.features, max_rows)
            result = client.predict(request.records, request.request_ids)
            ROWS.labels(model).inc(len(request.records))
            return infer_response(model, result.version, result.outputs, result.request_ids, request.id)

        def _feedback(self, body: Any) -> dict[str, Any]:
            if not isinstance(body, dict) or not isinstance(body.get("request_id"), str) or "label" not in body:
                raise BadRequest('feedback takes {"request_id": "<id from an infer response>", "label": <value>}')
            label = body["label"]
            if not isinstance(label, int | float | str) or isinstance(label, bool):
                raise BadRequest(f"label {label!r} must be a number or a string")
            client.feedback(body["request_id"], label)
            return {"request_id": body["request_id"], "accepted": True}

        def _read_body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            if length > max_request_bytes:
                self.close_connection = True  # the unread body would be taken for the next request
                raise BadRequest(f"body of {length} bytes exceeds STREAMML_SERVE_MAX_REQUEST_BYTES={max_request_bytes}")
            if not length:
                return None
            try:
                return json.loads(self.rfile.read(length))
            except ValueError as error:
                raise BadRequest(f"body is not JSON: {error}") from None

        def _reply(self, status: HTTPStatus, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass  # one line per request would cost more than the prediction

    return Handler


def endpoint_of(path: str) -> str:
    """The endpoint label of a request path: live, ready, metadata, infer, feedback or other."""
    if path == "/v2/health/live":
        return "live"
    if path == "/v2/health/ready":
        return "ready"
    if path == "/v2":
        return "metadata"
    match = MODEL_PATH.match(path)
    if match is None:
        return "other"
    return (match["verb"] or "").lstrip("/") or "metadata"


def _readiness(ready: bool) -> tuple[HTTPStatus, dict[str, bool]]:
    return (HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE), {"ready": ready}
