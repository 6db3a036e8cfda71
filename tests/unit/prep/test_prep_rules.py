import hashlib
from pathlib import Path

import pyarrow as pa
import pytest

from services.prep import rules
from streamml.specs import load_dataset_spec, parse_dataset_spec

pytestmark = pytest.mark.unit
EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "datasets" / "transactions.yaml"


def spec_with(fields: list[dict], **prep: object):
    return parse_dataset_spec(
        {
            "name": "tx",
            "key": "id",
            "event_time": "ts",
            "label": "y",
            "fields": [{"name": "id", "type": "string"}, {"name": "ts", "type": "timestamp"}, *fields],
            "prep": prep,
        }
    )


def test_key_hash_is_the_first_60_bits_of_the_sha256_of_the_key_text():
    digest = hashlib.sha256(b"tx-42").digest()
    assert rules.key_hash("tx-42") == int.from_bytes(digest[:8], "big") >> 4
    assert rules.key_hash(42) == rules.key_hash("42")


def test_split_of_follows_the_bucket_thresholds():
    ratios = {"train": 0.8, "validation": 0.1, "test": 0.1}
    assert rules.split_bounds(ratios) == (8000, 9000)
    for key in (f"k{i}" for i in range(500)):
        bucket = rules.key_hash(key) % rules.SPLIT_BUCKETS
        expected = "train" if bucket < 8000 else "validation" if bucket < 9000 else "test"
        assert rules.split_of(key, ratios) == expected


def test_split_shares_match_the_ratios():
    ratios = {"train": 0.7, "validation": 0.2, "test": 0.1}
    keys = [f"tx-{i:09d}" for i in range(50_000)]
    counts = {"train": 0, "validation": 0, "test": 0}
    for key in keys:
        counts[rules.split_of(key, ratios)] += 1
    for split, ratio in ratios.items():
        # 5 binomial standard deviations: fails only if the hash is biased.
        assert abs(counts[split] / len(keys) - ratio) < 5 * (ratio * (1 - ratio) / len(keys)) ** 0.5


def test_a_key_keeps_its_split_when_other_keys_arrive():
    ratios = {"train": 0.8, "validation": 0.1, "test": 0.1}
    before = {key: rules.split_of(key, ratios) for key in (f"a{i}" for i in range(1000))}
    after = {key: rules.split_of(key, ratios) for key in [*before, *(f"b{i}" for i in range(1000))]}
    assert all(after[key] == split for key, split in before.items())


def test_zero_ratio_split_gets_no_keys():
    ratios = {"train": 0.9, "validation": 0.0, "test": 0.1}
    assert rules.split_bounds(ratios) == (9000, 9000)
    assert "validation" not in {rules.split_of(f"k{i}", ratios) for i in range(2000)}


def test_rules_of_a_field_follow_its_constraints():
    spec = load_dataset_spec(EXAMPLE)
    assert rules.rules_of(spec.field("amount")) == ["type", "null", "min", "max"]
    assert rules.rules_of(spec.field("distance_km")) == ["type", "min"]  # nullable: nulls are allowed
    assert rules.rules_of(spec.field("channel")) == ["type", "null", "category"]
    assert rules.rules_of(spec.field("country")) == ["type", "null"]


def test_a_field_that_is_not_required_admits_null():
    spec = spec_with([{"name": "x", "type": "float", "required": False}, {"name": "y", "type": "int"}])
    assert spec.field("x").null_allowed
    assert not spec.field("y").null_allowed


def test_dedupe_order_starts_with_event_time_and_skips_the_key():
    spec = load_dataset_spec(EXAMPLE)
    order = rules.dedupe_order(spec)
    assert order[0] == "ts" and "tx_id" not in order
    assert sorted(order) == sorted(field.name for field in spec.fields if field.name != "tx_id")


def test_prepared_schema_has_key_time_transformed_features_and_label():
    schema = rules.prepared_schema(load_dataset_spec(EXAMPLE))
    assert schema.names == [
        "tx_id", "ts", "amount", "hour", "distance_km", "merchant_age_days", "channel", "country", "is_fraud"
    ]
    assert schema.field("hour").type == pa.float64()
    assert schema.field("channel").type == pa.int64()
    assert schema.field("is_fraud").type == pa.int64()
    assert schema.field("ts").type == pa.timestamp("us", tz="UTC")


def test_unpreparable_specs_are_rejected_naming_each_problem():
    spec = parse_dataset_spec(
        {
            "name": "tx",
            "key": "id",
            "event_time": "ts",
            "label": "y",
            "fields": [
                {"name": "id", "type": "float"},
                {"name": "ts", "type": "timestamp"},
                {"name": "opened", "type": "timestamp"},
                {"name": "y", "type": "int", "nullable": True, "nulls": "impute"},
            ],
        }
    )
    with pytest.raises(rules.PrepError) as caught:
        rules.check_spec(spec)
    message = str(caught.value)
    assert "key 'id' has type float" in message
    assert "feature 'opened' is a timestamp" in message
    assert "field 'y' has nulls: impute" in message


def test_the_example_spec_is_preparable():
    rules.check_spec(load_dataset_spec(EXAMPLE))


def test_bool_and_int_features_are_numeric_and_a_float_label_gets_a_numeric_reference():
    spec = spec_with(
        [
            {"name": "flag", "type": "bool"},
            {"name": "n", "type": "int"},
            {"name": "c", "type": "category"},
            {"name": "note", "type": "string"},
            {"name": "y", "type": "float"},
        ]
    )
    assert [field.name for field in rules.numeric_features(spec)] == ["flag", "n"]
    assert [field.name for field in rules.category_features(spec)] == ["c"]
    assert [field.name for field in rules.numeric_references(spec)] == ["flag", "n", "y"]
    assert "note" not in rules.prepared_schema(spec).names
