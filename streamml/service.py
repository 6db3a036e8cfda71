"""One lifecycle for every streamml service: load, ready, serve, stop.

    class Trainer(ConsumerService):
        name = "trainer"
        def handle(self, messages): ...

    if __name__ == "__main__":
        run(Trainer, TrainerSettings)

``run`` validates settings (exit 2 on a bad value), starts the health and
metrics endpoint, calls ``load`` (exit 3 when Kafka or the object store
cannot be reached), then ``serve`` until SIGTERM/SIGINT, then ``close``.

Once loaded, an outage of Kafka or the object store stops nothing: the work
that met it is retried as ``streamml.faults`` says, and ``/readyz`` answers
503 while a dependency is away.
"""

from __future__ import annotations

import logging
import signal
import sys
import textwrap
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar, Generic, NoReturn, TypeVar

from confluent_kafka import KafkaError, KafkaException, Message
from confluent_kafka.admin import AdminClient
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest

from streamml.events import Event, EventError, decode
from streamml.faults import KAFKA, OBJECT_STORE, FaultPolicy, Interrupted, transient_dependency
from streamml.kafka import BatchConsumer, DeadLetters, EventProducer, KafkaUnavailable
from streamml.kafka import check_reachable
from streamml.logs import configure_logging
from streamml.settings import (
    CONFIG_FILE_ENV,
    EXIT_BAD_SETTINGS,
    HttpSettings,
    ServiceSettings,
    load_settings_or_exit,
    settings_help,
)
from streamml.store import ObjectStore, StoreError

EXIT_UNAVAILABLE = 3
# How often a loaded service checks that Kafka and the object store answer, and how long it waits for each.
PROBE_INTERVAL_S = 5.0
PROBE_TIMEOUT_S = 2.0
log = logging.getLogger("streamml.service")

S = TypeVar("S", bound=ServiceSettings)
T = TypeVar("T")

UP = Gauge("streamml_service_ready", "1 when the service is ready to serve", ["service"],
           multiprocess_mode="livemax")  # used when a service's processes share their metrics


class StartupError(Exception):
    """A dependency is missing or unreachable; the message names the setting."""


class Service(ABC, Generic[S]):
    name: ClassVar[str]
    # Whether this process checks its dependencies in the background for ``/readyz``.
    watches_dependencies: ClassVar[bool] = True

    def __init__(self, settings: S) -> None:
        self.settings = settings
        self.stopping = threading.Event()
        self.faults = FaultPolicy(self.name)
        # Set by ``load`` when the service depends on Kafka and the object store.
        self.dependencies: DependencyWatch | None = None

    @abstractmethod
    def load(self) -> None:
        """Connect to dependencies; raise StartupError naming what is wrong."""

    @abstractmethod
    def ready(self) -> bool:
        """True once the service can do its work."""

    @abstractmethod
    def serve(self) -> None:
        """Do the work until ``self.stopping`` is set."""

    def stop(self) -> None:
        """Ask ``serve`` to return after the current unit of work."""
        self.stopping.set()

    def close(self) -> None:
        """Release what ``load`` acquired; runs after ``serve`` returns."""

    def metrics(self) -> bytes:
        """The Prometheus text served at ``/metrics``."""
        return generate_latest()

    def serving(self) -> bool:
        """What ``/readyz`` says: loaded, not stopping, and no dependency away."""
        if not self.ready() or self.stopping.is_set() or self.faults.outages:
            return False
        return self.dependencies is None or self.dependencies.available

    def retry(self, operation: Callable[[], T]) -> T:
        """``operation()`` under the fault policy: transient errors are waited out; Interrupted on stop."""
        return self.faults.retry(operation, self.stopping)

    def broker_error(self, error: KafkaError) -> None:
        """A Kafka client's ``on_error``: every broker unreachable starts (or continues) an outage."""
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            self.faults.failed(KAFKA, KafkaException(error))

    def connect_dependencies(self) -> ObjectStore:
        """Check that Kafka answers and connect to the object store; StartupError names the setting.

        From then on the dependencies are checked every PROBE_INTERVAL_S, for ``/readyz``."""
        try:
            check_reachable(self.settings.kafka)
            store = ObjectStore.connect(self.settings.s3)
        except (KafkaUnavailable, StoreError) as error:
            raise StartupError(str(error)) from None
        if self.watches_dependencies:
            self.dependencies = DependencyWatch(self.settings, self.faults)
        return store


