import threading
import uuid

import pytest
from prometheus_client import REGISTRY

from streamml.sdk.prediction_log import PredictionLog

pytestmark = pytest.mark.unit


def metric(name: str, log: str) -> float:
    return REGISTRY.get_sample_value(f"streamml_prediction_log_{name}_total", {"log": log}) or 0.0


class Sink:
    """Takes up to ``room`` items per call, as a producer with a bounded queue does, and
    acknowledges them at once unless ``acks`` is cleared (a broker that is away)."""

    def __init__(self, room: int | None = None):
        self.log: PredictionLog | None = None
        self.batches: list[list[int]] = []
        self.room = room
        self.acks = threading.Event()
        self.acks.set()
        self.unacknowledged = 0
        self.calls = threading.Semaphore(0)

    def __call__(self, batch):
        self.calls.release()
        taken = batch if self.room is None else batch[: self.room]
        if self.room is not None:
            self.room -= len(taken)
        self.batches.append(list(taken))
        if self.acks.is_set():
            self.log.settled(True, len(taken))
        else:
            self.unacknowledged += len(taken)
        return len(taken)

    def reconnect(self):
        self.acks.set()
        self.log.settled(True, self.unacknowledged)
        self.unacknowledged = 0

    @property
    def items(self):
        return [item for batch in self.batches for item in batch]


def open_log(sink: Sink, **options) -> PredictionLog:
    sink.log = PredictionLog(sink, name=uuid.uuid4().hex, **options)
    return sink.log


def test_items_reach_the_sink_in_order_and_in_bounded_batches():
    sink = Sink()
    log = open_log(sink, batch_size=7, linger_s=0.01)
    assert log.add_many(range(100)) == 100
    assert log.flush(timeout=10)
    assert sink.items == list(range(100))
    assert max(len(batch) for batch in sink.batches) <= 7
    stats = log.stats()
    assert (stats.accepted, stats.delivered, stats.dropped, stats.buffered, stats.in_flight) == (100, 100, 0, 0, 0)
    assert log.close()


def test_the_records_of_many_calls_go_to_the_sink_together_in_full_batches():
    sink = Sink()
    log = open_log(sink, batch_size=100, linger_s=30)  # only a full batch wakes the sender
    for call in range(10):
        assert log.add_many(range(call * 50, call * 50 + 50)) == 50
    assert log.flush(timeout=10)
    assert [len(batch) for batch in sink.batches] == [100] * 5 and sink.items == list(range(500))
    assert log.close()


def test_an_item_counts_as_delivered_only_once_acknowledged():
    sink = Sink()
    sink.acks.clear()  # queued in the producer, the broker has not answered
    log = open_log(sink, batch_size=10, linger_s=0.01)
    log.add_many(range(5))
    assert sink.calls.acquire(timeout=10)
    assert not log.flush(timeout=0.2)
    stats = log.stats()
    assert (stats.delivered, stats.in_flight, stats.buffered) == (0, 5, 0)
    sink.reconnect()
    assert log.flush(timeout=10)
    assert log.stats().delivered == 5 and metric("delivered", log.name) == 5
    assert log.close()


def test_what_a_full_sink_refuses_stays_buffered_and_is_offered_again():
    sink = Sink(room=3)
    log = open_log(sink, batch_size=5, linger_s=0.01)
    log.add_many(range(8))
    assert sink.calls.acquire(timeout=10)
    assert not log.flush(timeout=0.3)
    assert log.stats().buffered == 5 and sink.items == [0, 1, 2]
    sink.room = None  # the producer's queue drained
    assert log.flush(timeout=10)
    assert sink.items == list(range(8)) and log.stats().dropped == 0
    log.close()


class CountingCondition(threading.Condition):
    waits = 0

    def wait_for(self, predicate, timeout=None):
        CountingCondition.waits += 1
        return super().wait_for(predicate, timeout)


def test_a_full_buffer_drops_after_one_wait_and_counts():
    sink = Sink(room=0)  # the producer's queue is full: the broker is away
    log = open_log(sink, capacity=10, batch_size=5, linger_s=0.01, put_timeout_s=0.05)
    log._has_room = CountingCondition(log._lock)
    assert log.add_many(range(10)) == 10
    CountingCondition.waits = 0
    assert log.add_many(range(10, 30)) == 0
    assert CountingCondition.waits == 1  # one wait for the whole call, not one per item
    assert log.add(30) is False
    assert log.stats().dropped == 21 and metric("dropped", log.name) == 21
    sink.room = None
    assert log.flush(timeout=10)
    assert sink.items == list(range(10))
    assert log.add(31) is True  # room again
    log.close()


