"""The version a model has in shadow: ``models/<name>/shadow.json``.

The validator writes it when a candidate passes the offline rules of a policy
with ``shadow:`` and deletes it once the live evidence decided; applications
(``ModelClient``, the inference server) read it to know which version to score
beside the champion. It also holds what the validator needs to resume after a
restart: when the shadow started, its deadline, the offsets of the model's
prediction and feedback topics at the start, and the offline decision.

Created with ``If-None-Match: *``, so of two validators that start the same
shadow one writes it and both follow the one written:

    state = read_shadow(store, "fraud")     # None: no version in shadow
    state.version, state.deadline
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from streamml.registry.decisions import DecisionRecord
from streamml.registry.documents import read_document
from streamml.registry.keys import VERSION, shadow_key
from streamml.store import ObjectConflict, ReadableStore


class ShadowState(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    version: str = Field(pattern=VERSION)
    champion_version: str | None = Field(description="the champion it is compared with")
    started: datetime
    deadline: datetime = Field(description="rejected for lack of live evidence if not decided by then")
    offsets: dict[str, dict[int, int]] = Field(
        description="topic -> partition -> offset where the evidence starts (the topics' ends at the start)")
    offline: DecisionRecord = Field(description="the offline decision (a promotion) that started the shadow")
    actor: str

    def to_bytes(self) -> bytes:
        return self.model_dump_json(indent=2).encode()


def read_shadow(store: ReadableStore, model: str) -> ShadowState | None:
    return read_document(store, shadow_key(model), ShadowState, "a shadow state",
                         "delete it (the version in shadow is then judged again from its model.trained)")


def start_shadow(store, state: ShadowState) -> ShadowState:
    """Write ``state`` unless a shadow of the same version exists; returns the one that stands.

    A shadow of another version left behind (its validator stopped after deciding,
    before deleting it) is replaced."""
    key = shadow_key(state.model)
    try:
        store.create(key, state.to_bytes())
        return state
    except ObjectConflict:
        existing = read_shadow(store, state.model)
        if existing is None:
            return start_shadow(store, state)
        if existing.version == state.version:
            return existing
        store.delete(key)
        return start_shadow(store, state)


def end_shadow(store, model: str, version: str) -> None:
    """Delete the shadow state if it is still ``version``'s (repeating this is harmless)."""
    existing = read_shadow(store, model)
    if existing is not None and existing.version == version:
        store.delete(shadow_key(model))
