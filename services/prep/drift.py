"""When a drift build may start, and which landed rows it trains on: pure functions over Kafka timestamps.

A landed row is on the new side of a drift when its Kafka timestamp
(``_kafka_time``, which ingest writes beside every record) is at or after
the drift point: the start of the drifted window in ``drift.detected``. Not
the spec's ``event_time``: that is whatever clock the application uses
(the demo's run from 1970), while the monitor's windows are stamped with
the clock the application predicted by, the same wall clock the producer
stamps Kafka records with (to within the hosts' skew). Not landing
offsets either: they only say when prep heard of the drift, and in a fast
stream the drifted records have landed by then, so offsets would count
them as old rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import numpy as np

from streamml.specs import DriftPolicy


def to_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def rows_since(times: Iterable[np.ndarray], point_ms: int) -> int:
    """Landed rows at or after ``point_ms``; each array holds one raw object's Kafka times, sorted."""
    return sum(int(t.size - np.searchsorted(t, point_ms, side="left")) for t in times)


def window_since_ms(policy: DriftPolicy, point_ms: int, times: Iterable[np.ndarray]) -> int | None:
    """The oldest Kafka time the build reads, or None for every landed row.

    ``last_rows: N`` starts at the N-th newest landed row; rows sharing its
    timestamp are kept too, so a build may read a few more than N.
    """
    window = policy.window
    if window == "since_drift":
        return point_ms
    if window == "all":
        return None
    every = np.concatenate([*times, np.zeros(0, dtype=np.int64)])
    if every.size <= window.last_rows:
        return None
    return int(np.partition(every, every.size - window.last_rows)[every.size - window.last_rows])


@dataclass(frozen=True)
class DriftCut:
    """A drift build's point, where its training window starts (None: every landed row), and the half-life
    of its rows' training weights (None: every row weighs 1)."""

    point_ms: int
    since_ms: int | None
    half_life_s: float | None = None


Action = Literal["build", "wait", "give_up"]


@dataclass(frozen=True)
class DriftStep:
    action: Action
    reason: str
    waited_out: bool = False


def drift_step(rows_after: int, waited_s: float, policy: DriftPolicy) -> DriftStep:
    """Build once ``min_rows_after`` post-drift rows landed; after ``max_wait_s`` build with fewer, or
    give up when none landed (a build would only repeat the old world)."""
    needed = policy.min_rows_after
    if rows_after >= needed:
        return DriftStep("build", f"{rows_after} rows landed after the drift (min_rows_after {needed})")
    if waited_s < policy.max_wait_s:
        return DriftStep("wait", f"waiting for rows from after the drift: {rows_after} of min_rows_after "
                                 f"{needed} landed (builds with fewer after max_wait_s {policy.max_wait_s:g})")
    if rows_after == 0:
        return DriftStep("give_up", f"no row landed after the drift within max_wait_s {policy.max_wait_s:g}; "
                                    "no drift build; the row policy builds as usual")
    return DriftStep("build", f"max_wait_s {policy.max_wait_s:g} ran out with {rows_after} rows after the "
                              f"drift (< min_rows_after {needed}); building with those", waited_out=True)
