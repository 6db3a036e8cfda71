"""Raw records to model inputs, exactly as prep transformed the training data.

A model takes ``numeric [N, F] float32`` and ``categorical [N, C] int64``: the
dataset's numeric features in manifest order, then its category features in
manifest order. ``FeatureTransform`` builds both from a batch of records (dicts
as the application has them) with the transform the dataset manifest, or the
model card, recorded::

    transform = FeatureTransform.from_card(card)
    features = transform.apply([{"amount": 12.5, "channel": "web", ...}, ...])
    numeric, categorical = features.tensors()

Each value gets the same treatment as ``NumericTransform.apply`` /
``CategoryTransform.apply``: a missing key, ``None`` or NaN is imputed; numbers
are clipped and standardised; a category outside the vocabulary is code 0.
A NaN category counts as missing, and a category that is not a string is an
error rather than a silent code 0. The numeric part is computed on whole
columns in numpy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import TypeAdapter, ValidationError

from streamml.manifest import CategoryTransform, DatasetManifest, NumericTransform

if TYPE_CHECKING:
    import torch

Transform = NumericTransform | CategoryTransform
_TRANSFORM = TypeAdapter(Transform)


class PreprocessError(ValueError):
    """A record, or a transform definition, that cannot be turned into model inputs."""


@dataclass(frozen=True)
class Features:
    numeric: np.ndarray  # [N, F] float32
    categorical: np.ndarray  # [N, C] int64

    def __len__(self) -> int:
        return self.numeric.shape[0]

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Both arrays as torch tensors sharing their memory."""
        import torch

        return torch.from_numpy(self.numeric), torch.from_numpy(self.categorical)


