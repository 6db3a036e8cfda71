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

Cost: each pass saves the sequences it left and each partition's newest
batch in a snapshot file. The next pass checks only the producers whose
sequence moved since, and reads only the headers of batches stored since
(newest first, stopping once each such producer is placed). Without a usable
snapshot (the first start, or a bucket that does not match it) it reads back
through each partition until every producer is placed.
"""

from __future__ import annotations

import json
import os
import struct
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

# Kafka record batch v2 header, as Tansu stores it at the start of each
# ``.batch`` object: base offset, length, leader epoch, magic, crc,
# attributes, last offset delta, first and max timestamp, producer id,
# producer epoch, base sequence, record count.
_HEADER = struct.Struct(">qiibIhiqqqhii")
_READERS = 8  # header reads in flight: RGW answers each in a few ms

Partition = tuple[str, str]  # (topic, partition) as meta.json spells them
Sequences = dict[str, tuple[str, int]]  # producer id -> (its current epoch, next sequence)


def repair(client: Any, bucket: str, snapshot: Path, log: Callable[[str], object] = print) -> int:
    """Lower every sequence that is ahead of the stored batches; returns how many.

    ``client`` is a boto3 S3 client; ``snapshot`` the file this keeps between
    passes. Call only while no broker uses ``bucket``."""
    before = _load(snapshot)
    after: dict[str, dict] = {}
    repaired = 0
    for cluster in _clusters(client, bucket):
        key = f"clusters/{cluster}/meta.json"
        try:
            found = client.get_object(Bucket=bucket, Key=key)
        except client.exceptions.NoSuchKey:
            continue
        meta = json.loads(found["Body"].read())
        ids = {name: str(topic.get("id")) for name, topic in (meta.get("topics") or {}).items()}
        current = sequences(meta)
        known = before.get(cluster, {})
        if not _still_valid(known, current, ids):
            known = {}
        fixes, partitions = [], {}
        for (topic, partition), producers in current.items():
            name = f"{ids.get(topic, '')}/{topic}/{partition}"
            was = known.get(name, {"newest": None, "sequences": {}})
            prior = {pid: (epoch, seq) for pid, (epoch, seq) in was["sequences"].items()}
            prefix = f"clusters/{cluster}/topics/{topic}/partitions/{partition:0>10}/records/"
            keys = list(_keys(client, bucket, prefix, after=was["newest"]))
            moved = {pid: value for pid, value in producers.items() if prior.get(pid) != value}
            ends = stored_ends(client, bucket, keys, moved) if moved else {}
            for producer, (epoch, sequence) in moved.items():
                # Not among the batches stored since: where the last pass left it.
                end = ends.get(producer, _end_of(prior.get(producer), epoch))
                if sequence > end:
                    fixes.append((producer, epoch, topic, partition, sequence, end))
                    producers[producer] = (epoch, end)
            partitions[name] = {"newest": keys[-1] if keys else was["newest"],
                                "sequences": {pid: list(value) for pid, value in producers.items()}}
        for producer, epoch, topic, partition, sequence, end in fixes:
            meta["producers"][producer]["sequences"][epoch][topic][partition] = end
            log(f"tansu: producer {producer} epoch {epoch} on {topic}[{partition}]: sequence {sequence} "
                f"is ahead of the stored batches (a broker died before storing a batch it had counted); "
                f"set to {end} so the producer's retry is stored")
        if fixes:
            client.put_object(Bucket=bucket, Key=key, Body=json.dumps(meta, separators=(",", ":")).encode(),
                              ContentType="application/json", IfMatch=found["ETag"])
        repaired += len(fixes)
        after[cluster] = partitions
    _save(snapshot, after)
    return repaired


def sequences(meta: dict) -> dict[Partition, Sequences]:
    """Each partition's idempotent producers in meta.json, with sequences above 0.

    Keys stay the strings meta.json uses, so a fix writes back to the same entry."""
    found: dict[Partition, Sequences] = defaultdict(dict)
    for producer, detail in (meta.get("producers") or {}).items():
        epochs = detail.get("sequences") or {}
        if not epochs:
            continue
        epoch = max(epochs, key=int)  # Tansu checks and advances only the newest epoch's
        for topic, partitions in epochs[epoch].items():
            for partition, sequence in partitions.items():
                if sequence > 0:
                    found[(topic, partition)][producer] = (epoch, sequence)
    return found


def stored_ends(client: Any, bucket: str, keys: list[str], wanted: Sequences) -> dict[str, int]:
    """For each wanted producer with a batch among ``keys`` (ascending): the
    sequence after its newest one, 0 when that batch is of an older epoch.

    Reads batch headers newest first and stops once every producer is placed."""
    ends: dict[str, int] = {}
    newest_first = keys[::-1]
    with ThreadPoolExecutor(_READERS) as pool:
        for start in range(0, len(newest_first), _READERS * 4):
            chunk = newest_first[start:start + _READERS * 4]
            for producer, epoch, base_sequence, last_offset_delta in pool.map(
                    lambda key: _header(client, bucket, key), chunk):
                if producer in wanted and producer not in ends and base_sequence >= 0:
                    same_epoch = epoch == int(wanted[producer][0])
                    ends[producer] = base_sequence + last_offset_delta + 1 if same_epoch else 0
            if ends.keys() >= wanted.keys():
                break
    return ends


def _end_of(prior: tuple[str, int] | None, epoch: str) -> int:
    return prior[1] if prior is not None and prior[0] == epoch else 0


def _still_valid(known: dict, current: dict[Partition, Sequences], ids: dict[str, str]) -> bool:
    """False when some sequence went back since the snapshot: it is not of this bucket's history."""
    for (topic, partition), producers in current.items():
        was = known.get(f"{ids.get(topic, '')}/{topic}/{partition}", {}).get("sequences", {})
        for producer, (epoch, sequence) in producers.items():
            if producer in was and (int(epoch), sequence) < (int(was[producer][0]), was[producer][1]):
                return False
    return True


