"""The Open Inference Protocol (V2) over HTTP: a Starlette app on streamml's web stack (``streamml.web``).

Every route goes through ``_endpoint``, which times and counts the request,
turns a request error into 400/404/408/413 with a message that says what to
change, 503 before a model is loaded, and anything unexpected into a bare
500 (the traceback goes to the log).

Predictions run on a pool of worker threads, one per core, so the event
loop parses the next requests while torch computes (it releases the GIL).
Measured with bench/serve on two shared cores, one-row requests from four
clients: predicting on the loop itself cost about 5% less CPU per prediction
but served 10-15% fewer predictions per second with a longer tail; Starlette's
own thread pool (anyio) cost about twice the CPU per hand-off of this executor.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Histogram
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.serve.protocol import BadRequest, infer_response, model_metadata, parse_infer
from streamml.sdk.client import ModelClient
from streamml.sdk.input_checks import InputRejected
from streamml.sdk.preprocess import PreprocessError
from streamml.sdk.swap import NoModelLoaded
from streamml.web import INTERNAL_ERROR, HTTPError, decode_json, json_response, read_body

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
Handler = Callable[[Request], Awaitable[Any]]


@dataclass(frozen=True)
class Limits:
    max_request_bytes: int
    max_rows: int
    body_timeout_s: float


def inference_app(client: ModelClient, limits: Limits, predictions: Executor) -> Starlette:
    """The app; ``predictions`` runs ``client.predict`` (one thread per core serves best, see the module doc)."""
    model = client.model
    rows = ROWS.labels(model)

    def served(request: Request) -> None:
        """404 unless the path names the served model (and version, when it names one)."""
        name, version = request.path_params["name"], request.path_params.get("version")
        if name != model:
            raise HTTPError(404, f"model {name!r} is not served here; {model!r} is")
        if version is not None and version != client.version:
            raise HTTPError(404, f"version {version!r} is not served; {client.version!r} is (omit /versions/...)")

    async def body(request: Request) -> Any:
        return decode_json(await read_body(request, limits.max_request_bytes, limits.body_timeout_s))

    async def live(request: Request) -> Any:
        return {"live": True}

    async def ready(request: Request) -> Any:
        if "name" in request.path_params:
            served(request)
        return (200, {"ready": True}) if client.ready else (503, {"ready": False})

    async def server_metadata(request: Request) -> Any:
        return {"name": "streamml-serve", "version": "2", "extensions": ["feedback"]}

    async def metadata(request: Request) -> Any:
        served(request)
        snapshot = client.slot.current()
        return model_metadata(model, snapshot.version, client.card(snapshot.version) or {})

    async def infer(request: Request) -> Any:
        served(request)
        parsed = parse_infer(await body(request), client.slot.current().transform.features, limits.max_rows)
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(predictions, client.predict, parsed.records, parsed.request_ids)
        rows.inc(len(parsed.records))
        return infer_response(model, result.version, result.outputs, result.request_ids, parsed.id)

    async def feedback(request: Request) -> Any:
        served(request)
        sent = await body(request)
        if not isinstance(sent, dict) or not isinstance(sent.get("request_id"), str) or "label" not in sent:
            raise BadRequest('feedback takes {"request_id": "<id from an infer response>", "label": <value>}')
        label = sent["label"]
        if not isinstance(label, int | float | str) or isinstance(label, bool):
            raise BadRequest(f"label {label!r} must be a number or a string")
        if not client.feedback(sent["request_id"], label):
            raise HTTPError(503, "feedback cannot be queued now (the broker is away); send it again later")
        return {"request_id": sent["request_id"], "accepted": True}

    def _endpoint(name: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        latency, ok = LATENCY.labels(model, name), REQUESTS.labels(model, name, "200")

        async def run(request: Request) -> Response:
            started = time.perf_counter()
            close = False
            try:
                answer = await handler(request)
                status, answer = answer if isinstance(answer, tuple) else (200, answer)
            except HTTPError as error:
                status, answer, close = error.status, {"error": str(error)}, error.close
            except (BadRequest, PreprocessError, InputRejected) as error:
                status, answer = 400, {"error": str(error)}
            except NoModelLoaded as error:
                status, answer = 503, {"error": str(error)}
            except Exception:  # noqa: BLE001 - a request gets an answer, never a dropped connection or internals
                log.exception("request failed", extra={"path": request.url.path, "endpoint": name})
                status, answer = 500, INTERNAL_ERROR
            response = json_response(status, answer, close)
            (ok if status == 200 else REQUESTS.labels(model, name, str(status))).inc()
            latency.observe(time.perf_counter() - started)
            return response

        return run

    def routes(path: str, name: str, handler: Handler, method: str) -> list[Route]:
        """The route and, for a model path, its ``/versions/{version}`` twin."""
        paths = [path]
        if path.startswith("/v2/models/{name}"):
            paths.append(path.replace("{name}", "{name}/versions/{version}"))
        return [Route(p, _endpoint(name, handler), methods=[method]) for p in paths]

    async def not_found(request: Request, error: HTTPException) -> Response:
        REQUESTS.labels(model, "other", str(error.status_code)).inc()
        if error.status_code == 405:
            return json_response(405, {"error": f"{request.url.path} does not take {request.method}"})
        return json_response(404, {"error": f"no route {request.method} {request.url.path}; see /v2/models/{model}"})

    return Starlette(
        routes=[  # the busiest first: routes are tried in order
            *routes("/v2/models/{name}/infer", "infer", infer, "POST"),
            *routes("/v2/models/{name}/feedback", "feedback", feedback, "POST"),
            *routes("/v2/health/live", "live", live, "GET"),
            *routes("/v2/health/ready", "ready", ready, "GET"),
            *routes("/v2", "metadata", server_metadata, "GET"),
            *routes("/v2/models/{name}", "metadata", metadata, "GET"),
            *routes("/v2/models/{name}/ready", "ready", ready, "GET"),
        ],
        exception_handlers={404: not_found, 405: not_found},
    )
