"""What the monitor compares live traffic with: reference distributions per column.

Feature references come from the training dataset's manifest (or the model
card, which copies them). Numeric references are the raw train distribution
cut at its deciles: a value falls in bin ``searchsorted(edges, x, "right")``,
the number of edges <= x, so outer bins are open; nulls are left out.
Category references are shares per category text (``str(value)``, booleans as
``true``/``false``); live categories outside them count in one extra bin.
A multiclass model's classes (the label values the trainer saw: text,
integers or booleans) are kept as the same text, so labels and predicted
classes compare whatever the label type.

The prediction reference is the model's outputs on held-out data when the
card carries one (``expected_prediction``); without it the monitor adopts the
first full window of live predictions as the reference.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, BeforeValidator, ConfigDict

from streamml.classes import class_texts
from streamml.manifest import CategoryReference, DatasetManifest, NumericReference

ColumnReference = NumericReference | CategoryReference

DECILES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
SAMPLE_SIZE = 2000
UNSEEN = "(unseen)"
PREDICTION = "prediction"


def _as_class_texts(classes: object) -> object:
    return class_texts(classes) if isinstance(classes, (list, tuple)) else classes


# Multiclass classes as category text; a card's integer or boolean classes are read into it.
ClassTexts = Annotated[list[str] | None, BeforeValidator(_as_class_texts)]


class MonitorReference(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    dataset: str
    dataset_version: int | None = None
    features: dict[str, ColumnReference]
    prediction: ColumnReference | None = None
    classes: ClassTexts = None
    """Multiclass: the class of each output column as text (``class_texts``); the predicted class is its text."""


    @classmethod
    def from_manifest(
        cls,
        manifest: DatasetManifest,
        model: str,
        prediction: ColumnReference | None = None,
        classes: list[str] | None = None,
    ) -> MonitorReference:
        return cls(
            model=model,
            dataset=manifest.dataset,
            dataset_version=manifest.version,
            features={name: manifest.reference[name] for name in manifest.features if name in manifest.reference},
            prediction=prediction,
            classes=classes,
        )

    @classmethod
    def from_card(cls, card: dict[str, Any]) -> MonitorReference:
        """From a model card (``models/<name>/<version>/card.json``) as a dict."""
        expected = card.get("expected_prediction")
        return cls(
            model=card["model"],
            dataset=card["dataset"]["name"],
            dataset_version=card["dataset"].get("version"),
            features=card.get("expected_features") or {},
            prediction=expected,
            classes=(card.get("outputs") or {}).get("classes"),
        )


def numeric_reference(values: np.ndarray, sample_size: int = SAMPLE_SIZE, seed: int = 0) -> NumericReference:
    """A numeric reference from raw values, cut the way prep cuts train columns."""
    present = np.asarray(values, dtype=np.float64)
    present = present[~np.isnan(present)]
    if present.size == 0:
        raise ValueError("cannot build a numeric reference from no values: pass at least one non-null value")
    edges = np.unique(np.quantile(present, DECILES))
    counts = np.bincount(np.searchsorted(edges, present, side="right"), minlength=edges.size + 1)
    rng = np.random.default_rng(seed)
    sample = rng.choice(present, size=min(sample_size, present.size), replace=False)
    return NumericReference(
        edges=edges.tolist(),
        fractions=(counts / present.size).tolist(),
        count=int(present.size),
        mean=float(present.mean()),
        std=float(present.std()),
        sample=np.sort(sample).tolist(),
    )


def category_reference(values: pa.Array | pa.ChunkedArray | np.ndarray | list) -> CategoryReference:
    """A category reference from raw values; nulls are left out."""
    text = category_text(values).drop_null()
    if len(text) == 0:
        raise ValueError("cannot build a category reference from no values: pass at least one non-null value")
    counted = pc.value_counts(text).to_pylist()
    counted.sort(key=lambda item: (-item["counts"], item["values"]))
    return CategoryReference(
        frequencies={item["values"]: item["counts"] / len(text) for item in counted},
        count=len(text),
    )


def category_text(values: pa.Array | pa.ChunkedArray | np.ndarray | list) -> pa.Array:
    """Values as the text their reference frequencies are keyed by."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not isinstance(values, pa.Array):
        values = pa.array(values, from_pandas=True)
    return values if pa.types.is_string(values.type) else pc.cast(values, pa.string())


def vocabulary(reference: CategoryReference) -> list[str]:
    return list(reference.frequencies)


def shares(reference: ColumnReference) -> np.ndarray:
    """Reference share per bin, in the order the window counts them (categories: unseen last)."""
    if isinstance(reference, NumericReference):
        return np.asarray(reference.fractions, dtype=np.float64)
    return np.asarray([*reference.frequencies.values(), 0.0], dtype=np.float64)


def bin_labels(reference: ColumnReference) -> list[str]:
    if isinstance(reference, CategoryReference):
        return [*reference.frequencies, UNSEEN]
    return reference.bin_labels()


def kind_of(reference: ColumnReference) -> str:
    return reference.kind