class DependencyWatch:
    """Checks in the background that Kafka and the object store answer, so an idle service knows too."""

    def __init__(self, settings: ServiceSettings, faults: FaultPolicy) -> None:
        self.faults = faults
        self.available = True
        self._store = ObjectStore.for_probing(settings.s3, PROBE_TIMEOUT_S)
        # Its failures are reported once, by the policy; librdkafka would log every retry.
        self._admin = AdminClient({**settings.kafka.client_config(), "socket.timeout.ms": int(PROBE_TIMEOUT_S * 1000),
                                   "log_level": 0})
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dependency-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(PROBE_INTERVAL_S):
            self.available = all([self._check(OBJECT_STORE, self._store.check),
                                  self._check(KAFKA, lambda: self._admin.list_topics(timeout=PROBE_TIMEOUT_S))])

    def _check(self, dependency: str, probe: Callable[[], object]) -> bool:
        try:
            probe()
        except Exception as error:  # noqa: BLE001 - any failure means not ready; transient ones are outages
            if transient_dependency(error) is not None:
                self.faults.failed(dependency, error)
            return False
        self.faults.succeeded(dependency)
        return True

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(PROBE_TIMEOUT_S * 3)


class ConsumerService(Service[S]):
    """A service that consumes its input topics in a consumer group.

    Subclasses set ``name``, ``group`` and ``input_topics`` and implement
    ``handle``; the loop commits what ``handle`` returns as done.

    ``load`` creates the consumer and ``serve`` joins the group (a subclass
    that overrides ``serve`` calls ``consumer.subscribe()`` first): partitions
    go only to a member that is ready to poll them, never to one still loading.
    """

    group: ClassVar[str]
    max_batch: ClassVar[int] = 500

    def input_topics(self) -> list[str]:
        raise NotImplementedError

    def load(self) -> None:
        kafka = self.settings.kafka
        self.store = self.connect_dependencies()
        self.producer = EventProducer(kafka, client_id=self.name, on_error=self.broker_error)
        self.dead_letters = DeadLetters(self.producer, self.name)
        self.consumer = BatchConsumer(
            kafka,
            group=kafka.group_prefix + self.group,
            topics=self.input_topics(),
            client_id=self.name,
            on_assign=self.on_assign,
            on_revoke=self.on_revoke,
            subscribe=False,
            on_error=self.broker_error,
        )
        self._ready = True

    def ready(self) -> bool:
        return getattr(self, "_ready", False)

    def serve(self) -> None:
        self.consumer.subscribe()
        while not self.stopping.is_set():
            messages = self.consumer.poll(self.max_batch, timeout=0.5)
            done = self.handle(messages)
            self.retry(self.producer.flush)  # what handling sent is durable before the commit
            self.retry(lambda: self.consumer.commit(done))
            if len(done) < len(messages) and not self.stopping.is_set():
                self.consumer.rewind(messages, done)
            self.retry(self.tick)

    def tick(self) -> None:
        """Called after every poll, busy or idle: time-based work goes here."""

    @abstractmethod
    def handle(self, messages: list[Message]) -> list[Message]:
        """Process a batch (possibly empty); return the messages that are done."""

    def on_assign(self, partitions: list) -> None:
        log.info("partitions assigned", extra={"partitions": _names(partitions)})

    def on_revoke(self, partitions: list) -> None:
        log.info("partitions revoked", extra={"partitions": _names(partitions)})

    def close(self) -> None:
        if hasattr(self, "consumer"):
            self.consumer.close()
        if hasattr(self, "producer"):
            self.producer.flush(10)


class EventService(ConsumerService[S]):
    """Consumes streamml events one by one; what is not a valid event goes to the DLQ.

    An event whose handling meets a transient error (see ``streamml.faults``)
    is handled again once the dependency answers; any other error sends it
    to the dead-letter topic, so one poison event never blocks its partition.
    """

    accepts: ClassVar[tuple[type[Event], ...]]
    # Raised when the service stops in the middle of an event: it stays
    # uncommitted (handled again after the restart), neither retried nor dead-lettered.
    interrupts: ClassVar[tuple[type[Exception], ...]] = ()

    def handle(self, messages: list[Message]) -> list[Message]:
        done = []
        for message in messages:
            if self.stopping.is_set():
                break
            try:
                self._handle_one(message)
            except (Interrupted, *self.interrupts):
                break
            done.append(message)
        return done

    def _handle_one(self, message: Message) -> None:
        try:
            event, attributes = decode(message.headers(), message.key(), message.value())
        except EventError as error:
            self.dead_letters.send(message, str(error), "invalid_event")
            return
        if not isinstance(event, self.accepts):
            self.dead_letters.send(message, f"{self.name} does not handle {event.ce_type()}", "unexpected_event")
            return
        context = {"event_id": attributes.get("id"), "event_type": event.ce_type()}
        try:
            self.retry(lambda: self.handle_event(event, context))
        except (Interrupted, *self.interrupts):
            raise
        except Exception as error:
            log.exception("event failed; sent to the dead-letter topic", extra=context)
            self.dead_letters.send(message, f"{type(error).__name__}: {error}", "processing_error")

    @abstractmethod
    def handle_event(self, event: Event, context: dict) -> None:
        """Make the event's side effect durable; must be idempotent (events are redelivered)."""


