import json
import re
from pathlib import Path

import pyarrow as pa
import pytest
from confluent_kafka import Message

from services.ingest.landing import FlushLimits, PartitionBuffer
from services.ingest.member import by_partition, records_to_take
from services.ingest.records import _read, decode_batch, decode_messages, read_clean
from streamml.datagen import to_json_records, transactions
from streamml.specs import load_dataset_spec

pytestmark = pytest.mark.unit
SPEC = load_dataset_spec(Path(__file__).resolve().parents[3] / "examples" / "datasets" / "transactions.yaml")


def test_clean_batch_takes_the_fast_path_and_keeps_order():
    records = to_json_records(transactions(500, seed=3))
    decoded = decode_batch(records, SPEC, 1 << 20)
    assert decoded.rejected == {}
    assert list(decoded.valid) == list(range(500))
    assert decoded.table.column("tx_id").to_pylist() == transactions(500, seed=3)["tx_id"].tolist()


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda r: b"{not json", "malformed JSON"),
        (lambda r: b"[1, 2]", "expected a JSON object"),
        (lambda r: r + r, "malformed JSON: Extra data"),
        (lambda r: b"", "empty record"),
        (lambda r: r.replace(b'"hour":', b'"hour":"x","hourz":'), "not declared in the dataset spec"),
        (lambda r: r.replace(b'"amount":', b'"amount":-5,"zz":'), "not declared"),
        (lambda r: r.replace(b'"is_fraud":0', b'"is_fraud":7').replace(b'"is_fraud":1', b'"is_fraud":7'), "is_fraud: above the maximum 1"),
        (lambda r: r.replace(b'"tx_id":', b'"tx_idx":'), "not declared"),
        (lambda r: r.replace(b'"channel":"', b'"channel":"x'), "channel: not one of"),
        (lambda r: r + b" " * 400, "exceeds the 400-byte limit"),
    ],
)
def test_each_bad_record_is_isolated_with_its_reason(mutate, reason):
    records = to_json_records(transactions(9, seed=4))
    records[4] = mutate(records[4])
    decoded = decode_batch(records, SPEC, 400)
    assert list(decoded.rejected) == [4]
    assert reason in decoded.rejected[4]
    assert list(decoded.valid) == [0, 1, 2, 3, 5, 6, 7, 8]
    assert decoded.table.num_rows == 8


def test_missing_required_field_is_named():
    record = to_json_records(transactions(1, seed=5))[0].replace(b'"merchant_age_days":', b'"_":').replace(b',"_":', b',"country2":')
    decoded = decode_batch([record], SPEC, 1 << 20)
    assert "not declared" in decoded.rejected[0]
    record = b'{"tx_id":"a","ts":"2026-01-01T00:00:00Z","amount":1,"hour":1,"merchant_age_days":1,"channel":"web","country":"DE"}'
    assert decode_batch([record], SPEC, 1 << 20).rejected[0] == "is_fraud: required value missing or null"


def test_structured_cloudevent_and_pretty_printed_records_are_accepted():
    record = to_json_records(transactions(1, seed=6))[0]
    wrapped = b'{"specversion":"1.0","id":"1","source":"/app","type":"tx","data":' + record + b"}"
    pretty = record.replace(b",", b",\n  ")
    decoded = decode_batch([wrapped, pretty, record], SPEC, 1 << 20)
    assert decoded.rejected == {}
    assert decoded.table.num_rows == 3


def test_nullable_field_accepts_null_and_absence():
    record = to_json_records(transactions(1, seed=7))[0]
    import json
    document = json.loads(record)
    document["distance_km"] = None
    absent = {k: v for k, v in document.items() if k != "distance_km"}
    decoded = decode_batch([json.dumps(document).encode(), json.dumps(absent).encode()], SPEC, 1 << 20)
    assert decoded.rejected == {} and decoded.table.column("distance_km").null_count == 2


def _varied_records(count):
    """Benchmark-like records plus what real producers send: zones, fractions, long numbers, Unicode, nulls."""
    records = []
    for i, record in enumerate(to_json_records(transactions(count, seed=8))):
        document = json.loads(record)
        if i % 5 == 1:
            document["ts"] = document["ts"].replace("Z", ".123456+02:00")
        if i % 5 == 2:
            document["amount"] = 123456789012345678901234567890 if i % 2 else 0.1 + 0.2
        if i % 5 == 3:
            document["tx_id"] = f"tx-é-\u2603-{i}"
            document["country"] = "Ünîcode"
        if i % 5 == 4 and i % 2:
            document["distance_km"] = None
        elif i % 5 == 4:
            del document["distance_km"]  # nullable: absent reads as null
        records.append(json.dumps(document, ensure_ascii=i % 2 == 0).encode())
    return records


def test_the_fast_path_reads_records_exactly_as_the_reference_reader_does():
    # A replayed range can take the other path (its chunks hold other neighbours):
    # both must give the same values, hence the same Parquet bytes.
    records = _varied_records(2_000)
    fast = read_clean(records, SPEC)
    assert fast is not None
    assert fast.equals(_read(b"\n".join(records), SPEC.arrow_schema()))


