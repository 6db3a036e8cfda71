"""Which of Tansu's producer sequences the broker's start lowers, and how far
back it reads to decide (against a dict that answers as boto3's S3 client)."""

import io
import json
import struct

import pytest

from streamml.stack.tansu_sequences import parse_header, repair

pytestmark = pytest.mark.unit
BUCKET, CLUSTER, TOPIC = "tansu", "c1", "t"
META = f"clusters/{CLUSTER}/meta.json"
HEADER = struct.Struct(">qiibIhiqqqhii")


class NoSuchKey(Exception):
    pass


class S3:
    """The calls tansu_sequences makes, on a dict; counts the batch headers read."""

    exceptions = type("exceptions", (), {"NoSuchKey": NoSuchKey})

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.headers_read = 0

    def get_object(self, Bucket, Key, Range=None):
        if Key not in self.objects:
            raise NoSuchKey(Key)
        if Range:
            self.headers_read += 1
        return {"Body": io.BytesIO(self.objects[Key]), "ETag": f'"{hash(self.objects[Key])}"'}

    def put_object(self, Bucket, Key, Body, ContentType, IfMatch):
        assert IfMatch == f'"{hash(self.objects[Key])}"'
        self.objects[Key] = Body

    def get_paginator(self, name):
        assert name == "list_objects_v2"
        return self

    def paginate(self, Bucket, Prefix, Delimiter=None, StartAfter=""):
        keys = sorted(k for k in self.objects if k.startswith(Prefix) and k > StartAfter)
        if Delimiter:
            folders = sorted({Prefix + k[len(Prefix):].split(Delimiter)[0] + Delimiter for k in keys})
            return [{"CommonPrefixes": [{"Prefix": f} for f in folders]}]
        return [{"Contents": [{"Key": k} for k in keys[i:i + 2]]} for i in range(0, len(keys), 2)]

    # --- what Tansu would have written
    def meta(self, producers: dict[str, tuple[int, int]]) -> None:
        """producer id -> (epoch, next sequence) on partition 0 of TOPIC."""
        self.objects[META] = json.dumps({
            "producers": {pid: {"sequences": {str(epoch): {TOPIC: {"0": seq}}}}
                          for pid, (epoch, seq) in producers.items()},
            "topics": {TOPIC: {"id": "id-1", "topic": {"name": TOPIC}}}, "transactions": {},
        }).encode()

    def batch(self, offset: int, producer: int, epoch: int, base_sequence: int, records: int) -> None:
        header = HEADER.pack(offset, 49 + records, 0, 2, 0, 0, records - 1, 0, 0, producer, epoch,
                             base_sequence, records)
        key = f"clusters/{CLUSTER}/topics/{TOPIC}/partitions/0000000000/records/{offset:0>20}.batch"
        self.objects[key] = header + b"records"

    def sequence(self, producer: str) -> int:
        sequences = json.loads(self.objects[META])["producers"][producer]["sequences"]
        return sequences[max(sequences, key=int)][TOPIC]["0"]


def test_a_counted_batch_that_was_never_stored_is_uncounted(tmp_path):
    s3 = S3()
    s3.batch(0, producer=1, epoch=0, base_sequence=0, records=10)
    s3.batch(10, producer=2, epoch=0, base_sequence=0, records=5)
    s3.meta({"1": (0, 20), "2": (0, 5)})  # producer 1's second batch was counted, not stored
    assert repair(s3, BUCKET, tmp_path / "snap.json", log=lambda _: None) == 1
    assert (s3.sequence("1"), s3.sequence("2")) == (10, 5)


def test_a_producer_with_no_batch_in_its_epoch_goes_back_to_zero(tmp_path):
    s3 = S3()
    s3.batch(0, producer=1, epoch=0, base_sequence=0, records=10)
    s3.meta({"1": (1, 10), "3": (0, 4)})  # epoch 1's first batch and producer 3's only one were lost
    assert repair(s3, BUCKET, tmp_path / "snap.json", log=lambda _: None) == 2
    assert (s3.sequence("1"), s3.sequence("3")) == (0, 0)


def test_consistent_sequences_are_left_alone(tmp_path):
    s3 = S3()
    s3.batch(0, producer=1, epoch=0, base_sequence=0, records=10)
    s3.meta({"1": (0, 10)})
    before = s3.objects[META]
    assert repair(s3, BUCKET, tmp_path / "snap.json", log=lambda _: None) == 0
    assert s3.objects[META] == before


def test_the_next_start_reads_only_batches_stored_since(tmp_path):
    s3, snapshot = S3(), tmp_path / "snap.json"
    for offset in range(0, 1000, 10):
        s3.batch(offset, producer=1, epoch=0, base_sequence=offset, records=10)
    s3.meta({"1": (0, 1000), "2": (0, 0)})
    repair(s3, BUCKET, snapshot, log=lambda _: None)
    assert s3.headers_read < 100  # newest first: it stops once producer 1 is placed

    # Producer 2 (no batch yet) stores one and counts a second; producer 1 is idle.
    s3.batch(1000, producer=2, epoch=0, base_sequence=0, records=3)
    s3.meta({"1": (0, 1000), "2": (0, 6)})
    s3.headers_read = 0
    assert repair(s3, BUCKET, snapshot, log=lambda _: None) == 1
    assert (s3.sequence("1"), s3.sequence("2")) == (1000, 3)
    assert s3.headers_read == 1

    # Producer 1 counts a batch that is lost; none of its batches came since: it is
    # set back to where the last start left it, without reading old batches.
    s3.meta({"1": (0, 1010), "2": (0, 3)})
    s3.headers_read = 0
    assert repair(s3, BUCKET, snapshot, log=lambda _: None) == 1
    assert s3.sequence("1") == 1000
    assert s3.headers_read == 0


def test_a_snapshot_of_another_history_is_ignored(tmp_path):
    s3, snapshot = S3(), tmp_path / "snap.json"
    s3.batch(0, producer=1, epoch=0, base_sequence=0, records=50)
    s3.meta({"1": (0, 50)})
    repair(s3, BUCKET, snapshot, log=lambda _: None)
    # The bucket is replaced by an older copy: producer 1 is behind the snapshot.
    s3.objects.clear()
    s3.batch(0, producer=1, epoch=0, base_sequence=0, records=10)
    s3.meta({"1": (0, 20)})
    assert repair(s3, BUCKET, snapshot, log=lambda _: None) == 1
    assert s3.sequence("1") == 10


def test_a_batch_header_is_checked():
    assert parse_header(HEADER.pack(5, 70, 0, 2, 0, 0, 9, 0, 0, 7, 1, 30, 10), "k") == ("7", 1, 30, 9)
    with pytest.raises(ValueError, match="k is not a Kafka record batch v2 .magic 1"):
        parse_header(HEADER.pack(5, 70, 0, 1, 0, 0, 9, 0, 0, 7, 1, 30, 10), "k")
    with pytest.raises(ValueError, match="too short"):
        parse_header(b"\x00" * 10, "k")
