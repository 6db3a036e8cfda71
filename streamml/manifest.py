"""Dataset manifests: what a committed dataset version contains.

Prep writes ``datasets/<name>/v<N>/manifest.json`` last, after the splits, so
a version exists exactly when its manifest does. The trainer reads the split
files it lists, the SDK applies ``transform`` to live records, and the monitor
compares live traffic with ``reference``.

Prepared split files hold: the key column, the event-time column, every
feature column transformed (numeric -> float64 standardised; category -> int64
index, 0 meaning out-of-vocabulary), and the label column unchanged.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from streamml.specs import DatasetSpec

SPLITS = ("train", "validation", "test")


class Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NumericTransform(Strict):
    kind: Literal["numeric"] = "numeric"
    mean: float
    std: float = Field(gt=0, description="1.0 when the train split has no spread")
    impute: float | None = Field(None, description="value for nulls (train median)")
    clip: tuple[float, float] | None = None

    def apply(self, value: float | None) -> float:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            value = self.impute if self.impute is not None else self.mean
        if self.clip is not None:
            value = min(max(value, self.clip[0]), self.clip[1])
        return (value - self.mean) / self.std


class CategoryTransform(Strict):
    kind: Literal["category"] = "category"
    vocabulary: list[str] = Field(description="index i+1 encodes vocabulary[i]; 0 is out-of-vocabulary")
    impute: str | None = None

    def apply(self, value: str | None) -> int:
        if value is None:
            value = self.impute
        try:
            return self.vocabulary.index(value) + 1 if value is not None else 0
        except ValueError:
            return 0


class NumericReference(Strict):
    """Raw (untransformed) train distribution of a numeric feature."""

    kind: Literal["numeric"] = "numeric"
    edges: list[float] = Field(description="quantile bin edges, ascending; outer bins are open")
    fractions: list[float] = Field(description="share of train rows per bin: len(edges) + 1")
    count: int
    mean: float
    std: float
    sample: list[float] = Field(default_factory=list, description="a uniform train sample for KS")

    def bin_labels(self) -> list[str]:
        """The bins ``fractions`` are shares of: ``< e0``, ``[e0, e1)``, ..., ``>= ek``."""
        edges = [f"{edge:.4g}" for edge in self.edges]
        if not edges:
            return ["all"]
        middle = [f"[{low}, {high})" for low, high in zip(edges, edges[1:], strict=False)]
        return [f"< {edges[0]}", *middle, f">= {edges[-1]}"]


class CategoryReference(Strict):
    kind: Literal["category"] = "category"
    frequencies: dict[str, float] = Field(description="share of train rows per category")
    count: int


class FileEntry(Strict):
    key: str
    rows: int
    sha256: str


class RawSource(Strict):
    """One landed raw object that went into this version."""

    key: str
    topic: str
    partition: int
    first_offset: int
    last_offset: int
    rows: int
    sha256: str | None = Field(
        None, description="sha256 of the object's bytes when the version was built: a rebuild finds a changed "
        "object by it (unset in versions built before it was recorded)")


class DriftBuild(Strict):
    """The drift a version was built for, and how many of its rows came from each side of it.

    A row's side is its Kafka timestamp against ``point``, the start of the
    drifted window the monitor reported. The test split of a drift build holds
    post-drift rows only, so a candidate is judged on the new world.
    """

    event_id: str = Field(description="id of the drift.detected event answered")
    model: str
    kind: str
    window_start: datetime
    window_end: datetime
    point: datetime = Field(description="rows with a Kafka timestamp at or after this are post-drift")
    training_window: str = Field(description="since_drift, all or last_rows:N (the spec's prep.on_drift.window)")
    rows_before: int = Field(ge=0, description="prepared rows (train and validation) from before the drift")
    rows_after: int = Field(ge=0, description="prepared rows (all splits) from after the drift")
    test_rows_left_out: int = Field(0, ge=0, description="pre-drift rows of the test split, left out of it")
    landed_rows_after: int = Field(ge=0, description="landed rows after the drift when the build started")
    waited_out: bool = Field(False, description="built after max_wait_s with fewer than min_rows_after rows")


class DatasetManifest(Strict):
    dataset: str
    version: int = Field(ge=1)
    created: datetime
    spec_fingerprint: str
    schema_: dict[str, str] = Field(alias="schema", description="prepared column -> type")
    key: str
    event_time: str = Field(description="prepared column holding each row's event time")
    event_time_source: Literal["field", "kafka_timestamp"] = Field(
        "field", description="field: the spec's event_time; kafka_timestamp: the spec has none, so each record's "
        "Kafka timestamp (column _kafka_time) stands in for it")
    label: str | None
    features: list[str]
    files: dict[str, list[FileEntry]] = Field(description="split -> Parquet objects")
    rows: dict[str, int]
    content_sha256: dict[str, str] = Field(description="split -> hash over its sorted rows")
    transform: dict[str, NumericTransform | CategoryTransform]
    reference: dict[str, NumericReference | CategoryReference]
    label_reference: NumericReference | CategoryReference | None = None
    lineage: list[RawSource]
    quarantined: dict[str, str] = Field(default_factory=dict, description="raw key -> reason")
    trigger: str
    code_version: str
    engine: str = Field("spark", description="spark or duckdb: the engine that prepared the version")
    engine_reason: str | None = Field(
        None, description="why that engine: the setting or spec policy, and for auto the raw size against the limit")
    drift: DriftBuild | None = Field(None, description="set when the version answers a drift.detected")
    rows_since: datetime | None = Field(
        None, description="the version read only landed rows with a Kafka timestamp at or after this: a drift "
        "build's training window, which the builds after it keep until the next drift")
    spec: DatasetSpec | None = Field(
        None, description="the whole spec the version was prepared by: with the lineage, engine, rows_since and "
        "drift point, what `streamml datasets rebuild` needs (the fingerprint covers the record shape only, "
        "not the prep policy); unset in versions built before it was recorded")

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

