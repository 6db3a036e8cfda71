"""What a dataset spec asks of prep, as plain data both engines follow.

Schema enforcement, null policies, the prepared schema and split assignment
are decided here once, so the Spark job and the reference engine cannot
drift apart on rules; they only differ in how they execute them.
"""

from __future__ import annotations

import hashlib
from typing import Literal

import numpy as np
import pyarrow as pa

from streamml.specs import KAFKA_TIME, DatasetSpec, FieldSpec

SPLIT_BUCKETS = 10_000
# 15 hex digits = 60 bits: fits a signed 64-bit integer in every engine.
KEY_HASH_HEX_DIGITS = 15
NUMERIC_TYPES = ("int", "float", "bool")
KEY_TYPES = ("string", "category", "int")

Rule = Literal["type", "null", "min", "max", "category"]


class PrepError(ValueError):
    """A dataset cannot be prepared; the message names the field and the fix."""


def with_event_time(spec: DatasetSpec) -> DatasetSpec:
    """The spec prep works with: one whose records have no event_time field get ``_kafka_time``,
    the Kafka timestamp ingest lands beside every record, as their event time."""
    if spec.event_time is not None:
        return spec
    kafka_time = FieldSpec.model_construct(**{**FieldSpec(name="t", type="timestamp").model_dump(), "name": KAFKA_TIME})
    return spec.model_copy(update={"event_time": KAFKA_TIME, "fields": [*spec.fields, kafka_time]})


def engine_spec(spec: DatasetSpec, raw_paths: list[str]) -> DatasetSpec:
    """What an engine prepares by: the spec with its event time (``with_event_time``), checked;
    PrepError when the spec is unpreparable or there is nothing to prepare."""
    spec = with_event_time(spec)
    check_spec(spec)
    if not raw_paths:
        raise PrepError(f"dataset {spec.name!r}: no raw files to prepare")
    return spec


def check_spec(spec: DatasetSpec) -> None:
    """Reject specs whose preparation is undefined, naming every problem."""
    problems = []
    key = spec.field(spec.key)
    if key.type not in KEY_TYPES:
        problems.append(f"key {spec.key!r} has type {key.type}; prep needs one of {', '.join(KEY_TYPES)}")
    for field in spec.features:
        if field.type == "timestamp":
            problems.append(
                f"feature {field.name!r} is a timestamp; derive numeric features from it "
                "(hour, age in days) or drop it from the spec"
            )
    feature_names = {field.name for field in spec.features}
    for field in spec.fields:
        if field.nulls == "impute" and field.name not in feature_names:
            problems.append(
                f"field {field.name!r} has nulls: impute, which applies to features only; "
                "use drop or keep"
            )
    if problems:
        raise PrepError(f"dataset {spec.name!r}: " + "; ".join(problems))


def rules_of(field: FieldSpec) -> list[Rule]:
    """The checks a value of this field can fail, in the order they are reported."""
    rules: list[Rule] = ["type"]
    if not field.null_allowed:
        rules.append("null")
    if field.min is not None:
        rules.append("min")
    if field.max is not None:
        rules.append("max")
    if field.categories is not None:
        rules.append("category")
    return rules


def violation_name(field: FieldSpec, rule: Rule) -> str:
    return f"{field.name}.{rule}"


def numeric_features(spec: DatasetSpec) -> list[FieldSpec]:
    """Features standardised as float64 (bool counts as 0/1)."""
    return [field for field in spec.features if field.type in NUMERIC_TYPES]


def category_features(spec: DatasetSpec) -> list[FieldSpec]:
    return [field for field in spec.features if field.type == "category"]


def label_is_numeric(spec: DatasetSpec) -> bool:
    """A float label gets a numeric reference; any other label is a class with frequencies."""
    return spec.label is not None and spec.field(spec.label).type == "float"


def numeric_references(spec: DatasetSpec) -> list[FieldSpec]:
    """Fields whose raw train distribution is summarised by quantile bins."""
    fields = numeric_features(spec)
    if label_is_numeric(spec):
        fields.append(spec.field(spec.label))
    return fields