def _names(partitions: list) -> list[str]:
    return [f"{p.topic}[{p.partition}]" for p in partitions]


class HealthServer:
    """``/healthz`` (alive), ``/readyz`` (ready to serve) and ``/metrics`` on one port."""

    def __init__(self, settings: HttpSettings, service: Service) -> None:
        self.service = service
        handler = _handler(service)
        self._server = ThreadingHTTPServer((settings.host, settings.port), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(service: Service) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path == "/healthz":
                self._reply(200, b"ok\n", "text/plain")
            elif self.path == "/readyz":
                ready = service.serving()
                self._reply(200 if ready else 503, b"ready\n" if ready else b"not ready\n")
            elif self.path == "/metrics":
                self._reply(200, service.metrics(), CONTENT_TYPE_LATEST)
            else:
                self._reply(404, b"not found: try /healthz, /readyz or /metrics\n")

        def _reply(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass  # probes every few seconds would drown the service's own logs

    return Handler


def run(service_cls: type[Service[S]], settings_cls: type[S]) -> None:
    """Run a service to completion; exits the process with its status."""
    if len(sys.argv) > 1:
        answer_arguments(service_cls, settings_cls, sys.argv)
    settings = load_settings_or_exit(settings_cls)
    configure_logging(settings.log, service_cls.name)
    service = service_cls(settings)
    signal.signal(signal.SIGTERM, lambda *_: service.stop())
    signal.signal(signal.SIGINT, lambda *_: service.stop())
    try:
        health = HealthServer(settings.http, service)
    except OSError as error:
        _fail(f"cannot listen on STREAMML_HTTP_HOST/PORT {settings.http.host}:{settings.http.port}: {error}", 2)
    health.start()
    log.info("starting", extra={"http_port": health.port})
    started = time.monotonic()
    try:
        service.load()
    except StartupError as error:
        health.stop()
        _fail(str(error), EXIT_UNAVAILABLE)
    UP.labels(service_cls.name).set(1)
    log.info("ready", extra={"load_seconds": round(time.monotonic() - started, 3)})
    try:
        service.serve()
    except Interrupted as stopped:
        log.info("stopped while a dependency was away; the unfinished work is done again after the restart",
                 extra={"reason": str(stopped)})
    finally:
        UP.labels(service_cls.name).set(0)
        log.info("stopping")
        if service.dependencies is not None:
            service.dependencies.stop()
        service.close()
        health.stop()
    log.info("stopped")


def answer_arguments(service_cls: type[Service[S]], settings_cls: type[S], argv: list[str]) -> NoReturn:
    """A service takes settings, not arguments: ``--help`` lists them, anything else is a usage error."""
    program = _program(service_cls, argv[0])
    if argv[1:] in (["--help"], ["-h"]):
        print(service_help(service_cls, settings_cls, program))
        raise SystemExit(0)
    print(f"{program}: unexpected argument {argv[1]!r}; settings come from STREAMML_* variables, "
          f"see `{program} --help`", file=sys.stderr)
    raise SystemExit(EXIT_BAD_SETTINGS)


def service_help(service_cls: type[Service[S]], settings_cls: type[S], program: str) -> str:
    """Usage, what the service does, and every setting with its default and meaning."""
    summary = (sys.modules[service_cls.__module__].__doc__ or "").strip().split("\n")[0]
    lines = [
        f"usage: {program}",
        "",
        summary.replace("``", ""),
        f"More in {_package(service_cls).replace('.', '/')}/README.md.",
        "",
        "Settings come from environment variables, else from the YAML file named by",
        f"{CONFIG_FILE_ENV} (nested names: kafka: {{bootstrap: ...}}), else the defaults.",
        f"A bad value stops the service at start (exit {EXIT_BAD_SETTINGS}); an unreachable broker or",
        f"object store stops it with exit {EXIT_UNAVAILABLE}.",
        "",
    ]
    for setting in settings_help(settings_cls):
        lines.append(f"  {setting.variable}  (default: {setting.default})")
        lines.extend(textwrap.wrap(setting.meaning, 76, initial_indent="      ", subsequent_indent="      "))
    return "\n".join(lines)


def _program(service_cls: type[Service[S]], argv0: str) -> str:
    if argv0.endswith(".py"):  # python -m services.<name>
        return f"python -m {_package(service_cls)}"
    return argv0


def _package(service_cls: type[Service[S]]) -> str:
    """services.ingest for services.ingest.service.IngestService."""
    return service_cls.__module__.rsplit(".", 1)[0]


def _fail(message: str, code: int) -> None:
    log.error(message)
    print(f"streamml: {message}", file=sys.stderr)
    raise SystemExit(code)
