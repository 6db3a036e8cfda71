"""A TopicTail sees every message published after it started, across a broker outage
longer than a consumer-group session, with as many readers as there are tails; with
``since``, none from before."""

import time
from collections import Counter
from datetime import UTC, datetime

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic
from fault_proxy import broker_behind_proxy

from streamml.kafka import EventProducer, TopicTail
from streamml.settings import KafkaSettings
from streamml.stack import procs

pytestmark = pytest.mark.integration


class Reader:
    def __init__(self, tail: TopicTail) -> None:
        self.tail, self.seen = tail, Counter()

    def read_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.seen.update(m.value() for m in self.tail.poll(100, 0.2))


def test_two_tails_each_see_every_message_after_their_start_across_a_broker_outage(tmp_path):
    pid, proxy = broker_behind_proxy(tmp_path)
    readers = []
    try:
        settings = KafkaSettings(bootstrap=f"127.0.0.1:{proxy.port}", session_timeout_ms=6000)
        admin = AdminClient(settings.client_config())
        admin.create_topics([NewTopic("events", 3, 1)])["events"].result(20)
        producer = EventProducer(settings, "test")
        for i in range(30):
            producer.produce("events", f"before-{i}".encode(), f"k{i}")
        producer.flush()

        time.sleep(0.01)
        started = datetime.now(UTC)
        readers = [Reader(TopicTail(settings, ["events"], since=started)),
                   Reader(TopicTail(settings, ["events"], optional=["absent"]))]
        published = [f"after-{i}".encode() for i in range(30)]
        for value in published[:10]:
            producer.produce("events", value, value.decode())
        producer.flush()
        for reader in readers:
            reader.read_for(1)
        proxy.fail("refuse")
        for value in published[10:]:  # queued by the producer, delivered once the broker is back
            producer.produce("events", value, value.decode())
        for reader in readers:  # longer than a group session: a member would have been evicted
            reader.read_for(4)
        proxy.heal()
        producer.flush(60)
        for reader in readers:
            deadline = time.monotonic() + 60
            while len(reader.seen) < len(published) and time.monotonic() < deadline:
                reader.read_for(0.5)
            reader.read_for(1)  # anything more, e.g. a message from before the start, shows up now

        assert readers[0].seen == Counter(published)
        # Without ``since``, the rest of a partition's last batch from before the start may come too.
        assert readers[1].seen - Counter(published) <= Counter(f"before-{i}".encode() for i in range(30))
        assert readers[1].seen & Counter(published) == Counter(published)

        with pytest.raises(KafkaException, match="'missing' does not exist"):
            TopicTail(settings, ["missing"], timeout_s=10)
    finally:
        for reader in readers:
            reader.tail.close()
        procs.terminate(pid, 10)
        proxy.close()