def test_times_without_a_zone_take_the_fast_path_and_read_as_utc_as_the_reference_reader_reads_them():
    records = to_json_records(transactions(500, seed=9))
    written = [
        re.sub(rb'"ts":"([^"]*)Z"', rb'"ts":"\1"', record) if i % 3 else
        re.sub(rb'"ts":"([^"T]*)T([^"]*)Z"', rb'"ts":"\1 \2.25"', record)  # isoformat(" ") of a naive time
        for i, record in enumerate(records)
    ]
    fast = read_clean(written, SPEC)
    assert fast is not None
    assert fast.equals(_read(b"\n".join(written), SPEC.arrow_schema()))
    zoned = read_clean(records, SPEC).column("ts").cast(pa.int64()).to_pylist()
    shift = [0 if i % 3 else 250_000 for i in range(500)]  # microseconds
    assert fast.column("ts").cast(pa.int64()).to_pylist() == [t + d for t, d in zip(zoned, shift)]


def test_records_the_fast_path_leaves_are_read_by_the_reference_path():
    record = to_json_records(transactions(1, seed=9))[0]
    zoneless = record.replace(b"T", b" ", 1).replace(b'Z"', b'"', 1)  # read as UTC
    nan = json.dumps({**json.loads(record), "distance_km": float("nan")}).encode()
    # (record as sent, what pyarrow's reader reads the same from); a chunk mixing times
    # with and without a zone is read by the reference reader
    for other, reference in [(zoneless, zoneless), (nan, nan), (b"\xef\xbb\xbf" + record, record)]:
        assert read_clean([record, other], SPEC) is None
        decoded = decode_batch([record, other], SPEC, 1 << 20)
        assert decoded.rejected == {}, other
        expected = _read(record + b"\n" + reference, SPEC.arrow_schema())
        assert decoded.table.schema == expected.schema
        assert repr(decoded.table.to_pylist()) == repr(expected.to_pylist())  # NaN is not equal to itself


def test_a_repeated_key_counts_its_last_value_whatever_the_neighbours():
    good = to_json_records(transactions(2, seed=10))
    repeated = good[1].replace(b'"hour":', b'"hour":22,"hour":')
    expected = json.loads(good[1])["hour"]
    for batch in ([good[0], repeated], [good[0], repeated, b"{not json"]):
        decoded = decode_batch(batch, SPEC, 1 << 20)
        assert list(decoded.valid) == [0, 1]
        assert decoded.table.column("hour").to_pylist()[1] == expected


def test_a_number_too_large_for_a_double_is_rejected_whatever_the_neighbours():
    good = to_json_records(transactions(2, seed=11))
    huge = re.sub(rb'"merchant_age_days":[0-9.]+', b'"merchant_age_days":1e400', good[1])
    for batch in ([good[0], huge], [good[0], huge, b"{not json"]):
        decoded = decode_batch(batch, SPEC, 1 << 20)
        assert list(decoded.valid) == [0]
        assert "too large for a double" in decoded.rejected[1]


def test_buffer_flush_rules_and_fixed_boundary():
    limits = FlushLimits(records=10, bytes=1000, age_s=60)
    buffer = PartitionBuffer("tx", "ingest.tx", 0, 0, 0, started=0.0)
    buffer.add(["m0", "m1", "m2", "m3", "m4"], 4, 100)
    assert not buffer.should_flush(limits, now=1.0)
    assert buffer.should_flush(limits, now=61.0)
    assert buffer.take_pending() == ["m0", "m1", "m2", "m3", "m4"] and buffer.pending == []
    buffer.add(["m5", "m6", "m7", "m8", "m9"], 9, 100)
    assert buffer.should_flush(limits, now=1.0)  # records counted when taken, not when decoded
    assert buffer.records == 10 and buffer.key.endswith("-00000000000000000009.parquet")
    by_bytes = PartitionBuffer("tx", "ingest.tx", 0, 0, 0, started=0.0)
    by_bytes.add(["a", "b", "c"], 2, 1000)
    assert by_bytes.should_flush(limits, now=1.0)
    fixed = PartitionBuffer("tx", "ingest.tx", 0, 0, 0, must_end_at=20, started=0.0)
    fixed.add(list(range(10)), 9, 5000)
    assert not fixed.should_flush(limits, now=1000.0)  # limits do not apply: the end is known
    assert not fixed.should_flush(FlushLimits(10, 1000, 60, idle_s=0.25), now=1000.0, caught_up=True)


def test_a_batch_lands_when_its_partition_is_caught_up_and_idle():
    limits = FlushLimits(records=100, bytes=10_000, age_s=60, idle_s=0.25)
    buffer = PartitionBuffer("tx", "ingest.tx", 0, 0, 0, started=0.0)
    buffer.add(["m0", "m1"], 1, 20, now=1.0)
    assert not buffer.should_flush(limits, now=1.2, caught_up=True)  # records came 0.2 s ago
    assert buffer.should_flush(limits, now=1.25, caught_up=True)
    assert not buffer.should_flush(limits, now=30.0, caught_up=False)  # behind: more records are on their way
    buffer.add(["m2"], 2, 10, now=1.3)
    assert not buffer.should_flush(limits, now=1.5, caught_up=True)  # a new record restarts the idle time
    assert buffer.should_flush(limits, now=1.55, caught_up=True)


