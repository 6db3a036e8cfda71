"""One fault policy for every service and the SDK: what is retried, how, and how it shows.

An error is *transient* when it says a dependency is away (the object store
answers 5xx or SlowDown, times out or refuses connections; the broker is
unreachable, has no leader or coordinator yet, or times out). The unit of work
that met it is retried with bounded exponential backoff and jitter until the
dependency answers again or the service is asked to stop. Anything else is
*permanent*: the input is wrong (a schema violation, a bad value), and a
service sends it to its dead-letter topic with the reason. So a message is
never dead-lettered because streamml's own infrastructure was away.

An outage of one dependency, as one process sees it, is an *episode*: it is
logged once when it starts and once when it ends, counted in
``streamml_dependency_errors_total``, and shown by
``streamml_dependency_available`` (0 while it lasts)::

    faults = FaultPolicy("prep")
    manifest = faults.retry(lambda: store.get_bytes(key), stopping)   # Interrupted if stopping meanwhile
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from confluent_kafka import KafkaException
from prometheus_client import Counter, Gauge

from streamml.kafka import DeliveryError, KafkaUnavailable, transient_kafka_error
from streamml.store import StoreUnavailable

T = TypeVar("T")
log = logging.getLogger("streamml.faults")

KAFKA, OBJECT_STORE, IO = "kafka", "object_store", "io"
WHAT = {KAFKA: "Kafka", OBJECT_STORE: "the object store", IO: "a local file or socket"}

ERRORS = Counter(
    "streamml_dependency_errors_total", "Transient errors met, by dependency (each is retried)",
    ["service", "dependency"],
)
AVAILABLE = Gauge(
    "streamml_dependency_available", "0 while an outage of the dependency lasts, else 1", ["service", "dependency"],
    multiprocess_mode="livemin",  # one process of a replica that cannot reach it is enough
)


class Interrupted(Exception):
    """The service was asked to stop while waiting out an outage; the unit of work stays undone."""


def transient_dependency(error: BaseException) -> str | None:
    """The dependency a transient error says is away, or None for a permanent error."""
    if isinstance(error, StoreUnavailable):
        return OBJECT_STORE
    if isinstance(error, KafkaUnavailable):
        return KAFKA
    if isinstance(error, DeliveryError):
        return KAFKA if error.transient else None
    if isinstance(error, KafkaException):
        return KAFKA if transient_kafka_error(error.args[0] if error.args else None) else None
    if isinstance(error, OSError):
        return IO
    return None


@dataclass(frozen=True)
class Backoff:
    """Exponential delays from ``initial_s``, doubling up to ``maximum_s``, each jittered down by up to half."""

    initial_s: float = 0.5
    maximum_s: float = 15.0

    def delay(self, attempt: int) -> float:
        ceiling = min(self.maximum_s, self.initial_s * 2 ** min(attempt, 32))
        # Jitter spreads the retries of many replicas that met the same outage.
        return ceiling * random.uniform(0.5, 1.0)


@dataclass
class _Episode:
    started: float
    errors: int = 0


class FaultPolicy:
    """Retries transient errors for one process and keeps track of outage episodes."""

    def __init__(self, service: str, backoff: Backoff = Backoff()) -> None:
        self.service = service
        self.backoff = backoff
        self._episodes: dict[str, _Episode] = {}
        self._lock = threading.Lock()

    @property
    def outages(self) -> list[str]:
        """The dependencies an episode is running for."""
        with self._lock:
            return sorted(self._episodes)

    def retry(self, operation: Callable[[], T], stopping: threading.Event) -> T:
        """``operation()``, again after a backoff while it raises a transient error.

        A permanent error is raised at once. ``Interrupted`` is raised when
        ``stopping`` is set during a backoff."""
        attempt = 0
        failing: str | None = None
        while True:
            try:
                result = operation()
            except Exception as error:
                failing = transient_dependency(error)
                if failing is None:
                    raise
                self.failed(failing, error)
                if stopping.wait(self.backoff.delay(attempt)):
                    raise Interrupted(f"stopped while {WHAT[failing]} was away: {error}") from error
                attempt += 1
                continue
            if failing is not None:
                self.succeeded(failing)
            return result

    def failed(self, dependency: str, error: BaseException) -> None:
        """Record a transient error; the first of an episode is logged."""
        ERRORS.labels(self.service, dependency).inc()
        with self._lock:
            episode = self._episodes.get(dependency)
            if episode is None:
                episode = self._episodes[dependency] = _Episode(time.monotonic())
            episode.errors += 1
            first = episode.errors == 1
        if first:
            AVAILABLE.labels(self.service, dependency).set(0)
            log.warning(f"{WHAT[dependency]} is unavailable; retrying with backoff until it answers",
                        extra={"dependency": dependency, "reason": f"{type(error).__name__}: {error}"})

    def succeeded(self, dependency: str) -> None:
        """Record that ``dependency`` answered; ends its episode, if any, with one log line."""
        with self._lock:
            episode = self._episodes.pop(dependency, None)
        AVAILABLE.labels(self.service, dependency).set(1)
        if episode is not None:
            log.info(f"{WHAT[dependency]} is available again",
                     extra={"dependency": dependency, "outage_seconds": round(time.monotonic() - episode.started, 1),
                            "errors": episode.errors})
