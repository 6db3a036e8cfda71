"""Topics as code: ``topics.yaml`` declares every topic; ``streamml topics apply``
creates what is missing and reports what differs but cannot be fixed.

The Helm chart renders the same file into Strimzi ``KafkaTopic`` resources.
Dataset specs add one ``ingest.<dataset>`` topic each, and monitored models
their ``predictions.<model>`` and ``feedback.<model>`` topics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streamml.settings import KafkaSettings


class TopicSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9._-]{1,249}$")
    partitions: int | None = Field(None, ge=1)
    replication_factor: int | None = Field(None, ge=1)
    config: dict[str, str] = Field(default_factory=dict)


class TopicDefaults(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    partitions: int = Field(4, ge=1)
    replication_factor: int = Field(1, ge=1)
    config: dict[str, str] = Field(default_factory=dict)


class TopicsFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    defaults: TopicDefaults = TopicDefaults()
    topics: list[TopicSpec]


@dataclass(frozen=True)
class Topic:
    """A fully resolved topic: defaults applied, prefix added."""

    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str] = field(default_factory=dict)


def load_topics(path: Path) -> TopicsFile:
    try:
        return TopicsFile.model_validate(yaml.safe_load(path.read_text()))
    except OSError as error:
        raise ValueError(f"{path}: cannot read: {error.strerror}") from None
    except ValidationError as error:
        lines = [
            f"{path}: {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors(include_url=False)
        ]
        raise ValueError("\n".join(lines)) from None


def resolve(
    declared: TopicsFile,
    prefix: str = "",
    extra: list[str] = (),
    replication_factor: int | None = None,
) -> list[Topic]:
    """Apply defaults and prefix; ``extra`` names topics that take the defaults."""
    d = declared.defaults
    specs = list(declared.topics) + [TopicSpec(name=name) for name in extra]
    topics: dict[str, Topic] = {}
    for spec in specs:
        topics[prefix + spec.name] = Topic(
            name=prefix + spec.name,
            partitions=spec.partitions or d.partitions,
            replication_factor=replication_factor or spec.replication_factor or d.replication_factor,
            config={**d.config, **spec.config},
        )
    return list(topics.values())


@dataclass
class ApplyReport:
    created: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences


def plan(wanted: list[Topic], existing: dict[str, int]) -> tuple[list[Topic], list[str]]:
    """Topics to create, and differences ``apply`` cannot fix (pure: for tests)."""
    missing = [topic for topic in wanted if topic.name not in existing]
    differences = [
        f"{t.name}: has {existing[t.name]} partitions, declared {t.partitions}"
        f" ({'add them with kafka-topics --alter' if existing[t.name] < t.partitions else 'partitions cannot be removed'})"
        for t in wanted
        if t.name in existing and existing[t.name] != t.partitions
    ]
    return missing, differences


def apply(settings: KafkaSettings, wanted: list[Topic], timeout: float = 30) -> ApplyReport:
    """Create missing topics; idempotent. Never deletes or shrinks anything."""
    admin = AdminClient(settings.client_config())
    metadata = admin.list_topics(timeout=timeout)
    existing = {name: len(meta.partitions) for name, meta in metadata.topics.items()}
    missing, differences = plan(wanted, existing)
    report = ApplyReport(differences=differences)
    report.unchanged = [t.name for t in wanted if t.name in existing]
    if missing:
        futures = admin.create_topics(
            [NewTopic(t.name, t.partitions, t.replication_factor, config=t.config) for t in missing],
            operation_timeout=timeout,
        )
        for name, future in futures.items():
            try:
                future.result()
                report.created.append(name)
            except KafkaException as error:
                if error.args[0].code() == 36:  # TOPIC_ALREADY_EXISTS: a concurrent apply won
                    report.unchanged.append(name)
                else:
                    report.differences.append(f"{name}: cannot create: {error.args[0].str()}")
    return report



DEFAULT_FILE = Path(__file__).resolve().parents[1] / "topics.yaml"


def apply_declared(
    settings: KafkaSettings,
    file: Path = DEFAULT_FILE,
    specs_dir: Path | None = None,
    models: list[str] = (),
    replication_factor: int | None = None,
) -> ApplyReport:
    """Apply the topics file plus the ingest topics of the specs in ``specs_dir``."""
    from streamml.specs import load_dataset_specs

    extra = []
    if specs_dir is not None:
        extra += [spec.ingest_topic for spec in load_dataset_specs(specs_dir).values()]
    for model in models:
        extra += [f"predictions.{model}", f"feedback.{model}"]
    wanted = resolve(load_topics(file), settings.topic_prefix, extra, replication_factor)
    return apply(settings, wanted)
