"""Everything one monitor replica knows of a model, saved so another continues it exactly.

``monitor/<model>/checkpoint.npz`` holds, at one point of the model's
streams: the offset of each of its partitions, the watched champion's state
(``MonitorState``: reports, events, drift episodes) and the monitor's open
windows, predictions waiting for labels, change detector and decider
(``ModelMonitor.snapshot``), and the drift events raised but maybe not sent
yet. The service commits offsets only once a checkpoint holding them is
written, and a replica that takes the model over starts from the
checkpoint's offsets with its state: nothing consumed is forgotten, and
nothing judged is judged again.

Every write is conditional (If-None-Match for the first, If-Match on the
ETag this replica read or wrote last), so a replica that lost the model
(its partitions moved, or it stalled past its session) cannot overwrite the
new owner's progress: its write fails with ``ObjectConflict``.

    checkpoint, etag = read_checkpoint(store, "fraud")     # (None, None) before the first
    etag = write_checkpoint(store, checkpoint, etag)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.monitor.snapshot import pack, unpack
from streamml.events import DriftDetected
from streamml.registry.keys import RegistryError, monitor_checkpoint_key
from streamml.registry.monitor import MonitorState
from streamml.store import ObjectNotFound, ObjectStore

FORMAT = 1
Offsets = dict[tuple[str, int], int]


@dataclass
class Checkpoint:
    model: str
    offsets: Offsets = field(default_factory=dict)
    """Next offset to read, per (topic, partition) of the model's streams this checkpoint covers."""
    state: MonitorState | None = None
    """The watched champion's reports, events and episodes; None while no champion is watched."""
    monitor: dict[str, Any] | None = None
    """``ModelMonitor.snapshot()`` of that champion's monitor."""
    outbox: list[tuple[str, DriftDetected]] = field(default_factory=list)
    """Drift events (with their ids) raised up to this point and not known to be sent."""


def encode(checkpoint: Checkpoint) -> bytes:
    return pack({
        "format": FORMAT,
        "model": checkpoint.model,
        "offsets": [[topic, partition, offset] for (topic, partition), offset in sorted(checkpoint.offsets.items())],
        "state": checkpoint.state.model_dump(mode="json") if checkpoint.state is not None else None,
        "monitor": checkpoint.monitor,
        "outbox": [{"id": event_id, "event": event.model_dump(mode="json")} for event_id, event in checkpoint.outbox],
    })


def decode(data: bytes, key: str) -> Checkpoint:
    try:
        tree = unpack(data)
        if tree.get("format") != FORMAT:
            raise ValueError(f"format {tree.get('format')!r}, this monitor reads format {FORMAT}")
        return Checkpoint(
            model=tree["model"],
            offsets={(topic, partition): offset for topic, partition, offset in tree["offsets"]},
            state=MonitorState.model_validate(tree["state"]) if tree["state"] is not None else None,
            monitor=tree["monitor"],
            outbox=[(item["id"], DriftDetected.model_validate(item["event"])) for item in tree["outbox"]],
        )
    except (ValueError, KeyError, TypeError) as error:  # pydantic's ValidationError is a ValueError
        raise RegistryError(f"{key} is not a monitor checkpoint ({error}); delete it and the monitor starts "
                            "the model afresh from its committed offsets") from None


def read_checkpoint(store: ObjectStore, model: str) -> tuple[Checkpoint | None, str | None]:
    key = monitor_checkpoint_key(model)
    try:
        stored = store.get(key)
    except ObjectNotFound:
        return None, None
    return decode(stored.data, key), stored.etag


def write_checkpoint(store: ObjectStore, checkpoint: Checkpoint, etag: str | None) -> str:
    """Write it if the stored one is still ``etag`` (None: if there is none); the new ETag."""
    key, data = monitor_checkpoint_key(checkpoint.model), encode(checkpoint)
    return store.create(key, data) if etag is None else store.replace(key, data, etag)
