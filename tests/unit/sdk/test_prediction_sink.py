"""The SDK's prediction log sink: a batch as few messages, and what a full producer queue leaves behind."""

from datetime import UTC, datetime
from functools import partial
from types import SimpleNamespace

import pytest

from streamml.prediction_events import prediction_records
from streamml.sdk.client import ModelClient, new_request_ids
from streamml.sdk.wire import encode_predictions

pytestmark = pytest.mark.unit


class Producer:
    """Queues up to ``room`` messages, as librdkafka's bounded local queue does."""

    def __init__(self, room: int):
        self.room, self.queued = room, []

    def produce(self, topic, value, key, headers, wait, on_delivery):
        assert not wait  # the sender never waits on the producer
        if len(self.queued) == self.room:
            return False
        self.queued.append((key, headers, value, on_delivery))
        return True


class Log:
    def __init__(self):
        self.failed = 0

    def settled(self, delivered, count=1):
        assert not delivered
        self.failed += count


def sink(room: int) -> SimpleNamespace:
    client = SimpleNamespace(_source=b"/s", model="fraud", producer=Producer(room), _predictions_topic="predictions",
                             _log=Log(), _reports=[])
    client._delivered = partial(ModelClient._delivered, client)
    return client


def batch(outputs, amount_text=""):
    records = [{"amount": f"{amount_text}{i}" if amount_text else float(i)} for i in range(len(outputs))]
    return encode_predictions("fraud", "v1", ("amount",), datetime(2024, 6, 1, tzinfo=UTC),
                              [f"r{i}" for i in range(len(outputs))], records, outputs, {})


def logged_ids(client) -> list[str]:
    return [record.request_id for key, headers, value, _ in client.producer.queued
            for record in prediction_records(headers, key, value)]


def test_a_batch_is_one_message_and_unloggable_outputs_fail():
    client = sink(room=10)
    assert ModelClient._send_predictions(client, batch([0.1, None, 0.3])) == 3
    assert len(client.producer.queued) == 1 and logged_ids(client) == ["r0", "r2"] and client._log.failed == 1
    client.producer.queued[0][3](None, None)  # the broker acknowledges the message: both predictions
    assert client._reports == [(True, 2)]


def test_a_full_queue_leaves_the_rest_of_the_batch_to_be_offered_again(monkeypatch):
    monkeypatch.setattr("streamml.sdk.client.prediction_batches", partial(
        __import__("streamml.sdk.wire", fromlist=["prediction_batches"]).prediction_batches, max_bytes=300))
    client = sink(room=1)
    outputs = [0.1, None, 0.3, 0.4, None, 0.6, 0.7, 0.8]
    taken = ModelClient._send_predictions(client, batch(outputs, amount_text="x" * 60))
    # The first message (a front part of the batch) was queued; the rest waits, nothing of it counted yet.
    assert 0 < taken < len(outputs) and len(client.producer.queued) == 1
    assert logged_ids(client) == [f"r{i}" for i in range(taken) if outputs[i] is not None]
    assert client._log.failed == outputs[:taken].count(None)


def test_request_ids_are_distinct_128_bit_hex_strings():
    ids = new_request_ids(1000) + new_request_ids(1000)
    assert len(set(ids)) == 2000 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert new_request_ids(0) == []
