"""Dataset versions in the object store: what is pending, and which build attempt may publish a number.

Pending data is derived, never stored: the raw objects of a dataset minus
those in the newest manifest's lineage. So a restart, or a second replica,
sees the same pending set without sharing any state.

A build attempt claims the next version number, the one after the newest
committed version, by creating ``v<N>/_claim.json`` (If-None-Match) naming
itself, and renews the claim (If-Match) while it builds: a lease. Only one
attempt holds a number at a time, so while one replica builds a dataset the
others wait. A claim not renewed for its ``lease_s``, by the store's own
clock, is taken over (If-Match on the stale claim: of two takers one wins);
that is how a crashed build hands its version over. The attempt writes its
files under ``v<N>/attempts/<attempt>/`` and the version is published only
by creating ``v<N>/manifest.json``, which names them. An attempt that lost
its lease while stalled and then finishes anyway finds the manifest created,
and deletes its files: whatever happens, a reader sees one attempt's files,
whole, or no version.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
from dataclasses import dataclass

from streamml.manifest import DatasetManifest
from streamml.registry.datasets import latest_manifest, raw_objects
from streamml.registry.keys import RawObject, claim_key, dataset_attempt_prefix, new_attempt
from streamml.store import ObjectConflict, ObjectNotFound, ObjectStore, StoreError

log = logging.getLogger("streamml.prep")


def pending(store: ObjectStore, dataset: str, latest: DatasetManifest | None) -> list[RawObject]:
    done = {source.key for source in latest.lineage} if latest else set()
    done |= set(latest.quarantined) if latest else set()
    return [raw for raw in raw_objects(store, dataset) if raw.key not in done]


def build_id(inputs: list[str], trigger: str) -> str:
    digest = hashlib.sha256("\n".join(sorted(inputs) + [trigger]).encode())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class Claim:
    """Version ``version`` of ``dataset`` is this attempt's to build while it renews the claim."""

    dataset: str
    version: int
    attempt: str
    document: bytes
    etag: str

    @property
    def prefix(self) -> str:
        """Where this attempt writes its splits."""
        return dataset_attempt_prefix(self.dataset, self.version, self.attempt)


@dataclass(frozen=True)
class Held:
    """Another attempt holds the next version: who, and for how long yet."""

    version: int
    attempt: str
    owner: str
    expires_in_s: float | None


def claim_next_version(store: ObjectStore, dataset: str, build: str, lease_s: float) -> Claim | Held:
    """Claim the version after the newest committed one, or say which live attempt holds it."""
    latest = latest_manifest(store, dataset)
    number = latest.version + 1 if latest else 1
    attempt = new_attempt()
    document = json.dumps({"attempt": attempt, "build": build, "owner": _owner(), "lease_s": lease_s}).encode()
    key = claim_key(dataset, number)
    try:
        return Claim(dataset, number, attempt, document, store.create(key, document))
    except ObjectConflict:
        pass
    try:
        stored = store.get(key)
    except ObjectNotFound:  # released and deleted meanwhile: claim again at the next look
        return Held(number, "?", "?", 0.0)
    held = json.loads(stored.data)
    age = stored.age_s()
    remaining = None if age is None else float(held.get("lease_s", lease_s)) - age
    if remaining is None or remaining > 0:
        return Held(number, held.get("attempt", "?"), held.get("owner", "?"), remaining)
    try:
        etag = store.replace(key, document, stored.etag)
    except ObjectConflict:  # another attempt took it over first
        return Held(number, "?", "?", None)
    log.warning("took over an expired claim", extra={"dataset": dataset, "version": number,
                                                     "expired_attempt": held.get("attempt"),
                                                     "expired_owner": held.get("owner"), "attempt": attempt})
    return Claim(dataset, number, attempt, document, etag)


class Lease:
    """Renews a claim every third of its lease while the build runs; ``release`` gives it back early.

        with Lease(store, claim, lease_s) as lease:
            ...build...
        lease.release()          # only after a failed build: the next attempt need not wait
    """

    def __init__(self, store: ObjectStore, claim: Claim, lease_s: float) -> None:
        self.store, self.claim, self.every_s = store, claim, lease_s / 3
        self.key, self.etag = claim_key(claim.dataset, claim.version), claim.etag
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="prep-lease", daemon=True)

    def __enter__(self) -> Lease:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _renew(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.etag = self.store.replace(self.key, self.claim.document, self.etag)
            except ObjectConflict:
                # Taken over while this build stalled: it may still finish, and then only
                # publishes if the manifest is not created yet.
                self.lost = True
                log.warning("lease lost to another attempt; this build publishes only if it finishes first",
                            extra={"dataset": self.claim.dataset, "version": self.claim.version,
                                   "attempt": self.claim.attempt})
                return
            except StoreError as error:  # the next renewal may succeed; the lease covers a few misses
                log.warning("lease renewal failed", extra={"dataset": self.claim.dataset, "error": str(error)})

    def release(self) -> None:
        """Mark the claim expired (call after the context exited), unless another attempt holds it now."""
        expired = json.dumps({**json.loads(self.claim.document), "lease_s": 0}).encode()
        try:
            self.store.replace(self.key, expired, self.etag)
        except (ObjectConflict, ObjectNotFound):
            pass  # taken over meanwhile: the claim is someone else's now


def discard(store: ObjectStore, claim: Claim) -> None:
    """Delete what an attempt that will not publish wrote (no manifest names it: nothing reads it)."""
    store.delete_prefix(claim.prefix)


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"
