"""A prepared test split becomes model inputs, labels and slice columns."""

import numpy as np
import pyarrow as pa
import pytest

from services.validator.testsplit import labels_for, split_from_table

pytestmark = pytest.mark.unit


def table(**overrides) -> pa.Table:
    columns = {"id": [1, 2, 3], "amount": [0.5, None, -1.0], "hour": [1.0, 2.0, 3.0],
               "channel": pa.array([2, 0, None], type=pa.int64()), "label": [1, 0, 1]}
    columns.update(overrides)
    return pa.table(columns)


def test_inputs_follow_the_manifest_order_numeric_then_category_and_nulls_take_the_trainers_values(manifest_of):
    split = split_from_table(table(), manifest_of())
    assert split.transform.numeric == ("amount", "hour") and split.transform.categorical == ("channel",)
    np.testing.assert_array_equal(split.features.numeric, np.array([[0.5, 1], [0, 2], [-1, 3]], dtype=np.float32))
    np.testing.assert_array_equal(split.features.categorical, [[2], [0], [0]])
    assert split.features.numeric.dtype == np.float32 and split.features.categorical.dtype == np.int64
    np.testing.assert_array_equal(split.labels, [1, 0, 1])
    assert (split.dataset, split.version, len(split)) == ("tx", 3, 3)


def test_slices_name_each_rows_category_and_skip_features_that_are_not_categories(manifest_of):
    split = split_from_table(table(), manifest_of())
    slices = split.slices(["channel", "amount", "unknown"])
    assert list(slices) == ["channel"]
    assert slices["channel"].tolist() == ["pos", "(other)", "(other)"]


def test_a_split_without_its_columns_or_with_null_labels_is_refused_with_the_reason(manifest_of):
    with pytest.raises(ValueError, match=r"lacks columns \['hour'\]"):
        split_from_table(table().drop_columns(["hour"]), manifest_of())
    with pytest.raises(ValueError, match="label 'label' has 1 nulls"):
        split_from_table(table(label=[1, None, 0]), manifest_of())
    with pytest.raises(ValueError, match="has no label"):
        split_from_table(table(), manifest_of(label=None))


def test_labels_are_class_indices_in_the_cards_class_order_for_multiclass():
    card = {"task": "multiclass", "outputs": {"classes": ["low", "mid", "high"]}}
    np.testing.assert_array_equal(labels_for(card, np.array(["high", "low", "mid", "high"])), [2, 0, 1, 2])
    with pytest.raises(ValueError, match=r"\['huge'\] are not among the model's classes"):
        labels_for(card, np.array(["huge", "low"]))


def test_binary_and_regression_labels_are_floats_and_an_unknown_task_is_refused():
    assert labels_for({"task": "binary"}, np.array([True, False])).tolist() == [1.0, 0.0]
    assert labels_for({"task": "regression"}, np.array([3, 4])).dtype == np.float64
    with pytest.raises(ValueError, match="task 'ranking'"):
        labels_for({"task": "ranking"}, np.array([1]))
