"""Serve the champion of one model in an application, swapped live on promotion.

    from streamml.sdk import ModelClient, find_settings

    settings = find_settings()   # STREAMML_STACK_DIR, the nearest .streamml/, or STREAMML_* settings
    with ModelClient(settings, "fraud") as client:
        client.wait_ready(timeout=60)           # until a champion is loaded
        result = client.predict([{"amount": 12.5, "hour": 3, "channel": "web"}])
        print(result.version, result.outputs[0], result.flags)
        client.feedback(result.request_ids[0], label=1)   # the truth, once known

Inputs are checked against the dataset spec, with the rules and the code
ingest applies (required values, types, min/max, categories; see
``input_checks.py``). ``input_checks`` says what a broken rule does:
``"flag"`` (the default) predicts anyway, counts it in
``streamml_sdk_flagged_inputs_total{model,feature,rule}``, lists it in
``Predictions.flags`` and marks the logged prediction (``flags``:
``["hour:max"]``); ``"reject"`` raises ``InputRejected`` naming the record,
the field, the rule and the value, and predicts nothing; ``"off"`` checks nothing.

While the validator judges a candidate on live traffic (``model.shadow``,
``models/<name>/shadow.json``), the client loads that version too and scores
every call with it in the background (``shadow.py``): a bounded queue, dropped
and counted when full, so the response, always the champion's, never waits.
Its answers go to ``predictions.<model>`` marked ``shadow`` with the time of
the call that produced them.

At start the client loads the version ``champion.json`` names. A background
thread follows ``model.promoted`` (every instance sees every promotion, see
``promotions.py``) and re-reads the pointer every ``reconcile_s`` in case an
event was missed; when the pointer names another version, that thread loads
it, runs one warm-up prediction, and swaps it in. Requests already running
finish on the old version, new ones use the new one, and none fails: a
version that cannot be loaded is logged and counted, and the old one stays.

Each prediction is logged to ``predictions.<model>`` (a ``PredictionRecord``
per record, with its request id) by a background sender that never makes a
request wait: each call's predictions are encoded at once, and the sender
joins up to 500 of them into one ``PredictionBatch`` message (split past
256 KiB), read back with ``streamml.prediction_events``;
``feedback`` sends ``FeedbackRecord`` to ``feedback.<model>``.
A prediction counts as delivered once the broker acknowledged it. While the
broker is away, predictions wait in a bounded buffer and the producer's
bounded queue; what does not fit is dropped and counted (``stats().dropped``,
``streamml_prediction_log_dropped_total``), and serving goes on. An outage of
the store or the broker while following promotions is retried as
``streamml.faults`` says, and the version being served stays.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import numpy as np
from confluent_kafka import KafkaError, Message
from prometheus_client import Counter, Gauge

from streamml.checks import Violation
from streamml.events import FeedbackRecord, encode
from streamml.faults import OBJECT_STORE, FaultPolicy, transient_dependency
from streamml.kafka import DeliveryError, EventProducer
from streamml.registry.keys import check_name
from streamml.registry.models import read_champion
from streamml.sdk.input_checks import INPUT_CHECKS, InputChecks, flag_names, rejection
from streamml.sdk.loader import LoadedVersion, load_version
from streamml.sdk.prediction_log import LogStats, PredictionLog
from streamml.registry.shadow import read_shadow
from streamml.sdk.promotions import PromotionFeed
from streamml.sdk.shadow import ShadowScorer, ShadowStats
from streamml.sdk.swap import ModelSlot, ModelSnapshot
from streamml.sdk.wire import encode_predictions, loggable_outputs, prediction_batches
from streamml.settings import ServiceSettings
from streamml.store import ObjectStore

log = logging.getLogger("streamml.sdk.client")
RETRY_AFTER_FAILURE_S = 5.0
# The producer's local queue: with the prediction log's buffer, all the memory a broker outage can take.
LOCAL_QUEUE = {"queue.buffering.max.messages": 100_000, "queue.buffering.max.kbytes": 64 * 1024}

VERSION = Gauge("streamml_sdk_model_version", "1 for the version being served", ["model", "version"])
SWAPS = Counter("streamml_sdk_swaps_total", "Versions swapped in", ["model"])
LOAD_FAILURES = Counter("streamml_sdk_load_failures_total", "Versions that could not be loaded", ["model"])
UNLOGGABLE = Counter(
    "streamml_sdk_unloggable_predictions_total", "Predictions with a NaN or infinite output, not logged", ["model"]
)
FLAGGED = Counter(
    "streamml_sdk_flagged_inputs_total", "Input values that break a rule of the dataset spec, predicted on anyway",
    ["model", "feature", "rule"],
)
FEEDBACK_DROPPED = Counter(
    "streamml_sdk_feedback_dropped_total", "Feedback not sent: the producer's queue was full (broker away)", ["model"]
)


@dataclass(frozen=True)
class Predictions:
    version: str  # the version that answered every record of the call
    outputs: np.ndarray  # [N] (probability, value) or [N, K] (class probabilities)
    request_ids: list[str]  # one per record: the key to send feedback with
    flags: dict[int, list[Violation]] = field(default_factory=dict)  # record index -> the spec's rules it breaks


def new_request_ids(count: int) -> list[str]:
    """``count`` random 128-bit ids in hex, as uuid4().hex reads, from one read of the OS's randomness.

    uuid4 reads it once per id: about 2 µs each, 7% of a server's CPU at 64 records per request."""
    token = os.urandom(16 * count).hex()
    return [token[start:start + 32] for start in range(0, 32 * count, 32)]


