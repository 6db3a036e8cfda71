"""The validator's decision on a model version: ``models/<name>/<version>/decision.json``.

The validator writes one per version it judged (the first written stands,
``services/validator/promote.py``); ``streamml models``, the monitor (its
performance baseline) and any console read it here.

    decision = read_decision(store, "fraud", "d3-1f2e3d4c")   # None: never judged
    decision.promote, decision.summary, decision.candidate.metrics["auc"]

An undefined metric (NaN: AUC of a one-class slice) is stored as ``None`` so
the file stays standard JSON.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from streamml.registry.documents import parse_document, read_document
from streamml.registry.keys import VERSION, decision_key
from streamml.store import ObjectNotFound, ReadableStore


class Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _nan_to_none(metrics: dict[str, float | None]) -> dict[str, float | None]:
    return {name: None if value is None or math.isnan(value) else value for name, value in metrics.items()}


class SliceEvaluation(Strict):
    rows: int = Field(ge=0)
    metrics: dict[str, float | None]

    undefined_is_none = field_validator("metrics")(_nan_to_none)


class Latency(Strict):
    p50_ms: float = Field(ge=0)
    p95_ms: float = Field(ge=0)
    batch_size: int = Field(ge=1)
    calls: int = Field(ge=1, description="timed calls per round")
    round_p95_ms: list[float] = Field(
        default_factory=list, description="p95 of each round; p50_ms and p95_ms come from the lowest"
    )


class MetricInterval(Strict):
    """A metric's sampling error on the test split and its 95% normal interval."""

    standard_error: float = Field(ge=0)
    low: float
    high: float
    method: Literal["delong", "mean", "delta"] = Field(
        description="delong: AUC; mean: a mean of per-row losses; delta: RMSE from the squared errors' mean"
    )


class Evaluation(Strict):
    """One version's test-split metrics, overall and per slice, and how fast it answers."""

    rows: int = Field(ge=0, description="test rows the metrics come from")
    metrics: dict[str, float | None]
    intervals: dict[str, MetricInterval] = Field(
        default_factory=dict, description="metric -> its sampling error; absent where the metric is undefined"
    )
    slices: dict[str, dict[str, SliceEvaluation]] = Field(
        default_factory=dict, description="feature -> value -> metrics of the rows with that value"
    )
    latency: Latency | None = None

    undefined_is_none = field_validator("metrics")(_nan_to_none)


class JudgedRows(Strict):
    """The held-out rows a version was judged on (the champion on the same rows)."""

    dataset: str
    dataset_version: int = Field(ge=1)
    split: Literal["test"] = "test"
    rows: int = Field(ge=0)
    after_drift: bool = Field(description="the version answers a drift: its test split holds post-drift rows only")
    drift_event: str | None = Field(None, description="id of the drift.detected the dataset version answers")
    drift_point: datetime | None = Field(None, description="rows landed at or after this are post-drift")

    @property
    def text(self) -> str:
        rows = f"test split of {self.dataset} v{self.dataset_version}, {self.rows} rows"
        if not self.after_drift:
            return rows
        return f"{rows}, all landed after the drift at {self.drift_point:%Y-%m-%d %H:%M:%S} (event {self.drift_event})"


class ShadowEvidence(Strict):
    """What a version in shadow showed on live traffic, beside the champion, on the same labelled requests."""

    rows: int = Field(ge=0, description="labelled live requests that both versions answered")
    started: datetime
    ended: datetime
    candidate: dict[str, float | None] = Field(description="live metrics of the version in shadow")
    champion: dict[str, float | None] = Field(description="live metrics of the champion on the same requests")
    disagreement: float | None = Field(None, description="share of those requests the two answered differently")
    latency_p95_ms: float | None = Field(None, description="p95 of the shadow's predict calls, as applications timed them")

    undefined_is_none = field_validator("candidate", "champion")(_nan_to_none)


class EarlierDecision(Strict):
    """A decision that a later judgement of the same version replaced (``streamml models judge``)."""

    promote: bool
    summary: str
    actor: str
    time: datetime
    policy: dict[str, Any]


class DecisionRecord(Strict):
    """The content of ``models/<name>/<version>/decision.json``."""

    model: str
    version: str = Field(pattern=VERSION)
    promote: bool
    reasons: list[str] = Field(description="every failed rule; empty exactly when promote is true")
    notes: list[str] = Field(description="rules that held, and what could not be judged")
    candidate: Evaluation
    champion_version: str | None = Field(description="the champion the candidate was compared with")
    champion: Evaluation | None
    policy: dict[str, Any] = Field(description="the promotion policy applied, as services/validator/policy.py reads it")
    actor: str
    time: datetime
    judged_on: JudgedRows | None = Field(None, description="the rows both versions were evaluated on")
    shadow: ShadowEvidence | None = Field(None, description="live evidence, when the policy asked for a shadow phase")
    earlier: list[EarlierDecision] = Field(
        default_factory=list, description="decisions on this version that this one replaced, oldest first")

    @property
    def summary(self) -> str:
        return "; ".join(self.notes if self.promote else self.reasons)

    def replacing(self, earlier: DecisionRecord) -> DecisionRecord:
        """This decision, recording ``earlier`` (and what it replaced) as replaced."""
        replaced = EarlierDecision(promote=earlier.promote, summary=earlier.summary, actor=earlier.actor,
                                   time=earlier.time, policy=earlier.policy)
        return self.model_copy(update={"earlier": [*earlier.earlier, replaced]})


def read_decision(store: ReadableStore, model: str, version: str) -> DecisionRecord | None:
    """The decision on a version; None when the validator has not judged it."""
    return read_document(store, decision_key(model, version), DecisionRecord, "a decision record",
                         "delete it to judge the version again")


def read_decision_to_replace(store: ReadableStore, model: str, version: str) -> tuple[DecisionRecord, str] | None:
    """The decision on a version and its ETag, for a judgement that replaces it; None when never judged."""
    key = decision_key(model, version)
    try:
        stored = store.get(key)
    except ObjectNotFound:
        return None
    return parse_document(stored.data, key, DecisionRecord, "a decision record", "delete it to judge the version again"), \
        stored.etag
