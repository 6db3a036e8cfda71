"""The monitor service: wiring of its consumer group to its logic."""

from __future__ import annotations

import logging

from pydantic import Field

from streamml.events import Event, FeedbackRecord, PredictionRecord
from streamml.service import EventService, run
from streamml.settings import Group, ServiceSettings

log = logging.getLogger("streamml.monitor")

GROUP = "streamml-monitor"
INPUT_TOPICS = [r"^predictions\..*", r"^feedback\..*"]


class MonitorOptions(Group):
    models: list[str] = Field(default_factory=list, description="JSON list of model names to watch")


class MonitorSettings(ServiceSettings):
    monitor: MonitorOptions = MonitorOptions()


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
