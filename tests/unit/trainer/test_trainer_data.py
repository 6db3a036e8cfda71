import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from memory_store import MemoryStore

from services.trainer.data import FeatureLayout, read_parquet, row_weights, tensors_from_table
from services.trainer.prepared import read_training_splits
from services.trainer.synthetic import synthetic_dataset
from services.trainer.synthetic_store import commit_version

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def dataset():
    return synthetic_dataset(500, seed=5)


def test_layout_follows_the_manifest_features_and_vocabularies(dataset):
    manifest, _ = dataset
    layout = FeatureLayout.from_manifest(manifest, "binary")
    assert layout.numeric == tuple(f"num_{i}" for i in range(6))
    assert layout.categorical == ("cat_0", "cat_1")
    assert layout.cardinalities == tuple(len(manifest.transform[c].vocabulary) + 1 for c in layout.categorical)
    assert layout.outputs == 1


def test_paths_bytes_and_tables_give_the_same_tensors(dataset, tmp_path):
    manifest, splits = dataset
    layout = FeatureLayout.from_manifest(manifest, "binary")
    halves = [splits["train"].slice(0, 150), splits["train"].slice(150)]
    paths = []
    for i, half in enumerate(halves):
        paths.append(tmp_path / f"part-{i}.parquet")
        pq.write_table(half, paths[-1])
    blobs = [path.read_bytes() for path in paths]

    from_paths = tensors_from_table(read_parquet(paths, layout.columns), layout)
    from_bytes = tensors_from_table(read_parquet(blobs, layout.columns), layout)
    from_table = tensors_from_table(splits["train"], layout)

    train = splits["train"]
    assert from_table.numeric.dtype == torch.float32 and from_table.numeric.shape == (train.num_rows, 6)
    assert from_table.categorical.dtype == torch.int64 and from_table.categorical.shape == (train.num_rows, 2)
    assert from_table.label.dtype == torch.float32
    expected = torch.tensor(train.column("num_4").to_numpy(), dtype=torch.float32)
    assert torch.equal(from_table.numeric[:, 4], expected)
    assert torch.equal(from_table.categorical[:, 1], torch.tensor(train.column("cat_1").to_numpy()))
    for other in (from_paths, from_bytes):
        assert all(torch.equal(a, b) for a, b in zip(other.tensors(), from_table.tensors(), strict=True))


def test_nulls_become_the_standardised_mean_and_out_of_vocabulary():
    layout = FeatureLayout(("x",), ("c",), (3,), "y", "binary")
    table = pa.table({"x": [1.5, None], "c": pa.array([2, None], pa.int64()), "y": [1, 0]})
    tensors = tensors_from_table(table, layout)
    assert tensors.numeric[:, 0].tolist() == [1.5, 0.0]
    assert tensors.categorical[:, 0].tolist() == [2, 0]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (pa.table({"x": [1.0], "c": pa.array([3], pa.int64()), "y": [1]}), "categorical feature 'c' has codes in [3, 3]"),
        (pa.table({"x": [1.0], "c": pa.array([1], pa.int64()), "y": [2]}), "binary label 'y' must be 0 or 1, found [2.0]"),
        (pa.table({"x": [1.0], "c": pa.array([1], pa.int64()), "y": pa.array([None], pa.int64())}), "label 'y' has 1 nulls"),
        (pa.table({"x": ["a"], "c": pa.array([1], pa.int64()), "y": [1]}), "numeric feature 'x' has type string"),
        (pa.table({"x": [1.0], "y": [1]}), "lacks columns ['c']"),
    ],
)
def test_bad_columns_are_named(table, message):
    layout = FeatureLayout(("x",), ("c",), (3,), "y", "binary")
    with pytest.raises(ValueError) as caught:
        tensors_from_table(table, layout)
    assert message in str(caught.value)


def test_multiclass_labels_index_the_sorted_train_classes():
    train = pa.table({"x": [0.0, 1.0, 2.0, 3.0], "y": ["low", "high", "mid", "low"]})
    layout = FeatureLayout(("x",), (), (), "y", "multiclass").with_classes(train)
    assert layout.classes == ("high", "low", "mid") and layout.outputs == 3
    assert tensors_from_table(train, layout).label.tolist() == [1, 0, 2, 1]
    with pytest.raises(ValueError, match=r"values \['extreme'\] not among the train classes"):
        tensors_from_table(pa.table({"x": [0.0], "y": ["extreme"]}), layout)


def test_bytes_buffer_types_are_accepted(dataset):
    manifest, splits = dataset
    layout = FeatureLayout.from_manifest(manifest, "binary")
    sink = io.BytesIO()
    pq.write_table(splits["test"], sink)
    table = read_parquet([memoryview(sink.getvalue())], layout.columns)
    assert table.column_names == layout.columns and table.num_rows == splits["test"].num_rows


def test_a_version_with_a_weight_column_gives_the_train_rows_weights(dataset):
    manifest, splits = dataset
    store = MemoryStore()
    plain = commit_version(store, manifest, splits)
    columns = FeatureLayout.from_manifest(manifest, "binary").columns
    assert read_training_splits(store, plain, columns)[1] is None  # no weight column: every row weighs the same
    weights = {split: pa.array(np.linspace(0.25, 1.0, table.num_rows)) for split, table in splits.items()}
    weighted = commit_version(store, manifest.model_copy(update={"version": 2, "weight": "_weight"}),
                              {split: table.append_column("_weight", weights[split]) for split, table in splits.items()})
    tables, train_weights = read_training_splits(store, weighted, columns)
    assert train_weights.tolist() == weights["train"].to_pylist()
    assert tables["train"].column_names == [*columns, "_weight"]


@pytest.mark.parametrize("values, problem", [
    ([1.0, None], "has 1 nulls"),
    ([1.0, -0.5], "finite weights >= 0, not all 0"),
    ([0.0, 0.0], "finite weights >= 0, not all 0"),
    ([1.0, float("inf")], "finite weights >= 0, not all 0"),
])
def test_bad_row_weights_are_refused_naming_the_column(values, problem):
    with pytest.raises(ValueError, match=problem):
        row_weights(pa.table({"_weight": pa.array(values, pa.float64())}), "_weight")
    with pytest.raises(ValueError, match="names weight column '_w', which the prepared split lacks"):
        row_weights(pa.table({"_weight": pa.array(values, pa.float64())}), "_w")
