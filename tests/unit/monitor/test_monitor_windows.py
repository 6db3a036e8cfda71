import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError

from services.monitor.reference import category_reference, numeric_reference
from services.monitor.windows import (
    CategoryColumn,
    LabelWindowAccumulator,
    NumericColumn,
    WindowAccumulator,
    WindowSpec,
    column_for,
    reservoir_slots,
)

pytestmark = pytest.mark.unit


def accumulator(spec: WindowSpec, seed: int = 0) -> WindowAccumulator:
    return WindowAccumulator(
        {"x": NumericColumn(np.array([0.0, 10.0])), "c": CategoryColumn(["a", "b"])}, spec, seed=seed
    )


def batch(n: int, start: int = 0) -> dict:
    values = np.arange(start, start + n, dtype=np.float64)
    return {"x": values % 20 - 5, "c": np.array(["a", "b", "z", None], dtype=object)[np.arange(start, start + n) % 4]}


def test_count_windows_split_batches_exactly_and_count_every_row_once():
    windows = accumulator(WindowSpec(size=1000))
    closed = []
    start = 0
    for n in (300, 1500, 2700, 500):  # boundaries fall inside batches
        closed += windows.add(batch(n, start), np.arange(start, start + n, dtype=float))
        start += n
    assert [window.count for window in closed] == [1000] * 5
    assert [window.index for window in closed] == [0, 1, 2, 3, 4]
    assert windows.fill == pytest.approx(0.0)
    for number, window in enumerate(closed):
        expected = batch(1000, number * 1000)["x"]
        counts = np.bincount(np.searchsorted([0.0, 10.0], expected, side="right"), minlength=3)
        assert window.columns["x"].counts.tolist() == counts.tolist()
        assert (window.start, window.end) == (number * 1000, number * 1000 + 999)


def test_category_counts_put_unknown_values_in_the_last_bin_and_nulls_apart():
    windows = accumulator(WindowSpec(size=8))
    (window,) = windows.add(batch(8), np.arange(8.0))
    column = window.columns["c"]
    assert column.counts.tolist() == [2, 2, 2]  # a, b, unseen "z"
    assert column.missing == 2


def test_numeric_nulls_are_missing_not_counted_in_a_bin():
    windows = WindowAccumulator({"x": NumericColumn(np.array([0.0]))}, WindowSpec(size=4))
    (window,) = windows.add({"x": pa.array([1.0, None, -1.0, float("nan")])}, np.arange(4.0))
    assert window.columns["x"].counts.tolist() == [1, 1]
    assert window.columns["x"].missing == 2
    assert sorted(window.columns["x"].sample.tolist()) == [-1.0, 1.0]


def test_time_windows_close_when_a_row_reaches_the_end_or_when_polled():
    windows = accumulator(WindowSpec(size=None, duration_s=60))
    times = np.array([0.0, 10, 59.9, 60.0, 61, 130])
    closed = list(windows.add(batch(6), times))
    assert [(w.start, w.end, w.count) for w in closed] == [(0.0, 60.0, 3), (60.0, 120.0, 2)]
    assert windows.poll(now=150) == []  # the open window started at 130
    (late,) = windows.poll(now=190.0)
    assert (late.start, late.end, late.count) == (130.0, 190.0, 1)


def test_count_or_time_whichever_comes_first():
    windows = accumulator(WindowSpec(size=3, duration_s=100))
    closed = list(windows.add(batch(5), np.array([0.0, 1, 2, 3, 200])))
    assert [w.count for w in closed] == [3, 1]


def test_a_new_column_definition_applies_from_the_next_window_even_inside_a_batch():
    windows = WindowAccumulator({"x": NumericColumn(np.empty(0))}, WindowSpec(size=4))
    assert list(windows.add({"x": np.arange(2.0)}, np.arange(2.0))) == []
    windows.set_column("x", NumericColumn(np.array([1.5])))
    closed = list(windows.add({"x": np.array([2.0, 3.0, 4.0, 5.0, 1.0, 0.0])}, np.arange(2.0, 8.0)))
    assert [w.columns["x"].counts.tolist() for w in closed] == [[4], [2, 2]]


def test_a_column_set_when_a_window_of_a_batch_closes_counts_the_rest_of_that_batch():
    windows = WindowAccumulator({"x": NumericColumn(np.empty(0))}, WindowSpec(size=2))
    counts = []
    for window in windows.add({"x": np.array([0.0, 2.0, 0.0, 2.0, 2.0, 2.0])}, np.arange(6.0)):
        counts.append(window.columns["x"].counts.tolist())
        windows.set_column("x", NumericColumn(np.array([1.0])))
    assert counts == [[2], [1, 1], [0, 2]]


def test_reservoir_is_a_uniform_sample_of_the_whole_window():
    rng = np.random.default_rng(0)
    size, n = 100, 10_000
    hits = np.zeros(n)
    for _ in range(400):
        reservoir = np.empty(size)
        seen = 0
        for chunk in (1_000, 3_333, 5_667):  # batches of uneven size
            slots, rows = reservoir_slots(seen, chunk, size, rng)
            reservoir[slots] = np.arange(seen, seen + chunk)[rows]
            seen += chunk
        hits[reservoir.astype(int)] += 1
    # Each row is kept with probability size / n; compare the ten deciles of the window.
    per_decile = hits.reshape(10, -1).sum(axis=1)
    expected = 400 * size / 10
    assert np.all(np.abs(per_decile - expected) < 5 * np.sqrt(expected))
    assert len(np.unique(reservoir)) == size


def test_label_windows_keep_output_label_pairs_in_order():
    labels = LabelWindowAccumulator(WindowSpec(label_size=4))
    outputs = np.linspace(0, 1, 10)
    closed = labels.add(outputs, (outputs > 0.5).astype(float), np.arange(10.0))
    assert [w.count for w in closed] == [4, 4]
    assert closed[1].outputs.tolist() == outputs[4:8].tolist()
    assert labels.fill == pytest.approx(0.5)


def test_column_for_follows_the_reference_kind():
    numeric = column_for(numeric_reference(np.arange(100.0)))
    category = column_for(category_reference(["a", "b", "b"]))
    assert isinstance(numeric, NumericColumn) and numeric.bins == 10
    assert isinstance(category, CategoryColumn) and category.vocabulary == ["b", "a"]


def test_window_spec_needs_a_way_to_close():
    with pytest.raises(ValidationError, match="a window needs size or duration_s"):
        WindowSpec(size=None, duration_s=None)
