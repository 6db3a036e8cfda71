"""The deployed model of the detection benchmark: a logistic regression fitted on the training rows.

Numeric features are standardised (log for amount; a missing distance is
imputed with the training mean and flagged), categories one-hot encoded
against the training vocabulary. Fitted by Newton's method with a small
ridge, in numpy; it cannot fit the truth's curve in score_a, so like a real
model it is good but not perfect.

    model = LogisticModel.fit(features, labels)
    probabilities = model.predict(features)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.monitor.streams import CATEGORY

RIDGE = 1e-3
ITERATIONS = 12


@dataclass(frozen=True)
class LogisticModel:
    means: dict[str, float]
    stds: dict[str, float]
    vocabulary: dict[str, np.ndarray]
    weights: np.ndarray

    @classmethod
    def fit(cls, features: dict[str, np.ndarray], labels: np.ndarray) -> LogisticModel:
        numeric = _numeric(features)
        means = {name: float(np.nanmean(values)) for name, values in numeric.items()}
        stds = {name: float(np.nanstd(values)) or 1.0 for name, values in numeric.items()}
        vocabulary = {name: np.unique(features[name]) for name in CATEGORY}
        model = cls(means, stds, vocabulary, np.zeros(0))
        x = model.design(features)
        weights = np.zeros(x.shape[1])
        for _ in range(ITERATIONS):
            p = 1.0 / (1.0 + np.exp(-x @ weights))
            gradient = x.T @ (p - labels) + RIDGE * weights
            hessian = (x * (p * (1 - p))[:, None]).T @ x + RIDGE * np.eye(x.shape[1])
            weights -= np.linalg.solve(hessian, gradient)
        return cls(means, stds, vocabulary, weights)

    def design(self, features: dict[str, np.ndarray]) -> np.ndarray:
        numeric = _numeric(features)
        columns = [np.ones(len(features["channel"]))]
        for name, values in numeric.items():
            missing = np.isnan(values)
            columns.append(np.where(missing, 0.0, (values - self.means[name]) / self.stds[name]))
            if name == "distance_km":
                columns.append(missing.astype(np.float64))
        for name in CATEGORY:
            columns += [(features[name] == value).astype(np.float64) for value in self.vocabulary[name][1:]]
        return np.column_stack(columns)

    def predict(self, features: dict[str, np.ndarray]) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.design(features) @ self.weights))


def _numeric(features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {
        "log_amount": np.log(features["amount"]),
        "hour": features["hour"],
        "distance_km": features["distance_km"],
        "age": features["age"],
        "score_a": features["score_a"],
        "score_b": features["score_b"],
    }
