"""The validator service: wiring of its consumer group to its logic."""

from __future__ import annotations

import logging

from streamml.events import ModelTrained, Event
from streamml.service import EventService, run
from streamml.settings import ServiceSettings

log = logging.getLogger("streamml.validator")

GROUP = "streamml-validator"
INPUT_TOPICS = ["model.trained"]


class ValidatorSettings(ServiceSettings):
    pass


class ValidatorService(EventService[ValidatorSettings]):
    name = "validator"
    group = GROUP
    accepts = (ModelTrained,)

    def input_topics(self) -> list[str]:
        return [self.settings.kafka.topic(name) for name in INPUT_TOPICS]

    def handle_event(self, event: Event, context: dict) -> None:
        log.info("received", extra=context)


def main() -> None:
    run(ValidatorService, ValidatorSettings)
