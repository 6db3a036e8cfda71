"""The dataset spec's rules on records: one implementation for ingest and the SDK."""

import json
from pathlib import Path

import numpy as np
import pytest

from services.ingest.records import decode_batch
from streamml.checks import Violation, check_records
from streamml.datagen import to_json_records, transactions
from streamml.sdk.input_checks import InputRules, flag_names, rejection
from streamml.specs import load_dataset_spec

pytestmark = pytest.mark.unit
SPEC = load_dataset_spec(Path(__file__).resolve().parents[3] / "examples" / "datasets" / "transactions.yaml")
FEATURES = SPEC.features  # amount, hour, distance_km, merchant_age_days, channel, country, (is_fraud is the label)
GOOD = {"amount": 14.85, "hour": 3, "distance_km": 26.0, "merchant_age_days": 681.2, "channel": "web", "country": "GB"}


@pytest.mark.parametrize(
    "change, field, rule, text",
    [
        ({"amount": None}, "amount", "required", "amount: required value missing or null"),
        ({"amount": float("nan")}, "amount", "required", "amount: required value missing or null"),
        ({"amount": "12"}, "amount", "type", 'amount: expected double, got "12"'),
        ({"hour": True}, "hour", "type", "hour: expected int64, got true"),
        ({"hour": 3.5}, "hour", "type", "hour: expected int64, got 3.5"),
        ({"hour": 2**70}, "hour", "type", "hour: expected int64, got 1180591620717411303424 (out of range)"),
        ({"channel": 1}, "channel", "type", "channel: expected string, got 1"),
        ({"amount": -5.0}, "amount", "min", "amount: below the minimum 0 (got -5.0)"),
        ({"hour": 30}, "hour", "max", "hour: above the maximum 23 (got 30)"),
        ({"channel": "fax"}, "channel", "category", "channel: not one of ['web', 'pos', 'atm', 'phone'] (got 'fax')"),
    ],
)
def test_each_rule_names_the_field_the_rule_and_the_value(change, field, rule, text):
    found = check_records([GOOD, {**GOOD, **change}, GOOD], FEATURES)
    assert found == {1: [Violation(field, rule, text)]}


def test_a_missing_key_counts_as_a_missing_value_and_a_nullable_field_may_be_missing():
    record = {name: value for name, value in GOOD.items() if name not in ("merchant_age_days", "distance_km")}
    assert check_records([record], FEATURES) == {
        0: [Violation("merchant_age_days", "required", "merchant_age_days: required value missing or null")]}


def test_values_as_applications_have_them_pass():
    """numpy scalars, a whole float for an int (an FP64 tensor), and keys the spec has no rule for."""
    record = {**GOOD, "amount": np.float32(2.5), "hour": np.float64(7.0), "tx_id": "t-1", "extra": [1]}
    assert check_records([record, GOOD], FEATURES) == {}


def test_every_broken_rule_of_a_record_is_listed_once():
    found = check_records([{**GOOD, "hour": "x", "amount": -1.0, "channel": "fax"}], FEATURES)
    assert [(v.field, v.rule) for v in found[0]] == [("hour", "type"), ("amount", "min"), ("channel", "category")]
    assert flag_names(found[0]) == ["hour:type", "amount:min", "channel:category"]


@pytest.mark.parametrize(
    "change",
    [{"amount": None}, {"amount": "12"}, {"hour": True}, {"hour": 3.5}, {"channel": 1}, {"amount": -5.0},
     {"hour": 30}, {"channel": "fax"}, {"merchant_age_days": -0.5}],
)
def test_ingest_and_the_sdk_give_the_same_reason_for_the_same_record(change):
    record = json.loads(to_json_records(transactions(1, seed=5))[0])
    bad = {**record, **change}
    ingest = decode_batch([json.dumps(record).encode(), json.dumps(bad).encode()], SPEC, 1 << 20)
    sdk = check_records([record, bad], FEATURES)
    assert list(ingest.rejected) == list(sdk) == [1]
    assert ingest.rejected[1] == sdk[1][0].reason


def test_a_rejection_names_the_record_the_dataset_and_every_broken_rule():
    rules = InputRules("transactions", tuple(FEATURES))
    found = rules.check([GOOD, {**GOOD, "hour": 30, "channel": "fax"}, {**GOOD, "amount": -1.0}])
    message = str(rejection(found, rules.dataset))
    assert message == ("record 1 breaks the rules of dataset 'transactions': hour: above the maximum 23 (got 30); "
                       "channel: not one of ['web', 'pos', 'atm', 'phone'] (got 'fax'); "
                       "1 more records break them too")
    assert InputRules("transactions", ()).check([{"anything": 1}]) == {}


def test_a_record_that_is_no_mapping_is_left_to_the_transform_to_name():
    assert InputRules("transactions", tuple(FEATURES)).check([GOOD, ["not", "a", "record"]]) == {}
