"""A consumer-group member for tests: records each message, then commits it.

    python group_worker.py BOOTSTRAP GROUP TOPIC OUT_FILE

Each processed message is appended to OUT_FILE as "partition offset key" and
flushed to disk before its offset is committed (at-least-once).
"""

import os
import sys

from streamml.kafka import BatchConsumer
from streamml.settings import KafkaSettings

bootstrap, group, topic, out = sys.argv[1:5]
consumer = BatchConsumer(KafkaSettings(bootstrap=bootstrap, session_timeout_ms=6000), group, [topic])
with open(out, "a") as sink:
    while True:
        batch = consumer.poll(200, timeout=0.5)
        for message in batch:
            sink.write(f"{message.partition()} {message.offset()} {message.key().decode()}\n")
        sink.flush()
        os.fsync(sink.fileno())
        consumer.commit(batch)
