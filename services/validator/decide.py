"""The promotion decision: a candidate's evaluation against the policy and the champion.

``decide`` is pure: it reads two evaluations and a policy and says promote or
not, listing every rule that failed with the numbers that made it fail
("auc 0.71 < floor 0.8") and, in ``notes``, every rule that held or could not
be judged. Both evaluations must come from the same test split, so the
champion is re-evaluated on the candidate's split before calling it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from services.validator.policy import HIGHER_IS_BETTER, LatencyBudget, PromotionPolicy, SlicePolicy
from streamml.classes import PER_CLASS, members
from streamml.registry.decisions import Evaluation, JudgedRows, Latency

# Differences of nearly equal floats (0.83 - 0.82) miss their threshold by ~1e-17.
TOLERANCE = 1e-12


class Decision(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    promote: bool
    reasons: list[str]  # every failed rule; empty exactly when promote is true
    notes: list[str]  # rules that held, and what could not be judged

    @property
    def summary(self) -> str:
        return "; ".join(self.reasons if not self.promote else self.notes)


class _Verdict:
    def __init__(self) -> None:
        self.failed: list[str] = []
        self.notes: list[str] = []

    def check(self, holds: bool, text: str) -> None:
        (self.notes if holds else self.failed).append(text)


def decide(
    candidate: Evaluation, champion: Evaluation | None, policy: PromotionPolicy, judged: JudgedRows | None = None
) -> Decision:
    verdict = _Verdict()
    _judged_rows(verdict, judged, policy.min_rows_after_drift)
    _bounds(verdict, candidate.metrics, policy.min, policy.max)
    for rule in policy.slices:
        _slice(verdict, candidate, rule)
    if policy.latency is not None:
        _latency(verdict, candidate.latency, policy.latency)
    _against_champion(verdict, candidate, champion, policy)
    return Decision(promote=not verdict.failed, reasons=verdict.failed, notes=verdict.notes)


def _judged_rows(verdict: _Verdict, judged: JudgedRows | None, needed: int | None) -> None:
    """A candidate built for a drift must be judged on enough rows from after it."""
    if judged is None or not judged.after_drift:
        return
    if needed is None:
        verdict.notes.append(f"judged on {judged.rows} post-drift test rows")
        return
    holds = judged.rows >= needed
    verdict.check(holds, f"{judged.rows} post-drift test rows {'>=' if holds else '<'} min_rows_after_drift {needed}")


def _bounds(
    verdict: _Verdict,
    metrics: dict[str, float | None],
    floors: dict[str, float],
    ceilings: dict[str, float],
    where: str = "",
) -> None:
    """Floors and ceilings; ``where`` names a slice, in which an undefined metric is not judged. A per-class
    metric is bounded on each class; a class without rows here is not judged."""
    for bounds, floor in ((floors, True), (ceilings, False)):
        for metric, bound in bounds.items():
            names = members(metric, metrics)
            if not names:
                have = ", ".join(sorted(metrics)) or "none"
                verdict.check(False, f"{metric} is not among the candidate's metrics{where} (it has: {have})")
                continue
            for name in names:
                value = metrics[name]
                if value is None:
                    # One class in a small slice leaves AUC undefined: no evidence either way.
                    if where or metric in PER_CLASS:
                        verdict.notes.append(f"{name} is undefined{where or ' on the test split'}: not judged")
                    else:
                        verdict.check(False, f"{name} is undefined on the test split")
                    continue
                shown, limit = pair(value, bound)
                holds = value >= bound if floor else value <= bound
                relation = (">=" if holds else "<") if floor else ("<=" if holds else ">")
                verdict.check(holds, f"{name} {shown} {relation} {'floor' if floor else 'ceiling'} {limit}{where}")


def _slice(verdict: _Verdict, candidate: Evaluation, rule: SlicePolicy) -> None:
    values = candidate.slices.get(rule.feature)
    if values is None:
        verdict.check(False, f"slice metrics for {rule.feature} were not computed; the policy has rules for them")
        return
    for value, evaluation in sorted(values.items()):
        where = f" on {rule.feature}={value} ({evaluation.rows} rows)"
        if evaluation.rows < rule.min_rows:
            verdict.notes.append(
                f"{rule.feature}={value} not judged: {evaluation.rows} rows < min_rows {rule.min_rows}"
            )
            continue
        _bounds(verdict, evaluation.metrics, rule.min, rule.max, where)


def _latency(verdict: _Verdict, measured: Latency | None, budget: LatencyBudget) -> None:
    batch = budget.batch_size
    if measured is None:
        verdict.check(False, f"latency was not measured; the budget is p95 {budget.p95_ms:g} ms at batch {batch}")
    elif measured.batch_size != batch:
        verdict.check(False, f"latency was measured at batch {measured.batch_size}; the budget is for batch {batch}")
    else:
        shown, limit = pair(measured.p95_ms, budget.p95_ms)
        holds = measured.p95_ms <= budget.p95_ms
        verdict.check(holds, f"latency p95 {shown} ms {'<=' if holds else '>'} budget {limit} ms at batch {batch}")


def _against_champion(
    verdict: _Verdict, candidate: Evaluation, champion: Evaluation | None, policy: PromotionPolicy
) -> None:
    compared = sorted(set(policy.max_regression) | set(policy.min_improvement))
    if champion is None:
        if compared:
            verdict.notes.append("no champion yet: max_regression and min_improvement do not apply")
        return
    pairs = [(metric, name) for metric in compared for name in _compared_names(metric, candidate, champion)]
    for metric, name in pairs:
        mine, theirs = candidate.metrics.get(name), champion.metrics.get(name)
        if mine is None or theirs is None:
            if name != metric:  # one class: without test rows, or only one of the two models knows it
                verdict.notes.append(f"{name} not compared with the champion: candidate has {_text(mine)}, "
                                     f"champion has {_text(theirs)}")
            else:
                verdict.check(False, f"cannot compare {name} with the champion: candidate has {_text(mine)}, "
                                     f"champion has {_text(theirs)}")
            continue
        # Positive when the candidate is better, in the metric's own direction.
        gain = mine - theirs if HIGHER_IS_BETTER[metric] else theirs - mine
        shown, held = pair(mine, theirs)
        if metric in policy.max_regression:
            allowed = policy.max_regression[metric]
            holds = -gain <= allowed + TOLERANCE
            if gain >= 0:
                text = f"{name} {shown} is no worse than champion {held}"
            else:
                text = f"{name} {shown} is {_num(-gain)} worse than champion {held} (max_regression {allowed:g})"
            verdict.check(holds, text)
        if metric in policy.min_improvement:
            needed = policy.min_improvement[metric]
            holds = gain >= needed - TOLERANCE
            if gain < 0:
                text = f"{name} {shown} is {_num(-gain)} worse than champion {held} (min_improvement {needed:g})"
            else:
                text = f"{name} {shown} improves on champion {held} by {_num(gain)} (min_improvement {needed:g})"
            verdict.check(holds, text)


def _compared_names(metric: str, candidate: Evaluation, champion: Evaluation) -> list[str]:
    """What comparing ``metric`` compares: the metric, or each class either model has a recall of."""
    if metric not in PER_CLASS:
        return [metric]
    names = members(metric, {**candidate.metrics, **champion.metrics})
    return names or [metric]  # neither measured it: reported as not comparable


def _num(value: float) -> str:
    return f"{value:.4g}"


def _text(value: float | None) -> str:
    return "none" if value is None else _num(value)


def pair(a: float, b: float) -> tuple[str, str]:
    """Both numbers with 4 significant digits, or more when 4 would print them equal."""
    for digits in range(4, 17):
        left, right = f"{a:.{digits}g}", f"{b:.{digits}g}"
        if left != right or a == b:
            return left, right
    return left, right
