"""The console's web app: a Starlette app of server-rendered pages (Jinja2), served by ``streamml.web``.

Every page goes through ``_page``, which gathers its values in a worker
thread (the registry is read with blocking calls), renders its template,
counts and times the request, and turns ``NotFound`` into a 404 page naming
what was not found, an unreachable store into 503, and anything unexpected
into a 500 that says only that the log has the details. Charts are drawn by
Plotly in the browser from ``/static/plotly-<version>.min.js``, the copy the
``plotly`` package ships; nothing is loaded from anywhere else, and the
Content-Security-Policy says so.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.responses import StreamingResponse
from starlette.routing import Route

from streamml.console import links
from streamml.console.actions import READ_ONLY, ActionRefused, ChampionActions, ChampionForm
from streamml.console.live import EventLog
from streamml.console.pages import NotFound, short_hash
from streamml.console.pages.datasets import dataset_page, dataset_version_page, datasets_overview
from streamml.console.pages.drift import drift_overview, drift_page
from streamml.console.pages.lineage import model_lineage, raw_lineage
from streamml.console.pages.loop import loop_page, stream
from streamml.console.pages.models import model_page, models_overview, version_page
from streamml.console.reads import ConsoleRegistry
from streamml.console.status import LoopStatus
from streamml.registry.keys import RegistryError
from streamml.store import StoreError
from streamml.web import HTTPError, read_body

log = logging.getLogger("streamml.console")

LATENCY = Histogram("streamml_console_request_seconds", "Time to answer a page", ["page"],
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5))
REQUESTS = Counter("streamml_console_requests_total", "Pages answered, by HTTP status", ["page", "status"])
STREAMS = Gauge("streamml_console_event_streams", "Browsers following the live event stream")

STATIC = Path(__file__).parent / "static"
PLOTLY_VERSION = importlib.metadata.version("plotly")
PLOTLY_JS = Path(importlib.util.find_spec("plotly").submodule_search_locations[0]) / "package_data" / "plotly.min.js"
SECURITY_HEADERS = {
    # Plotly sets inline styles on what it draws; every script and connection stays on this origin.
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                               "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
                               "form-action 'self'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


@dataclass
class Console:
    """What the pages read and do; the process (``server.py``) runs the feed and the health sampler behind them."""

    registry: ConsoleRegistry
    events: EventLog
    status: Callable[[], LoopStatus]  # the newest health and lag measurement
    actions: ChampionActions
    stopping: threading.Event


def templates() -> Environment:
    environment = Environment(loader=PackageLoader("streamml.console", "templates"),
                              autoescape=select_autoescape(default=True), undefined=StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True)
    environment.globals.update(links=links, short_hash=short_hash, number=number, plotly_js=plotly_url())
    return environment


def plotly_url() -> str:
    return f"/static/plotly-{PLOTLY_VERSION}.min.js"


def number(value: Any, digits: int = 4) -> str:
    """A metric or statistic as a person reads it: 4 significant digits, "–" for none."""
    if value is None:
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}g}"


def console_app(console: Console) -> Starlette:
    environment = templates()
    registry, events_log = console.registry, console.events

    def render(template: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
        body = environment.get_template(template).render(
            **context, read_only=not console.actions.enabled, read_only_note=READ_ONLY)
        return HTMLResponse(body, status, headers=SECURITY_HEADERS)

    def error_page(status: int, title: str, message: str) -> HTMLResponse:
        return render("error.html", {"title": title, "message": message}, status)

    def _page(name: str, template: str, build: Callable[[Request], dict[str, Any]]) -> Callable:
        async def endpoint(request: Request) -> Response:
            started = time.perf_counter()
            try:
                response = await run_in_threadpool(lambda: render(template, build(request)))
            except NotFound as missing:
                response = error_page(404, "Not found", str(missing))
            except StoreError as error:
                log.warning("object store error", extra={"page": name, "error": str(error)})
                response = error_page(503, "Object store unavailable", str(error))
            except Exception:  # noqa: BLE001 - the person sees a 500; the log has the traceback
                log.exception("page failed", extra={"page": name, "path": request.url.path})
                response = error_page(500, "Internal error", "the console's log has the details")
            LATENCY.labels(name).observe(time.perf_counter() - started)
            REQUESTS.labels(name, str(response.status_code)).inc()
            return response

        return endpoint

    def param(request: Request, name: str) -> Any:
        return request.path_params[name]

    def action(change: Callable[[ChampionActions, str, ChampionForm], Any]) -> Callable:
        async def endpoint(request: Request) -> Response:
            model = param(request, "model")
            try:
                form = ChampionForm.parse(await read_body(request.receive, request.headers.get("content-length"),
                                                          16 * 1024, 10))
                await run_in_threadpool(change, console.actions, model, form)
            except ActionRefused as refused:
                REQUESTS.labels("action", str(refused.status)).inc()
                return error_page(refused.status, "Nothing was changed" if refused.status != 502 else "Not announced",
                                  str(refused))
            except (HTTPError, RegistryError, StoreError) as error:
                status = error.status if isinstance(error, HTTPError) else 400
                return error_page(status, "Nothing was changed", str(error))
            REQUESTS.labels("action", "303").inc()
            return RedirectResponse(f"{links.model(model)}?changed=1", 303)

        return endpoint

    async def event_stream(request: Request) -> Response:
        after = request.headers.get("last-event-id") or request.query_params.get("after") or "0"
        try:
            last = int(after)
        except ValueError:
            return PlainTextResponse(f"after={after!r} must be an event number", 400)

        async def counted():
            STREAMS.inc()
            try:
                async for chunk in stream(events_log, console.status, last, console.stopping):
                    yield chunk
            finally:
                STREAMS.dec()

        return StreamingResponse(counted(), media_type="text/event-stream",
                                 headers={"cache-control": "no-store", "x-accel-buffering": "no"})

    async def static(request: Request) -> Response:
        name = param(request, "name")
        if name == plotly_url().rsplit("/", 1)[1]:
            return FileResponse(PLOTLY_JS, media_type="text/javascript",
                                headers={"cache-control": "public, max-age=604800, immutable"})
        if name in {"console.css", "console.js"}:
            return FileResponse(STATIC / name, headers={"cache-control": "no-cache"})
        return error_page(404, "Not found", f"no static file {name!r}")

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(request: Request) -> Response:
        ready = not console.stopping.is_set()
        return PlainTextResponse("ready\n" if ready else "stopping\n", 200 if ready else 503)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    async def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        return error_page(status, "Not found" if status == 404 else "Not allowed",
                          f"no page at {request.url.path} (status {status}); the menu lists what there is")

    def changed(request: Request) -> bool:
        return request.query_params.get("changed") == "1"

    routes = [
        Route("/", lambda request: RedirectResponse("/models", 307)),
        Route("/models", _page("models", "models.html", lambda r: models_overview(registry))),
        Route("/models/{model}", _page("model", "model.html", lambda r: {
            **model_page(registry, events_log, param(r, "model")), "changed": changed(r)})),
        Route("/models/{model}/versions/{version}", _page("version", "version.html", lambda r: version_page(
            registry, param(r, "model"), param(r, "version")))),
        Route("/models/{model}/promote", action(ChampionActions.promote), methods=["POST"]),
        Route("/models/{model}/rollback", action(ChampionActions.rollback), methods=["POST"]),
        Route("/lineage", _page("lineage", "lineage_index.html", lambda r: models_overview(registry))),
        Route("/lineage/models/{model}/{version}", _page("model lineage", "lineage.html", lambda r: model_lineage(
            registry, param(r, "model"), param(r, "version")))),
        Route("/lineage/raw/{key:path}", _page("raw lineage", "raw.html", lambda r: raw_lineage(
            registry, param(r, "key")))),
        Route("/datasets", _page("datasets", "datasets.html", lambda r: datasets_overview(registry))),
        Route("/datasets/{dataset}", _page("dataset", "dataset.html", lambda r: dataset_page(
            registry, param(r, "dataset")))),
        Route("/datasets/{dataset}/v{version:int}", _page("dataset version", "dataset_version.html",
                                                          lambda r: dataset_version_page(
                                                              registry, param(r, "dataset"), param(r, "version")))),
        Route("/drift", _page("drift", "drift_index.html", lambda r: drift_overview(registry))),
        Route("/drift/{model}", _page("model drift", "drift.html", lambda r: drift_page(
            registry, events_log, param(r, "model")))),
        Route("/loop", _page("loop", "loop.html", lambda r: loop_page(events_log, console.status()))),
        Route("/loop/events", event_stream),
        Route("/static/{name}", static),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: not_found, 404: not_found})