def test_a_call_keeps_what_fits_and_drops_the_rest():
    sink = Sink(room=0)
    log = open_log(sink, capacity=4, batch_size=100, linger_s=0.01, put_timeout_s=0)
    assert log.add_many(range(6)) == 4
    assert log.stats().dropped == 2
    sink.room = None
    assert log.flush(timeout=10) and sink.items == [0, 1, 2, 3]
    log.close()


def test_a_failing_sink_fails_its_batch_but_logging_goes_on(caplog):
    delivered = []

    def sink(batch):
        if "poison" in batch:
            raise RuntimeError("broker said no")
        delivered.extend(batch)
        log.settled(True, len(batch))
        return len(batch)

    log = PredictionLog(sink, name=uuid.uuid4().hex, batch_size=2, linger_s=0.01)
    log.add_many(["a", "poison"])
    assert log.flush(timeout=10)
    log.add_many(["b", "c"])
    assert log.flush(timeout=10)
    assert delivered == ["b", "c"]
    stats = log.stats()
    assert (stats.failed, stats.delivered) == (2, 2)
    assert metric("failed", log.name) == 2 and metric("delivered", log.name) == 2
    assert "sink failed, 2 items lost" in caplog.text
    log.close()


def test_a_delivery_failure_reported_later_counts_as_failed():
    sink = Sink()
    sink.acks.clear()
    log = open_log(sink, batch_size=3, linger_s=0.01)
    log.add_many(range(3))
    assert sink.calls.acquire(timeout=10)
    log.settled(False, 3)
    assert log.flush(timeout=10)
    assert (log.stats().failed, log.stats().delivered) == (3, 0)
    log.close()


def test_flush_does_not_wait_for_linger():
    sink = Sink()
    log = open_log(sink, batch_size=2, linger_s=30.0)
    log.add_many(range(5))  # two full batches go at once; the fifth item would linger 30 s
    assert log.flush(timeout=10)
    assert sink.items == list(range(5))
    log.close()


def test_close_delivers_what_is_buffered_then_refuses():
    sink = Sink()
    log = open_log(sink, batch_size=1000, linger_s=5.0)
    log.add_many(range(10))
    assert log.close(timeout=10)
    assert sink.items == list(range(10))
    assert log.add(10) is False and log.stats().dropped == 1


def test_close_counts_what_was_never_acknowledged_as_dropped():
    sink = Sink()
    sink.acks.clear()
    log = open_log(sink, batch_size=4, linger_s=0.01)
    log.add_many(range(6))
    assert log.close(timeout=0.3) is False
    stats = log.stats()
    assert (stats.accepted, stats.delivered, stats.dropped, stats.in_flight, stats.buffered) == (6, 0, 6, 0, 0)
    sink.reconnect()  # an acknowledgement after close changes nothing
    assert log.stats().delivered == 0


def test_many_producers_every_item_is_delivered_or_counted_as_dropped():
    sink = Sink()
    log = open_log(sink, capacity=200, batch_size=50, linger_s=0.005, put_timeout_s=0.0005)
    kept = []

    def produce(offset):
        kept.append(sum(log.add(offset + i) for i in range(5000)))

    threads = [threading.Thread(target=produce, args=(n * 10_000,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert log.close(timeout=10)
    stats = log.stats()
    assert stats.accepted == sum(kept) == stats.delivered == len(sink.items)
    assert stats.accepted + stats.dropped == 20_000
    assert len(set(sink.items)) == len(sink.items)


@pytest.mark.parametrize("kwargs", [{"capacity": 0}, {"batch_size": 0}, {"linger_s": 0}, {"put_timeout_s": -1}])
def test_bad_settings_are_named(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        PredictionLog(lambda batch: len(batch), **kwargs)


def test_a_close_after_a_flush_that_waited_is_not_held_up_by_a_long_linger():
    sink = Sink()
    sink.acks.clear()  # the broker has not answered: the flush waits for acknowledgements
    log = open_log(sink, batch_size=100, linger_s=30)
    log.add_many(range(10))
    assert not log.flush(timeout=0.5)  # offers the 10 at once (no linger while a flush waits)
    assert sink.items == list(range(10))
    sink.reconnect()
    assert log.close(timeout=2)  # the sender notices the close within it, not after a 30 s linger
    assert log.stats().delivered == 10
