"""Dataset specs: the declared shape of the records an application publishes.

A spec is a YAML file; ingest validates records against it, prep enforces it
and reads its preparation policy, the trainer and monitor read its roles
(key, event time, label). ``event_time`` is optional: without it, each
record's time is the timestamp Kafka gave it (``_kafka_time`` in the raw
data and the prepared splits; the manifest says so). Example::

    name: transactions
    key: tx_id
    event_time: ts
    label: is_fraud
    fields:
      - {name: tx_id, type: string}
      - {name: ts, type: timestamp}
      - {name: amount, type: float, min: 0, nulls: impute}
      - {name: channel, type: category, categories: [web, pos, atm]}
      - {name: is_fraud, type: int, min: 0, max: 1}
    prep:
      splits: {train: 0.8, validation: 0.1, test: 0.1}
      min_new_rows: 10000
      on_drift: {min_rows_after: 2000, max_wait_s: 600, window: since_drift}
      # or: on_drift: {window: all, half_life_s: 1800}  (older rows weigh less in training)
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from collections.abc import Callable
from typing import Literal, TypeVar

import pyarrow as pa
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

FieldType = Literal["string", "int", "float", "bool", "category", "timestamp"]
NAME = r"^[a-z][a-z0-9_]{0,62}$"
# The column ingest writes beside every record with its Kafka timestamp; the event time of a
# dataset whose spec names no event_time field.
KAFKA_TIME = "_kafka_time"

ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "category": pa.string(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}


class Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FieldSpec(Strict):
    name: str = Field(pattern=NAME)
    type: FieldType
    required: bool = Field(True, description="a record without this field is rejected")
    nullable: bool = Field(False, description="an explicit null is accepted")
    min: float | None = None
    max: float | None = None
    categories: list[str] | None = Field(None, description="allowed values of a category")
    nulls: Literal["drop", "impute", "keep"] = Field(
        "drop", description="prep: drop the row, impute (median / most frequent), or keep"
    )

    @model_validator(mode="after")
    def _consistent(self) -> FieldSpec:
        problems = []
        if (self.min is not None or self.max is not None) and self.type not in ("int", "float"):
            problems.append(f"min/max apply to int and float fields, not {self.type}")
        if self.min is not None and self.max is not None and self.min > self.max:
            problems.append(f"min {self.min} is greater than max {self.max}")
        if self.categories is not None and self.type != "category":
            problems.append("categories apply to category fields only")
        if self.categories is not None and len(set(self.categories)) != len(self.categories):
            problems.append("categories repeat a value")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def null_allowed(self) -> bool:
        """Parquet cannot tell a missing field from an explicit null, so either permission admits null."""
        return self.nullable or not self.required


TRAINING_WINDOWS = ("since_drift", "all")
# Window all: a row landed an hour before the drift weighs half a row from after it.
DEFAULT_HALF_LIFE_S = 3600.0


class LastRows(Strict):
    last_rows: int = Field(ge=1, description="the newest N landed rows, by Kafka timestamp")


class DriftPolicy(Strict):
    """How prep answers ``drift.detected``: wait for rows from the new world, then build from a window.

    Rows are placed on either side of the drift by their Kafka timestamp
    (``_kafka_time``) against the start of the drifted window the event carries.
    """

    min_rows_after: int = Field(
        2000, ge=1, description="landed rows from after the drift to wait for before building")
    max_wait_s: float = Field(
        600, gt=0, description="build with the post-drift rows there are once the drift is this old")
    window: Literal["since_drift", "all"] | LastRows = Field(
        "since_drift", description="what the drift build trains on: since_drift (rows after the drift only), "
        "all (every landed row, older ones weighing less: half_life_s), or {last_rows: N} (the newest N landed rows)")
    half_life_s: float | None = Field(
        None, gt=0, description=f"window all: a row's training weight halves per half_life_s it landed before "
        f"the drift point (linear between halvings); rows after it weigh 1 (default {DEFAULT_HALF_LIFE_S:g})")

    @field_validator("window", mode="before")
    @classmethod
    def _window_named(cls, value: object) -> object:
        if isinstance(value, str) and value in TRAINING_WINDOWS or isinstance(value, LastRows):
            return value
        rows = value.get("last_rows") if isinstance(value, dict) and set(value) == {"last_rows"} else None
        if isinstance(rows, int) and not isinstance(rows, bool) and rows >= 1:
            return LastRows(last_rows=rows)
        raise ValueError(f"window {value!r} is not one of since_drift, all, {{last_rows: N}} with N >= 1")

    @model_validator(mode="after")
    def _half_life_weighs_all(self) -> DriftPolicy:
        if self.half_life_s is not None and self.window != "all":
            raise ValueError(f"half_life_s weighs the rows of window all, not of window {self.window_name}: "
                             "remove half_life_s or use window: all")
        return self

    @property
    def recency_half_life_s(self) -> float | None:
        """The half-life of the training weights: window ``all`` only (None: every row weighs 1)."""
        if self.window != "all":
            return None
        return self.half_life_s if self.half_life_s is not None else DEFAULT_HALF_LIFE_S

    @property
    def window_name(self) -> str:
        """``since_drift``, ``all`` or ``last_rows:N``."""
        return self.window if isinstance(self.window, str) else f"last_rows:{self.window.last_rows}"


PrepEngine = Literal["spark", "duckdb", "auto"]


class PrepPolicy(Strict):
    splits: dict[Literal["train", "validation", "test"], float] = Field(
        default_factory=lambda: {"train": 0.8, "validation": 0.1, "test": 0.1}
    )
    min_new_rows: int = Field(10_000, ge=1, description="build once this many rows are pending")
    max_staleness_s: float = Field(3600, gt=0, description="build pending rows older than this")
    clip_quantiles: tuple[float, float] | None = Field(
        None, description="clip numeric features to these train quantiles, e.g. [0.001, 0.999]"
    )
    category_min_count: int = Field(1, ge=1, description="rarer categories map to out-of-vocabulary")
    on_bad_object: Literal["skip", "fail"] = "skip"
    on_drift: DriftPolicy = DriftPolicy()
    engine: PrepEngine | None = Field(
        None, description="spark, duckdb or auto for this dataset (unset: the prep service's STREAMML_PREP_ENGINE)")

    @model_validator(mode="after")
    def _splits_sum_to_one(self) -> PrepPolicy:
        if set(self.splits) != {"train", "validation", "test"}:
            raise ValueError("splits must name train, validation and test")
        if abs(sum(self.splits.values()) - 1.0) > 1e-9 or min(self.splits.values()) < 0:
            raise ValueError(f"split ratios must be >= 0 and sum to 1, got {self.splits}")
        if self.clip_quantiles and not 0 <= self.clip_quantiles[0] < self.clip_quantiles[1] <= 1:
            raise ValueError(f"clip_quantiles must be 0 <= low < high <= 1: {self.clip_quantiles}")
        return self


class DatasetSpec(Strict):
    name: str = Field(pattern=NAME)
    key: str = Field(description="field that identifies a record; Kafka key and dedupe key")
    event_time: str | None = Field(
        None, description="timestamp field: when the record happened (unset: the record's Kafka timestamp)")
    label: str | None = Field(None, description="field the model learns to predict")
    fields: list[FieldSpec] = Field(min_length=1)
    prep: PrepPolicy = PrepPolicy()

    @model_validator(mode="after")
    def _roles_name_fields(self) -> DatasetSpec:
        by_name = {}
        problems = []
        for spec in self.fields:
            if spec.name in by_name:
                problems.append(f"field {spec.name!r} is declared twice")
            by_name[spec.name] = spec
        for role in ("key", "event_time", "label"):
            name = getattr(self, role)
            if name is not None and name not in by_name:
                problems.append(f"{role} {name!r} is not a declared field")
        if self.event_time is not None and self.event_time in by_name and by_name[self.event_time].type != "timestamp":
            problems.append(f"event_time {self.event_time!r} must have type timestamp")
        if self.key in by_name and by_name[self.key].null_allowed:
            problems.append(f"key {self.key!r} must be required and not nullable")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def field(self, name: str) -> FieldSpec:
        return next(spec for spec in self.fields if spec.name == name)

    @property
    def features(self) -> list[FieldSpec]:
        """Fields a model learns from: all but key, event time and label."""
        roles = {self.key, self.event_time, self.label}
        return [spec for spec in self.fields if spec.name not in roles and spec.type != "string"]

    @property
    def time_column(self) -> str:
        """The column that holds each record's event time: the event_time field, else its Kafka timestamp."""
        return self.event_time or KAFKA_TIME

    @property
    def ingest_topic(self) -> str:
        return f"ingest.{self.name}"

    def arrow_schema(self) -> pa.Schema:
        return pa.schema(
            [
                pa.field(spec.name, ARROW_TYPES[spec.type], nullable=spec.null_allowed)
                for spec in self.fields
            ]
        )

    def fingerprint(self) -> str:
        """Stable hash of the record shape (names, types, constraints), not of the prep policy."""
        shape = [spec.model_dump(exclude={"nulls"}) for spec in self.fields]
        canonical = json.dumps(shape, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class SpecError(ValueError):
    """Every problem of one spec file, one per line, each naming the field."""

    def __init__(self, path: Path | str, problems: list[str]):
        super().__init__(f"{path}: " + f"\n{path}: ".join(problems))
        self.path = path
        self.problems = problems


def _problems(error: ValidationError) -> list[str]:
    lines = []
    for item in error.errors(include_url=False):
        where = ".".join(str(part) for part in item["loc"]) or "spec"
        message = re.sub(r"^Value error, ", "", item["msg"])
        lines.extend(f"{where}: {part}" for part in message.split("; "))
    return lines


def parse_dataset_spec(document: object, source: str = "<spec>") -> DatasetSpec:
    if not isinstance(document, dict):
        raise SpecError(source, ["the spec must be a mapping with name, key, fields (and optionally event_time, label)"])
    try:
        return DatasetSpec.model_validate(document)
    except ValidationError as error:
        raise SpecError(source, _problems(error)) from None


def read_yaml(path: Path, error: type[SpecError] = SpecError) -> object:
    """A YAML document, or ``error`` naming the file and what is wrong with it."""
    try:
        return yaml.safe_load(path.read_text())
    except OSError as failure:
        raise error(path, [f"cannot read: {failure.strerror}"]) from None
    except yaml.YAMLError as failure:
        raise error(path, [f"not valid YAML: {failure}"]) from None


T = TypeVar("T")


def load_folder(
    folder: Path,
    load: Callable[[Path], T],
    name_of: Callable[[T], str],
    what: str,
    noun: str,
    error: type[SpecError] = SpecError,
) -> dict[str, T]:
    """Every ``*.yaml``/``*.yml`` file of ``folder`` by name; all bad files are reported at once."""
    if not folder.is_dir():
        raise error(folder, [f"not a folder of {what}"])
    loaded: dict[str, T] = {}
    problems: list[str] = []
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        try:
            item = load(path)
        except SpecError as failure:
            problems.extend(f"{path.name}: {line}" for line in failure.problems)
            continue
        if name_of(item) in loaded:
            problems.append(f"{path.name}: {noun} {name_of(item)!r} is declared twice")
        loaded[name_of(item)] = item
    if problems:
        raise error(folder, problems)
    return loaded


def load_dataset_spec(path: Path) -> DatasetSpec:
    return parse_dataset_spec(read_yaml(path), str(path))


def load_dataset_specs(folder: Path) -> dict[str, DatasetSpec]:
    """All dataset specs of a folder by dataset name."""
    return load_folder(folder, load_dataset_spec, lambda spec: spec.name, "dataset specs", "dataset")
