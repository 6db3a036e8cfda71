"""The ``search`` block of a model spec: several candidates per dataset version.

    search:
      trials: 12          # at most this many trials
      timeout_s: 600      # and no new trial after this long
      space:
        lightgbm.num_leaves: {low: 8, high: 128, log: true}    # ints: both ends are ints
        lightgbm.learning_rate: {low: 0.01, high: 0.3, log: true}
        architecture.hidden: {choices: [[32], [64, 64]]}

Each key of ``space`` is a dotted path into the spec itself; a trial is the
spec with those values put in, checked like any spec. What a search may not
change: the model's identity (name, dataset, task, flavour), the selection
metric (trials would not be comparable), or the search itself.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PATH = r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*$"
FIXED = ("name", "dataset", "task", "flavour", "search", "early_stopping.metric", "early_stopping.mode")


class Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Range(Strict):
    """Numbers from ``low`` to ``high``: integers when both ends are integers, else floats."""

    low: int | float
    high: int | float
    log: bool = Field(False, description="sample on a log scale (both ends > 0)")
    step: int | float | None = Field(None, gt=0, description="only multiples of step from low")

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.low > self.high:
            raise ValueError(f"low {self.low} is greater than high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"log: true needs low > 0, got {self.low}")
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be combined; drop one")
        return self

    @property
    def integers(self) -> bool:
        return isinstance(self.low, int) and isinstance(self.high, int) and not isinstance(self.step, float)

    def ends(self) -> list[Any]:
        return [self.low, self.high]


class Choice(Strict):
    """One of ``choices``, any YAML values (numbers, strings, lists such as hidden widths)."""

    choices: list[Any] = Field(min_length=1)

    def ends(self) -> list[Any]:
        return list(self.choices)


class Search(Strict):
    trials: int = Field(ge=1, le=10_000, description="trials at most")
    timeout_s: float | None = Field(None, gt=0, description="start no trial after this long; null: no limit")
    space: dict[str, Range | Choice] = Field(min_length=1, description="dotted spec path -> range or choices")
    pruning: bool = Field(True, description="stop a trial early when its metric trails the median of earlier trials")

    @field_validator("space", mode="before")
    @classmethod
    def _distributions(cls, space: object) -> object:
        """Each entry is a range or a choice, told apart by ``choices``, with one message per bad entry."""
        if not isinstance(space, dict):
            return space
        problems, parsed = [], {}
        for path, given in space.items():
            if not isinstance(path, str) or not re.fullmatch(PATH, path):
                problems.append(f"{path!r} is not a dotted path into the spec, e.g. lightgbm.num_leaves")
                continue
            if any(path == fixed or path.startswith(fixed + ".") for fixed in FIXED):
                problems.append(f"{path} cannot be searched: trials must share {', '.join(FIXED)}")
                continue
            kind = Choice if isinstance(given, dict) and "choices" in given else Range
            try:
                parsed[path] = kind.model_validate(given)
            except ValidationError as error:
                found = "; ".join(f"{'.'.join(map(str, item['loc'])) or 'value'}: "
                                  f"{item['msg'].removeprefix('Value error, ')}" for item in error.errors())
                problems.append(f"{path}: {found} (a range is {{low, high[, log, step]}}, a choice {{choices: [...]}})")
        if problems:
            raise ValueError("; ".join(problems))
        return parsed


def put_path(document: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``document`` with ``value`` at the dotted ``path`` (missing mappings are created)."""
    result = dict(document)
    head, _, rest = path.partition(".")
    if not rest:
        result[head] = value
        return result
    inner = result.get(head)
    if inner is not None and not isinstance(inner, dict):
        raise ValueError(f"{head} is {inner!r}, not a mapping, so {path} cannot be set")
    result[head] = put_path(inner or {}, rest, value)
    return result
