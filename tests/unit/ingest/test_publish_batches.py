"""`streamml publish` reads its file a batch at a time, the same rows whatever the format."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from services.ingest.publish import PublishError, read_batches
from streamml.datagen import to_json_records, transactions
from streamml.specs import load_dataset_spec

pytestmark = pytest.mark.unit
SPEC = load_dataset_spec(Path(__file__).resolve().parents[3] / "examples" / "datasets" / "transactions.yaml")


def files(folder: Path, rows: int) -> dict[str, Path]:
    records = to_json_records(transactions(rows, seed=8))
    table = pa.Table.from_pylist([json.loads(record) for record in records])
    paths = {"jsonl": folder / "rows.jsonl", "csv": folder / "rows.csv", "parquet": folder / "rows.parquet"}
    # A blank line and surrounding spaces are not records.
    paths["jsonl"].write_bytes(b"\n".join(records[:3]) + b"\n\n  " + b"\n".join(records[3:]) + b"\n")
    pcsv.write_csv(table, paths["csv"])
    pq.write_table(table, paths["parquet"], row_group_size=7)
    return paths


@pytest.mark.parametrize("kind", ["jsonl", "csv", "parquet"])
def test_a_file_is_read_in_batches_of_at_most_the_given_rows(tmp_path, kind):
    path = files(tmp_path, 23)[kind]
    batches = list(read_batches(path, SPEC, rows=5))
    assert max(map(len, batches)) <= 5 and sum(map(len, batches)) == 23
    rows = [json.loads(record) for batch in batches for record in batch]
    expected = [json.loads(record) for record in to_json_records(transactions(23, seed=8))]
    assert [row["tx_id"] for row in rows] == [row["tx_id"] for row in expected]
    assert [(row["amount"], row["hour"], row["channel"]) for row in rows] == [
        (row["amount"], row["hour"], row["channel"]) for row in expected]


def test_csv_columns_take_the_spec_types_not_the_ones_their_first_rows_suggest(tmp_path):
    path = tmp_path / "rows.csv"
    # country looks like a number in every row; amount has no fraction in the first ones.
    path.write_text("tx_id,ts,amount,hour,country\n"
                    "a,2026-01-01T00:00:00Z,12,3,44\nb,2026-01-01T00:00:01Z,12.5,4,49\n")
    rows = [json.loads(record) for batch in read_batches(path, SPEC, rows=1) for record in batch]
    assert rows[0] == {"tx_id": "a", "ts": "2026-01-01T00:00:00+00:00", "amount": 12.0, "hour": 3, "country": "44"}


def test_a_csv_value_that_cannot_have_its_field_type_is_named(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("tx_id,hour\na,3\nb,late\n")
    with pytest.raises(PublishError, match=r"rows.csv: .*'late'.*fit the field's type"):
        list(read_batches(path, SPEC))


def test_an_unknown_format_is_refused_before_anything_is_read(tmp_path):
    with pytest.raises(PublishError, match=r"unknown format '.txt'; use .csv, .jsonl or .parquet"):
        read_batches(tmp_path / "rows.txt", SPEC)
