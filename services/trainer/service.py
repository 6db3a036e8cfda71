"""The trainer service: wiring of its consumer group to its logic."""

from __future__ import annotations

import logging

from streamml.events import DatasetReady, Event
from streamml.service import EventService, run
from streamml.settings import ServiceSettings

log = logging.getLogger("streamml.trainer")

GROUP = "streamml-trainer"
INPUT_TOPICS = ["dataset.ready"]


class TrainerSettings(ServiceSettings):
    pass


class TrainerService(EventService[TrainerSettings]):
    name = "trainer"
    group = GROUP
    accepts = (DatasetReady,)

    def input_topics(self) -> list[str]:
        return [self.settings.kafka.topic(name) for name in INPUT_TOPICS]

    def handle_event(self, event: Event, context: dict) -> None:
        log.info("received", extra=context)


def main() -> None:
    run(TrainerService, TrainerSettings)
