"""What one preparation produced, and the manifest assembled from it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa

from streamml.manifest import (
    SPLITS,
    CategoryReference,
    CategoryTransform,
    DatasetManifest,
    DriftBuild,
    FileEntry,
    NumericReference,
    NumericTransform,
    RawSource,
)
from streamml.specs import DatasetSpec


@dataclass(frozen=True)
class RowCounts:
    """Where the input rows went: rejected, deduplicated, dropped for nulls, or kept."""

    input: int
    rejected: int
    violations: dict[str, int]  # "field.rule" -> rows failing it; a row may fail several
    duplicates: int
    null_dropped: int


@dataclass(frozen=True)
class DriftSides:
    """A drift build's prepared rows by side of the drift."""

    before: int  # train and validation rows from before the drift
    after: int  # rows of every split from after it
    test_left_out: int  # pre-drift rows that hashed to test: left out, so the test split is the new world


@dataclass(frozen=True)
class PrepResult:
    engine: str
    schema: pa.Schema
    counts: RowCounts
    rows: dict[str, int]
    files: dict[str, list[FileEntry]]
    content_sha256: dict[str, str]
    transform: dict[str, NumericTransform | CategoryTransform]
    reference: dict[str, NumericReference | CategoryReference]
    label_reference: NumericReference | CategoryReference | None
    drift_sides: DriftSides | None = None


def build_manifest(
    result: PrepResult,
    spec: DatasetSpec,
    *,
    version: int,
    lineage: list[RawSource],
    trigger: str,
    code_version: str,
    quarantined: dict[str, str] | None = None,
    created: datetime | None = None,
    drift: DriftBuild | None = None,
    rows_since: datetime | None = None,
    engine_reason: str | None = None,
) -> DatasetManifest:
    """The manifest of a prepared version; the caller chooses the version and writes it last."""
    return DatasetManifest(
        dataset=spec.name,
        version=version,
        created=created or datetime.now(UTC),
        spec_fingerprint=spec.fingerprint(),
        schema={field.name: str(field.type) for field in result.schema},
        key=spec.key,
        event_time=spec.time_column,
        event_time_source="field" if spec.event_time else "kafka_timestamp",
        label=spec.label,
        features=[field.name for field in spec.features],
        files={split: result.files[split] for split in SPLITS},
        rows={split: result.rows[split] for split in SPLITS},
        content_sha256={split: result.content_sha256[split] for split in SPLITS},
        transform=result.transform,
        reference=result.reference,
        label_reference=result.label_reference,
        lineage=lineage,
        quarantined=quarantined or {},
        trigger=trigger,
        code_version=code_version,
        engine=result.engine,
        engine_reason=engine_reason,
        drift=drift,
        rows_since=rows_since,
        spec=spec,
    )
