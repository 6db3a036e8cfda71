import pyarrow as pa
import pytest

from services.prep.content import arrow_filesystem, content_sha256, object_key
from streamml.settings import S3Settings

pytestmark = pytest.mark.unit
SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("x", pa.float64()),
        ("c", pa.int64()),
        ("flag", pa.bool_()),
    ]
)


def table(ids, xs, ts=None, cs=None, flags=None):
    n = len(ids)
    return pa.table(
        {
            "id": ids,
            "ts": pa.array(ts if ts is not None else list(range(n)), pa.timestamp("us", tz="UTC")),
            "x": pa.array(xs, pa.float64()),
            "c": cs if cs is not None else [1] * n,
            "flag": flags if flags is not None else [True] * n,
        },
        schema=SCHEMA,
    )


def digest(t: pa.Table) -> str:
    return content_sha256(t, SCHEMA, "id")


def test_hash_ignores_row_order_chunking_and_extra_columns():
    base = table(["a", "b", "c"], [1.0, 2.0, None])
    shuffled = base.take([2, 0, 1])
    chunked = pa.concat_tables([base.slice(0, 1), base.slice(1)])
    wider = base.append_column("extra", pa.array([9, 9, 9]))
    assert digest(base) == digest(shuffled) == digest(chunked) == digest(wider)


def test_hash_changes_with_any_value_null_or_type():
    base = digest(table(["a", "b"], [1.0, 2.0]))
    assert digest(table(["a", "b"], [1.0, 2.0000000001])) != base
    assert digest(table(["a", "b"], [1.0, None])) != digest(table(["a", "b"], [1.0, 0.0]))
    assert digest(table(["a", "b"], [1.0, 2.0], cs=[1, 2])) != base
    assert digest(table(["a", "b"], [1.0, 2.0], flags=[True, False])) != base
    assert digest(table(["a", "b"], [1.0, 2.0], ts=[0, 5])) != base
    other_schema = SCHEMA.set(3, pa.field("c", pa.float64()))
    assert content_sha256(table(["a", "b"], [1.0, 2.0]), other_schema, "id") != base


def test_text_boundaries_are_part_of_the_hash():
    first = table(["ab", "c"], [1.0, 1.0])
    second = table(["a", "bc"], [1.0, 1.0])
    assert digest(first) != digest(second)


def test_negative_zero_hashes_as_zero():
    assert digest(table(["a"], [-0.0])) == digest(table(["a"], [0.0]))


def test_empty_split_has_a_stable_hash():
    assert digest(SCHEMA.empty_table()) == digest(SCHEMA.empty_table())
    assert digest(SCHEMA.empty_table()) != digest(table(["a"], [0.0]))


def test_object_key_strips_the_bucket_of_s3_uris():
    uri = "s3a://streamml/datasets/tx/v3/train/part-0.parquet"
    assert object_key(uri) == "datasets/tx/v3/train/part-0.parquet"
    assert object_key("/tmp/out/train/part-0.parquet") == "/tmp/out/train/part-0.parquet"


def test_s3_locations_need_settings_and_unknown_schemes_are_refused():
    with pytest.raises(ValueError, match="no S3 settings"):
        arrow_filesystem("s3a://b/k", None)
    with pytest.raises(ValueError, match="unsupported location 'hdfs://nn/x'"):
        arrow_filesystem("hdfs://nn/x", S3Settings())
    fs, path = arrow_filesystem("s3a://bucket/datasets/x", S3Settings(endpoint="http://127.0.0.1:7480"))
    assert path == "bucket/datasets/x" and fs.type_name == "s3"
