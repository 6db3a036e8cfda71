"""A bounded buffer between the request path and a sink that acknowledges later (a Kafka producer).

Serving must not wait for logging. ``add_many`` puts items in a buffer of
``capacity`` items and returns; when there is no room it waits once, at most
``put_timeout_s``, then keeps what fits and drops the rest. One background
thread offers batches of up to ``batch_size`` items to the sink at least
every ``linger_s``::

    log = PredictionLog(send_batch, reports=producer.poll, name="fraud", capacity=10_000)
    log.add_many(records)      # never blocks longer than put_timeout_s
    ...                        # the producer's delivery callback calls log.settled(ok)
    log.close()                # hands on what is buffered, waits for the acknowledgements, stops

The sink takes what it can: it returns how many items of the batch (from the
front) it queued for delivery. Those it did not take stay buffered and are
offered again after a pause (its local queue is full: the broker is away).
An item counts as *delivered* only when ``settled(True)`` acknowledges it,
and as *failed* on ``settled(False)`` or when the sink raises on its batch.
*Dropped* items were refused for lack of room or after ``close``, or were
still unacknowledged when ``close`` gave up. So memory holds at most
``capacity`` items here plus what the sink's own bounded queue holds, however
long the broker is away, and ``accepted == delivered + failed + dropped_at_close``
once closed. ``reports(timeout)`` waits for acknowledgements (the producer's
``poll``); the background thread calls it, so nobody else has to.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import islice
from typing import Generic, TypeVar

from prometheus_client import Counter

T = TypeVar("T")
FAILURE_LOG_INTERVAL_S = 10.0
# How long the sender pauses when the sink's queue is full.
SINK_FULL_PAUSE_S = 0.1
log = logging.getLogger("streamml.sdk.prediction_log")

DROPPED = Counter(
    "streamml_prediction_log_dropped_total",
    "Items not logged: the buffer was full or closed, or they were unacknowledged at close", ["log"],
)
DELIVERED = Counter("streamml_prediction_log_delivered_total", "Items acknowledged by the sink", ["log"])
FAILED = Counter("streamml_prediction_log_failed_total", "Items the sink failed to deliver", ["log"])


@dataclass(frozen=True)
class LogStats:
    accepted: int
    dropped: int
    delivered: int
    failed: int
    buffered: int
    in_flight: int  # taken by the sink, not acknowledged yet


class PredictionLog(Generic[T]):
    def __init__(
        self,
        sink: Callable[[list[T]], int],
        *,
        reports: Callable[[float], object] = time.sleep,
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
        self._reports = reports
        self._buffer: deque[T] = deque()
        self._lock = threading.Lock()
        self._has_batch = threading.Condition(self._lock)  # the sender waits here
        self._has_room = threading.Condition(self._lock)  # callers without room wait here
        self._idle = threading.Condition(self._lock)  # flush waits here
        self._in_flight = 0
        self._flushes = 0
        self._closed = False
        self._deadline = float("inf")  # when close gives up on what is left
        self._finished = False
        self._dropped_at_close = 0
        self._last_failure_log = -FAILURE_LOG_INTERVAL_S
        self._accepted = self._dropped = self._delivered = self._failed = 0
        self._dropped_metric = DROPPED.labels(name)
        self._delivered_metric = DELIVERED.labels(name)
        self._failed_metric = FAILED.labels(name)
        self._thread = threading.Thread(target=self._send_loop, name=f"prediction-log-{name}", daemon=True)
        self._thread.start()

    def add(self, item: T) -> bool:
        """Buffer ``item``; False when it was dropped."""
        return self.add_many((item,)) == 1

    def add_many(self, items: Iterable[T]) -> int:
        """Buffer ``items``, waiting at most once (``put_timeout_s``) for room; returns how many were kept."""
        items = list(items)
        with self._lock:
            if self.capacity - len(self._buffer) < len(items) and not self._closed and self.put_timeout_s > 0:
                self._has_room.wait_for(
                    lambda: self.capacity - len(self._buffer) >= len(items) or self._closed, timeout=self.put_timeout_s
                )
            kept = 0 if self._closed else max(0, min(len(items), self.capacity - len(self._buffer)))
            self._buffer.extend(items[:kept])
            self._accepted += kept
            self._drop(len(items) - kept)
            if len(self._buffer) >= self.batch_size:
                self._has_batch.notify()
            return kept

    def settled(self, delivered: bool, count: int = 1) -> None:
        """The sink's acknowledgement (True) or failure (False) of ``count`` items it took."""
        with self._lock:
            if self._finished:
                return  # too late: close counted it as dropped
            self._in_flight -= count
            if delivered:
                self._delivered += count
            else:
                self._failed += count
            if not self._buffer and self._in_flight <= 0:
                self._idle.notify_all()
        (self._delivered_metric if delivered else self._failed_metric).inc(count)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything buffered so far is acknowledged (or failed); False on timeout."""
        with self._lock:
            self._flushes += 1  # the sender skips its linger while anyone waits here
            self._has_batch.notify()
            try:
                return self._idle.wait_for(lambda: not self._buffer and self._in_flight <= 0, timeout=timeout)
            finally:
                self._flushes -= 1

    def close(self, timeout: float = 5.0) -> bool:
        """Stop accepting, deliver what is buffered and wait for it, stop the thread.

        What is left after ``timeout`` is counted as dropped; False then."""
        with self._lock:
            self._closed = True
            self._deadline = time.monotonic() + timeout
            self._has_batch.notify()
            self._has_room.notify_all()
        self._thread.join(timeout + 1.0)
        with self._lock:
            return not self._thread.is_alive() and self._dropped_at_close == 0

    def stats(self) -> LogStats:
        with self._lock:
            return LogStats(self._accepted, self._dropped, self._delivered, self._failed, len(self._buffer),
                            self._in_flight)

    # ------------------------------------------------------------ the sender thread

    def _drop(self, count: int) -> None:
        """Count ``count`` dropped items; called with the lock held."""
        if count:
            self._dropped += count
            self._dropped_metric.inc(count)

    def _send_loop(self) -> None:
        while True:
            with self._lock:
                if len(self._buffer) < self.batch_size and not self._closed and not self._flushes:
                    self._has_batch.wait(timeout=self.linger_s)
                batch = list(islice(self._buffer, self.batch_size))
                if not batch and self._closed:
                    break
                flushing = self._flushes > 0
            taken = self._offer(batch) if batch else 0
            with self._lock:
                for _ in range(taken):
                    self._buffer.popleft()
                self._has_room.notify_all()
                if not self._buffer and self._in_flight <= 0:
                    self._idle.notify_all()
                if self._closed and time.monotonic() >= self._deadline:
                    break
            # Acknowledgements are served while waiting here. A full sink gets a pause before
            # the next offer; a flush with nothing left to offer waits for acknowledgements, in
            # short waits so that a close right after the flush is not held up for a whole linger.
            if taken < len(batch):
                self._reports(SINK_FULL_PAUSE_S)
            else:
                self._reports(min(self.linger_s, SINK_FULL_PAUSE_S) if flushing and not batch else 0)
        self._finish()

    def _offer(self, batch: list[T]) -> int:
        """Hand ``batch`` to the sink; returns how many items left the buffer."""
        try:
            taken = self._sink(batch)
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
            return len(batch)
        with self._lock:
            self._in_flight += taken
        return taken

    def _finish(self) -> None:
        """After close: wait for acknowledgements until the deadline, then count what is left as dropped."""
        while self.stats().in_flight > 0 and time.monotonic() < self._deadline:
            self._reports(min(SINK_FULL_PAUSE_S, max(0.0, self._deadline - time.monotonic())))
        with self._lock:
            left = len(self._buffer) + max(0, self._in_flight)
            self._buffer.clear()
            self._in_flight = 0
            self._dropped_at_close = left
            self._finished = True
            self._drop(left)
            self._idle.notify_all()
        if left:
            log.warning("prediction log %r closed with %d items unacknowledged; counted as dropped", self.name, left)
