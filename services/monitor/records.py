"""Prediction and feedback events to columns, a consumed batch at a time.

The fast path joins the JSON bodies with newlines and parses them in one call
of pyarrow's JSON reader against the columns the model's reference needs
(numeric features as float64, category features as text; categories logged
as numbers are read in a second call that infers their type), then checks
the required fields with vectorised compute. A batch the reader refuses (a
body that is not JSON, a number given as text, a record of another shape)
takes the slow path: each body is validated against the event's
model on its own, so only the bad records are rejected, with the reason.
Both paths give the same columns for the same records.

    layout = FeatureLayout.of(reference)
    decoded = decode_predictions(values, layout, model="fraud")
    for index, reason in decoded.rejected.items(): ...   # to the dead-letter topic
    batch = decoded.batch()                             # a PredictionBatch for ModelMonitor
"""

from __future__ import annotations

import io
import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
from pydantic import ValidationError

from services.monitor.monitor import FeedbackBatch, PredictionBatch
from services.monitor.performance import Task, encode_labels
from services.monitor.reference import MonitorReference
from services.monitor.reference import category_text as reference_text
from streamml.classes import value_text
from streamml.events import FeedbackRecord, PredictionRecord
from streamml.manifest import NumericReference

MAX_REASON = 300
MIN_BLOCK_BYTES = 4 << 20
TIME_TYPE = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class FeatureLayout:
    """What a model's records must carry: its features by kind and the shape of its outputs."""

    numeric: tuple[str, ...]
    category: tuple[str, ...]
    classes: tuple[str, ...] | None = None
    """Multiclass: one output column per class; None: one output per record."""

    @classmethod
    def of(cls, reference: MonitorReference) -> FeatureLayout:
        numeric = tuple(name for name, ref in reference.features.items() if isinstance(ref, NumericReference))
        category = tuple(name for name in reference.features if name not in numeric)
        return cls(numeric, category, tuple(reference.classes) if reference.classes else None)

    def schema(self, typed_categories: bool = True) -> pa.Schema:
        """The columns to parse; without ``typed_categories`` the reader infers the category features' types."""
        features = [pa.field(name, pa.float64()) for name in self.numeric]
        if typed_categories:
            features += [pa.field(name, pa.string()) for name in self.category]
        output = pa.list_(pa.float64()) if self.classes else pa.float64()
        return pa.schema([
            ("request_id", pa.string()),
            ("model", pa.string()),
            ("model_version", pa.string()),
            ("features", pa.struct(features)),
            ("output", output),
            ("time", TIME_TYPE),
            ("flags", pa.list_(pa.string())),  # optional: the input rules a record broke (SDK input checks)
            ("shadow", pa.bool_()),  # optional: scored by a version in shadow, not served
        ])


@dataclass(frozen=True)
class DecodedPredictions:
    """The valid records' columns, in input order, and why each other input index was rejected."""

    request_ids: pa.Array
    versions: pa.Array
    times: np.ndarray
    features: dict[str, pa.Array]
    outputs: np.ndarray
    rejected: dict[int, str] = field(default_factory=dict)
    flagged: dict[str, int] = field(default_factory=dict)  # "feature:rule" -> valid records that broke it
    shadow: np.ndarray | None = None  # true where a version in shadow answered (not served); None: none did

    def __len__(self) -> int:
        return len(self.request_ids)

    def batch(self, keep: np.ndarray | None = None) -> PredictionBatch:
        """A PredictionBatch of the valid records, or of those where ``keep`` is true."""
        if keep is None:
            return PredictionBatch(self.request_ids, self.times, self.features, self.outputs)
        mask = pa.array(keep)
        return PredictionBatch(
            request_ids=self.request_ids.filter(mask),
            times=self.times[keep],
            features={name: column.filter(mask) for name, column in self.features.items()},
            outputs=self.outputs[keep],
        )


@dataclass(frozen=True)
class DecodedFeedback:
    request_ids: pa.Array
    labels: pa.Array | np.ndarray | list
    times: np.ndarray
    rejected: dict[int, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.request_ids)

    def batch(self) -> FeedbackBatch:
        return FeedbackBatch(self.request_ids, self.labels, self.times)


# ------------------------------------------------------------------ predictions


def decode_predictions(values: list[bytes | None], layout: FeatureLayout, model: str) -> DecodedPredictions:
    """Columns of the prediction events in ``values`` for ``model``; bad ones are listed in ``rejected``."""
    table = _read_all(values, layout.schema())
    if table is None and layout.category:
        # Categories logged as numbers or booleans (valid events): let the reader type them, then take their text.
        table = _read_all(values, layout.schema(typed_categories=False), unexpected="infer")
    if table is None:
        return _predictions_one_by_one(values, layout, model)
    rejected = _missing(table, ("request_id", "model", "model_version", "features", "output", "time"))
    rejected.update(_other_model(table["model"], model, rejected))
    if layout.classes:
        rejected.update(_wrong_width(table["output"], len(layout.classes), rejected))
    table = _drop(table, rejected)
    try:
        features = _feature_columns(table.column("features").combine_chunks(), layout)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return _predictions_one_by_one(values, layout, model)  # e.g. an object where a category belongs
    output = table.column("output").combine_chunks()
    if layout.classes:
        outputs = _float(output.flatten()).reshape(len(output), len(layout.classes))
    else:
        outputs = _float(output)
    return DecodedPredictions(
        request_ids=_array(table["request_id"]),
        versions=_array(table["model_version"]),
        times=_seconds(table["time"]),
        features=features,
        outputs=outputs,
        rejected=rejected,
        flagged=_flag_counts(table.column("flags")),
        shadow=_marked(table.column("shadow")),
    )


