"""``model.promoted`` events for one model, from now on, seen by every application instance;
also ``model.shadow`` and ``model.rejected`` (a shadow starts or ends) where those topics exist.

The feed assigns itself every partition of the topic and starts at its end,
with no consumer group: a group would share the partitions among instances,
and each instance must see every promotion. Nothing is committed; an instance
that restarts reads the champion pointer at start instead.

An event is only a signal to re-read ``champion.json``, so reading an event
twice, or one from before the start, is harmless. Some brokers report a
partition's end too low, which makes the feed re-read a few older events.
"""

from __future__ import annotations

import logging
import uuid

from confluent_kafka import Consumer, KafkaException, TopicPartition

from streamml.events import EventError, ModelPromoted, ModelRejected, ModelShadow, decode
from streamml.settings import KafkaSettings

log = logging.getLogger("streamml.sdk.promotions")
TOPIC = "model.promoted"
# A shadow starts (model.shadow) or ends (model.promoted, model.rejected). A deployment without these
# topics still notices a shadow at the client's next reconciliation.
SHADOW_TOPICS = ("model.shadow", "model.rejected")


class PromotionFeed:
    def __init__(self, settings: KafkaSettings, model: str, timeout_s: float | None = None) -> None:
        self.model = model
        self.topic = settings.topic(TOPIC)
        timeout = timeout_s or settings.connect_timeout_s
        self._consumer = Consumer({
            **settings.client_config(),
            # Required by the client, never joined: partitions are assigned directly.
            "group.id": f"streamml-sdk-{model}-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "fetch.wait.max.ms": 100,
            "fetch.queue.backoff.ms": 10,
        })
        try:
            metadata = self._consumer.list_topics(timeout=timeout)
            topic = metadata.topics.get(self.topic)
            if topic is None or topic.error is not None or not topic.partitions:
                raise KafkaException(
                    f"topic {self.topic!r} does not exist; create it with `streamml topics apply`"
                    + (f" ({topic.error.str()})" if topic is not None and topic.error is not None else "")
                )
            followed = [self.topic, *(name for name in map(settings.topic, SHADOW_TOPICS)
                                      if name in metadata.topics and metadata.topics[name].partitions)]
            positions = []
            for name in followed:
                for partition in sorted(metadata.topics[name].partitions):
                    _, end = self._consumer.get_watermark_offsets(
                        TopicPartition(name, partition), timeout=timeout, cached=False
                    )
                    positions.append(TopicPartition(name, partition, max(end, 0)))
            self._consumer.assign(positions)
        except Exception:
            self._consumer.close()
            raise

    def poll(self, timeout: float) -> bool:
        """True when a promotion of this model, or the start or end of a shadow, arrived within ``timeout`` s."""
        promoted = False
        for message in self._consumer.consume(100, timeout):
            if message.error() is not None:
                if message.error().fatal():
                    raise KafkaException(message.error())
                continue
            try:
                event, _ = decode(message.headers(), message.key(), message.value())
            except EventError as error:
                log.warning("skipping a message that is not a streamml event on %s: %s", self.topic, error)
                continue
            if isinstance(event, ModelPromoted | ModelShadow | ModelRejected) and event.model == self.model:
                promoted = True
        return promoted

    def close(self) -> None:
        self._consumer.close()
