"""The prep service: wiring of its consumer group to its logic."""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import Field

from streamml.events import DataLanded, DriftDetected, Event
from streamml.service import EventService, run
from streamml.settings import Group, ServiceSettings

log = logging.getLogger("streamml.prep")

GROUP = "streamml-prep"
INPUT_TOPICS = ["data.landed", "drift.detected"]


class PrepOptions(Group):
    specs_dir: Path = Field(Path("datasets"), description="folder of dataset spec YAML files")
    spark_master: str = Field("local[*]", description="local[N], spark://host:port or k8s://...")
    jars_dir: Path = Field(Path("vendor/jars"), description="folder with the S3A connector jars")


class PrepSettings(ServiceSettings):
    prep: PrepOptions = PrepOptions()


class PrepService(EventService[PrepSettings]):
    name = "prep"
    group = GROUP
    accepts = (DataLanded, DriftDetected,)

    def input_topics(self) -> list[str]:
        return [self.settings.kafka.topic(name) for name in INPUT_TOPICS]

    def handle_event(self, event: Event, context: dict) -> None:
        log.info("received", extra=context)


def main() -> None:
    run(PrepService, PrepSettings)