def _message(partition, offset, value, topic="ingest.transactions"):
    return Message(topic=topic, partition=partition, offset=offset, value=value, timestamp=(1, 1_700_000_000_000 + offset))


def test_decoded_messages_keep_kafka_coordinates_and_rejected_ones_keep_the_original_message():
    good = to_json_records(transactions(3, seed=4))
    messages = [_message(2, 10, good[0]), _message(2, 11, b"{not json"), _message(2, 13, good[1]),
                _message(2, 14, None), _message(2, 15, good[2])]
    chunk = decode_messages(messages, SPEC, max_bytes=1 << 20)
    assert chunk.table.column("_offset").to_pylist() == [10, 13, 15]  # offset 12 absent (compaction)
    assert chunk.table.column("_partition").to_pylist() == [2, 2, 2]
    assert chunk.table.column("tx_id").to_pylist() == [json.loads(v)["tx_id"] for v in good]
    times = chunk.table.column("_kafka_time").cast(pa.int64()).to_pylist()
    assert times == [1_700_000_000_010, 1_700_000_000_013, 1_700_000_000_015]
    assert [(m.offset(), m.value(), reason.split(":")[0]) for m, reason in chunk.rejected] == [
        (11, b"{not json", "malformed JSON"), (14, None, "empty record")]


def test_a_clean_chunk_keeps_every_record_in_offset_order():
    records = to_json_records(transactions(300, seed=5))
    chunk = decode_messages([_message(0, 100 + i, r) for i, r in enumerate(records)], SPEC, 1 << 20)
    assert chunk.rejected == []
    assert chunk.table.column("_offset").to_pylist() == list(range(100, 400))
    assert chunk.table.column("tx_id").to_pylist() == [json.loads(r)["tx_id"] for r in records]
    compacted = [*range(100, 250), *range(260, 410)]  # a gap, yet as many records
    chunk = decode_messages([_message(0, o, r) for o, r in zip(compacted, records)], SPEC, 1 << 20)
    assert chunk.table.column("_offset").to_pylist() == compacted


def test_a_batch_takes_records_up_to_the_row_limit_or_exactly_to_the_end_of_a_landed_range():
    batch = PartitionBuffer("tx", "ingest.tx", 0, 0, 0)
    batch.add([_message(0, i, b"") for i in range(3)], 2, 30)
    assert records_to_take(batch, [_message(0, i, b"") for i in range(3, 10)], max_records=5) == 2
    # A replay ends at the landed object's last offset, whatever the limits, and
    # finds it by offset: offsets 13 and 15 are missing (transaction markers).
    replay = PartitionBuffer("tx", "ingest.tx", 0, 10, 0, must_end_at=16)
    after_gaps = [_message(0, offset, b"") for offset in (10, 11, 12, 14, 16, 17, 18)]
    assert records_to_take(replay, after_gaps, max_records=2) == 5


def test_by_partition_groups_interleaved_runs_in_offset_order():
    messages = [_message(0, 0, b""), _message(0, 1, b""), _message(1, 0, b""), _message(0, 2, b""),
                _message(0, 0, b"", topic="ingest.other"), _message(1, 1, b"")]
    groups = by_partition(messages)
    assert {key: [m.offset() for m in run] for key, run in groups.items()} == {
        ("ingest.transactions", 0): [0, 1, 2],
        ("ingest.transactions", 1): [0, 1],
        ("ingest.other", 0): [0],
    }


def test_range_rules_accept_their_bounds_and_reject_just_beyond_them():
    base = json.loads(to_json_records(transactions(1, seed=12))[0])
    cases = [("hour", 0, None), ("hour", 23, None), ("hour", -1, "hour: below the minimum 0"),
             ("hour", 24, "hour: above the maximum 23"), ("amount", 100000.0, None),
             ("amount", 100000.001, "amount: above the maximum 100000"), ("amount", -0.0, None),
             ("distance_km", None, None), ("distance_km", -1e-9, "distance_km: below the minimum 0")]
    for name, value, reason in cases:
        # Alone, and among valid records: the rule's verdict must not depend on the neighbours.
        record = json.dumps({**base, name: value}).encode()
        for batch in ([record], [*to_json_records(transactions(3, seed=13)), record]):
            decoded = decode_batch(batch, SPEC, 1 << 20)
            found = decoded.rejected.get(len(batch) - 1)
            assert (found and found.split(" (got")[0]) == reason, (name, value, found)


def test_a_nan_within_a_bounded_field_is_kept_as_the_reference_reader_keeps_it():
    base = json.loads(to_json_records(transactions(1, seed=14))[0])
    nan = json.dumps({**base, "merchant_age_days": float("nan")}).encode()
    decoded = decode_batch([nan, nan], SPEC, 1 << 20)
    assert decoded.rejected == {} and decoded.table.num_rows == 2