def _marked(shadow: pa.ChunkedArray) -> np.ndarray | None:
    if shadow.null_count == len(shadow):
        return None
    return pc.fill_null(shadow, False).to_numpy(zero_copy_only=False)


def _flag_counts(flags: pa.ChunkedArray) -> dict[str, int]:
    if flags.null_count == len(flags):
        return {}
    counts = pc.value_counts(pc.list_flatten(flags))
    return {str(value): int(count) for value, count in zip(counts.field("values").to_pylist(),
                                                             counts.field("counts").to_pylist(), strict=True)}


def _feature_columns(features: pa.StructArray, layout: FeatureLayout) -> dict[str, pa.Array]:
    columns = {name: features.field(name) for name in layout.numeric}
    for name in layout.category:
        index = features.type.get_field_index(name)
        # A category no record of the batch carries was not inferred: it is missing throughout.
        columns[name] = pa.nulls(len(features), pa.string()) if index < 0 else reference_text(features.field(index))
    return columns


def _predictions_one_by_one(values: list[bytes | None], layout: FeatureLayout, model: str) -> DecodedPredictions:
    rejected: dict[int, str] = {}
    records: list[PredictionRecord] = []
    for index, value in enumerate(values):
        try:
            record = PredictionRecord.model_validate_json(value or b"")
        except ValidationError as error:
            rejected[index] = _short(error)
            continue
        reason = _prediction_problem(record, layout, model)
        if reason is not None:
            rejected[index] = reason
            continue
        records.append(record)
    width = len(layout.classes) if layout.classes else None
    outputs = np.asarray([record.output for record in records], dtype=np.float64)
    return DecodedPredictions(
        request_ids=pa.array([record.request_id for record in records], pa.string()),
        versions=pa.array([record.model_version for record in records], pa.string()),
        times=np.asarray([record.time.timestamp() for record in records], dtype=np.float64),
        features={
            **{name: pa.array([_number(r.features.get(name)) for r in records], pa.float64()) for name in layout.numeric},
            **{name: pa.array([value_text(r.features.get(name)) for r in records], pa.string())
               for name in layout.category},
        },
        outputs=outputs.reshape(len(records), width) if width else outputs.reshape(len(records)),
        rejected=rejected,
        flagged=dict(Counter(flag for record in records for flag in record.flags)),
        shadow=np.array([record.shadow for record in records], dtype=bool) if any(r.shadow for r in records) else None,
    )


def _prediction_problem(record: PredictionRecord, layout: FeatureLayout, model: str) -> str | None:
    if record.model != model:
        return f"record names model {record.model!r}; this topic carries {model!r}"
    for name in layout.numeric:
        value = record.features.get(name)
        if isinstance(value, str):
            return f"feature {name!r} is {value[:40]!r}, not a number; the model's reference is numeric"
    if layout.classes:
        if not isinstance(record.output, list) or len(record.output) != len(layout.classes):
            return f"output must be a list of {len(layout.classes)} class probabilities ({list(layout.classes)})"
    elif isinstance(record.output, list):
        return "output must be one number (probability or value) for this model, not a list"
    return None


def _number(value: float | int | str | None) -> float | None:
    return None if value is None else float(value)


# --------------------------------------------------------------------- feedback


def decode_feedback(
    values: list[bytes | None], model: str, task: Task | None, classes: list[str] | None = None
) -> DecodedFeedback:
    """Columns of the feedback events in ``values``; labels the model's task cannot read are rejected."""
    label_type = pa.string() if task == "multiclass" or task is None else pa.float64()
    schema = pa.schema([("request_id", pa.string()), ("model", pa.string()), ("label", label_type), ("time", TIME_TYPE)])
    table = _read_all(values, schema)
    if table is None and task == "multiclass":
        # Integer or boolean classes are logged as JSON numbers or booleans: let the reader type the labels.
        table = _read_all(values, pa.schema([field for field in schema if field.name != "label"]), unexpected="infer")
        if table is not None and "label" not in table.column_names:
            table = None
    if table is None:
        return _feedback_one_by_one(values, model, task, classes)
    rejected = _missing(table, ("request_id", "model", "label", "time"))
    rejected.update(_other_model(table["model"], model, rejected))
    table = _drop(table, rejected)
    labels = _array(table["label"])
    if task is not None:
        kept = [index for index in range(len(values)) if index not in rejected]
        bad = _unreadable_labels(labels.to_pylist(), task, classes)
        if bad:
            rejected.update({kept[row]: reason for row, reason in bad.items()})
            keep = np.ones(len(labels), dtype=bool)
            keep[list(bad)] = False
            table, labels = table.filter(pa.array(keep)), labels.filter(pa.array(keep))
    readable = labels if pa.types.is_string(labels.type) or task == "multiclass" else _float(labels)
    return DecodedFeedback(_array(table["request_id"]), readable, _seconds(table["time"]), rejected)


