"""Decoding for a busy member on an idle one, so every process of a replica works
whatever the partition count.

A member decodes the records of the partitions Kafka gave it, and decoding is
most of a record's cost. When partitions do not divide evenly among the
replica's members (3 partitions and 2 members; fewer partitions than
members), one member has more to decode than another, whose core then idles.
A member whose last poll found less than it asked for (caught up, or with no
partition) says so in a flag the replica's members share. A member with
records to decode hands a chunk of them to such a peer instead of decoding it
itself, at most ``IN_FLIGHT`` chunks per peer at a time, and decodes the next
ones itself meanwhile. The messages stay with the member that polled them (a
dead letter carries the original message), so batches, their order, landings
and commits do not change: only where a chunk is decoded does. While every
member is busy nothing moves, and nothing is spent on it.

Each pair of members shares one duplex pipe. In each member a reader thread
receives what the peers send (their requests and their replies) and never
sends, and a helper thread decodes the requests and sends the replies, so two
members sending to each other at the same time cannot both block. When a peer
is gone (stopped or killed), what it had not answered is decoded here.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future
from multiprocessing.connection import Connection, wait

from confluent_kafka import Message
from prometheus_client import Counter as MetricCounter

from services.ingest.records import DecodedChunk, chunk_values, decode_messages, decode_values, with_messages
from streamml.specs import DatasetSpec

log = logging.getLogger("streamml.ingest")

IN_FLIGHT = 2
HANDED = MetricCounter("streamml_ingest_peer_decoded_records_total", "Records decoded by another member of the replica")


class PeerDecoding:
    """This member's side: hand chunks to idle peers (``offload``) and decode theirs."""

    def __init__(self, index: int, links: dict[int, Connection], idle: Sequence[int],
                 specs: dict[str, DatasetSpec], max_bytes: int) -> None:
        self.index = index
        self.links = links
        self.idle = idle  # one flag per member, shared by the replica
        self.specs = specs
        self.max_bytes = max_bytes
        self.lock = threading.Lock()  # pending, in_flight, lost
        self.pending: dict[int, tuple[Future[DecodedChunk], list[Message], int, DatasetSpec]] = {}
        self.in_flight: Counter[int] = Counter()
        self.lost: set[int] = set()
        self.next_request = 0
        self.sending = {peer: threading.Lock() for peer in links}
        self.requests: queue.SimpleQueue = queue.SimpleQueue()
        if links:
            threading.Thread(target=self._receive, name="ingest-peer-reader", daemon=True).start()
            threading.Thread(target=self._help, name="ingest-peer-helper", daemon=True).start()

    def set_idle(self, idle: bool) -> None:
        if self.links:
            self.idle[self.index] = idle

    def offload(self, messages: list[Message], spec: DatasetSpec) -> Future[DecodedChunk] | None:
        """The chunk's decoding by an idle peer; None when no peer is idle and free."""
        with self.lock:
            peer = next((p for p in self.links
                         if self.idle[p] and self.in_flight[p] < IN_FLIGHT and p not in self.lost), None)
            if peer is None:
                return None
            request, self.next_request = self.next_request, self.next_request + 1
            future: Future[DecodedChunk] = Future()
            self.pending[request] = (future, messages, peer, spec)
            self.in_flight[peer] += 1
        try:
            self._send(peer, ("decode", request, (messages[0].topic(), chunk_values(messages))))
        except OSError:
            self._peer_gone(peer)
        return future

    def _send(self, peer: int, message: tuple) -> None:
        with self.sending[peer]:
            self.links[peer].send(message)

    def _receive(self) -> None:
        peers = {connection: peer for peer, connection in self.links.items()}
        while peers:
            for connection in wait(list(peers)):
                peer = peers[connection]
                try:
                    kind, request, payload = connection.recv()
                except (EOFError, OSError):
                    del peers[connection]
                    self._peer_gone(peer)
                    continue
                if kind == "decode":
                    self.requests.put((peer, request, payload))
                else:
                    self._answered(request, kind, payload)

    def _help(self) -> None:
        while True:
            peer, request, (topic, chunk) = self.requests.get()
            try:
                answer = ("decoded", request, decode_values(chunk, self.specs[topic], self.max_bytes))
                HANDED.inc(len(chunk.values))
            except Exception as error:  # the owner decodes it, and reports what fails there
                answer = ("failed", request, f"{type(error).__name__}: {error}")
            try:
                self._send(peer, answer)
            except OSError:
                pass  # the owner is gone; so is its need of the answer

    def _answered(self, request: int, kind: str, payload: object) -> None:
        with self.lock:
            future, messages, peer, spec = self.pending.pop(request)
            self.in_flight[peer] -= 1
        if kind == "decoded":
            table, rejected = payload
            future.set_result(with_messages(table, rejected, messages))
        else:
            log.warning("a peer could not decode a chunk; decoding it here", extra={"reason": payload})
            self._decode_here(future, messages, spec)

    def _peer_gone(self, peer: int) -> None:
        with self.lock:
            self.lost.add(peer)
            orphans = [request for request, (_, _, owner, _) in self.pending.items() if owner == peer]
            taken = [self.pending.pop(request) for request in orphans]
        for future, messages, _, spec in taken:
            self._decode_here(future, messages, spec)

    def _decode_here(self, future: Future[DecodedChunk], messages: list[Message], spec: DatasetSpec) -> None:
        try:
            future.set_result(decode_messages(messages, spec, self.max_bytes))
        except Exception as error:
            future.set_exception(error)
