import numpy as np
import pyarrow as pa
import pytest

from services.monitor.labels import LabelJoin
from services.monitor.performance import PerformanceBaseline, encode_labels, prediction_errors, window_metric

pytestmark = pytest.mark.unit


def ids(*values: str) -> pa.Array:
    return pa.array(list(values), type=pa.string())


def test_feedback_joins_earlier_predictions_by_request_id_in_feedback_order():
    join = LabelJoin()
    assert join.add_predictions(ids("a", "b", "c"), np.array([0.1, 0.2, 0.3]), np.zeros(3)).count == 0
    matched = join.add_feedback(ids("c", "x", "a"), np.array([1.0, 0.0, 0.0]), np.array([5.0, 6.0, 7.0]))
    assert matched.outputs.tolist() == [0.3, 0.1]
    assert matched.labels.tolist() == [1.0, 0.0]
    assert matched.times.tolist() == [5.0, 7.0]
    assert (join.pending_predictions, join.pending_feedback) == (1, 1)  # b waits for a label, x for its prediction


def test_feedback_that_arrives_first_waits_for_its_prediction():
    join = LabelJoin()
    join.add_feedback(ids("r1", "r2"), np.array([1.0, 0.0]), np.array([3.0, 4.0]))
    matched = join.add_predictions(ids("r0", "r2", "r1"), np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]]), np.zeros(3))
    assert matched.outputs.tolist() == [[0.3, 0.7], [0.8, 0.2]]  # r1 then r2: the order feedback came in
    assert matched.labels.tolist() == [1.0, 0.0]
    assert (join.pending_predictions, join.pending_feedback) == (1, 0)


def test_a_redelivered_message_is_joined_once():
    join = LabelJoin()
    join.add_predictions(ids("a", "a", "b"), np.array([0.4, 0.4, 0.6]), np.zeros(3))
    first = join.add_feedback(ids("a", "a"), np.array([1.0, 1.0]), np.ones(2))
    again = join.add_feedback(ids("a"), np.array([1.0]), np.ones(1))
    assert first.count == 1 and again.count == 0
    assert join.pending_predictions == 1  # only b


def test_rows_older_than_the_ttl_or_over_the_cap_are_dropped():
    join = LabelJoin(ttl_s=100, max_rows=2)
    join.add_predictions(ids("old", "mid", "new1", "new2"), np.arange(4.0), np.array([0.0, 150, 190, 195]))
    assert join.expire(now=200.0) == (2, 0)  # "old" by age, "mid" by the cap of 2
    assert join.add_feedback(ids("mid", "new1"), np.array([1.0, 0.0]), np.full(2, 201.0)).outputs.tolist() == [2.0]


def test_labels_are_read_as_numbers_booleans_or_class_names():
    assert encode_labels("binary", ["true", "0", 1, "False"]).tolist() == [1.0, 0.0, 1.0, 0.0]
    assert encode_labels("multiclass", ["dog", "cat"], classes=["cat", "dog"]).tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match=r"labels \['cow'\] are not among the model's classes"):
        encode_labels("multiclass", ["cow"], classes=["cat", "dog"])
    with pytest.raises(ValueError, match="label 'maybe' is not a number nor true/false"):
        encode_labels("binary", ["maybe"])


def test_integer_and_boolean_classes_read_labels_of_their_type_whatever_json_made_of_them():
    assert encode_labels("multiclass", [2, 0, 1.0, "1"], classes=["0", "1", "2"]).tolist() == [2.0, 0.0, 1.0, 1.0]
    assert encode_labels("multiclass", pa.array([2, 0]), classes=["0", "1", "2"]).tolist() == [2.0, 0.0]
    # A label true logged through a client that types labels as numbers arrives as 1.0.
    assert encode_labels("multiclass", [True, 1.0, "false", 0], classes=["false", "true"]).tolist() == [
        1.0, 1.0, 0.0, 0.0]
    assert encode_labels("multiclass", pa.array([False, True]), classes=["false", "true"]).tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match=r"labels \['3', 'x'\] are not among the model's classes \['0', '1', '2'\]"):
        encode_labels("multiclass", [3, "x"], classes=["0", "1", "2"])


def test_errors_grow_when_predictions_get_worse():
    labels = np.array([1.0, 0.0])
    assert (
        prediction_errors("binary", np.array([0.9, 0.1]), labels).sum()
        < prediction_errors("binary", np.array([0.6, 0.4]), labels).sum()
    )
    assert prediction_errors("multiclass", np.array([[0.2, 0.8], [0.6, 0.4]]), labels).tolist() == pytest.approx(
        [0.2, 0.4]
    )
    assert prediction_errors("regression", np.array([3.0, -1.0]), labels).tolist() == [2.0, 1.0]


def test_window_auc_and_its_standard_error_shrink_with_more_labels():
    rng = np.random.default_rng(0)
    labels = (rng.random(40_000) < 0.3).astype(float)
    scores = rng.normal(labels, 1.0)
    small = window_metric("binary", "auc", scores[:1000], labels[:1000])
    large = window_metric("binary", "auc", scores, labels)
    # Two unit-variance normals one apart: AUC = Phi(1 / sqrt(2)) = 0.760.
    assert large[0] == pytest.approx(0.760, abs=0.01)
    assert large[1] < small[1] / 4
    assert window_metric("regression", "rmse", np.array([1.0, 3.0]), np.array([0.0, 0.0]))[0] == pytest.approx(
        np.sqrt(5)
    )


def test_baseline_metric_must_be_one_the_task_computes():
    with pytest.raises(ValueError, match="metric 'auc' is not computed for task regression"):
        PerformanceBaseline(task="regression", metric="auc", value=0.9)
