"""Judging a version in shadow on live traffic: join, metrics, rules. Pure functions.

Applications log each request's answer twice to ``predictions.<model>``: the
champion's (served) and the shadow's (``shadow: true``, with the time of its
predict call). ``join_live`` pairs them with the ``feedback.<model>`` label of
the same request id, keeping only requests all three exist for, so both versions
are measured on exactly the same labelled requests. A request id seen twice (a
redelivered message) counts once. ``judge_live`` applies the policy's shadow rules
and lists every rule with its live value::

    joined = join_live(champion, shadow, feedback)
    verdict, evidence = judge_live(task, classes, joined, policy.shadow, started=..., ended=...)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pyarrow as pa

from services.validator.decide import TOLERANCE, Decision, pair
from services.validator.evaluation import evaluate
from services.validator.metrics import Task
from services.validator.policy import HIGHER_IS_BETTER, ShadowPolicy
from streamml.classes import class_texts, members, value_text
from streamml.registry.decisions import ShadowEvidence


@dataclass(frozen=True)
class Answers:
    """One version's logged answers: request ids, outputs ([N] or [N, K]), and for the shadow the call times."""

    request_ids: list[str]
    outputs: np.ndarray
    latency_ms: np.ndarray | None = None


@dataclass(frozen=True)
class Joined:
    """Rows of the labelled requests both versions answered, in the same order for each."""

    champion: np.ndarray
    shadow: np.ndarray
    labels: list
    latency_ms: np.ndarray  # the shadow's call time of each row

    @property
    def rows(self) -> int:
        return len(self.labels)


def _first_rows(ids: Sequence[str], column: str) -> pa.Table:
    """One row per id (its first), with the row's index in ``ids``."""
    table = pa.table({"id": pa.array(list(ids), pa.string()), column: pa.array(np.arange(len(ids)))})
    return table.group_by("id").aggregate([(column, "min")]).rename_columns(["id", column])


def join_live(champion: Answers, shadow: Answers, labels: tuple[Sequence[str], Sequence]) -> Joined:
    """The requests with a champion answer, a shadow answer and a label; ``labels``: (request ids, labels)."""
    label_ids, label_values = labels
    joined = (_first_rows(champion.request_ids, "c")
              .join(_first_rows(shadow.request_ids, "s"), "id", join_type="inner")
              .join(_first_rows(label_ids, "l"), "id", join_type="inner")
              .sort_by("l"))  # feedback arrival order: a stable result for the same input
    c, s, l = (joined[name].to_numpy() for name in ("c", "s", "l"))
    latency = shadow.latency_ms[s] if shadow.latency_ms is not None else np.full(len(s), np.nan)
    return Joined(np.asarray(champion.outputs)[c], np.asarray(shadow.outputs)[s],
                  [label_values[i] for i in l.tolist()], latency)


def scored_labels(task: Task, labels: list, classes: Sequence | None) -> tuple[np.ndarray, np.ndarray]:
    """Labels as outputs are scored against (class indices for multiclass), and which rows could be read."""
    if task == "multiclass":
        index = {text: i for i, text in enumerate(class_texts(list(classes or [])))}
        coded = [index.get(value_text(value)) for value in labels]
        readable = np.array([code is not None for code in coded], dtype=bool)
        return np.array([code for code in coded if code is not None], dtype=np.int64), readable
    values = []
    for value in labels:
        try:
            values.append(float(value if not isinstance(value, str) else {"true": 1, "false": 0}.get(value, value)))
        except (TypeError, ValueError):
            values.append(np.nan)
    numbers = np.asarray(values, dtype=np.float64)
    readable = np.isfinite(numbers)
    return numbers[readable], readable


def disagreement(task: Task, champion: np.ndarray, shadow: np.ndarray) -> float | None:
    """Share of rows whose predicted class differs; None for regression or no rows."""
    if task == "regression" or len(champion) == 0:
        return None
    if task == "multiclass":
        return float(np.mean(np.argmax(champion, axis=1) != np.argmax(shadow, axis=1)))
    return float(np.mean((champion >= 0.5) != (shadow >= 0.5)))


def judge_live(
    task: Task, classes: Sequence | None, joined: Joined, policy: ShadowPolicy, *, started: datetime,
    ended: datetime, timed_out: bool,
) -> tuple[Decision, ShadowEvidence]:
    """Every shadow rule with its live value; ``timed_out``: the deadline passed before enough rows came."""
    labels, readable = scored_labels(task, joined.labels, classes)
    champion, shadow = joined.champion[readable], joined.shadow[readable]
    latency = joined.latency_ms[readable]
    rows = int(readable.sum())
    failed: list[str] = []
    notes: list[str] = [f"shadow judged on {rows} labelled live requests both versions answered"]
    if rows < len(joined.labels):
        notes.append(f"{len(joined.labels) - rows} live labels could not be read as this model's labels")
    enough = rows >= policy.min_predictions
    if not enough:
        waited = "within max_duration_s" if timed_out else "so far"
        failed.append(f"not enough live evidence: {rows} labelled requests < min_predictions "
                      f"{policy.min_predictions} {waited} {policy.max_duration_s:g} s")
    names = class_texts(list(classes)) if classes else None
    mine = evaluate(task, shadow, labels, classes=names).metrics if rows else {}
    theirs = evaluate(task, champion, labels, classes=names).metrics if rows else {}
    disagree = disagreement(task, champion, shadow)
    timed = latency[np.isfinite(latency)]
    p95 = float(np.percentile(timed, 95)) if timed.size else None
    # Without enough rows the rules' values are shown in the notes, not judged.
    verdict = failed if enough else notes
    for rule in policy.rules:
        if rule.max_regression is not None:
            for name in members(rule.metric, {**mine, **theirs}) or [rule.metric]:
                a, b = mine.get(name), theirs.get(name)
                if a is None or b is None:
                    verdict.append(
                        f"live {name} cannot be compared: shadow has {a}, champion has {b}")
                    continue
                gain = a - b if HIGHER_IS_BETTER[rule.metric] else b - a
                holds = -gain <= rule.max_regression + TOLERANCE
                shown, held = pair(a, b)
                text = (f"live {name} {shown} vs champion {held}: {'no worse' if gain >= 0 else f'{-gain:.4g} worse'} "
                        f"(max_regression {rule.max_regression:g})")
                (notes if holds else verdict).append(text)
        elif rule.max_disagreement is not None:
            if disagree is None:
                verdict.append("live disagreement is undefined (regression or no rows)")
                continue
            holds = disagree <= rule.max_disagreement + TOLERANCE
            (notes if holds else verdict).append(
                f"live disagreement {disagree:.4g} {'<=' if holds else '>'} max_disagreement {rule.max_disagreement:g}")
        else:
            if p95 is None:
                verdict.append("live latency was not logged by the applications")
                continue
            holds = p95 <= rule.max_latency_p95_ms
            (notes if holds else verdict).append(
                f"live latency p95 {p95:.4g} ms {'<=' if holds else '>'} max_latency_p95_ms {rule.max_latency_p95_ms:g}")
    evidence = ShadowEvidence(rows=rows, started=started, ended=ended, candidate=mine, champion=theirs,
                              disagreement=disagree, latency_p95_ms=p95)
    return Decision(promote=not failed, reasons=failed, notes=notes), evidence
