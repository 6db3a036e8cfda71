"""What EventProducer does with messages the brokers failed to take: publish again what publishing
again delivers, replace a producer librdkafka failed for good, and give up only on the rest.

librdkafka cannot be made to fail on cue, so a stand-in with its interface plays the brokers here;
the chaos loop test (tests/integration/e2e/test_loop.py) meets the real failures."""

from types import SimpleNamespace

import pytest
from confluent_kafka import KafkaError, KafkaException

from streamml import kafka
from streamml.kafka import DeliveryError, EventProducer

pytestmark = pytest.mark.unit


class Message:
    def __init__(self, topic, value, key, headers):
        self._topic, self._value, self._key, self._headers = topic, value, key, headers

    def topic(self):
        return self._topic

    def value(self):
        return self._value

    def key(self):
        return self._key

    def headers(self):
        return self._headers

    def partition(self):
        return -1  # not partitioned yet: the partitioner chooses again


class Brokers:
    """Decides each delivery: ``answers`` is popped per message (None: stored), the default stores."""

    def __init__(self, answers=()):
        self.answers = list(answers)
        self.stored: list[bytes] = []
        self.producers: list["FakeProducer"] = []


class FakeProducer:
    def __init__(self, config, brokers: Brokers):
        self.config, self.brokers = config, brokers
        self.queue: list[tuple[Message, object]] = []
        self.failed_for_good = False
        self.wedged = False  # fenced: sends nothing more, fails nothing either
        brokers.producers.append(self)

    def produce(self, topic, value, key, partition=-1, headers=None, on_delivery=None):
        if self.failed_for_good:
            raise KafkaException(KafkaError(KafkaError._FATAL, "fenced earlier", fatal=True))
        self.queue.append((Message(topic, value, key, headers), on_delivery))

    def poll(self, timeout=0):
        return 0

    def flush(self, timeout=0):
        while self.queue and not self.wedged:
            message, callback = self.queue.pop(0)
            if self.failed_for_good:
                callback(KafkaError(KafkaError._PURGE_QUEUE), message)
                continue
            error = self.brokers.answers.pop(0) if self.brokers.answers else None
            if error is None:
                self.brokers.stored.append(message.value())
            elif error.fatal():
                self.failed_for_good = True
                self.config["error_cb"](error)
            elif error.code() == KafkaError.PRODUCER_FENCED:
                self.wedged = True
            callback(error, message)
        return len(self.queue)

    def purge(self):
        queued, self.queue = self.queue, []
        for message, callback in queued:
            callback(KafkaError(KafkaError._PURGE_QUEUE), message)

    def __len__(self):
        return len(self.queue)


@pytest.fixture
def brokers(monkeypatch) -> Brokers:
    brokers = Brokers()
    monkeypatch.setattr(kafka, "Producer", lambda config: FakeProducer(config, brokers))
    monkeypatch.setattr(kafka, "AGAIN_PAUSE_S", 0.0)
    return brokers


def producer() -> EventProducer:
    settings = SimpleNamespace(client_config=lambda: {"bootstrap.servers": "x:9092"}, bootstrap="x:9092")
    return EventProducer(settings, "test")


def test_a_message_a_failed_storage_refused_is_published_again_on_the_same_producer(brokers):
    brokers.answers = [None, KafkaError(KafkaError.UNKNOWN)]
    events = producer()
    events.produce("t", b"1")
    events.produce("t", b"2")
    events.flush(5)
    assert sorted(brokers.stored) == [b"1", b"2"]
    assert len(brokers.producers) == 1


def test_a_fenced_producer_is_replaced_and_what_it_held_is_published_on_the_new_one(brokers):
    # As Tansu does after its storage failed mid-write: fenced, not fatal, and nothing more is sent.
    brokers.answers = [None, KafkaError(KafkaError.PRODUCER_FENCED)]
    events = producer()
    for value in (b"1", b"2", b"3"):
        events.produce("t", value)
    events.flush(5)
    assert sorted(brokers.stored) == [b"1", b"2", b"3"]
    assert len(brokers.producers) == 2
    events.produce("t", b"4")  # later messages go to the new producer
    events.flush(5)
    assert brokers.stored[-1] == b"4" and not brokers.producers[0].queue


def test_a_producer_failed_for_good_is_replaced(brokers):
    brokers.answers = [KafkaError(KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, fatal=True)]
    events = producer()
    events.produce("t", b"1")
    events.produce("t", b"2")
    events.flush(5)
    assert sorted(brokers.stored) == [b"1", b"2"] and len(brokers.producers) == 2


def test_a_caller_with_its_own_delivery_callback_hears_of_the_fencing_and_publishes_on_a_new_producer(brokers):
    brokers.answers = [KafkaError(KafkaError.PRODUCER_FENCED)]
    events, heard = producer(), []

    def delivered(error, message):
        heard.append(error and error.code())
        if error is not None:
            events.produce("t", message.value(), on_delivery=delivered)

    events.produce("t", b"1", on_delivery=delivered)
    events.produce("t", b"2", on_delivery=delivered)  # stuck in the fenced producer until it is replaced
    events.flush(5)
    assert heard == [KafkaError.PRODUCER_FENCED, KafkaError._PURGE_QUEUE, None, None]
    assert sorted(brokers.stored) == [b"1", b"2"] and len(brokers.producers) == 2


def test_a_produce_on_a_failed_producer_replaces_it(brokers):
    events = producer()
    brokers.producers[0].failed_for_good = True  # failed before its error callback was heard of
    events.produce("t", b"1")
    events.flush(5)
    assert brokers.stored == [b"1"] and len(brokers.producers) == 2


def test_a_message_the_brokers_refuse_for_good_fails_the_flush_and_is_not_sent_again(brokers):
    brokers.answers = [KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)]
    events = producer()
    events.produce("t", b"too big")
    with pytest.raises(DeliveryError) as raised:
        events.flush(5)
    assert not raised.value.transient and "Message size too large" in str(raised.value)
    assert brokers.stored == [] and not brokers.answers


def test_messages_still_refused_when_the_flush_runs_out_of_time_are_kept_for_the_next(brokers):
    brokers.answers = [KafkaError(KafkaError.UNKNOWN)] * 1000
    events = producer()
    events.produce("t", b"1")
    with pytest.raises(DeliveryError) as raised:
        events.flush(0.05)
    assert raised.value.transient and events.pending() == 1
    brokers.answers = []  # the storage is back
    events.flush(5)
    assert brokers.stored == [b"1"] and events.pending() == 0
