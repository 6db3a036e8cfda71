"""The loop's health: is the broker answering, is the object store, is each service consuming, how far behind.

Measured in a background thread every ``status_interval_s`` (a lag
measurement fetches from every partition, too slow for a page request), from
Kafka and the store alone, so it reads the same on one machine and in a
cluster: a service is up while its consumer group has members (the group is
not empty), and its lag is what ``streamml lag`` reports.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime

from confluent_kafka import ConsumerGroupState, KafkaException
from confluent_kafka.admin import AdminClient

from streamml.lag import partition_lags
from streamml.settings import KafkaSettings
from streamml.store import ObjectStore, StoreError

log = logging.getLogger("streamml.console")
TIMEOUT_S = 5.0
CONSUMING = {ConsumerGroupState.STABLE, ConsumerGroupState.PREPARING_REBALANCING,
             ConsumerGroupState.COMPLETING_REBALANCING}


@dataclass(frozen=True)
class Component:
    name: str
    healthy: bool
    detail: str


@dataclass(frozen=True)
class TopicLag:
    service: str
    group: str
    topic: str
    lag: int


@dataclass(frozen=True)
class LoopStatus:
    seq: int
    measured: datetime | None
    components: list[Component] = field(default_factory=list)
    lags: list[TopicLag] = field(default_factory=list)

    def as_json(self) -> dict:
        return {
            "seq": self.seq,
            "measured": self.measured.isoformat() if self.measured else None,
            "components": [c.__dict__ for c in self.components],
            "lags": [lag.__dict__ for lag in self.lags],
        }


class StatusSampler:
    """Measures ``LoopStatus`` every ``interval_s``; ``latest`` is the newest measurement."""

    def __init__(self, kafka: KafkaSettings, store: ObjectStore, groups: dict[str, str], interval_s: float) -> None:
        self.kafka = kafka
        self.store = store
        self.groups = {service: kafka.group_prefix + group for service, group in groups.items()}
        self.interval_s = interval_s
        self.latest = LoopStatus(0, None)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="console-status", daemon=True)
        # Failures are shown on the page; librdkafka would log every retry.
        self._admin = AdminClient({**kafka.client_config(), "socket.timeout.ms": int(TIMEOUT_S * 1000),
                                   "log_level": 0})

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(TIMEOUT_S * 2)

    def _run(self) -> None:
        while True:
            try:
                self.latest = self.measure(self.latest.seq + 1)
            except Exception:  # noqa: BLE001 - the next round tries again; the page shows the last one
                log.exception("measuring the loop's health failed")
            if self._stopping.wait(self.interval_s):
                return

    def measure(self, seq: int) -> LoopStatus:
        components = [self._broker(), self._store()]
        lags: list[TopicLag] = []
        if components[0].healthy:
            components += self._services()
            lags = self._lags()
        return LoopStatus(seq, datetime.now(UTC), components, lags)

    def _broker(self) -> Component:
        try:
            brokers = self._admin.list_topics(timeout=TIMEOUT_S).brokers
        except KafkaException as error:
            return Component("kafka", False, f"no answer from {self.kafka.bootstrap}: {error.args[0].str()}")
        return Component("kafka", True, f"{len(brokers)} broker(s) at {self.kafka.bootstrap}")

    def _store(self) -> Component:
        where = f"bucket {self.store.bucket} at {self.store.settings.endpoint or 'AWS S3'}"
        try:
            self.store.list_prefixes("")
        except StoreError as error:
            return Component("object store", False, str(error))
        return Component("object store", True, where)

    def _services(self) -> list[Component]:
        futures = self._admin.describe_consumer_groups(list(self.groups.values()), request_timeout=TIMEOUT_S)
        found = []
        for service, group in self.groups.items():
            try:
                description = futures[group].result(TIMEOUT_S)
            except KafkaException as error:
                found.append(Component(service, False, f"group {group}: {error.args[0].str()}"))
                continue
            except TimeoutError:  # a broker that restarts can leave the description unanswered
                found.append(Component(service, False, f"group {group}: no answer within {TIMEOUT_S:g}s"))
                continue
            state = description.state
            members = f", {len(description.members)} member(s)" if description.members else ""
            consuming = state in CONSUMING
            what = "consuming" if consuming else "no consumer running"
            found.append(Component(service, consuming, f"group {group} {state.name.lower()}{members}: {what}"))
        return found

    def _lags(self) -> list[TopicLag]:
        lags = []
        for service, group in self.groups.items():
            try:
                partitions = partition_lags(self.kafka, group, timeout=TIMEOUT_S)
            except KafkaException as error:
                log.warning("cannot measure lag", extra={"group": group, "error": str(error)})
                continue
            per_topic: dict[str, int] = {}
            for partition in partitions:
                per_topic[partition.topic] = per_topic.get(partition.topic, 0) + partition.lag
            lags += [TopicLag(service, group, topic, lag) for topic, lag in sorted(per_topic.items())]
        return lags
