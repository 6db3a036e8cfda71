"""Decoding on an idle peer (peers.py): two members' sides in one process, joined by a real pipe."""

from multiprocessing import Pipe
from pathlib import Path

import pytest
from confluent_kafka import Message

from services.ingest.peers import PeerDecoding
from services.ingest.records import decode_messages
from streamml.datagen import to_json_records, transactions
from streamml.specs import load_dataset_spec

pytestmark = pytest.mark.unit
SPEC = load_dataset_spec(Path(__file__).resolve().parents[3] / "examples" / "datasets" / "transactions.yaml")
TOPIC = "ingest.transactions"


def _members() -> tuple[PeerDecoding, PeerDecoding, list[int]]:
    ours, theirs = Pipe()
    idle = [0, 0]
    specs = {TOPIC: SPEC}
    return PeerDecoding(0, {1: ours}, idle, specs, 1 << 20), PeerDecoding(1, {0: theirs}, idle, specs, 1 << 20), idle


def _messages() -> list[Message]:
    values = to_json_records(transactions(300, seed=5))
    values[7], values[100] = b"{not json", None
    return [Message(topic=TOPIC, partition=1, offset=40 + i, value=v, timestamp=(1, 1_700_000_000_000 + i))
            for i, v in enumerate(values)]


def test_a_busy_member_hands_a_chunk_to_an_idle_peer_and_gets_what_it_would_have_decoded():
    busy, helper, _ = _members()
    messages = _messages()
    assert busy.offload(messages, SPEC) is None  # no peer says it is idle
    helper.set_idle(True)
    handed = busy.offload(messages, SPEC)
    assert handed is not None
    decoded, expected = handed.result(timeout=10), decode_messages(messages, SPEC, 1 << 20)
    assert decoded.table.equals(expected.table)
    # Dead letters carry the messages the busy member polled, not copies.
    assert [(m.offset(), reason) for m, reason in decoded.rejected] == \
           [(m.offset(), reason) for m, reason in expected.rejected]
    assert all(any(m is original for original in messages) for m, _ in decoded.rejected)


def test_a_peer_gets_at_most_two_chunks_and_what_it_leaves_unanswered_is_decoded_by_their_owner():
    ours, silent_peer = Pipe()  # a peer that is idle but never answers, then dies
    busy = PeerDecoding(0, {1: ours}, [0, 1], {TOPIC: SPEC}, 1 << 20)
    messages = _messages()
    handed = [busy.offload(messages, SPEC) for _ in range(3)]
    assert handed[0] is not None and handed[1] is not None
    assert handed[2] is None  # two wait on that peer already: the owner decodes this one itself
    assert not handed[0].done()
    silent_peer.close()
    expected = decode_messages(messages, SPEC, 1 << 20).table
    assert all(future.result(timeout=10).table.equals(expected) for future in handed[:2])
    assert busy.offload(messages, SPEC) is None  # a lost peer is never asked again
