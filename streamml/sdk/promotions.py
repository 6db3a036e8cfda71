"""``model.promoted`` events for one model, from now on, seen by every application instance;
also ``model.shadow`` and ``model.rejected`` (a shadow starts or ends) where those topics exist.

The feed is a TopicTail (every partition, from its end, no consumer group): a
group would share the partitions among instances, and each instance must see
every promotion. Nothing is committed; an instance that restarts reads the
champion pointer at start instead.

An event is only a signal to re-read ``champion.json``, so reading an event
twice, or one from before the start, is harmless. Some brokers report a
partition's end too low, which makes the feed re-read a few older events.
"""

from __future__ import annotations

import logging

from streamml.events import EventError, ModelPromoted, ModelRejected, ModelShadow, decode
from streamml.kafka import TopicTail
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
        self._tail = TopicTail(settings, [self.topic], optional=map(settings.topic, SHADOW_TOPICS),
                               timeout_s=timeout_s)

    def poll(self, timeout: float) -> bool:
        """True when a promotion of this model, or the start or end of a shadow, arrived within ``timeout`` s."""
        promoted = False
        for message in self._tail.poll(100, timeout):
            try:
                event, _ = decode(message.headers(), message.key(), message.value())
            except EventError as error:
                log.warning("skipping a message that is not a streamml event on %s: %s", message.topic(), error)
                continue
            if isinstance(event, ModelPromoted | ModelShadow | ModelRejected) and event.model == self.model:
                promoted = True
        return promoted

    def close(self) -> None:
        self._tail.close()
