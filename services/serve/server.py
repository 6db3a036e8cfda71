"""The Open Inference Protocol (V2) over HTTP: a bare ASGI app on streamml's web stack (``streamml.web``).

The app dispatches on the path itself instead of going through a framework's
router and middleware: the request path is the busiest code of the server,
and measured with ``bench/serve/ceiling.py`` the framework cost as much CPU
per one-row request as the prediction. Every endpoint goes through
``_answer``, which times and counts the request, turns a request error into
400/404/405/408/413 with a message that says what to change, 503 before a
model is loaded, and anything unexpected into a bare 500 (the traceback goes
to the log).

A request of up to ``inline_rows`` rows is predicted on the event loop
itself; a larger one on a pool of worker threads, one per core, so that it
does not hold up the requests behind it while torch computes (it releases
the GIL). Handing a small request to a worker cost more than predicting it:
the hand-off wakes a thread, which then waits for the GIL the loop holds
(measured with bench/serve/ceiling.py, see the README).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import msgspec
from prometheus_client import Counter, Histogram

from services.serve.protocol import BadRequest, infer_response, model_metadata, parse_infer
from streamml.sdk.client import ModelClient
from streamml.sdk.input_checks import InputRejected
from streamml.sdk.preprocess import PreprocessError
from streamml.sdk.swap import NoModelLoaded
from streamml.web import INTERNAL_ERROR, HTTPError, decode_json, read_body

log = logging.getLogger("streamml.serve")

LATENCY = Histogram(
    "streamml_serve_request_seconds", "Time from request head to response", ["model", "endpoint"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
)
REQUESTS = Counter(
    "streamml_serve_requests_total", "Requests by endpoint and HTTP status", ["model", "endpoint", "status"]
)
ROWS = Counter("streamml_serve_rows_total", "Rows predicted", ["model"])

# A handler returns the JSON body of a 200, or (status, body).
Handler = Callable[["Call"], Awaitable[Any]]
ASGIApp = Callable[[dict, Callable, Callable], Awaitable[None]]
JSON = (b"content-type", b"application/json")
CLOSE = (b"connection", b"close")
# The endpoints under /v2/models/{name}[/versions/{version}]: what follows the name, and its method.
MODEL_ENDPOINTS = {"infer": ("infer", "POST"), "feedback": ("feedback", "POST"),
                   "": ("metadata", "GET"), "ready": ("ready", "GET")}
SERVER_ENDPOINTS = {"/v2/health/live": ("live", "GET"), "/v2/health/ready": ("ready", "GET"),
                    "/v2": ("metadata", "GET")}


@dataclass(frozen=True)
class Limits:
    max_request_bytes: int
    max_rows: int
    body_timeout_s: float
    inline_rows: int = 256  # requests of up to this many rows are predicted on the event loop


@dataclass(frozen=True, slots=True)
class Call:
    """One request as a handler sees it: the model and version its path names, and its body."""

    name: str | None
    version: str | None
    receive: Callable[[], Awaitable[dict]]
    content_length: str | None


def route(path: str) -> tuple[str, str, str | None, str | None] | None:
    """(endpoint, its method, model name, version) for ``path``; None when no endpoint has it."""
    if path in SERVER_ENDPOINTS:
        return (*SERVER_ENDPOINTS[path], None, None)
    parts = path.split("/")  # "", "v2", "models", name, ...
    if len(parts) < 4 or parts[1] != "v2" or parts[2] != "models" or not parts[3]:
        return None
    name, rest, version = parts[3], parts[4:], None
    if len(rest) >= 2 and rest[0] == "versions" and rest[1]:
        version, rest = rest[1], rest[2:]
    if len(rest) > 1 or tuple(rest) == ("versions",):
        return None
    found = MODEL_ENDPOINTS.get(rest[0] if rest else "")
    return None if found is None else (*found, name, version)


def _content_length(scope: dict) -> str | None:
    for key, value in scope["headers"]:
        if key == b"content-length":
            return value.decode("latin-1")
    return None


async def _send_json(send: Callable, status: int, body: Any, close: bool = False) -> None:
    data = msgspec.json.encode(body)
    headers = [JSON, (b"content-length", str(len(data)).encode())]
    if close:
        headers.append(CLOSE)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def inference_app(client: ModelClient, limits: Limits, predictions: Executor) -> ASGIApp:
    """The app; ``predictions`` runs ``client.predict`` for requests of more than ``limits.inline_rows`` rows
    (one thread per core serves best, see the module doc)."""
    model = client.model
    rows = ROWS.labels(model)

    def served(call: Call) -> None:
        """404 unless the path names the served model (and version, when it names one)."""
        if call.name != model:
            raise HTTPError(404, f"model {call.name!r} is not served here; {model!r} is")
        if call.version is not None and call.version != client.version:
            raise HTTPError(404, f"version {call.version!r} is not served; {client.version!r} is (omit /versions/...)")

    async def body(call: Call) -> Any:
        return decode_json(await read_body(call.receive, call.content_length, limits.max_request_bytes,
                                           limits.body_timeout_s))

    async def live(call: Call) -> Any:
        return {"live": True}

    async def ready(call: Call) -> Any:
        if call.name is not None:
            served(call)
        return (200, {"ready": True}) if client.ready else (503, {"ready": False})

    async def metadata(call: Call) -> Any:
        if call.name is None:
            return {"name": "streamml-serve", "version": "2", "extensions": ["feedback"]}
        served(call)
        snapshot = client.slot.current()
        return model_metadata(model, snapshot.version, client.card(snapshot.version) or {})

    async def infer(call: Call) -> Any:
        served(call)
        parsed = parse_infer(await body(call), client.slot.current().transform.features, limits.max_rows)
        if len(parsed.records) <= limits.inline_rows:
            result = client.predict(parsed.records, parsed.request_ids)
        else:
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(predictions, client.predict, parsed.records, parsed.request_ids)
        rows.inc(len(parsed.records))
        return infer_response(model, result.version, result.outputs, result.request_ids, parsed.id)

    async def feedback(call: Call) -> Any:
        served(call)
        sent = await body(call)
        if not isinstance(sent, dict) or not isinstance(sent.get("request_id"), str) or "label" not in sent:
            raise BadRequest('feedback takes {"request_id": "<id from an infer response>", "label": <value>}')
        label = sent["label"]
        if not isinstance(label, int | float | str) or isinstance(label, bool):
            raise BadRequest(f"label {label!r} must be a number or a string")
        if not client.feedback(sent["request_id"], label):
            raise HTTPError(503, "feedback cannot be queued now (the broker is away); send it again later")
        return {"request_id": sent["request_id"], "accepted": True}

    handlers: dict[str, Handler] = {"infer": infer, "feedback": feedback, "live": live, "ready": ready,
                                    "metadata": metadata}
    timers = {name: LATENCY.labels(model, name) for name in handlers}
    ok = {name: REQUESTS.labels(model, name, "200") for name in handlers}

    async def _answer(endpoint: str, call: Call, send: Callable, path: str) -> None:
        started = time.perf_counter()
        close = False
        try:
            answer = await handlers[endpoint](call)
            status, answer = answer if isinstance(answer, tuple) else (200, answer)
        except HTTPError as error:
            status, answer, close = error.status, {"error": str(error)}, error.close
        except (BadRequest, PreprocessError, InputRejected) as error:
            status, answer = 400, {"error": str(error)}
        except NoModelLoaded as error:
            status, answer = 503, {"error": str(error)}
        except Exception:  # noqa: BLE001 - a request gets an answer, never a dropped connection or internals
            log.exception("request failed", extra={"path": path, "endpoint": endpoint})
            status, answer = 500, INTERNAL_ERROR
        await _send_json(send, status, answer, close)
        (ok[endpoint] if status == 200 else REQUESTS.labels(model, endpoint, str(status))).inc()
        timers[endpoint].observe(time.perf_counter() - started)

    async def app(scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":  # no lifespan or websockets: the server runs with lifespan off
            return
        method, path = scope["method"], scope["path"]
        found = route(path)
        if found is None:
            REQUESTS.labels(model, "other", "404").inc()
            await _send_json(send, 404, {"error": f"no route {method} {path}; see /v2/models/{model}"})
            return
        endpoint, wanted, name, version = found
        if method != wanted:
            REQUESTS.labels(model, "other", "405").inc()
            await _send_json(send, 405, {"error": f"{path} does not take {method}"})
            return
        await _answer(endpoint, Call(name, version, receive, _content_length(scope)), send, path)

    return app