def dedupe_order(spec: DatasetSpec) -> list[str]:
    """Columns ordering the versions of one key, all descending with nulls last.

    The latest event time wins; equal times fall back to the field values in
    declared order, so the survivor depends only on the records themselves,
    never on file order or partitioning.
    """
    rest = [field.name for field in spec.fields if field.name not in (spec.key, spec.event_time)]
    return [spec.event_time, *rest]


def null_dropping_fields(spec: DatasetSpec) -> list[str]:
    """Fields whose nulls drop the row (only reachable when nulls are allowed at all)."""
    return [field.name for field in spec.fields if field.nulls == "drop" and field.null_allowed]


PREPARED_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "category": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}


# A drift build of window ``all`` weighs each row by its recency (``recency_weight``).
WEIGHT = "_weight"


def recency_weight_sql(kafka_us: str, point_ms: int, half_life_s: float) -> str:
    """SQL (Spark's and DuckDB's) for a row's training weight: 1 from the drift point on; before it, halved
    per ``half_life_s`` the row landed earlier, linear between halvings (``recency_weight``).

    Only IEEE-exact steps (division, floor, powers of two) so both engines write the same bits: a general
    ``power(0.5, x)`` differs in its last bit between Spark's and DuckDB's math libraries."""
    point_us, half_life_us = int(point_ms) * 1000, float(half_life_s) * 1e6
    x = f"(CAST({point_us} - {kafka_us} AS DOUBLE) / CAST({half_life_us!r} AS DOUBLE))"
    return (f"CASE WHEN {kafka_us} >= {point_us} THEN CAST(1 AS DOUBLE) "
            f"ELSE power(CAST(0.5 AS DOUBLE), floor({x})) * (1 - ({x} - floor({x})) / 2) END")


def recency_weight(age_s: np.ndarray, half_life_s: float) -> np.ndarray:
    """What ``recency_weight_sql`` computes for rows landed ``age_s`` seconds before the drift (<= 0: 1)."""
    halvings = np.maximum(np.asarray(age_s, dtype=np.float64), 0) / half_life_s
    whole = np.floor(halvings)
    return 0.5**whole * (1 - (halvings - whole) / 2)


def prepared_schema(spec: DatasetSpec, weighted: bool = False) -> pa.Schema:
    """Columns of a prepared split: key, event time, transformed features, label unchanged, and with
    ``weighted`` each row's training weight (``WEIGHT``)."""
    columns = [
        pa.field(spec.key, PREPARED_TYPES[spec.field(spec.key).type]),
        pa.field(spec.event_time, PREPARED_TYPES["timestamp"]),
    ]
    for field in spec.features:
        columns.append(pa.field(field.name, pa.int64() if field.type == "category" else pa.float64()))
    if spec.label is not None:
        columns.append(pa.field(spec.label, PREPARED_TYPES[spec.field(spec.label).type]))
    if weighted:
        columns.append(pa.field(WEIGHT, pa.float64()))
    return pa.schema(columns)


def split_bounds(ratios: dict[str, float]) -> tuple[int, int]:
    """Bucket limits: bucket < train_end is train, < validation_end is validation, else test."""
    train_end = round(ratios["train"] * SPLIT_BUCKETS)
    validation_end = round((ratios["train"] + ratios["validation"]) * SPLIT_BUCKETS)
    return train_end, validation_end


def key_hash(key: str | int) -> int:
    """60-bit hash of a key's text; engines compute the same from sha256 in SQL."""
    digest = hashlib.sha256(str(key).encode()).hexdigest()
    return int(digest[:KEY_HASH_HEX_DIGITS], 16)


def split_of(key: str | int, ratios: dict[str, float]) -> str:
    """The split a key belongs to; it depends on the key alone, so it never changes across versions."""
    bucket = key_hash(key) % SPLIT_BUCKETS
    train_end, validation_end = split_bounds(ratios)
    if bucket < train_end:
        return "train"
    return "validation" if bucket < validation_end else "test"
