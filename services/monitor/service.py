"""The monitor service: wiring of its consumer group to its logic."""

from __future__ import annotations

import logging

from streamml.events import Event, FeedbackRecord, PredictionRecord
from streamml.service import EventService, run
from streamml.settings import ServiceSettings

log = logging.getLogger("streamml.monitor")

GROUP = "streamml-monitor"
INPUT_TOPICS = [r"^predictions\..*", r"^feedback\..*"]


class MonitorSettings(ServiceSettings):
    pass


class MonitorService(EventService[MonitorSettings]):
    name = "monitor"
    group = GROUP
    accepts = (PredictionRecord, FeedbackRecord)

    def input_topics(self) -> list[str]:
        prefix = self.settings.kafka.topic_prefix.replace(".", r"\.")
        return [f"^{prefix}{pattern[1:]}" for pattern in INPUT_TOPICS]

    def handle_event(self, event: Event, context: dict) -> None:
        log.info("received", extra=context)


def main() -> None:
    run(MonitorService, MonitorSettings)
