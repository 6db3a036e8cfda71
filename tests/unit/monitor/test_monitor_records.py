"""Batch decoding of prediction and feedback events: fast path, slow path, and what is rejected."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from services.monitor.monitor import PredictionBatch
from services.monitor.records import FeatureLayout, decode_feedback, decode_predictions
from streamml.classes import value_text
from services.monitor.reference import MonitorReference, category_reference, numeric_reference
from services.monitor.synthetic import traffic
from streamml.events import FeedbackRecord, PredictionRecord, encode

pytestmark = pytest.mark.unit
T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture(scope="module")
def layout() -> FeatureLayout:
    rng = np.random.default_rng(1)
    data = traffic(rng, 5_000)
    features = {
        name: category_reference(values) if values.dtype.kind in "OU" else numeric_reference(values)
        for name, values in data.features.items()
    }
    return FeatureLayout.of(MonitorReference(model="fraud", dataset="tx", features=features))


def records(n: int, seed: int = 2, model: str = "fraud") -> list[PredictionRecord]:
    data = traffic(np.random.default_rng(seed), n)
    out = []
    for i in range(n):
        features = {name: values[i].item() for name, values in data.features.items()}
        features = {name: None if isinstance(v, float) and np.isnan(v) else v for name, v in features.items()}
        out.append(PredictionRecord(request_id=f"r{i}", model=model, model_version="v1", features=features,
                                    output=float(data.outputs[i]), time=T0 + timedelta(seconds=i)))
    return out


def body(event) -> bytes:
    return encode(event, "/test").value


def test_the_fast_path_gives_the_columns_of_the_records(layout):
    given = records(300)
    decoded = decode_predictions([body(r) for r in given], layout, "fraud")
    expected = PredictionBatch.from_records(given)
    assert decoded.rejected == {}
    assert decoded.request_ids.to_pylist() == expected.request_ids.to_pylist()
    np.testing.assert_allclose(decoded.times, expected.times, rtol=0, atol=1e-6)
    np.testing.assert_allclose(decoded.outputs, expected.outputs)
    for name in layout.numeric:
        np.testing.assert_array_equal(decoded.features[name].to_numpy(zero_copy_only=False),
                                      np.asarray(expected.features[name].to_pylist(), dtype=float))
    for name in layout.category:
        assert decoded.features[name].to_pylist() == expected.features[name].to_pylist()
    assert set(decoded.versions.to_pylist()) == {"v1"}


def test_one_odd_record_sends_the_batch_one_by_one_with_the_same_columns_and_only_the_bad_rejected(layout):
    given = records(50)
    fast = decode_predictions([body(r) for r in given], layout, "fraud")
    as_number = given[0].model_copy(update={"request_id": "n", "features": {**given[0].features, "country": 7}})
    values = [body(r) for r in given] + [
        body(as_number),  # valid event: a category logged as a number
        b"{not json",
        body(given[1].model_copy(update={"features": {**given[1].features, "amount": "lots"}})),
        body(given[2].model_copy(update={"model": "churn"})),
        body(given[3].model_copy(update={"output": [0.2, 0.8]})),
    ]
    slow = decode_predictions(values, layout, "fraud")
    assert sorted(slow.rejected) == [51, 52, 53, 54]
    assert "JSON" in slow.rejected[51]
    assert "'amount'" in slow.rejected[52] and "not a number" in slow.rejected[52]
    assert "'churn'" in slow.rejected[53]
    assert "one number" in slow.rejected[54]
    assert slow.features["country"].to_pylist() == [*fast.features["country"].to_pylist(), "7"]
    for name in layout.numeric:
        assert slow.features[name].to_pylist()[:50] == fast.features[name].to_pylist()
    np.testing.assert_array_equal(slow.times[:50], fast.times)
    np.testing.assert_array_equal(slow.outputs[:50], fast.outputs)


def test_categories_logged_as_numbers_are_read_as_their_text_just_as_one_by_one(layout):
    given = [r.model_copy(update={"features": {**r.features, "channel": i % 3, "country": 2.5}})
             for i, r in enumerate(records(20))]
    given[5] = given[5].model_copy(update={"features": {k: v for k, v in given[5].features.items() if k != "channel"}})
    batch = [body(r) for r in given]
    fast = decode_predictions(batch, layout, "fraud")
    slow = decode_predictions([*batch, b"{not json"], layout, "fraud")
    assert fast.rejected == {} and list(slow.rejected) == [20]
    for name in (*layout.numeric, *layout.category):
        assert fast.features[name].to_pylist() == slow.features[name].to_pylist(), name
    assert fast.features["channel"].to_pylist()[:6] == ["0", "1", "2", "0", "1", None]
    assert set(fast.features["country"].to_pylist()) == {"2.5"}
    without = [r.model_copy(update={"features": {k: v for k, v in r.features.items() if k != "country"}})
               for r in given]
    assert decode_predictions([body(r) for r in without], layout, "fraud").features["country"].null_count == 20


def test_the_fast_path_rejects_missing_fields_and_other_models_by_row(layout):
    given = records(5)
    values = [body(r) for r in given]
    values[1] = values[1].replace(b'"time": ', b'"when": ')
    values[3] = body(given[3].model_copy(update={"model": "churn"}))
    decoded = decode_predictions(values, layout, "fraud")
    assert decoded.rejected == {1: "field 'time' is missing or null",
                                3: "record names model 'churn'; this topic carries 'fraud'"}
    assert decoded.request_ids.to_pylist() == ["r0", "r2", "r4"]


def test_a_feature_the_records_lack_is_all_missing(layout):
    given = [r.model_copy(update={"features": {k: v for k, v in r.features.items() if k != "age"}})
             for r in records(4)]
    decoded = decode_predictions([body(r) for r in given], layout, "fraud")
    assert decoded.rejected == {} and decoded.features["age"].null_count == 4


def test_multiclass_outputs_become_a_matrix_and_a_wrong_width_is_rejected():
    reference = MonitorReference(model="m", dataset="d", classes=["a", "b", "c"],
                                 features={"x": numeric_reference(np.arange(100.0))})
    layout = FeatureLayout.of(reference)
    make = lambda i, output: body(PredictionRecord(  # noqa: E731
        request_id=str(i), model="m", model_version="1", features={"x": i}, output=output, time=T0))
    decoded = decode_predictions([make(0, [0.1, 0.2, 0.7]), make(1, [0.5, 0.5]), make(2, [1, 0, 0])], layout, "m")
    assert decoded.rejected == {1: "output has 2 class probabilities; the model has 3 classes"}
    np.testing.assert_array_equal(decoded.outputs, [[0.1, 0.2, 0.7], [1, 0, 0]])


def feedback(i: int, label, model: str = "fraud") -> bytes:
    return body(FeedbackRecord(request_id=f"r{i}", model=model, label=label, time=T0 + timedelta(seconds=i)))


def test_feedback_labels_are_read_for_the_task_and_unreadable_ones_rejected():
    fast = decode_feedback([feedback(0, 1), feedback(1, 0.0)], "fraud", "binary")
    assert fast.rejected == {} and list(fast.labels) == [1.0, 0.0]
    mixed = decode_feedback([feedback(0, 1), feedback(1, "true"), feedback(2, "maybe"), feedback(3, 0, "churn")],
                            "fraud", "binary")
    assert sorted(mixed.rejected) == [2, 3] and "'maybe'" in mixed.rejected[2]
    assert mixed.request_ids.to_pylist() == ["r0", "r1"]
    labels = [feedback(0, "cat", "m"), feedback(1, "dog", "m"), feedback(2, "emu", "m")]
    classes = decode_feedback(labels, "m", "multiclass", ["cat", "dog"])
    assert list(classes.rejected) == [2] and classes.request_ids.to_pylist() == ["r0", "r1"]


def test_integer_and_boolean_class_labels_are_read_in_one_pass():
    numbers = decode_feedback([feedback(0, 2, "m"), feedback(1, 0, "m"), feedback(2, 7, "m")], "m", "multiclass",
                              ["0", "1", "2"])
    assert numbers.rejected == {2: "label 7 cannot be read for a multiclass model: labels ['7'] are not among "
                                   "the model's classes ['0', '1', '2']"}
    assert numbers.labels.to_pylist() == [2, 0]  # typed by the JSON reader, not decoded record by record
    as_boolean = lambda i, label: feedback(i, int(label), "m").replace(  # noqa: E731 - JSON true, as other clients send it
        b'"label": %d' % int(label), b'"label": ' + (b"true" if label else b"false"))
    booleans = decode_feedback([as_boolean(0, True), as_boolean(1, False)], "m", "multiclass", ["false", "true"])
    assert booleans.rejected == {} and booleans.labels.to_pylist() == [True, False]


def test_value_text_matches_arrows_cast():
    assert [value_text(v) for v in (None, "x", True, 7, 1.0, 2.5)] == [None, "x", "true", "7", "1", "2.5"]


def test_flagged_inputs_are_counted_by_feature_and_rule_on_both_paths(layout):
    given = [r.model_copy(update={"flags": ["amount:max"] * (i % 4 == 0) + ["country:categories"] * (i % 10 == 0)})
             for i, r in enumerate(records(40))]
    fast = decode_predictions([body(r) for r in given], layout, "fraud")
    assert fast.flagged == {"amount:max": 10, "country:categories": 4}
    # a record the fast path cannot read sends the batch one by one; the rejected one is not counted
    slow = decode_predictions([body(r) for r in given] + [b"not json"], layout, "fraud")
    assert slow.rejected == {40: slow.rejected[40]} and slow.flagged == fast.flagged
    assert decode_predictions([body(r) for r in records(5)], layout, "fraud").flagged == {}
