"""The events streamml services exchange, one typed model per event type.

On the wire each event is a CloudEvents 1.0 message in Kafka binary mode:
attributes in ``ce_*`` headers, the model as a JSON body, and the Kafka key
set to the dataset or model name so related events share a partition.
``schemas/`` holds the JSON Schema of every model, generated from this file
(``streamml schemas write``); a test fails when they are stale.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

from cloudevents.core.bindings.kafka import KafkaMessage, from_binary, to_binary
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streamml.manifest import DatasetManifest
from streamml.registry.keys import dataset_manifest_key

SCHEMA_BASE = "https://streamml.dev/schemas/"
ID_NAMESPACE = uuid.UUID("6f1d3c2e-5b7a-4e0f-9c84-2a6b1e7d9f30")
_FORMAT = JSONFormat()


class Event(BaseModel):
    """Base of every event; subclasses set the CloudEvents type and topic."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    TYPE: ClassVar[str]
    VERSION: ClassVar[int] = 1

    @classmethod
    def ce_type(cls) -> str:
        return f"streamml.{cls.TYPE}.v{cls.VERSION}"

    @classmethod
    def schema_name(cls) -> str:
        return f"{cls.TYPE}.v{cls.VERSION}.json"

    def partition_key(self) -> str:
        raise NotImplementedError

    def default_topic(self) -> str:
        """Topic name without the configured prefix."""
        return self.TYPE


class DataLanded(Event):
    """A batch of validated ingest records is durable in the object store."""

    TYPE: ClassVar[str] = "data.landed"
    dataset: str
    object_key: str
    rows: int = Field(ge=1)
    bytes: int = Field(ge=0)
    topic: str
    partition: int = Field(ge=0)
    first_offset: int = Field(ge=0)
    last_offset: int = Field(ge=0)
    schema_fingerprint: str
    min_event_time: datetime | None = None
    max_event_time: datetime | None = None

    def partition_key(self) -> str:
        return self.dataset


class DatasetReady(Event):
    """A dataset version is committed (its manifest is written)."""

    TYPE: ClassVar[str] = "dataset.ready"
    dataset: str
    version: int = Field(ge=1)
    manifest_key: str
    rows: dict[str, int] = Field(description="rows per split")
    trigger: Literal["rows", "staleness", "drift", "manual"]
    quarantined: list[str] = Field(default_factory=list, description="raw objects left out")

    @classmethod
    def of(cls, manifest: DatasetManifest, trigger: str) -> DatasetReady:
        """The announcement of a committed version; ``trigger`` without its detail (``drift``)."""
        return cls(
            dataset=manifest.dataset, version=manifest.version,
            manifest_key=dataset_manifest_key(manifest.dataset, manifest.version),
            rows=dict(manifest.rows), trigger=trigger, quarantined=sorted(manifest.quarantined),
        )

    def partition_key(self) -> str:
        return self.dataset


class ModelTrained(Event):
    """A model version and its card are written to the registry."""

    TYPE: ClassVar[str] = "model.trained"
    model: str
    version: str
    dataset: str
    dataset_version: int = Field(ge=1)
    artifact_prefix: str
    metrics: dict[str, float]
    device: str
    training_seconds: float = Field(ge=0)

    def partition_key(self) -> str:
        return self.model


class ModelPromoted(Event):
    """The champion pointer of a model now names this version."""

    TYPE: ClassVar[str] = "model.promoted"
    model: str
    version: str
    artifact_prefix: str
    metrics: dict[str, float]
    previous_champion: str | None = None
    actor: str = Field(description="validator instance or the user who forced it")
    reason: str

    def partition_key(self) -> str:
        return self.model


class ModelRejected(Event):
    """A candidate failed the promotion policy; every failed rule is listed."""

    TYPE: ClassVar[str] = "model.rejected"
    model: str
    version: str
    reasons: list[str] = Field(min_length=1)
    metrics: dict[str, float]
    champion: str | None = None

    def partition_key(self) -> str:
        return self.model


