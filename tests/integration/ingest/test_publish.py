"""`streamml publish` streams a file to a real broker, and the ingest service lands what it sent and
stores the spec it checked it with, where the SDK finds it."""

import json
import time

import pytest

from ingest_checks import SPEC, consume_all, landed_rows
from services.ingest.publish import PublishSummary, publish, read_batches
from streamml.datagen import to_json_records, transactions
from streamml.registry.datasets import read_spec
from streamml.specs import load_dataset_spec

pytestmark = pytest.mark.integration


def test_a_file_is_published_batch_by_batch_less_the_rows_ingest_would_reject(world, services, store, bucket,
                                                                                 tmp_path):
    kafka, topics, env = world
    spec = load_dataset_spec(SPEC)
    records = to_json_records(transactions(23, seed=12))
    records[16] = json.dumps({**json.loads(to_json_records(transactions(23, seed=12))[16]), "hour": 30}).encode()
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b"\n".join(records) + b"\n")

    summary = PublishSummary()
    publish(read_batches(path, spec, rows=5), spec, kafka, 1 << 20, show_progress=False, summary=summary)
    assert (summary.records, summary.rejected) == (22, 1)
    assert summary.reasons == [(16, "hour: above the maximum 23 (got 30)")]
    sent = consume_all(kafka, topics["ingest"], f"check-{bucket}", 22, timeout=30)
    expected = {record for index, record in enumerate(records) if index != 16}
    assert {message.value() for message in sent} == expected
    assert all(message.key() == json.loads(message.value())["tx_id"].encode() for message in sent)

    ingest = services.start("ingest", bucket, **env)
    deadline = time.monotonic() + 60
    while len(landed_rows(store)) < 22:
        assert ingest.poll() is None, ingest.log_path.read_text()[-3000:]
        assert time.monotonic() < deadline, "the published rows did not land"
        time.sleep(0.5)
    assert read_spec(store, spec.name, spec.fingerprint()) == spec
