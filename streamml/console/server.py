"""The console process: ``python -m streamml.console`` or ``streamml console``.

Settings as for every service (exit 2 on a bad value); Kafka and the object
store must answer at start (exit 3 naming the setting); then the live feed
and the health sampler start, the pages are served on
``STREAMML_HTTP_HOST:STREAMML_HTTP_PORT`` (127.0.0.1:8090 by default), and
SIGTERM or Ctrl-C ends the event streams, lets running requests finish
(``STREAMML_CONSOLE_GRACE_S``) and stops.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading

from streamml.console.actions import ChampionActions
from streamml.console.app import Console, console_app
from streamml.console.live import EventLog, LiveFeed, SeenEvent, event_model_version
from streamml.console.reads import ConsoleRegistry
from streamml.console.settings import SERVICE_GROUPS, ConsoleSettings
from streamml.console.status import StatusSampler
from streamml.kafka import KafkaUnavailable, check_reachable
from streamml.logs import configure_logging
from streamml.service import EXIT_UNAVAILABLE, answer_arguments
from streamml.settings import EXIT_BAD_SETTINGS, load_settings_or_exit
from streamml.store import ObjectStore, StoreError
from streamml.web import WebServer

log = logging.getLogger("streamml.console")


class ConsoleService:
    """What ``--help`` needs to list the console's settings the way every service lists its own."""

    name = "console"


def run(settings: ConsoleSettings, stopping: threading.Event) -> None:
    """Serve until ``stopping`` is set."""
    try:
        check_reachable(settings.kafka)
        store = ObjectStore.connect(settings.s3)
    except (KafkaUnavailable, StoreError) as error:
        _exit(str(error), EXIT_UNAVAILABLE)
    registry = ConsoleRegistry(store)
    events = EventLog(settings.console.recent_events)
    feed = LiveFeed(settings.kafka, events, on_event=lambda seen: _forget(registry, seen))
    sampler = StatusSampler(settings.kafka, store, SERVICE_GROUPS, settings.console.status_interval_s)
    actions = ChampionActions(store, settings.kafka, settings.console.token)
    console = Console(registry, events, lambda: sampler.latest, actions, stopping)
    http = settings.http
    try:
        server = WebServer(console_app(console), http.host, http.port, max_connections=settings.console.max_connections,
                           grace_s=settings.console.grace_s)
    except OSError as error:
        _exit(f"cannot listen on STREAMML_HTTP_HOST/PORT {http.host}:{http.port}: {error}", EXIT_BAD_SETTINGS)
    feed.start()
    sampler.start()
    server.start()
    mode = "promote and rollback enabled" if console.actions.enabled else "read-only"
    log.info(f"console at http://{http.host}:{server.port} ({mode})", extra={"http_port": server.port})
    stopping.wait()
    log.info("stopping")
    server.stop()
    feed.stop()
    sampler.stop()
    registry.close()
    log.info("stopped")


def _forget(registry: ConsoleRegistry, seen: SeenEvent) -> None:
    if (judged := event_model_version(seen.event)) is not None:
        registry.forget_version(*judged)


def _exit(message: str, code: int) -> None:
    log.error(message)
    print(f"streamml: {message}", file=sys.stderr)
    raise SystemExit(code)


def main() -> None:
    """``python -m streamml.console``: no arguments but ``--help``, which lists the settings."""
    if len(sys.argv) > 1:
        answer_arguments(ConsoleService, ConsoleSettings, sys.argv)
    serve()


def serve() -> None:
    """Load the settings, log as JSON lines, serve until SIGTERM or Ctrl-C."""
    settings = load_settings_or_exit(ConsoleSettings)
    configure_logging(settings.log, "console")
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    run(settings, stopping)
