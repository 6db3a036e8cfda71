"""Consumer lag per group, topic and partition, and what KEDA would do with it.

Lag is the end offset minus the group's committed offset. Some brokers (the
embedded Tansu among them) report a partition's end from ListOffsets too low:
the start of the newest stored batch rather than the last offset + 1. The
high watermark a fetch returns is exact, so each partition's end is taken
as the larger of the two, and ``end_understated`` says when they disagreed.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient

from streamml.settings import KafkaSettings


@dataclass(frozen=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    committed: int | None
    end: int
    lag: int
    end_understated: bool


@dataclass(frozen=True)
class TopicLag:
    group: str
    topic: str
    partitions: int
    lag: int
    rate: float | None  # records/s committed by the group, from two samples
    drain_seconds: float | None
    keda_replicas: int

    def as_dict(self) -> dict:
        return asdict(self)


def keda_replicas(lag: int, partitions: int, lag_threshold: int, max_replicas: int | None = None) -> int:
    """KEDA's Kafka scaler: ceil(lag / lagThreshold), never more than the partitions."""
    wanted = math.ceil(lag / lag_threshold) if lag > 0 else 0
    limit = partitions if max_replicas is None else min(partitions, max_replicas)
    return min(wanted, limit)


def partition_lags(settings: KafkaSettings, group: str, timeout: float = 10) -> list[PartitionLag]:
    admin = AdminClient(settings.client_config())
    request = [ConsumerGroupTopicPartitions(group)]
    listed = admin.list_consumer_group_offsets(request)[group].result(timeout).topic_partitions
    if not listed:
        return []
    # Partitions the group never committed are listed too: their lag counts from the start.
    by_partition = {(tp.topic, tp.partition): tp.offset for tp in listed}
    metadata = admin.list_topics(timeout=timeout).topics
    committed = [
        TopicPartition(topic, partition, by_partition.get((topic, partition), -1001))
        for topic in sorted({tp.topic for tp in listed})
        for partition in sorted(metadata[topic].partitions)
    ]
    # A fetch at the end of a partition answers at once with end-of-partition, so empty ones cost no wait.
    probe = Consumer({**settings.client_config(), "group.id": f"{group}.lag-probe",
                      "enable.auto.commit": False, "fetch.wait.max.ms": 50, "enable.partition.eof": True})
    try:
        lags = []
        for tp in committed:
            low, listed_end = probe.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout)
            fetched_end = _fetched_high_watermark(probe, tp.topic, tp.partition, max(low, listed_end - 1))
            end = max(listed_end, fetched_end or 0)
            position = tp.offset if tp.offset >= 0 else None
            lags.append(
                PartitionLag(
                    group, tp.topic, tp.partition, position, end,
                    max(0, end - (position if position is not None else low)),
                    fetched_end is not None and fetched_end > listed_end,
                )
            )
        return lags
    finally:
        probe.close()


def _fetched_high_watermark(consumer: Consumer, topic: str, partition: int, offset: int) -> int | None:
    """The high watermark a fetch response reports (exact even where ListOffsets is not)."""
    consumer.assign([TopicPartition(topic, partition, offset)])
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        message = consumer.poll(0.2)
        if message is not None and (message.error() is None or message.error().code() == KafkaError._PARTITION_EOF):
            break
    _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
    consumer.unassign()
    return high if high >= 0 else None


def topic_lags(
    before: list[PartitionLag],
    after: list[PartitionLag],
    seconds: float,
    lag_threshold: int,
    max_replicas: int | None = None,
) -> list[TopicLag]:
    """Aggregate per topic; the rate comes from committed offsets moving between samples."""
    topics: dict[tuple[str, str], list[PartitionLag]] = {}
    for lag in after:
        topics.setdefault((lag.group, lag.topic), []).append(lag)
    previous = {(p.topic, p.partition): p.committed for p in before}
    result = []
    for (group, topic), lags in sorted(topics.items()):
        total = sum(p.lag for p in lags)
        moved = sum(
            (p.committed or 0) - (previous.get((p.topic, p.partition)) or 0)
            for p in lags
            if (p.topic, p.partition) in previous
        )
        rate = moved / seconds if before and seconds > 0 else None
        drain = total / rate if rate else (0.0 if total == 0 else None)
        result.append(
            TopicLag(group, topic, len(lags), total, rate, drain,
                     keda_replicas(total, len(lags), lag_threshold, max_replicas))
        )
    return result
