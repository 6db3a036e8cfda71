"""Publishes readings at a fixed rate, each stamped with the moment it is produced.

    python bench/ingest/steady_producer.py BOOTSTRAP TOPIC RATE SECONDS

Records are ``readings.py``'s, keyed by id, with ids from 0 and ``time`` the
wall-clock millisecond of their production, so a landed row tells how long
it took from produce to landed. Prints one JSON line at the end: how many
records were produced, in how many seconds.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import Producer

sys.path.insert(0, str(Path(__file__).parent))
from readings import reading_id, readings  # noqa: E402

TICK_S = 0.01
TEMPLATES = 50_000


def main() -> None:
    bootstrap, topic, rate, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
    # Each record is id + time + the rest of a pre-made record: little work per record at 200k/s.
    tails = [record[record.index(b'Z",') + 2:] for record in readings(0, TEMPLATES)]
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "batch.num.messages": 10_000,
                         "compression.type": "lz4", "acks": "all", "enable.idempotence": True})
    produced, started = 0, time.monotonic()
    while (elapsed := time.monotonic() - started) < seconds:
        due = int(rate * elapsed) - produced
        now = datetime.now(UTC)
        stamp = (now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z").encode()
        for index in range(produced, produced + due):
            key = reading_id(index).encode()
            value = b'{"id":"' + key + b'","time":"' + stamp + b'"' + tails[index % TEMPLATES]
            while True:
                try:
                    producer.produce(topic, value, key)
                    break
                except BufferError:
                    producer.poll(0.01)
        produced += due
        producer.poll(0)
        time.sleep(max(0.0, TICK_S - (time.monotonic() - started - elapsed)))
    producer.flush(60)
    print(json.dumps({"records": produced, "seconds": time.monotonic() - started}), flush=True)


if __name__ == "__main__":
    main()
