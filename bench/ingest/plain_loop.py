"""The plain loop: what one writes without a framework. consume -> json.loads ->
pyarrow -> Parquet -> boto3, then commit; each partition's rows land at
50,000, and every partial batch lands as soon as a poll finds nothing new.

    python bench/ingest/plain_loop.py BOOTSTRAP TOPIC GROUP BUCKET

The S3 endpoint and credentials come from AWS_ENDPOINT_URL_S3,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION. Writes JSON lines
to stdout, as the other tools' logs do ("partitions assigned", "consuming"
at the first record); runs until SIGTERM.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import time
from collections import defaultdict
from datetime import datetime

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
from botocore.config import Config
from confluent_kafka import Consumer, TopicPartition

BATCH_ROWS = 50_000
# Path-style requests, and no CRC checksums (Ceph's RGW rejects them).
CEPH = Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
              response_checksum_validation="when_required")
SCHEMA = pa.schema([
    ("id", pa.string()), ("time", pa.timestamp("us", tz="UTC")),
    ("temp", pa.float64()), ("humidity", pa.float64()), ("pressure", pa.float64()),
    ("vibration", pa.float64()), ("voltage", pa.float64()), ("current", pa.float64()),
    ("rpm", pa.int64()), ("errors", pa.int64()), ("device", pa.string()), ("site", pa.string()),
    ("label", pa.int64()),
])


def say(message: str) -> None:
    print(json.dumps({"time": time.time(), "message": message}), flush=True)


def main() -> None:
    bootstrap, topic, group, bucket = sys.argv[1:5]
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False, "session.timeout.ms": 6000,
                         "fetch.queue.backoff.ms": 10, "fetch.wait.max.ms": 50})
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL_S3"], config=CEPH)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    consumer.subscribe([topic], on_assign=lambda *_: say("partitions assigned"))
    rows: dict[int, list[dict]] = defaultdict(list)
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    started = False

    def land(partition: int) -> None:
        batch = rows.pop(partition)
        for row in batch:
            row["time"] = datetime.fromisoformat(row["time"])
        sink = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(batch, SCHEMA), sink, compression="zstd")
        key = f"raw/{topic}/p{partition}/{first.pop(partition):020d}-{last[partition]:020d}.parquet"
        s3.put_object(Bucket=bucket, Key=key, Body=sink.getvalue())
        consumer.commit(offsets=[TopicPartition(topic, partition, last[partition] + 1)], asynchronous=False)

    while not stopping:
        messages = consumer.consume(1000, 0.25)
        if messages and not started:
            started = True
            say("consuming")
        for message in messages:
            if message.error() is not None:
                continue
            partition = message.partition()
            first.setdefault(partition, message.offset())
            last[partition] = message.offset()
            rows[partition].append(json.loads(message.value()))
            if len(rows[partition]) >= BATCH_ROWS:
                land(partition)
        if not messages:  # caught up: land what is buffered
            for partition in list(rows):
                land(partition)
    consumer.close()


if __name__ == "__main__":
    main()