def _clusters(client: Any, bucket: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="clusters/", Delimiter="/")
    return [p["Prefix"].split("/")[1] for page in pages for p in page.get("CommonPrefixes", [])]


def _keys(client: Any, bucket: str, prefix: str, after: str | None) -> Iterator[str]:
    """Batch keys under ``prefix`` past ``after``, ascending (zero-padded offsets sort as numbers)."""
    listing = {"Bucket": bucket, "Prefix": prefix, **({"StartAfter": after} if after else {})}
    for page in client.get_paginator("list_objects_v2").paginate(**listing):
        for item in page.get("Contents", []):
            if item["Key"].endswith(".batch"):
                yield item["Key"]


def _header(client: Any, bucket: str, key: str) -> tuple[str, int, int, int]:
    """(producer id, producer epoch, base sequence, last offset delta) of one stored batch."""
    data = client.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{_HEADER.size - 1}")["Body"].read()
    return parse_header(data, f"{bucket}/{key}")


def parse_header(data: bytes, where: str) -> tuple[str, int, int, int]:
    if len(data) < _HEADER.size:
        raise ValueError(f"{where} is {len(data)} bytes, too short for a Kafka record batch")
    fields = _HEADER.unpack(data[:_HEADER.size])
    if fields[3] != 2:
        raise ValueError(f"{where} is not a Kafka record batch v2 (magic {fields[3]})")
    return str(fields[9]), fields[10], fields[11], fields[6]


def _load(snapshot: Path) -> dict:
    try:
        return json.loads(snapshot.read_text())
    except (OSError, ValueError):
        return {}  # none yet, or unreadable: the next pass reads back through every partition


def _save(snapshot: Path, clusters: dict) -> None:
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    tmp = snapshot.with_name(snapshot.name + ".tmp")
    tmp.write_text(json.dumps(clusters))
    os.replace(tmp, snapshot)
