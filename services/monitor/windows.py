"""Tumbling windows over a model's live traffic, filled from batches with numpy.

A prediction window counts, per column, how many values fall in each
reference bin (numeric: quantile bins; category: vocabulary plus one bin for
unseen values), how many are missing, and keeps a uniform reservoir sample of
the numeric values for the KS test. A label window keeps the joined
(output, label) pairs of the feedback that arrived in it. A window closes
when it holds ``size`` rows or when a row's time reaches ``start +
duration_s``, whichever comes first; ``poll(now)`` closes a time window that
traffic stopped filling. A batch is split exactly at the boundary, so
windows never overlap. ``add`` yields each window as it closes, before it
counts the rows after it, so a column changed with ``set_column`` between
two windows of one batch counts the rest of the batch.

    columns = columns_for(reference)
    windows = WindowAccumulator(columns, WindowSpec(size=10_000))
    for closed in windows.add({"amount": amounts, "channel": channels}, times):
        report = evaluate_window(closed, reference, thresholds)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.monitor.reference import ColumnReference, category_text, vocabulary
from services.monitor.stats.base import ColumnCounts
from streamml.manifest import NumericReference

Values = np.ndarray | pa.Array | pa.ChunkedArray


class WindowSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    size: int | None = Field(10_000, ge=1, description="predictions per window; null: by time only")
    duration_s: float | None = Field(None, gt=0, description="seconds per window; null: by count only")
    sample_size: int = Field(5_000, ge=10, description="reservoir per window for the KS test")
    label_size: int | None = Field(5_000, ge=1, description="labelled predictions per performance window")
    label_duration_s: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _closes_somehow(self) -> WindowSpec:
        if self.size is None and self.duration_s is None:
            raise ValueError("a window needs size or duration_s (or both); e.g. size: 10000")
        if self.label_size is None and self.label_duration_s is None:
            raise ValueError("a label window needs label_size or label_duration_s (or both); e.g. label_size: 5000")
        return self


@dataclass(frozen=True)
class NumericColumn:
    """Counts values per reference quantile bin; no edges means one bin (sample only)."""

    edges: np.ndarray

    @property
    def bins(self) -> int:
        return self.edges.size + 1

    def codes(self, values: Values) -> tuple[np.ndarray, np.ndarray]:
        """Bin of each value (``bins`` for a missing one) and the values as float64."""
        numbers = as_float(values)
        codes = np.searchsorted(self.edges, numbers, side="right")
        codes[np.isnan(numbers)] = self.bins
        return codes, numbers


@dataclass(frozen=True)
class CategoryColumn:
    """Counts values per reference category; the last bin holds categories the reference never saw."""

    vocabulary: list[str]
    value_set: pa.Array = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "value_set", pa.array(self.vocabulary, type=pa.string()))

    @property
    def bins(self) -> int:
        return len(self.vocabulary) + 1

    def codes(self, values: Values) -> tuple[np.ndarray, None]:
        text = category_text(values)
        unseen = len(self.vocabulary)
        codes = pc.fill_null(pc.index_in(text, value_set=self.value_set), unseen).to_numpy(zero_copy_only=False)
        codes = codes.astype(np.int64)
        if text.null_count:
            codes[text.is_null().to_numpy(zero_copy_only=False)] = self.bins
        return codes, None


Column = NumericColumn | CategoryColumn


def column_snapshot(column: Column) -> dict:
    if isinstance(column, NumericColumn):
        return {"kind": "numeric", "edges": column.edges}
    return {"kind": "category", "vocabulary": list(column.vocabulary)}


def column_from_snapshot(snapshot: dict) -> Column:
    if snapshot["kind"] == "numeric":
        return NumericColumn(np.asarray(snapshot["edges"], dtype=np.float64))
    return CategoryColumn(list(snapshot["vocabulary"]))


def column_for(reference: ColumnReference | None, kind: str = "numeric") -> Column:
    if reference is None:
        return NumericColumn(np.empty(0)) if kind == "numeric" else CategoryColumn([])
    if isinstance(reference, NumericReference):
        return NumericColumn(np.asarray(reference.edges, dtype=np.float64))
    return CategoryColumn(vocabulary(reference))


def as_float(values: Values) -> np.ndarray:
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    return np.asarray(values, dtype=np.float64)


@dataclass(frozen=True)
class ClosedWindow:
    index: int
    start: float
    end: float
    count: int
    columns: dict[str, ColumnCounts]


@dataclass(frozen=True)
class ClosedLabelWindow:
    index: int
    start: float
    end: float
    outputs: np.ndarray
    labels: np.ndarray

    @property
    def count(self) -> int:
        return int(self.labels.shape[0])


def next_cut(times: np.ndarray, start: int, room: int | None, end_time: float | None) -> tuple[int, str | None]:
    """Rows ``start:cut`` fit in the open window, and why it closes after them ("count", "time" or None)."""
    cut, reason = times.size, None
    if room is not None and start + room <= cut:
        cut, reason = start + room, "count"
    if end_time is not None:
        late = np.flatnonzero(times[start:cut] >= end_time)
        if late.size:
            cut, reason = start + int(late[0]), "time"
    return cut, reason


class WindowAccumulator:
    """Prediction windows of one model; feed it batches, collect closed windows."""

    def __init__(self, columns: Mapping[str, Column], spec: WindowSpec, seed: int = 0):
        self.spec = spec
        self._columns = dict(columns)
        self._rng = np.random.default_rng(seed)
        self._next_columns: dict[str, Column] = {}
        self._index = 0
        self._open = False

    @property
    def columns(self) -> dict[str, Column]:
        return dict(self._columns)

    def set_column(self, name: str, column: Column) -> None:
        """Count ``name`` with ``column`` from the next window on (the open one keeps its bins)."""
        self._next_columns[name] = column

    @property
    def fill(self) -> float:
        """Share of the open window's count filled (0 when closing by time only)."""
        if not self._open or self.spec.size is None:
            return 0.0
        return self._count / self.spec.size

    def add(self, columns: Mapping[str, Values], times: np.ndarray) -> Iterator[ClosedWindow]:
        """Count a batch, yielding each window as it closes; iterate to the end, the rows are counted as it runs.

        The rows after a yielded window are counted only when iteration resumes,
        so the caller can ``set_column`` for them first.
        """
        times = np.asarray(times, dtype=np.float64)
        missing = [name for name in self._columns if name not in columns]
        if missing:
            raise ValueError(f"batch lacks columns {missing}; it has {sorted(columns)}")
        coded = self._code(columns)
        position = 0
        while position < times.size:
            if not self._open and self._start(float(times[position])):
                coded = self._code(columns)
            room = None if self.spec.size is None else self.spec.size - self._count
            cut, reason = next_cut(times, position, room, self._end_time)
            self._take(coded, position, cut, times)
            position = cut
            if reason is not None:
                yield self._close(self._end_time if reason == "time" else self._last_time)

    def poll(self, now: float) -> list[ClosedWindow]:
        if self._open and self._end_time is not None and now >= self._end_time:
            return [self._close(self._end_time)]
        return []

    def snapshot(self) -> dict:
        """The open window and everything needed to continue exactly here (see ``snapshot.py``)."""
        state = {
            "columns": {name: column_snapshot(column) for name, column in self._columns.items()},
            "next_columns": {name: column_snapshot(column) for name, column in self._next_columns.items()},
            "rng": self._rng.bit_generator.state,
            "index": self._index,
            "open": self._open,
        }
        if self._open:
            state.update(start=self._window_start, last=self._last_time, end=self._end_time, count=self._count,
                         counts=dict(self._counts), sample=dict(self._sample))
        return state

    def restore(self, state: dict) -> None:
        self._columns = {name: column_from_snapshot(column) for name, column in state["columns"].items()}
        self._next_columns = {name: column_from_snapshot(column) for name, column in state["next_columns"].items()}
        self._rng.bit_generator.state = state["rng"]
        self._index, self._open = state["index"], state["open"]
        if self._open:
            self._window_start, self._last_time, self._end_time = state["start"], state["last"], state["end"]
            self._count, self._counts, self._sample = state["count"], dict(state["counts"]), dict(state["sample"])

    def _code(self, columns: Mapping[str, Values]) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
        return {name: column.codes(columns[name]) for name, column in self._columns.items()}

    def _start(self, time: float) -> bool:
        """Open a window; True when its column definitions changed (the batch must be coded again)."""
        changed = bool(self._next_columns)
        self._columns.update(self._next_columns)
        self._next_columns = {}
        self._open = True
        self._window_start = time
        self._last_time = time
        self._end_time = None if self.spec.duration_s is None else time + self.spec.duration_s
        self._count = 0
        self._counts = {name: np.zeros(column.bins + 1, dtype=np.int64) for name, column in self._columns.items()}
        numeric = [name for name, column in self._columns.items() if isinstance(column, NumericColumn)]
        self._sample = {name: np.empty(self.spec.sample_size) for name in numeric}
        return changed

    def _take(self, coded: dict, start: int, stop: int, times: np.ndarray) -> None:
        if stop <= start:
            return
        for name, (codes, _) in coded.items():
            self._counts[name] += np.bincount(codes[start:stop], minlength=self._counts[name].size)
        slots, rows = reservoir_slots(self._count, stop - start, self.spec.sample_size, self._rng)
        for name in self._sample:
            self._sample[name][slots] = coded[name][1][start:stop][rows]
        self._count += stop - start
        self._last_time = max(self._last_time, float(times[start:stop].max()))

    def _close(self, end: float) -> ClosedWindow:
        kept = min(self._count, self.spec.sample_size)
        columns = {}
        for name, counts in self._counts.items():
            sample = self._sample[name][:kept] if name in self._sample else np.empty(0)
            columns[name] = ColumnCounts(counts[:-1].copy(), int(counts[-1]), sample[~np.isnan(sample)])
        window = ClosedWindow(self._index, self._window_start, end, self._count, columns)
        self._index += 1
        self._open = False
        return window