class FeatureTransform:
    def __init__(self, transforms: Mapping[str, Transform], order: Sequence[str]):
        missing = [name for name in order if name not in transforms]
        if missing:
            raise PreprocessError(f"features {missing} have no transform; the manifest or card is incomplete")
        self.numeric = tuple(name for name in order if isinstance(transforms[name], NumericTransform))
        self.categorical = tuple(name for name in order if isinstance(transforms[name], CategoryTransform))
        self.transforms = {name: transforms[name] for name in (*self.numeric, *self.categorical)}
        numeric = [transforms[name] for name in self.numeric]
        # Row vectors, so one broadcast handles every numeric column at once.
        self._fill = np.array([t.impute if t.impute is not None else t.mean for t in numeric], dtype=np.float64)
        self._low = np.array([t.clip[0] if t.clip else -np.inf for t in numeric], dtype=np.float64)
        self._high = np.array([t.clip[1] if t.clip else np.inf for t in numeric], dtype=np.float64)
        self._mean = np.array([t.mean for t in numeric], dtype=np.float64)
        self._std = np.array([t.std for t in numeric], dtype=np.float64)
        self._codes = [_code_table(transforms[name]) for name in self.categorical]

    @classmethod
    def from_manifest(cls, manifest: DatasetManifest) -> FeatureTransform:
        return cls(manifest.transform, manifest.features)

    @classmethod
    def from_card(cls, card: Mapping[str, Any]) -> FeatureTransform:
        """From a model card's ``inputs``: the transform of the dataset version the model was trained on."""
        try:
            inputs = card["inputs"]
            numeric = list(inputs["numeric"])
            categorical = [item["name"] for item in inputs["categorical"]]
            codes = {item["name"]: item["codes"] for item in inputs["categorical"]}
            raw = inputs["transform"]
        except (KeyError, TypeError) as error:
            raise PreprocessError(
                f"model card lacks inputs.numeric, inputs.categorical or inputs.transform ({error!r})"
            ) from None
        if not isinstance(raw, Mapping):
            raise PreprocessError(f"model card inputs.transform must map feature names to transforms, "
                                  f"found {type(raw).__name__}")
        transforms = {}
        for name, document in raw.items():
            try:
                transforms[name] = _TRANSFORM.validate_python(document)
            except ValidationError as error:
                raise PreprocessError(f"model card transform of {name!r} is invalid: {error}") from None
        transform = cls(transforms, [*numeric, *categorical])
        if transform.numeric != tuple(numeric) or transform.categorical != tuple(categorical):
            raise PreprocessError(
                f"model card lists numeric {numeric} and categorical {categorical}, but its transforms "
                f"make {list(transform.numeric)} numeric and {list(transform.categorical)} categorical"
            )
        for name in categorical:
            expected = len(transforms[name].vocabulary) + 1
            if type(codes[name]) is not int or codes[name] != expected:
                raise PreprocessError(
                    f"model card says {name!r} has {codes[name]!r} codes but its vocabulary makes {expected}"
                )
        return transform

    @property
    def features(self) -> tuple[str, ...]:
        return (*self.numeric, *self.categorical)

    def apply(self, records: Sequence[Mapping[str, Any]]) -> Features:
        for index, record in enumerate(records):
            if not isinstance(record, Mapping):
                raise PreprocessError(
                    f"record {index} is a {type(record).__name__}; records are mappings of feature to value"
                )
        return Features(self._numeric(records), self._categorical(records))

    def _numeric(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        if not self.numeric:
            return np.zeros((len(records), 0), dtype=np.float32)
        rows = [[record.get(name) for name in self.numeric] for record in records]
        try:
            # numpy turns None into NaN here, which is then imputed like NaN.
            values = np.array(rows, dtype=np.float64).reshape(len(records), len(self.numeric))
        except (TypeError, ValueError):
            raise self._bad_number(rows) from None
        values = np.where(np.isnan(values), self._fill, values)
        values = np.clip(values, self._low, self._high)
        return ((values - self._mean) / self._std).astype(np.float32)

    def _bad_number(self, rows: list[list[Any]]) -> PreprocessError:
        for index, row in enumerate(rows):
            for name, value in zip(self.numeric, row, strict=True):
                try:
                    float(value if value is not None else "nan")
                except (TypeError, ValueError):
                    return PreprocessError(
                        f"feature {name!r} of record {index} is {value!r} ({type(value).__name__}); "
                        "numeric features take numbers or null"
                    )
        return PreprocessError("numeric features could not be read as numbers")

    def _categorical(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        codes = np.zeros((len(records), len(self.categorical)), dtype=np.int64)
        for column, (name, table) in enumerate(zip(self.categorical, self._codes, strict=True)):
            values = [record.get(name) for record in records]
            try:
                codes[:, column] = [table.get(value, 0) for value in values]
            except TypeError:  # an unhashable value, reported below
                codes[:, column] = 0
            if not codes[:, column].all():
                # Code 0 is rare: out of vocabulary, or a NaN or a wrong type to look at closely.
                codes[:, column] = [_code(name, index, value, table) for index, value in enumerate(values)]
        return codes

    def recode(self, features: Features, source: FeatureTransform) -> Features:
        """Inputs prepared with ``source`` re-expressed in this transform.

        For judging a model on a test split prepared by a later dataset version:
        numbers are un-standardised with ``source`` and standardised again here;
        codes go through their category name. Values ``source`` imputed or
        clipped stay at the imputed or clipped value.
        """
        missing = [name for name in self.features if name not in source.features]
        if missing:
            raise PreprocessError(f"features {missing} are not in the source transform; they cannot be recoded")
        if not self.numeric:
            numeric = np.zeros((len(features), 0), dtype=np.float32)
        else:
            columns = [source.numeric.index(name) for name in self.numeric]
            source_mean = source._mean[columns]
            source_std = source._std[columns]
            raw = features.numeric[:, columns].astype(np.float64) * source_std + source_mean
            raw = np.clip(raw, self._low, self._high)
            numeric = ((raw - self._mean) / self._std).astype(np.float32)
        categorical = np.zeros((len(features), len(self.categorical)), dtype=np.int64)
        for column, (name, table) in enumerate(zip(self.categorical, self._codes, strict=True)):
            vocabulary = source.transforms[name].vocabulary
            # Position i holds this transform's code for source code i; code 0 stays 0.
            mapping = np.array([0, *(table.get(value, 0) for value in vocabulary)], dtype=np.int64)
            categorical[:, column] = mapping[features.categorical[:, source.categorical.index(name)]]
        return Features(numeric, categorical)


def _code_table(transform: CategoryTransform) -> dict[Any, int]:
    table: dict[Any, int] = {}
    for index, value in enumerate(transform.vocabulary):
        table.setdefault(value, index + 1)  # list.index finds the first of repeated values
    table[None] = table.get(transform.impute, 0) if transform.impute is not None else 0
    return table


def _code(name: str, index: int, value: Any, table: dict[Any, int]) -> int:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return table[None]  # NaN is how data frames spell a missing category
    if not isinstance(value, str):
        # It would silently become out-of-vocabulary; say so instead.
        raise PreprocessError(
            f"feature {name!r} of record {index} is {value!r} ({type(value).__name__}); "
            "category features take strings or null"
        )
    return table.get(value, 0)
