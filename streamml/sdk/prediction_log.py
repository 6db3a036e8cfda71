"""A bounded buffer between the request path and a slow sink.

Serving must not wait for logging. ``add`` puts an item in a bounded buffer
and returns; when the buffer is full it waits at most ``put_timeout_s`` for
room, then drops the item and counts it (``streamml_prediction_log_dropped_total``).
One background thread hands batches of up to ``batch_size`` items to the sink
(a Kafka producer's send, in a service) at least every ``linger_s``::

    log = PredictionLog(send_batch, name="fraud", capacity=10_000)
    log.add(record)            # never blocks longer than put_timeout_s
    ...
    log.close()                # delivers what is buffered, then stops the thread

The sink is called from that one thread only. A batch the sink raises on is
lost and counted (``streamml_prediction_log_failed_total``); retrying is the
sink's business (a Kafka producer retries by itself).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from prometheus_client import Counter

T = TypeVar("T")
FAILURE_LOG_INTERVAL_S = 10.0
log = logging.getLogger("streamml.sdk.prediction_log")

DROPPED = Counter(
    "streamml_prediction_log_dropped_total", "Items dropped because the buffer was full or closed", ["log"]
)
DELIVERED = Counter("streamml_prediction_log_delivered_total", "Items handed to the sink", ["log"])
FAILED = Counter("streamml_prediction_log_failed_total", "Items in batches the sink raised on", ["log"])


@dataclass(frozen=True)
class LogStats:
    accepted: int
    dropped: int
    delivered: int
    failed: int
    buffered: int


class PredictionLog(Generic[T]):
    def __init__(
        self,
        sink: Callable[[list[T]], None],
        *,
        name: str = "predictions",
        capacity: int = 10_000,
        batch_size: int = 500,
        linger_s: float = 0.05,
        put_timeout_s: float = 0.001,
    ):
        if capacity < 1 or batch_size < 1:
            raise ValueError(f"capacity ({capacity}) and batch_size ({batch_size}) must be at least 1")
        if linger_s <= 0 or put_timeout_s < 0:
            raise ValueError(f"linger_s ({linger_s}) must be > 0 and put_timeout_s ({put_timeout_s}) >= 0")
        self.name = name
        self.capacity = capacity
        self.batch_size = batch_size
        self.linger_s = linger_s
        self.put_timeout_s = put_timeout_s
        self._sink = sink
        self._buffer: deque[T] = deque()
        self._lock = threading.Lock()
        self._has_batch = threading.Condition(self._lock)  # drainer waits here
        self._has_room = threading.Condition(self._lock)  # full callers wait here
        self._idle = threading.Condition(self._lock)  # flush waits here
        self._sending = 0
        self._flushes = 0
        self._closed = False
        self._last_failure_log = -FAILURE_LOG_INTERVAL_S
        self._accepted = self._dropped = self._delivered = self._failed = 0
        self._dropped_metric = DROPPED.labels(name)
        self._delivered_metric = DELIVERED.labels(name)
        self._failed_metric = FAILED.labels(name)
        self._thread = threading.Thread(target=self._drain, name=f"prediction-log-{name}", daemon=True)
        self._thread.start()

    def add(self, item: T) -> bool:
        """Buffer ``item``; False when it was dropped (buffer full for put_timeout_s, or closed)."""
        with self._lock:
            if len(self._buffer) >= self.capacity and not self._closed and self.put_timeout_s > 0:
                self._has_room.wait_for(
                    lambda: len(self._buffer) < self.capacity or self._closed, timeout=self.put_timeout_s
                )
            if self._closed or len(self._buffer) >= self.capacity:
                self._dropped += 1
                self._dropped_metric.inc()
                return False
            self._buffer.append(item)
            self._accepted += 1
            if len(self._buffer) >= self.batch_size:
                self._has_batch.notify()
            return True

    def add_many(self, items: Iterable[T]) -> int:
        """Buffer each item as ``add`` would; returns how many were kept."""
        return sum(self.add(item) for item in items)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything buffered so far reached the sink; False on timeout."""
        with self._lock:
            self._flushes += 1  # the sender skips its linger while anyone waits here
            self._has_batch.notify()
            try:
                return self._idle.wait_for(lambda: not self._buffer and not self._sending, timeout=timeout)
            finally:
                self._flushes -= 1

    def close(self, timeout: float | None = 5.0) -> bool:
        """Stop accepting, deliver what is buffered, stop the thread; False if it did not finish in time."""
        with self._lock:
            self._closed = True
            self._has_batch.notify()
            self._has_room.notify_all()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def stats(self) -> LogStats:
        with self._lock:
            return LogStats(self._accepted, self._dropped, self._delivered, self._failed, len(self._buffer))

    def _drain(self) -> None:
        while True:
            with self._lock:
                if len(self._buffer) < self.batch_size and not self._closed and not self._flushes:
                    self._has_batch.wait(timeout=self.linger_s)
                if not self._buffer:
                    self._idle.notify_all()
                    if self._closed:
                        return
                    continue
                count = min(len(self._buffer), self.batch_size)
                batch = [self._buffer.popleft() for _ in range(count)]
                self._sending = count
                self._has_room.notify_all()
            self._send(batch)
            with self._lock:
                self._sending = 0
                if not self._buffer:
                    self._idle.notify_all()

    def _send(self, batch: list[T]) -> None:
        try:
            self._sink(batch)
        except Exception:  # noqa: BLE001 - a failing sink must not stop logging
            with self._lock:
                self._failed += len(batch)
            self._failed_metric.inc(len(batch))
            # A sink that is down fails every batch; one line per interval says so without flooding.
            now = time.monotonic()
            if now - self._last_failure_log >= FAILURE_LOG_INTERVAL_S:
                self._last_failure_log = now
                log.exception("prediction log %r: sink failed, %d items lost (%d so far)",
                              self.name, len(batch), self._failed)
            return
        with self._lock:
            self._delivered += len(batch)
        self._delivered_metric.inc(len(batch))