def reservoir_slots(seen: int, n: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Algorithm R for ``n`` new rows after ``seen``: the slots they take and the rows that take them.

    The first rows fill free slots; row i (counting from 0 over the window)
    then replaces a uniform slot with probability size / (i + 1). Where two rows
    of one batch pick the same slot the later one wins, as in the sequential algorithm.
    """
    free = max(0, min(n, size - seen))
    fill_slots = np.arange(seen, seen + free)
    fill_rows = np.arange(free)
    rest = np.arange(free, n)
    if rest.size == 0:
        return fill_slots, fill_rows
    picked = rng.integers(0, seen + rest + 1)
    keep = picked < size
    slots, rows = picked[keep], rest[keep]
    # Keep the last row per slot: unique over the reversed order finds last occurrences.
    unique_slots, first_in_reversed = np.unique(slots[::-1], return_index=True)
    rows = rows[::-1][first_in_reversed]
    return np.concatenate([fill_slots, unique_slots]), np.concatenate([fill_rows, rows])


class LabelWindowAccumulator:
    """Performance windows of one model: the (output, label) pairs whose feedback arrived in each."""

    def __init__(self, spec: WindowSpec):
        self.spec = spec
        self._index = 0
        self._open = False

    @property
    def fill(self) -> float:
        if not self._open or self.spec.label_size is None:
            return 0.0
        return self._count / self.spec.label_size

    def add(self, outputs: np.ndarray, labels: np.ndarray, times: np.ndarray) -> list[ClosedLabelWindow]:
        times = np.asarray(times, dtype=np.float64)
        closed = []
        position = 0
        while position < times.size:
            if not self._open:
                self._start(float(times[position]))
            room = None if self.spec.label_size is None else self.spec.label_size - self._count
            cut, reason = next_cut(times, position, room, self._end_time)
            if cut > position:
                self._outputs.append(outputs[position:cut])
                self._labels.append(labels[position:cut])
                self._count += cut - position
                self._last_time = max(self._last_time, float(times[position:cut].max()))
            position = cut
            if reason is not None:
                closed.append(self._close(self._end_time if reason == "time" else self._last_time))
        return closed

    def poll(self, now: float) -> list[ClosedLabelWindow]:
        if self._open and self._end_time is not None and now >= self._end_time:
            return [self._close(self._end_time)]
        return []

    def snapshot(self) -> dict:
        state = {"index": self._index, "open": self._open}
        if self._open:
            outputs = np.concatenate(self._outputs) if self._outputs else np.empty(0)
            labels = np.concatenate(self._labels) if self._labels else np.empty(0)
            state.update(start=self._window_start, last=self._last_time, end=self._end_time, count=self._count,
                         outputs=outputs, labels=labels)
        return state

    def restore(self, state: dict) -> None:
        self._index, self._open = state["index"], state["open"]
        if self._open:
            self._window_start, self._last_time, self._end_time = state["start"], state["last"], state["end"]
            self._count = state["count"]
            self._outputs = [state["outputs"]] if state["count"] else []
            self._labels = [state["labels"]] if state["count"] else []

    def _start(self, time: float) -> None:
        self._open = True
        self._window_start = self._last_time = time
        duration = self.spec.label_duration_s
        self._end_time = None if duration is None else time + duration
        self._count = 0
        self._outputs: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []

    def _close(self, end: float) -> ClosedLabelWindow:
        window = ClosedLabelWindow(
            self._index, self._window_start, end, np.concatenate(self._outputs), np.concatenate(self._labels)
        )
        self._index += 1
        self._open = False
        return window
