"""Scoring requests with a version in shadow, off the request path.

While the validator gathers live evidence on a candidate (``model.shadow``),
every request is answered by the champion and also handed here: ``offer``
appends the call to a bounded queue and returns at once; one background thread
scores it with the shadow version, times that call, and puts the answers in
the prediction log marked ``shadow`` with the call's time. When the queue is
full (the shadow is slower than the traffic) the call is dropped and counted,
never waited for, so the response never waits on the shadow and a slow or
broken shadow costs the requests nothing but the CPU it takes::

    scorer = ShadowScorer("fraud", log.add_many, capacity=64)   # takes encoded prediction bodies
    scorer.serve(snapshot)                 # a version in shadow; None: none
    scorer.offer(records, request_ids, when)
    scorer.close()
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client import Counter

from streamml.sdk.swap import ModelSnapshot
from streamml.sdk.wire import encode_predictions, loggable_outputs

log = logging.getLogger("streamml.sdk.shadow")

SCORED = Counter("streamml_sdk_shadow_scored_total", "Records scored by the version in shadow", ["model"])
DROPPED = Counter(
    "streamml_sdk_shadow_dropped_total", "Records not scored in shadow: its queue was full or it failed", ["model"]
)


@dataclass(frozen=True)
class ShadowStats:
    scored: int  # records
    dropped: int  # records: the queue was full, or the shadow version failed on them
    queued: int  # calls waiting


class ShadowScorer:
    def __init__(self, model: str, log_many: Callable[[list[bytes | None]], int], *, capacity: int = 64) -> None:
        if capacity < 1:
            raise ValueError(f"capacity ({capacity}) must be at least 1 call")
        self.model = model
        self.capacity = capacity
        self._log_many = log_many
        self._snapshot: ModelSnapshot | None = None
        self._queue: deque[tuple[ModelSnapshot, Sequence[Mapping[str, Any]], Sequence[str], str]] = deque()
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._closed = False
        self._scored = self._dropped = 0
        self._last_error: str | None = None
        self._thread = threading.Thread(target=self._score_loop, name=f"shadow-{model}", daemon=True)
        self._thread.start()

    @property
    def version(self) -> str | None:
        snapshot = self._snapshot
        return snapshot.version if snapshot is not None else None

    def serve(self, snapshot: ModelSnapshot | None) -> None:
        """Score with ``snapshot`` from now on; None stops shadow scoring (what is queued is dropped)."""
        with self._lock:
            self._snapshot = snapshot
            if snapshot is None:
                self._drop(sum(len(records) for _, records, _, _ in self._queue))
                self._queue.clear()

    def offer(self, records: Sequence[Mapping[str, Any]], request_ids: Sequence[str], when: datetime) -> bool:
        """Queue one call for the shadow; False when there is none or no room (then dropped and counted)."""
        snapshot = self._snapshot
        if snapshot is None:
            return False
        with self._lock:
            if self._closed or len(self._queue) >= self.capacity:
                self._drop(len(records))
                return False
            self._queue.append((snapshot, records, request_ids, when))
            self._work.notify()
            return True

    def stats(self) -> ShadowStats:
        with self._lock:
            return ShadowStats(self._scored, self._dropped, len(self._queue))

    def close(self, timeout: float = 5.0) -> None:
        """Score what is queued (within ``timeout``), then stop."""
        with self._lock:
            self._closed = True
            self._work.notify()
        self._thread.join(timeout)

    def _drop(self, records: int) -> None:
        """Called with the lock held."""
        if records:
            self._dropped += records
            DROPPED.labels(self.model).inc(records)

    def _score_loop(self) -> None:
        while True:
            with self._lock:
                self._work.wait_for(lambda: self._queue or self._closed)
                if not self._queue:
                    return
                snapshot, records, ids, when = self._queue.popleft()
            started = time.perf_counter()
            try:
                prediction = snapshot.predict(records)
            except Exception as error:  # noqa: BLE001 - a broken shadow must not stop anything
                with self._lock:
                    self._drop(len(records))
                if str(error) != self._last_error:
                    self._last_error = str(error)
                    log.error("shadow version %s of %r failed on a call: %s: %s", snapshot.version, self.model,
                              type(error).__name__, error)
                continue
            elapsed_ms = (time.perf_counter() - started) * 1000.0
            self._log_many(encode_predictions(self.model, snapshot.version, snapshot.transform.features, when,
                                              ids, records, loggable_outputs(prediction.output), {}, elapsed_ms))
            with self._lock:
                self._scored += len(records)
            SCORED.labels(self.model).inc(len(records))
