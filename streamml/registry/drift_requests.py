"""A drift build that prep owes a dataset: ``datasets/<d>/_drift_request``.

Prep writes it when ``drift.detected`` arrives (If-None-Match: the drift
events of one episode share one build), updates ``status`` while it waits
for rows from after the drift, and deletes it once the drift build is
published. It lives in the store, so a restarted prep, or another replica,
continues the wait; ``streamml datasets list`` shows it as pending.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from streamml.events import DriftDetected
from streamml.registry.documents import read_document
from streamml.registry.keys import drift_request_key
from streamml.store import ObjectStore


class DriftWait(BaseModel):
    """Why the build has not started yet, as prep last counted."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    rows_after: int = Field(ge=0, description="landed rows with a Kafka timestamp at or after the drift point")
    needed: int = Field(ge=1, description="the spec's prep.on_drift.min_rows_after")
    reason: str
    checked: datetime


class DriftRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    event_id: str
    model: str
    kind: str
    window_start: datetime = Field(description="start of the drifted window: the drift point")
    window_end: datetime
    requested: datetime = Field(description="when prep received the event (prep's clock); max_wait_s counts from it")
    status: DriftWait | None = None

    @classmethod
    def of(cls, event: DriftDetected, event_id: str, requested: datetime) -> DriftRequest:
        return cls(event_id=event_id, model=event.model, kind=event.kind, window_start=event.window.start,
                   window_end=event.window.end, requested=requested)

    def encode(self) -> bytes:
        return self.model_dump_json(indent=1).encode()


def read_drift_request(store: ObjectStore, dataset: str) -> DriftRequest | None:
    """The pending drift build of ``dataset``; None when it owes none."""
    key = drift_request_key(dataset)
    return read_document(store, key, DriftRequest, "a drift build request",
                         "delete it (`streamml datasets list` stops showing the pending build) and let "
                         "the monitor report the drift again")