class FeatureDrift(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    feature: str
    test: str
    statistic: float
    p_value: float | None = None
    effect_size: float


class DriftWindow(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    start: datetime
    end: datetime
    count: int = Field(ge=0)


class DriftDetected(Event):
    """Live traffic moved away from the training data; retraining is asked for."""

    TYPE: ClassVar[str] = "drift.detected"
    model: str
    dataset: str
    dataset_version: int | None = None
    kind: Literal["covariate", "prediction", "performance"]
    window: DriftWindow
    features: list[FeatureDrift]
    severity: Literal["low", "medium", "high"]

    def partition_key(self) -> str:
        return self.dataset


class PredictionRecord(Event):
    """One prediction an application made, logged for the monitor."""

    TYPE: ClassVar[str] = "prediction"
    request_id: str
    model: str
    model_version: str
    features: dict[str, float | int | str | None]
    output: float | list[float]
    time: datetime
    flags: list[str] = Field(
        default_factory=list, description="feature:rule of each rule of the dataset spec the inputs break")

    def partition_key(self) -> str:
        # One model's predictions share a partition, so one monitor replica judges them all.
        return self.model

    def default_topic(self) -> str:
        return f"predictions.{self.model}"


class PredictionBatch(Event):
    """Predictions of one model an application made, logged together: how the SDK sends them.

    Each element reads as a ``PredictionRecord`` event's body. One message per
    batch instead of one per prediction is what lets a server log every
    prediction at its full rate; ``streamml.prediction_events`` reads both forms."""

    TYPE: ClassVar[str] = "prediction.batch"
    model: str
    predictions: list[PredictionRecord] = Field(min_length=1)

    def partition_key(self) -> str:
        return self.model

    def default_topic(self) -> str:
        return f"predictions.{self.model}"


class FeedbackRecord(Event):
    """The ground truth for an earlier prediction, joined by request id."""

    TYPE: ClassVar[str] = "feedback"
    request_id: str
    model: str
    label: float | int | str
    time: datetime

    def partition_key(self) -> str:
        # The partition of the model's predictions (topics of equal partition counts), so
        # the replica that holds a model's predictions also gets their labels.
        return self.model

    def default_topic(self) -> str:
        return f"feedback.{self.model}"


EVENT_TYPES: dict[str, type[Event]] = {
    cls.ce_type(): cls
    for cls in (
        DataLanded,
        DatasetReady,
        ModelTrained,
        ModelPromoted,
        ModelRejected,
        DriftDetected,
        PredictionRecord,
        PredictionBatch,
        FeedbackRecord,
    )
}


class EventError(ValueError):
    """A message that is not a valid streamml event; the text says why."""


def stable_id(*parts: object) -> str:
    """An event id that is a function of what the event announces.

    A service that announces a fact again after a crash (a committed version,
    a decision, a pointer move) sends it with the same id, so consumers can
    tell a repeat from a new event (CloudEvents: same source and id, same event).
    """
    return str(uuid.uuid5(ID_NAMESPACE, "/".join(str(part) for part in parts)))


def encode(event: Event, source: str, event_id: str | None = None) -> KafkaMessage:
    """The Kafka key, headers and value of ``event`` in CloudEvents binary mode (a new id unless given)."""
    ce = CloudEvent(
        attributes={
            "id": event_id or str(uuid.uuid4()),
            "source": source,
            "type": event.ce_type(),
            "time": datetime.now(UTC),
            "datacontenttype": "application/json",
            "dataschema": SCHEMA_BASE + event.schema_name(),
            "partitionkey": event.partition_key(),
        },
        data=event.model_dump(mode="json"),
    )
    return to_binary(ce, _FORMAT)


def decode(
    headers: list[tuple[str, bytes]] | None, key: bytes | None, value: bytes | None
) -> tuple[Event, dict[str, Any]]:
    """Parse and validate a message; returns the event and its CloudEvents attributes."""
    header_map = {name: data for name, data in headers or [] if data is not None}
    ce_type = header_map.get("ce_type")
    if ce_type is None:
        raise EventError("missing ce_type header: not a CloudEvents binary-mode message")
    cls = EVENT_TYPES.get(ce_type.decode("utf-8", "replace"))
    if cls is None:
        raise EventError(f"unknown event type {ce_type!r}")
    try:
        ce = from_binary(KafkaMessage(header_map, key, value or b""), _FORMAT)
    except Exception as error:  # the SDK raises several unrelated types
        raise EventError(f"invalid CloudEvent: {error}") from None
    data = ce.get_data()
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data)
        except ValueError as error:
            raise EventError(f"body is not JSON: {error}") from None
    try:
        return cls.model_validate(data), ce.get_attributes()
    except ValidationError as error:
        raise EventError(f"{cls.ce_type()} does not validate: {_short(error)}") from None


def _short(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(map(str, item['loc'])) or 'body'}: {item['msg']}"
        for item in error.errors(include_url=False)
    )


def json_schemas() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema of each event type."""
    schemas = {}
    for cls in EVENT_TYPES.values():
        schema = cls.model_json_schema(mode="serialization")
        schema["$id"] = SCHEMA_BASE + cls.schema_name()
        schema["x-cloudevents-type"] = cls.ce_type()
        schemas[cls.schema_name()] = schema
    return schemas


def write_schemas(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in json_schemas().items():
        path = folder / name
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