class ModelClient:
    def __init__(
        self,
        settings: ServiceSettings,
        model: str,
        *,
        log_predictions: bool = True,
        reconcile_s: float = 30.0,
        client_id: str | None = None,
        on_swap: Callable[[str | None, str], None] | None = None,
        input_checks: InputChecks = "flag",
    ) -> None:
        self.model = check_name(model)
        if input_checks not in INPUT_CHECKS:
            raise ValueError(f"input_checks={input_checks!r}; use one of {', '.join(INPUT_CHECKS)}")
        self.input_checks = input_checks
        self.reconcile_s = reconcile_s
        self.slot = ModelSlot(model)
        self._cards: dict[str, dict[str, Any]] = {}
        self._on_swap = on_swap
        self._last_error: str | None = None  # logged already; the same error is not logged again
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self.faults = FaultPolicy("sdk")
        self.store = ObjectStore.connect(settings.s3)
        # Positioned before the pointer is read, so no promotion falls in between.
        self._feed = PromotionFeed(settings.kafka, model)
        self.producer = EventProducer(settings.kafka, client_id=client_id or f"streamml-sdk-{model}", **LOCAL_QUEUE)
        self._source = self.producer.source.encode()
        self._predictions_topic = settings.kafka.topic(f"predictions.{model}")
        # Delivery reports of logged batches (True: acknowledged; predictions), settled with the log in bulk.
        self._reports: deque[tuple[bool, int]] = deque()
        self._log = (PredictionLog(self._send_predictions, reports=self._settle, name=model)
                     if log_predictions else None)
        # Its answers are only of use logged: without logging, no version is scored in shadow.
        self._shadow = ShadowScorer(model, self._log.add_many) if self._log is not None else None
        reachable = self._refresh()
        first_check = time.monotonic() + (reconcile_s if reachable else RETRY_AFTER_FAILURE_S)
        self._watcher = threading.Thread(target=self._watch, args=(first_check,), name=f"model-client-{model}",
                                         daemon=True)
        self._watcher.start()

    # ------------------------------------------------------------ requests

    @property
    def ready(self) -> bool:
        return self.slot.ready

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until a version is loaded; False on timeout."""
        return self._ready.wait(timeout)

    @property
    def version(self) -> str | None:
        return self.slot.current().version if self.slot.ready else None

    def card(self, version: str) -> dict[str, Any] | None:
        """The model card of a loaded version (the one serving, or the one it replaced)."""
        return self._cards.get(version)

    def predict(self, records: Sequence[Mapping[str, Any]], request_ids: Sequence[str] | None = None) -> Predictions:
        """Predict with one version for all ``records``; raises NoModelLoaded before the first load,
        and InputRejected when ``input_checks="reject"`` and a record breaks the dataset spec."""
        if request_ids is not None and len(request_ids) != len(records):
            raise ValueError(f"{len(request_ids)} request ids for {len(records)} records; give one per record")
        snapshot = self.slot.current()
        flags = self._check(snapshot, records)
        prediction = snapshot.predict(records)
        ids = list(request_ids) if request_ids is not None else new_request_ids(len(records))
        if self._log is not None:
            # One msgspec call for the call's predictions here; the log's sender only joins them (see wire.py).
            marks = {index: flag_names(violations) for index, violations in flags.items()}
            now = datetime.now(UTC)
            self._log.add_many(encode_predictions(
                self.model, prediction.version, snapshot.transform.features, now, ids,
                records, loggable_outputs(prediction.output), marks))
            if self._shadow is not None:
                self._shadow.offer(records, ids, now)
        return Predictions(prediction.version, prediction.output, ids, flags)

    def _check(self, snapshot: ModelSnapshot, records: Sequence[Mapping[str, Any]]) -> dict[int, list[Violation]]:
        """The rules of the dataset spec each record breaks; raises InputRejected when rejecting."""
        if self.input_checks == "off" or snapshot.rules is None:
            return {}
        found = snapshot.rules.check(records)
        if found and self.input_checks == "reject":
            raise rejection(found, snapshot.rules.dataset)
        for violations in found.values():
            for violation in violations:
                FLAGGED.labels(self.model, violation.field, violation.rule).inc()
        return found

    def feedback(self, request_id: str, label: float | int | str) -> bool:
        """Send the true label of an earlier prediction, queued and delivered in the background.

        Never waits: False when the producer's queue is full (the broker is away) and it was dropped."""
        record = FeedbackRecord(request_id=request_id, model=self.model, label=label, time=datetime.now(UTC))
        message = encode(record, self.producer.source)
        topic = self.producer.settings.topic(record.default_topic())
        if self.producer.produce(topic, message.value, message.key, list(message.headers.items()), wait=False):
            return True
        FEEDBACK_DROPPED.labels(self.model).inc()
        return False

    def stats(self) -> LogStats:
        """The prediction log's counts: accepted, dropped, delivered (acknowledged), failed, buffered, in flight."""
        return self._log.stats() if self._log is not None else LogStats(0, 0, 0, 0, 0, 0)

    @property
    def shadow_version(self) -> str | None:
        """The version in shadow being scored beside the champion, if any."""
        return self._shadow.version if self._shadow is not None else None

    def shadow_stats(self) -> ShadowStats:
        """Records scored in shadow, and dropped (its queue full, or it failed), and calls queued."""
        return self._shadow.stats() if self._shadow is not None else ShadowStats(0, 0, 0)

    # ------------------------------------------------------------ swapping

    def _watch(self, next_check: float) -> None:
        failures = 0  # in a row, for the backoff
        while not self._stopping.is_set():
            try:
                promoted = self._feed.poll(0.5)
            except Exception as error:  # noqa: BLE001 - the broker may come back; keep serving meanwhile
                self._failed(error, f"reading {self._feed.topic} failed; retrying")
                self._stopping.wait(self.faults.backoff.delay(failures))
                failures += 1
                continue
            if promoted or time.monotonic() >= next_check:
                reachable = self._refresh()
                failures = 0 if reachable else failures + 1
                next_check = time.monotonic() + (self.reconcile_s if reachable else self.faults.backoff.delay(failures))

    def _refresh(self) -> bool:
        """Load and swap in the version the pointer names, if it is not served already.

        False while the store is away: retried with backoff. A broken pointer or
        version is logged once and looked at again on the next promotion or
        reconciliation; the version being served stays."""
        try:
            pointer, _ = read_champion(self.store, self.model)
            shadow_reachable = self._refresh_shadow(pointer.version if pointer else None)
            if pointer is None or pointer.version == self.version:
                self.faults.succeeded(OBJECT_STORE)
                return shadow_reachable
            loaded = load_version(self.store, self.model, pointer.version,
                                  with_input_rules=self.input_checks != "off")
        except Exception as error:  # noqa: BLE001 - a bad version must not stop serving the current one
            if transient_dependency(error) is None:
                LOAD_FAILURES.labels(self.model).inc()
                self.faults.succeeded(OBJECT_STORE)
            self._failed(error, f"could not load the champion of {self.model!r}; still serving {self.version}")
            return transient_dependency(error) is None
        self.faults.succeeded(OBJECT_STORE)
        self._last_error = None
        self._swap(loaded)
        return True

    def _refresh_shadow(self, champion: str | None) -> bool:
        """Score with the version ``shadow.json`` names, or stop when it names none (or the champion).

        A shadow that cannot be read or loaded is logged once and not scored; serving goes on.
        False while the store is away: the watcher then tries again soon (backoff), not at the
        next reconciliation, since a shadow lasts only ``max_duration_s``."""
        if self._shadow is None:
            return True
        try:
            self._follow_shadow(champion)
        except Exception as error:  # noqa: BLE001 - a shadow must never cost the champion anything
            if transient_dependency(error) is None:
                LOAD_FAILURES.labels(self.model).inc()
            self._failed(error, f"could not load the version of {self.model!r} in shadow; not scoring it")
            return transient_dependency(error) is None
        return True

    def _follow_shadow(self, champion: str | None) -> None:
        state = read_shadow(self.store, self.model)
        wanted = state.version if state is not None and state.version != champion else None
        if wanted == self._shadow.version:
            return
        if wanted is None:
            log.info("shadow of %r ended (was %s)", self.model, self._shadow.version)
            self._shadow.serve(None)
            return
        loaded = load_version(self.store, self.model, wanted, with_input_rules=False)
        self._shadow.serve(loaded.snapshot)
        log.info("scoring version %s of %r in shadow beside %s", wanted, self.model, champion)

    def _failed(self, error: Exception, what: str) -> None:
        """An outage goes to the fault policy (one log line per episode); any other error is logged once."""
        dependency = transient_dependency(error)
        if dependency is not None:
            self.faults.failed(dependency, error)
        elif str(error) != self._last_error:
            self._last_error = str(error)
            log.error(f"{what}: {type(error).__name__}: {error}")

    def _swap(self, loaded: LoadedVersion) -> None:
        # The replaced version's card stays while its last requests finish.
        cards = {loaded.version: loaded.card}
        if self.version in self._cards:
            cards[self.version] = self._cards[self.version]
        self._cards = cards
        previous = self.slot.swap(loaded.snapshot)
        old = previous.version if previous else None
        if old is not None:
            VERSION.remove(self.model, old)
        VERSION.labels(self.model, loaded.version).set(1)
        SWAPS.labels(self.model).inc()
        self._ready.set()
        log.info("serving version %s of %r (was %s)", loaded.version, self.model, old)
        if self._on_swap is not None:
            self._on_swap(old, loaded.version)

    # ------------------------------------------------------------ logging

    def _send_predictions(self, batch: list[bytes | None]) -> int:
        """The prediction log's sink: the batch as few PredictionBatch messages, queued while the producer
        takes them; returns how many items of the batch (from the front) left the log."""
        taken = 0
        for chunk in prediction_batches(self._source, self.model, batch):
            if chunk.message is not None:
                key, headers, value = chunk.message
                if not self.producer.produce(self._predictions_topic, value, key, headers, wait=False,
                                             on_delivery=partial(self._delivered, chunk.logged)):
                    break  # the queue is full: the log offers the rest again later
            unloggable = chunk.end - taken - chunk.logged  # a NaN or infinite output: JSON cannot carry it
            if unloggable:
                UNLOGGABLE.labels(self.model).inc(unloggable)
                self._log.settled(False, unloggable)
            taken = chunk.end
        return taken

    def _delivered(self, count: int, error: KafkaError | None, message: Message) -> None:
        # One cheap call per message of ``count`` predictions; deque.append is thread-safe.
        self._reports.append((error is None, count))

    def _settle(self, timeout: float) -> None:
        """The prediction log's ``reports``: wait for delivery reports, then settle them in bulk."""
        self.producer.poll(timeout)
        delivered = failed = 0
        for _ in range(len(self._reports)):
            ok, count = self._reports.popleft()
            if ok:
                delivered += count
            else:
                failed += count
        if delivered:
            self._log.settled(True, delivered)
        if failed:
            self._log.settled(False, failed)

    def close(self, timeout: float = 10.0) -> None:
        """Stop following promotions; deliver logged predictions and feedback, waiting at most ``timeout``."""
        self._stopping.set()
        self._watcher.join(10)
        self._feed.close()
        if self._shadow is not None:
            self._shadow.close()
        if self._log is not None:
            self._log.close(timeout)
        try:
            self.producer.flush(timeout)
        except DeliveryError as error:
            log.warning("feedback or predictions not delivered when the client closed", extra={"reason": str(error)})

    def __enter__(self) -> ModelClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
