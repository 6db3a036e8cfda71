import threading
import time
import uuid

import pytest
from prometheus_client import REGISTRY

from streamml.sdk.prediction_log import PredictionLog

pytestmark = pytest.mark.unit


def metric(name: str, log: str) -> float:
    return REGISTRY.get_sample_value(f"streamml_prediction_log_{name}_total", {"log": log}) or 0.0


class Sink:
    def __init__(self):
        self.batches: list[list[int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.calls = threading.Semaphore(0)

    def __call__(self, batch):
        self.calls.release()
        self.gate.wait(10)
        self.batches.append(list(batch))

    @property
    def items(self):
        return [item for batch in self.batches for item in batch]


def test_items_reach_the_sink_in_order_and_in_bounded_batches():
    sink = Sink()
    log = PredictionLog(sink, name=uuid.uuid4().hex, batch_size=7, linger_s=0.01)
    assert log.add_many(range(100)) == 100
    assert log.flush(timeout=10)
    assert sink.items == list(range(100))
    assert max(len(batch) for batch in sink.batches) <= 7
    stats = log.stats()
    assert (stats.accepted, stats.delivered, stats.dropped, stats.buffered) == (100, 100, 0, 0)
    assert log.close()


def test_a_lone_item_is_sent_after_linger_without_a_flush():
    sink = Sink()
    log = PredictionLog(sink, name=uuid.uuid4().hex, batch_size=1000, linger_s=0.01)
    log.add("only")
    assert sink.calls.acquire(timeout=10)
    assert log.flush(timeout=10) and sink.items == ["only"]
    log.close()


def test_a_full_buffer_drops_within_the_timeout_and_counts():
    sink = Sink()
    sink.gate.clear()  # the sink hangs, as a broker that is away would
    name = uuid.uuid4().hex
    # A long linger: only a full batch of 5 wakes the sender, so exactly 0..4 go to the sink.
    log = PredictionLog(sink, name=name, capacity=10, batch_size=5, linger_s=5.0, put_timeout_s=0.02)
    log.add_many(range(5))
    assert sink.calls.acquire(timeout=10)  # 5 items are in the hung sink; the buffer is empty again
    assert log.add_many(range(5, 15)) == 10
    started = time.monotonic()
    assert log.add(15) is False
    assert time.monotonic() - started < 1.0  # bounded by put_timeout_s, not by the sink
    assert log.add_many(range(16, 20)) == 0
    assert log.stats().dropped == 5
    assert metric("dropped", name) == 5
    sink.gate.set()
    assert log.flush(timeout=10)
    assert sink.items == list(range(15))
    assert log.add(20) is True  # room again
    log.close()


def test_zero_timeout_drops_immediately():
    sink = Sink()
    sink.gate.clear()
    log = PredictionLog(sink, name=uuid.uuid4().hex, capacity=1, batch_size=1, put_timeout_s=0)
    log.add(0)
    assert sink.calls.acquire(timeout=10)
    assert log.add(1) is True and log.add(2) is False
    sink.gate.set()
    log.close()


def test_a_failing_sink_loses_its_batch_but_logging_goes_on(caplog):
    delivered = []
    name = uuid.uuid4().hex

    def sink(batch):
        if "poison" in batch:
            raise RuntimeError("broker said no")
        delivered.extend(batch)

    log = PredictionLog(sink, name=name, batch_size=2, linger_s=0.01)
    log.add_many(["a", "poison"])
    assert log.flush(timeout=10)
    log.add_many(["b", "c"])
    assert log.flush(timeout=10)
    assert delivered == ["b", "c"]
    stats = log.stats()
    assert (stats.failed, stats.delivered) == (2, 2)
    assert metric("failed", name) == 2 and metric("delivered", name) == 2
    assert "sink failed, 2 items lost" in caplog.text
    log.close()


def test_flush_does_not_wait_for_linger():
    sink = Sink()
    log = PredictionLog(sink, name=uuid.uuid4().hex, batch_size=2, linger_s=30.0)
    log.add_many(range(5))  # two full batches go at once; the fifth item would linger 30 s
    started = time.monotonic()
    assert log.flush(timeout=10)
    assert time.monotonic() - started < 5.0
    assert sink.items == list(range(5))
    log.close()


def test_close_delivers_what_is_buffered_then_refuses():
    sink = Sink()
    log = PredictionLog(sink, name=uuid.uuid4().hex, batch_size=1000, linger_s=5.0)
    log.add_many(range(10))
    assert log.close(timeout=10)
    assert sink.items == list(range(10))
    assert log.add(10) is False and log.stats().dropped == 1


def test_many_producers_every_item_is_delivered_or_counted_as_dropped():
    sink = Sink()
    log = PredictionLog(sink, name=uuid.uuid4().hex, capacity=200, batch_size=50, linger_s=0.005,
                        put_timeout_s=0.0005)
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
        PredictionLog(lambda batch: None, **kwargs)
