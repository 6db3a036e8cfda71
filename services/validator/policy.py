"""Promotion policies: what a model version must show before applications serve it.

One YAML file per model (``examples/policies/transactions.yaml``)::

    model: fraud
    min: {auc: 0.80}                    # floors on test-split metrics (multiclass: recall_per_class floors every class)
    max: {log_loss: 0.35}               # ceilings
    max_regression: {auc: 0.01}         # how much worse than the champion it may be
    min_improvement: {auc: 0.002}       # how much better it must be to replace the champion
    slices:                             # floors per value of a category feature
      - {feature: channel, min: {auc: 0.70}, min_rows: 200}
    latency: {p95_ms: 20, batch_size: 256}
    min_rows_after_drift: 200           # a drift build's candidate needs this many post-drift test rows
    shadow:                             # then score live traffic beside the champion before promoting
      min_predictions: 500              # labelled live requests both answered
      max_duration_s: 3600              # else rejected for lack of evidence
      rules:
        - {metric: auc, max_regression: 0.01}   # live, on the same requests as the champion
        - {max_disagreement: 0.2}
        - {max_latency_p95_ms: 20}

Differences against the champion are absolute, in the metric's own units, and
in its better direction (higher for auc and accuracy, lower for log_loss, rmse
and mae). A multiclass model's ``recall_per_class`` is judged on each class's
recall: a floor holds when every class reaches it, a comparison with the
champion when every class does. Every rule listed must hold; a policy with no
rules promotes every candidate.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from streamml.specs import NAME, SpecError, load_folder, read_yaml

Metric = Literal["auc", "log_loss", "accuracy", "recall_per_class", "rmse", "mae"]
HIGHER_IS_BETTER: dict[str, bool] = {"auc": True, "accuracy": True, "recall_per_class": True, "log_loss": False,
                                     "rmse": False, "mae": False}
# What the validator measures for each task (services/validator/metrics.py).
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "binary": ("auc", "log_loss", "accuracy"), "multiclass": ("accuracy", "log_loss", "recall_per_class"),
    "regression": ("rmse", "mae"),
}
UNIT_INTERVAL = {"auc", "accuracy", "recall_per_class"}
log = logging.getLogger("streamml.validator")


class Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# Each check reads one field, so a policy with several wrong fields gets every problem reported at once
# (pydantic runs a model-wide check only once every field is valid).
def _floors(floors: dict[str, float]) -> dict[str, float]:
    problems = []
    for metric, value in floors.items():
        if not HIGHER_IS_BETTER[metric]:
            problems.append(f"{metric}: {metric} is better when lower, so a floor does not guard it; put it under max")
        elif metric in UNIT_INTERVAL and not 0 <= value <= 1:
            problems.append(f"{metric}: {value} is outside [0, 1], where {metric} lies")
    if problems:
        raise ValueError("\n".join(problems))
    return floors


def _ceilings(ceilings: dict[str, float]) -> dict[str, float]:
    problems = []
    for metric, value in ceilings.items():
        if HIGHER_IS_BETTER[metric]:
            problems.append(f"{metric}: {metric} is better when higher, so a ceiling does not guard it; put it under min")
        elif value < 0:
            problems.append(f"{metric}: {value} is negative; {metric} never is")
    if problems:
        raise ValueError("\n".join(problems))
    return ceilings


def _distances(distances: dict[str, float]) -> dict[str, float]:
    problems = [f"{metric}: {value} is negative; it is a distance in the better direction, use >= 0"
                for metric, value in distances.items() if value < 0]
    if problems:
        raise ValueError("\n".join(problems))
    return distances


class SlicePolicy(Strict):
    """Floors and ceilings for each value of one category feature, on the test split."""

    feature: str = Field(pattern=NAME)
    min: dict[Metric, float] = Field(default_factory=dict)
    max: dict[Metric, float] = Field(default_factory=dict)
    min_rows: int = Field(100, ge=1, description="values with fewer test rows are not judged: too noisy")

    _floors = field_validator("min")(_floors)
    _ceilings = field_validator("max")(_ceilings)

    @model_validator(mode="after")
    def _some_rule(self) -> SlicePolicy:
        if not self.min and not self.max:
            raise ValueError(f"min/max: slice {self.feature!r} sets neither; give it a rule or remove it")
        return self


class LatencyBudget(Strict):
    p95_ms: float = Field(gt=0, description="95th percentile of one predict call, in milliseconds")
    batch_size: int = Field(ge=1, description="rows per predict call when measuring")


class ShadowRule(Strict):
    """One rule on live evidence; each names exactly one of its kinds:

    - ``{metric: auc, max_regression: 0.01}``: the shadow's live metric may be at most
      this much worse than the champion's on the same labelled requests;
    - ``{max_disagreement: 0.1}``: share of requests the two answer differently (the
      predicted class; binary and multiclass models);
    - ``{max_latency_p95_ms: 20}``: p95 of the shadow's predict calls in applications."""

    metric: Metric | None = None
    max_regression: float | None = Field(None, ge=0)
    max_disagreement: float | None = Field(None, ge=0, le=1)
    max_latency_p95_ms: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _one_kind(self) -> ShadowRule:
        kinds = [self.max_regression is not None, self.max_disagreement is not None,
                 self.max_latency_p95_ms is not None]
        if sum(kinds) != 1:
            raise ValueError("a rule sets exactly one of max_regression (with metric), max_disagreement, "
                             "max_latency_p95_ms")
        if (self.metric is None) == (self.max_regression is not None):
            raise ValueError("metric goes with max_regression, and only with it: {metric: auc, max_regression: 0.01}")
        return self