def _feedback_one_by_one(
    values: list[bytes | None], model: str, task: Task | None, classes: list[str] | None
) -> DecodedFeedback:
    rejected: dict[int, str] = {}
    records: list[FeedbackRecord] = []
    for index, value in enumerate(values):
        try:
            record = FeedbackRecord.model_validate_json(value or b"")
        except ValidationError as error:
            rejected[index] = _short(error)
            continue
        if record.model != model:
            rejected[index] = f"record names model {record.model!r}; this topic carries {model!r}"
            continue
        if task is not None and (reason := _unreadable_labels([record.label], task, classes).get(0)):
            rejected[index] = reason
            continue
        records.append(record)
    return DecodedFeedback(
        request_ids=pa.array([record.request_id for record in records], pa.string()),
        labels=[record.label for record in records],
        times=np.asarray([record.time.timestamp() for record in records], dtype=np.float64),
        rejected=rejected,
    )


def _unreadable_labels(labels: list, task: Task, classes: list[str] | None) -> dict[int, str]:
    """Row -> reason for labels ``encode_labels`` refuses; one vectorised try, per row only when it fails."""
    try:
        encode_labels(task, labels, classes)
        return {}
    except ValueError:
        pass
    bad = {}
    for row, label in enumerate(labels):
        try:
            encode_labels(task, [label], classes)
        except ValueError as error:
            bad[row] = f"label {label!r} cannot be read for a {task} model: {error}"
    return bad


# ----------------------------------------------------------------------- shared


def _read_all(values: list[bytes | None], schema: pa.Schema, unexpected: str = "ignore") -> pa.Table | None:
    """All records parsed in one call, or None when any of them does not fit ``schema``."""
    if not values or any(not value for value in values):
        return None if values else schema.empty_table()
    joined = b"\n".join(values)
    if joined.count(b"\n") != len(values) - 1:
        return None  # a body spans lines: records cannot be told apart by line
    block = max(MIN_BLOCK_BYTES, 2 * max(map(len, values)))
    try:
        table = pj.read_json(
            io.BytesIO(joined),
            read_options=pj.ReadOptions(block_size=block),
            parse_options=pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior=unexpected),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None
    return table if table.num_rows == len(values) else None


def _missing(table: pa.Table, required: tuple[str, ...]) -> dict[int, str]:
    rejected: dict[int, str] = {}
    for name in required:
        nulls = table[name].is_null()
        if pc.any(nulls).as_py():
            for row in np.flatnonzero(nulls.to_numpy(zero_copy_only=False)):
                rejected.setdefault(int(row), f"field {name!r} is missing or null")
    return rejected


def _other_model(models: pa.ChunkedArray, model: str, rejected: dict[int, str]) -> dict[int, str]:
    other = pc.fill_null(pc.not_equal(models, model), False)
    if not pc.any(other).as_py():
        return {}
    names = models.to_pylist()
    return {
        int(row): f"record names model {names[row]!r}; this topic carries {model!r}"
        for row in np.flatnonzero(other.to_numpy(zero_copy_only=False))
        if int(row) not in rejected
    }


def _wrong_width(outputs: pa.ChunkedArray, width: int, rejected: dict[int, str]) -> dict[int, str]:
    lengths = pc.fill_null(pc.list_value_length(outputs), width).to_numpy(zero_copy_only=False)
    return {
        int(row): f"output has {lengths[row]} class probabilities; the model has {width} classes"
        for row in np.flatnonzero(lengths != width)
        if int(row) not in rejected
    }


def _drop(table: pa.Table, rejected: dict[int, str]) -> pa.Table:
    if not rejected:
        return table
    keep = np.ones(table.num_rows, dtype=bool)
    keep[list(rejected)] = False
    return table.filter(pa.array(keep))


def _array(column: pa.ChunkedArray) -> pa.Array:
    return column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)


def _float(values: pa.Array) -> np.ndarray:
    return pc.fill_null(values, math.nan).to_numpy(zero_copy_only=False).astype(np.float64, copy=False)


def _seconds(times: pa.ChunkedArray) -> np.ndarray:
    micros = pc.cast(times, pa.int64()).to_numpy()
    return micros.astype(np.float64) / 1e6


def _short(error: ValidationError) -> str:
    text = "; ".join(
        f"{'.'.join(map(str, item['loc'])) or 'body'}: {item['msg']}" for item in error.errors(include_url=False)
    )
    return text[:MAX_REASON]
