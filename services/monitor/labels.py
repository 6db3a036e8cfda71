"""Joining feedback (ground truth) to earlier predictions by request id, in batches.

Either side may arrive first (predictions and feedback are separate topics),
so unmatched rows of both sides wait, up to ``ttl_s`` seconds of event time
and ``max_rows`` rows each; what ages out was never labelled and is counted.
A batch is matched with one vectorised membership scan of the waiting rows
(``pyarrow.compute.is_in``, a hash set of the batch) and a hash join of the
few rows found; no Python work per request. A request id seen twice (a
redelivered message) is joined once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Appends add chunks; past this many they are merged so scans stay cheap.
MAX_CHUNKS = 32


@dataclass(frozen=True)
class Matched:
    """Joined pairs in feedback arrival order; ``times`` are the feedback times."""

    outputs: np.ndarray
    labels: np.ndarray
    times: np.ndarray

    @property
    def count(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class _Rows:
    ids: pa.Array
    payload: np.ndarray
    times: np.ndarray


class _Waiting:
    """Unmatched rows of one side, in arrival order: ids, one payload array, event times."""

    def __init__(self) -> None:
        self._ids: list[pa.Array] = []
        self._payload: list[np.ndarray] = []
        self._times: list[np.ndarray] = []
        self.rows = 0

    def append(self, rows: _Rows) -> None:
        if len(rows.ids) == 0:
            return
        self._ids.append(rows.ids)
        self._payload.append(rows.payload)
        self._times.append(rows.times)
        self.rows += len(rows.ids)
        if len(self._ids) > MAX_CHUNKS:
            self._replace(self._merged(), None)

    def take(self, wanted: pa.Array) -> _Rows | None:
        """Remove and return the waiting rows whose id is in ``wanted`` (None when there are none)."""
        if self.rows == 0 or len(wanted) == 0:
            return None
        hit = pc.is_in(pa.chunked_array(self._ids, type=pa.string()), value_set=wanted)
        hit = hit.to_numpy(zero_copy_only=False)
        if not hit.any():
            return None
        merged = self._merged()
        self._replace(merged, ~hit)
        return _Rows(merged.ids.filter(pa.array(hit)), merged.payload[hit], merged.times[hit])

    def drop_old(self, oldest: float, max_rows: int) -> int:
        if self.rows == 0:
            return 0
        if self.rows <= max_rows and min(float(times.min()) for times in self._times) >= oldest:
            return 0  # the common case, without merging chunks
        merged = self._merged()
        keep = merged.times >= oldest
        if keep.sum() > max_rows:
            # Over the cap: the most recent rows stay.
            keep &= np.arange(keep.size) >= keep.size - max_rows
        dropped = int(keep.size - keep.sum())
        self._replace(merged, keep if dropped else None)
        return dropped

    def snapshot(self) -> dict:
        if self.rows == 0:
            return {"rows": 0}
        merged = self._merged()
        return {"rows": self.rows, "ids": merged.ids, "payload": merged.payload, "times": merged.times}

    def restore(self, state: dict) -> None:
        if state["rows"] == 0:
            self._replace(_Rows(pa.array([], pa.string()), np.empty(0), np.empty(0)), None)
        else:
            self._replace(_Rows(state["ids"], state["payload"], state["times"]), None)

    def _merged(self) -> _Rows:
        return _Rows(
            pa.concat_arrays(self._ids) if len(self._ids) > 1 else self._ids[0],
            np.concatenate(self._payload) if len(self._payload) > 1 else self._payload[0],
            np.concatenate(self._times) if len(self._times) > 1 else self._times[0],
        )

    def _replace(self, rows: _Rows, keep: np.ndarray | None) -> None:
        if keep is not None:
            rows = _Rows(rows.ids.filter(pa.array(keep)), rows.payload[keep], rows.times[keep])
        self._ids, self._payload, self._times = (
            ([rows.ids], [rows.payload], [rows.times]) if len(rows.ids) else ([], [], [])
        )
        self.rows = len(rows.ids)


class LabelJoin:
    def __init__(self, ttl_s: float = 86_400.0, max_rows: int = 2_000_000):
        if ttl_s <= 0 or max_rows < 1:
            raise ValueError(f"ttl_s ({ttl_s}) must be > 0 and max_rows ({max_rows}) >= 1")
        self.ttl_s = ttl_s
        self.max_rows = max_rows
        self._predictions = _Waiting()
        self._feedback = _Waiting()

    @property
    def pending_predictions(self) -> int:
        return self._predictions.rows

    @property
    def pending_feedback(self) -> int:
        return self._feedback.rows

    def add_predictions(self, request_ids, outputs: np.ndarray, times: np.ndarray) -> Matched:
        new = _Rows(_as_ids(request_ids), outputs, np.asarray(times, dtype=np.float64))
        early = self._feedback.take(new.ids)
        if early is None:
            self._predictions.append(new)
            return Matched(outputs[:0], np.empty(0), np.empty(0))
        new_rows, old_rows = _pairs(new.ids, early.ids)
        order = np.argsort(old_rows, kind="stable")  # feedback arrival order
        new_rows, old_rows = new_rows[order], old_rows[order]
        self._predictions.append(_unmatched(new, early.ids))
        return Matched(outputs[new_rows], early.payload[old_rows], early.times[old_rows])

    def add_feedback(self, request_ids, labels: np.ndarray, times: np.ndarray) -> Matched:
        new = _Rows(_as_ids(request_ids), np.asarray(labels, dtype=np.float64), np.asarray(times, dtype=np.float64))
        found = self._predictions.take(new.ids)
        if found is None:
            self._feedback.append(new)
            return Matched(np.empty(0), np.empty(0), np.empty(0))
        new_rows, old_rows = _pairs(new.ids, found.ids)
        order = np.argsort(new_rows, kind="stable")
        new_rows, old_rows = new_rows[order], old_rows[order]
        self._feedback.append(_unmatched(new, found.ids))
        return Matched(found.payload[old_rows], new.payload[new_rows], new.times[new_rows])

    def snapshot(self) -> dict:
        """Every row still waiting, on both sides (see ``snapshot.py``)."""
        return {"predictions": self._predictions.snapshot(), "feedback": self._feedback.snapshot()}

    def restore(self, state: dict) -> None:
        self._predictions.restore(state["predictions"])
        self._feedback.restore(state["feedback"])

    def expire(self, now: float) -> tuple[int, int]:
        """Drop rows older than ``now - ttl_s`` (or over the cap): (predictions, feedback) dropped."""
        oldest = now - self.ttl_s
        return self._predictions.drop_old(oldest, self.max_rows), self._feedback.drop_old(oldest, self.max_rows)


def _as_ids(request_ids: pa.Array | pa.ChunkedArray | np.ndarray | list) -> pa.Array:
    if isinstance(request_ids, pa.ChunkedArray):
        request_ids = request_ids.combine_chunks()
    if not isinstance(request_ids, pa.Array):
        request_ids = pa.array(request_ids, type=pa.string())
    return request_ids if request_ids.type == pa.string() else pc.cast(request_ids, pa.string())


def _unmatched(rows: _Rows, matched_ids: pa.Array) -> _Rows:
    waiting = ~pc.is_in(rows.ids, value_set=matched_ids).to_numpy(zero_copy_only=False)
    return _Rows(rows.ids.filter(pa.array(waiting)), rows.payload[waiting], rows.times[waiting])


def _pairs(new_ids: pa.Array, old_ids: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Row pairs (new, old) with equal ids, one pair per id (the first row of each side)."""
    new = pa.table({"id": new_ids, "new": pa.array(np.arange(len(new_ids)))})
    old = pa.table({"id": old_ids, "old": pa.array(np.arange(len(old_ids)))})
    first = new.join(old, "id", join_type="inner").group_by("id").aggregate([("new", "min"), ("old", "min")])
    return first["new_min"].to_numpy(), first["old_min"].to_numpy()
