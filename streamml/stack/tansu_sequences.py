"""Put Tansu's idempotent-producer sequences back in line with its stored
batches before the broker starts on ``s3://`` storage.

Why: Tansu 0.6's S3 engine (``DynoStore::produce``) handles an idempotent
batch in three writes, in this order: it advances the producer's sequence in
``clusters/<cluster>/meta.json``, then the partition's ``watermark.json``,
then it stores the batch as ``records/<offset>.batch``. A broker killed after
the first write and before the last leaves the sequence ahead of the log.
The producer, which never got an answer, sends the same batch again to the
restarted broker; Tansu finds its sequence already counted and answers
DUPLICATE_SEQUENCE_NUMBER, which Kafka clients (librdkafka, the Java client)
take to mean "stored before, the acknowledgement was lost" and report as
delivered. The records are acknowledged and not in the topic.

So while no broker runs, each producer's sequence for a partition is lowered
to the end of its newest batch stored in that partition (0 when it has none
in its current epoch). The retried batch then matches and is stored. A batch
whose sequence was counted but that no producer sends again (the producer is
gone) only leaves an unused sequence range, as in Kafka.
"""

from __future__ import annotations

import json
import struct
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator

# Kafka record batch v2 header, as Tansu stores it at the start of each
# ``.batch`` object: base offset, length, leader epoch, magic, crc,
# attributes, last offset delta, first and max timestamp, producer id,
# producer epoch, base sequence, record count.
_HEADER = struct.Struct(">qiibIhiqqqhii")
_READERS = 8  # header reads in flight: RGW answers each in a few ms


def repair(client: Any, bucket: str, log: Callable[[str], object] = print) -> int:
    """Lower every sequence that is ahead of the stored batches; returns how many.

    ``client`` is a boto3 S3 client. Call only while no broker uses ``bucket``."""
    repaired = 0
    for cluster in _clusters(client, bucket):
        key = f"clusters/{cluster}/meta.json"
        try:
            found = client.get_object(Bucket=bucket, Key=key)
        except client.exceptions.NoSuchKey:
            continue
        meta = json.loads(found["Body"].read())
        fixes = []
        for (topic, partition), wanted in _sequences(meta).items():
            prefix = f"clusters/{cluster}/topics/{topic}/partitions/{partition:0>10}/records/"
            stored = stored_ends(client, bucket, prefix, wanted)
            for producer, (epoch, sequence) in wanted.items():
                if sequence > stored.get(producer, 0):
                    fixes.append((producer, epoch, topic, partition, sequence, stored.get(producer, 0)))
        if not fixes:
            continue
        for producer, epoch, topic, partition, sequence, end in fixes:
            meta["producers"][producer]["sequences"][epoch][topic][partition] = end
            log(f"tansu: producer {producer} epoch {epoch} on {topic}[{partition}]: sequence {sequence} "
                f"is ahead of the stored batches (a broker died before storing a batch it had counted); "
                f"set to {end} so the producer's retry is stored")
        client.put_object(Bucket=bucket, Key=key, Body=json.dumps(meta, separators=(",", ":")).encode(),
                          ContentType="application/json", IfMatch=found["ETag"])
        repaired += len(fixes)
    return repaired


def _clusters(client: Any, bucket: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="clusters/", Delimiter="/")
    return [p["Prefix"].split("/")[1] for page in pages for p in page.get("CommonPrefixes", [])]


def _sequences(meta: dict) -> dict[tuple[str, str], dict[str, tuple[str, int]]]:
    """(topic, partition) -> producer id -> (its current epoch, next sequence), for sequences above 0.

    Keys stay the strings meta.json uses, so a fix writes back to the same entry."""
    wanted: dict[tuple[str, str], dict[str, tuple[str, int]]] = defaultdict(dict)
    for producer, detail in (meta.get("producers") or {}).items():
        epochs = detail.get("sequences") or {}
        if not epochs:
            continue
        epoch = max(epochs, key=int)  # Tansu checks and advances only the newest epoch's
        for topic, partitions in epochs[epoch].items():
            for partition, sequence in partitions.items():
                if sequence > 0:
                    wanted[(topic, partition)][producer] = (epoch, sequence)
    return wanted


def stored_ends(client: Any, bucket: str, prefix: str, wanted: dict[str, tuple[str, int]]) -> dict[str, int]:
    """For each wanted producer: the sequence after its newest batch under ``prefix``
    in its current epoch (absent when it has none there).

    Reads batch headers newest first and stops once every producer is placed."""
    ends: dict[str, int] = {}
    placed: set[str] = set()
    keys = sorted(_keys(client, bucket, prefix), reverse=True)  # zero-padded offsets sort as numbers
    with ThreadPoolExecutor(_READERS) as pool:
        for start in range(0, len(keys), _READERS * 4):
            chunk = keys[start:start + _READERS * 4]
            for header in pool.map(lambda key: _header(client, bucket, key), chunk):
                producer, epoch, base_sequence, last_offset_delta = header
                if producer not in wanted or producer in placed or base_sequence < 0:
                    continue
                placed.add(producer)
                if epoch == int(wanted[producer][0]):
                    ends[producer] = base_sequence + last_offset_delta + 1
            if placed >= wanted.keys():
                break
    return ends


def _keys(client: Any, bucket: str, prefix: str) -> Iterator[str]:
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            if item["Key"].endswith(".batch"):
                yield item["Key"]


def _header(client: Any, bucket: str, key: str) -> tuple[str, int, int, int]:
    """(producer id, producer epoch, base sequence, last offset delta) of one stored batch."""
    data = client.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{_HEADER.size - 1}")["Body"].read()
    fields = _HEADER.unpack(data[:_HEADER.size])
    if fields[3] != 2:
        raise ValueError(f"{bucket}/{key} is not a Kafka record batch v2 (magic {fields[3]})")
    return str(fields[9]), fields[10], fields[11], fields[6]
