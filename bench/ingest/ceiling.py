"""The ceiling: one confluent-kafka consumer polling batches and doing nothing with them.

    python bench/ingest/ceiling.py BOOTSTRAP TOPIC GROUP RECORDS

``fetch.queue.backoff.ms`` is low: with librdkafka's default an emptied local
queue waits a second before the next fetch, and the ceiling would measure
that setting. Writes JSON lines to stdout, as the other tools' logs do
("partitions assigned", "consuming" at the first record, "consumed" at the
last), then waits for SIGTERM, so that its CPU time and peak RSS can be read.
"""

from __future__ import annotations

import json
import signal
import sys
import time

from confluent_kafka import Consumer


def say(message: str, **fields: object) -> None:
    print(json.dumps({"time": time.time(), "message": message, **fields}), flush=True)


def main() -> None:
    bootstrap, topic, group, total = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False, "session.timeout.ms": 6000,
                         "fetch.queue.backoff.ms": 10, "fetch.wait.max.ms": 50})
    consumer.subscribe([topic], on_assign=lambda *_: say("partitions assigned"))
    count = 0
    while count < total:
        batch = consumer.consume(10_000, 1.0)
        if batch and not count:
            say("consuming")
        count += sum(1 for message in batch if message.error() is None)
    say("consumed", records=count)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.pause()


if __name__ == "__main__":
    main()
