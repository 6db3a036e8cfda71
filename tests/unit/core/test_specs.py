from pathlib import Path

import pytest

from streamml.specs import SpecError, load_dataset_spec, load_dataset_specs, parse_dataset_spec

pytestmark = pytest.mark.unit
EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "datasets" / "transactions.yaml"


def test_example_spec_is_valid_and_fingerprint_is_stable():
    spec = load_dataset_spec(EXAMPLE)
    assert spec.ingest_topic == "ingest.transactions"
    assert [f.name for f in spec.features] == ["amount", "hour", "distance_km", "merchant_age_days", "channel", "country"]
    assert spec.fingerprint() == load_dataset_spec(EXAMPLE).fingerprint()


def test_fingerprint_changes_with_the_record_shape_only():
    base = load_dataset_spec(EXAMPLE).model_dump()
    other = {**base, "prep": {**base["prep"], "min_new_rows": 1}}
    assert parse_dataset_spec(other).fingerprint() == parse_dataset_spec(base).fingerprint()
    base["fields"][2]["max"] = 5.0
    assert parse_dataset_spec(base).fingerprint() != load_dataset_spec(EXAMPLE).fingerprint()


def test_every_role_problem_is_reported_at_once():
    with pytest.raises(SpecError) as caught:
        parse_dataset_spec({"name": "tx", "key": "id", "event_time": "amount", "label": "y",
                            "fields": [{"name": "amount", "type": "float"}, {"name": "amount", "type": "int"}]})
    problems = "\n".join(caught.value.problems)
    assert "declared twice" in problems
    assert "key 'id' is not a declared field" in problems
    assert "label 'y' is not a declared field" in problems
    assert "event_time 'amount' must have type timestamp" in problems


def test_field_problems_name_the_field_index():
    with pytest.raises(SpecError) as caught:
        parse_dataset_spec({"name": "tx", "key": "k", "event_time": "t", "fields": [
            {"name": "k", "type": "string"}, {"name": "t", "type": "timestamp"},
            {"name": "c", "type": "float", "categories": ["a"]}, {"name": "n", "type": "int", "min": 5, "max": 1},
            {"name": "z", "type": "complex"}]})
    problems = caught.value.problems
    assert any(p.startswith("fields.2") and "categories apply" in p for p in problems)
    assert any(p.startswith("fields.3") and "min 5.0 is greater than max 1.0" in p for p in problems)
    assert any(p.startswith("fields.4.type") for p in problems)


def test_folder_reports_each_bad_file_and_duplicates(tmp_path):
    (tmp_path / "a.yaml").write_text(EXAMPLE.read_text())
    (tmp_path / "b.yaml").write_text(EXAMPLE.read_text())
    (tmp_path / "c.yaml").write_text("name: [")
    with pytest.raises(SpecError) as caught:
        load_dataset_specs(tmp_path)
    problems = caught.value.problems
    assert any(p.startswith("b.yaml") and "declared twice" in p for p in problems)
    assert any(p.startswith("c.yaml") and "not valid YAML" in p for p in problems)
