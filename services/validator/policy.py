"""Promotion policies: what a model version must show before applications serve it.

One YAML file per model (``examples/policies/transactions.yaml``)::

    model: fraud
    min: {auc: 0.80}                    # floors on test-split metrics
    max: {log_loss: 0.35}               # ceilings
    max_regression: {auc: 0.01}         # how much worse than the champion it may be
    min_improvement: {auc: 0.002}       # how much better it must be to replace the champion
    slices:                             # floors per value of a category feature
      - {feature: channel, min: {auc: 0.70}, min_rows: 200}
    latency: {p95_ms: 20, batch_size: 256}

Differences against the champion are absolute, in the metric's own units, and
in its better direction (higher for auc and accuracy, lower for log_loss, rmse
and mae). Every rule listed must hold; a policy with no rules promotes every
candidate.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from streamml.specs import NAME, SpecError, load_folder, read_yaml

Metric = Literal["auc", "log_loss", "accuracy", "rmse", "mae"]
HIGHER_IS_BETTER: dict[str, bool] = {"auc": True, "accuracy": True, "log_loss": False, "rmse": False, "mae": False}
UNIT_INTERVAL = {"auc", "accuracy"}


class Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _bound_problems(floors: dict[str, float], ceilings: dict[str, float], where: str = "") -> list[str]:
    problems = []
    for metric, value in floors.items():
        if not HIGHER_IS_BETTER[metric]:
            problems.append(f"{where}min.{metric}: {metric} is better when lower, so a floor does not guard it; "
                            f"put it under max")
        elif metric in UNIT_INTERVAL and not 0 <= value <= 1:
            problems.append(f"{where}min.{metric}: {value} is outside [0, 1], where {metric} lies")
    for metric, value in ceilings.items():
        if HIGHER_IS_BETTER[metric]:
            problems.append(f"{where}max.{metric}: {metric} is better when higher, so a ceiling does not guard it; "
                            f"put it under min")
        elif value < 0:
            problems.append(f"{where}max.{metric}: {value} is negative; {metric} never is")
    return problems


class SlicePolicy(Strict):
    """Floors and ceilings for each value of one category feature, on the test split."""

    feature: str = Field(pattern=NAME)
    min: dict[Metric, float] = Field(default_factory=dict)
    max: dict[Metric, float] = Field(default_factory=dict)
    min_rows: int = Field(100, ge=1, description="values with fewer test rows are not judged: too noisy")

    @model_validator(mode="after")
    def _bounds(self) -> SlicePolicy:
        problems = _bound_problems(self.min, self.max)
        if not self.min and not self.max:
            problems.append(f"min/max: slice {self.feature!r} sets neither; give it a rule or remove it")
        if problems:
            raise ValueError("\n".join(problems))
        return self


class LatencyBudget(Strict):
    p95_ms: float = Field(gt=0, description="95th percentile of one predict call, in milliseconds")
    batch_size: int = Field(ge=1, description="rows per predict call when measuring")


class PromotionPolicy(Strict):
    model: str = Field(pattern=NAME)
    min: dict[Metric, float] = Field(default_factory=dict, description="metric floors")
    max: dict[Metric, float] = Field(default_factory=dict, description="metric ceilings")
    max_regression: dict[Metric, float] = Field(
        default_factory=dict, description="largest allowed worsening against the champion"
    )
    min_improvement: dict[Metric, float] = Field(
        default_factory=dict, description="smallest gain over the champion that replaces it"
    )
    slices: list[SlicePolicy] = Field(default_factory=list)
    latency: LatencyBudget | None = None

    @field_validator("slices", mode="before")
    @classmethod
    def _one_slice_is_a_list(cls, value: object) -> object:
        return [value] if isinstance(value, dict) else value

    @model_validator(mode="after")
    def _consistent(self) -> PromotionPolicy:
        problems = _bound_problems(self.min, self.max)
        for field in ("max_regression", "min_improvement"):
            problems.extend(
                f"{field}.{metric}: {value} is negative; it is a distance in the better direction, use >= 0"
                for metric, value in getattr(self, field).items()
                if value < 0
            )
        features = [item.feature for item in self.slices]
        problems.extend(
            f"slices: feature {name!r} appears twice; merge its rules" for name in sorted(set(features))
            if features.count(name) > 1
        )
        if problems:
            raise ValueError("\n".join(problems))
        return self


class PolicyError(SpecError):
    """Every problem of one policy file, one per line, each naming the field."""


def _problems(error: ValidationError) -> list[str]:
    lines = []
    for item in error.errors(include_url=False):
        where = ".".join(str(part) for part in item["loc"])
        message = re.sub(r"^Value error, ", "", item["msg"])
        if item["type"] == "literal_error" or item["type"].endswith("_parsing"):
            message += f" (got {item['input']!r})"
        if item["type"] == "value_error":
            # Our own messages already start with the field they are about.
            prefix = f"{where}." if where else ""
            lines.extend(prefix + part for part in message.split("\n"))
        else:
            lines.append(f"{where or 'policy'}: {message}")
    return lines


def parse_policy(document: object, source: str = "<policy>") -> PromotionPolicy:
    if not isinstance(document, dict):
        raise PolicyError(source, ["the policy must be a mapping with at least model: <name>"])
    try:
        return PromotionPolicy.model_validate(document)
    except ValidationError as error:
        raise PolicyError(source, _problems(error)) from None


def load_policy(path: Path) -> PromotionPolicy:
    return parse_policy(read_yaml(path, PolicyError), str(path))


def load_policies(folder: Path) -> dict[str, PromotionPolicy]:
    """All policies of a folder by model name; every bad file is reported."""
    return load_folder(folder, load_policy, lambda policy: policy.model, "promotion policies",
                       "the policy of model", PolicyError)
