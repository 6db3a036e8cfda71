"""A version is evaluated on the split's rows in its own transform, whichever dataset version prepared them."""

import numpy as np
import pyarrow as pa
import pytest
import torch

from services.validator.judge import evaluate_version
from services.validator.testsplit import split_from_table
from streamml.manifest import CategoryTransform, NumericTransform
from streamml.sdk.loader import LoadedVersion
from streamml.sdk.preprocess import FeatureTransform
from streamml.sdk.swap import ModelSnapshot

pytestmark = pytest.mark.unit


def echo_amount(numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
    """A 'model' answering its first numeric input: the amount as its own transform expresses it."""
    return numeric[:, 0].clone()


def version(dataset_version: int, amount: NumericTransform, vocabulary: list[str], task: str = "regression"):
    transform = FeatureTransform(
        {"amount": amount, "hour": NumericTransform(mean=12, std=6),
         "channel": CategoryTransform(vocabulary=vocabulary)},
        ["channel", "amount", "hour"],
    )
    card = {"task": task, "dataset": {"name": "tx", "version": dataset_version}}
    return LoadedVersion(card, ModelSnapshot(f"m{dataset_version}", echo_amount, transform))


def split(raw_amounts: list[float], manifest):
    # Dataset v3 standardises amount with mean 10, std 2; the label is the raw amount.
    stored = [(a - 10) / 2 for a in raw_amounts]
    table = pa.table({"amount": pa.array(stored, pa.float64()), "hour": pa.array([1.0] * len(stored), pa.float64()),
                      "channel": pa.array([1, 2, 0] * (len(stored) // 3), pa.int64()),
                      "label": pa.array(raw_amounts, pa.float64())})
    return split_from_table(table, manifest)


def test_a_version_of_another_dataset_version_sees_the_rows_in_its_own_transform(manifest_of):
    rows = split([4.0, 10.0, 22.0, 7.0, 13.0, 1.0], manifest_of())
    # Trained on v1, where amount was not standardised: after recoding it reads raw amounts.
    champion = evaluate_version(version(1, NumericTransform(mean=0, std=1), ["pos", "web"]), rows)
    assert champion.metrics["rmse"] == pytest.approx(0, abs=1e-5)
    # Trained on v3 itself: it reads the split's values unchanged, i.e. standardised.
    candidate = evaluate_version(version(3, NumericTransform(mean=10, std=2), ["web", "pos"]), rows)
    expected = np.sqrt(np.mean((np.array(rows.features.numeric[:, 0]) - rows.labels) ** 2))
    assert candidate.metrics["rmse"] == pytest.approx(expected, rel=1e-6)
    assert candidate.rows == 6 and candidate.latency is None


def test_slices_and_latency_are_measured_when_asked(manifest_of):
    rows = split([4.0, 10.0, 22.0, 7.0, 13.0, 1.0], manifest_of())
    evaluation = evaluate_version(version(3, NumericTransform(mean=10, std=2), ["web", "pos"]), rows,
                                  slices=["channel"], latency_batch=4, latency_calls=3)
    assert {name: s.rows for name, s in evaluation.slices["channel"].items()} == {"web": 2, "pos": 2, "(other)": 2}
    assert evaluation.latency.batch_size == 4 and evaluation.latency.calls == 3


def test_an_empty_split_cannot_judge_anything(manifest_of):
    with pytest.raises(ValueError, match="is empty"):
        evaluate_version(version(3, NumericTransform(mean=10, std=2), ["web"]), split([], manifest_of()))


def higher_amount_second_class(numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
    p = torch.sigmoid(4 * numeric[:, 0])
    return torch.stack([1 - p, p], dim=1)


@pytest.mark.parametrize("classes, names", [([False, True], ["false", "true"]), ([3, 7], ["3", "7"]),
                                            (["no", "yes"], ["no", "yes"])], ids=str)
def test_the_recall_of_each_class_is_named_by_the_class_as_text(manifest_of, classes, names):
    stored = [-2.0, -1.0, 1.0, 2.0, -0.5, 0.5]  # standardised amounts: the model picks the second class above 0
    labels = [classes[i] for i in (0, 0, 1, 1, 1, 0)]  # one row of each class on the wrong side
    table = pa.table({"amount": pa.array(stored), "hour": pa.array([1.0] * 6), "channel": pa.array([1, 2, 0] * 2),
                      "label": pa.array(labels)})
    card = {"task": "multiclass", "dataset": {"name": "tx", "version": 3}, "outputs": {"classes": classes}}
    transform = version(3, NumericTransform(mean=10, std=2), ["web", "pos"]).snapshot.transform
    loaded = LoadedVersion(card, ModelSnapshot("m3", higher_amount_second_class, transform))
    evaluation = evaluate_version(loaded, split_from_table(table, manifest_of()))
    assert {name: evaluation.metrics[f"recall[{name}]"] for name in names} == pytest.approx(
        {names[0]: 2 / 3, names[1]: 2 / 3})
    assert set(evaluation.intervals) >= {f"recall[{name}]" for name in names}