class ShadowPolicy(Strict):
    """Live evidence a candidate must show, scored beside the champion, before it is promoted."""

    min_predictions: int = Field(ge=1, description="labelled live requests both versions answered, needed to decide")
    max_duration_s: float = Field(gt=0, description="rejected for lack of evidence when not decided within this")
    rules: list[ShadowRule] = Field(min_length=1)


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
    min_rows_after_drift: int | None = Field(
        None, ge=1, description="a candidate built for a drift is judged on post-drift test rows: at least this many")
    shadow: ShadowPolicy | None = Field(None, description="live evidence to gather before a promotion")

    _floors = field_validator("min")(_floors)
    _ceilings = field_validator("max")(_ceilings)
    _distances = field_validator("max_regression", "min_improvement")(_distances)

    @field_validator("slices", mode="before")
    @classmethod
    def _one_slice_is_a_list(cls, value: object) -> object:
        return [value] if isinstance(value, dict) else value

    @model_validator(mode="after")
    def _one_slice_per_feature(self) -> PromotionPolicy:
        features = [item.feature for item in self.slices]
        twice = sorted({name for name in features if features.count(name) > 1})
        if twice:
            raise ValueError("\n".join(f"slices: feature {name!r} appears twice; merge its rules" for name in twice))
        return self


def model_problems(policy: PromotionPolicy, task: str | None, categories: set[str] | None = None) -> list[str]:
    """Rules the validator could never judge for a model of ``task``: metrics it does not measure
    for that task, and slices on what is not a category feature (``categories``, when known)."""
    problems = []
    if task is not None:
        measured = TASK_METRICS[task]
        rules = [(field, metric) for field in ("min", "max", "max_regression", "min_improvement")
                 for metric in getattr(policy, field)]
        rules += [(f"slices[{i}].{field}", metric) for i, rule in enumerate(policy.slices)
                  for field in ("min", "max") for metric in getattr(rule, field)]
        if policy.shadow is not None:
            rules += [(f"shadow.rules[{i}]", rule.metric) for i, rule in enumerate(policy.shadow.rules) if rule.metric]
            problems += [f"shadow.rules[{i}].max_disagreement: a regression model's answers are numbers; "
                         "disagreement is defined for binary and multiclass models"
                         for i, rule in enumerate(policy.shadow.rules)
                         if task == "regression" and rule.max_disagreement is not None]
        problems += [f"{where}.{metric}: a {task} model is judged on {', '.join(measured)}, never {metric}"
                     for where, metric in rules if metric not in measured]
    if categories is not None:
        problems += [f"slices[{i}].feature: {rule.feature!r} is not a category feature of the dataset "
                     f"(its category features: {', '.join(sorted(categories)) or 'none'})"
                     for i, rule in enumerate(policy.slices) if rule.feature not in categories]
    return problems


def as_written(document: object) -> PromotionPolicy | None:
    """The policy as written, unchecked, for ``model_problems`` on a file that failed its own checks
    (so every problem is reported at once); None when it is not even a mapping with a model name."""
    if not isinstance(document, dict) or not isinstance(document.get("model"), str):
        return None

    def rules(value: object) -> dict:
        return {metric: bound for metric, bound in value.items() if metric in HIGHER_IS_BETTER} \
            if isinstance(value, dict) else {}

    slices = document.get("slices")
    slices = [slices] if isinstance(slices, dict) else slices if isinstance(slices, list) else []
    return PromotionPolicy.model_construct(
        model=document["model"], slices=[
            SlicePolicy.model_construct(feature=item["feature"], min=rules(item.get("min")), max=rules(item.get("max")))
            for item in slices if isinstance(item, dict) and isinstance(item.get("feature"), str)],
        **{field: rules(document.get(field)) for field in ("min", "max", "max_regression", "min_improvement")},
    )


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


class PolicyFolder:
    """The policies of a folder, read again whenever a file in it changes.

    A folder that turns bad after a good start keeps the last good policies
    (and says why once per change), so an edit in progress never stops judging.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._seen = self._fingerprint()
        self.policies = load_policies(folder)  # a bad folder at start is a PolicyError: the service cannot start

    def _fingerprint(self) -> str:
        digest = hashlib.sha256()
        for path in sorted([*self.folder.glob("*.yaml"), *self.folder.glob("*.yml")]):
            try:
                digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
            except OSError:
                digest.update(path.name.encode() + b"\0unreadable\0")
        return digest.hexdigest()

    def current(self) -> dict[str, PromotionPolicy]:
        seen = self._fingerprint()
        if seen != self._seen:
            self._seen = seen
            try:
                self.policies = load_policies(self.folder)
            except PolicyError as error:
                log.error("policies changed but cannot be read; judging with the last good ones",
                          extra={"folder": str(self.folder), "problems": error.problems})
            else:
                log.info("policies read again", extra={"folder": str(self.folder), "models": sorted(self.policies)})
        return self.policies
