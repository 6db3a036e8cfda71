"""The SDK's prediction log sink: one encode per batch, and what a full producer queue leaves behind."""

import json
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from streamml.sdk.client import ModelClient, new_request_ids
from streamml.sdk.wire import timestamp

pytestmark = pytest.mark.unit
CONTEXT = ("v1", ("amount",), timestamp(datetime(2024, 6, 1, tzinfo=UTC)))


class Producer:
    """Queues up to ``room`` messages, as librdkafka's bounded local queue does."""

    def __init__(self, room: int):
        self.room, self.queued = room, []

    def produce_many(self, topic, messages, on_delivery):
        for message in messages:
            if len(self.queued) == self.room:
                break
            self.queued.append(message)
        return len(self.queued)


class Log:
    def __init__(self):
        self.failed = 0

    def settled(self, delivered, count=1):
        assert not delivered
        self.failed += count


def sink(room: int) -> SimpleNamespace:
    return SimpleNamespace(_source=b"/s", model="fraud", producer=Producer(room), _predictions_topic="predictions",
                           _log=Log(), _delivered=None)


def batch(outputs):
    return [(f"r{i}", {"amount": float(i)}, output, (), CONTEXT) for i, output in enumerate(outputs)]


def test_a_batch_the_queue_takes_is_taken_whole_and_unloggable_outputs_fail():
    client = sink(room=10)
    assert ModelClient._send_predictions(client, batch([0.1, None, 0.3])) == 3
    assert len(client.producer.queued) == 2 and client._log.failed == 1


def test_a_full_queue_leaves_the_rest_of_the_batch_to_be_offered_again():
    client = sink(room=2)
    # r0 and r2 queued; r1 cannot be logged; r3 onwards wait, r4 is not counted as failed yet.
    assert ModelClient._send_predictions(client, batch([0.1, None, 0.3, 0.4, None])) == 3
    assert [json.loads(value)["request_id"] for _, _, value in client.producer.queued] == ["r0", "r2"]
    assert client._log.failed == 1


def test_request_ids_are_distinct_128_bit_hex_strings():
    ids = new_request_ids(1000) + new_request_ids(1000)
    assert len(set(ids)) == 2000 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert new_request_ids(0) == []
