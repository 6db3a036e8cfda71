"""Models: each model and its champion; a model's versions, decisions and promotions; one version in full.

Who moved a champion and why comes from the pointer itself (``champion.json``
names the last move) and from ``model.promoted``, which Kafka keeps for ever
and the live feed reads from the start: every move, the validator's and a
person's alike.
"""

from __future__ import annotations

from typing import Any

from streamml.console import charts
from streamml.console.live import EventLog
from streamml.console.pages import NotFound
from streamml.console.reads import ConsoleRegistry, ModelVersion
from streamml.registry.decisions import DecisionRecord
from streamml.registry.keys import RegistryError

POLICY_RULES = {
    "min": "floor",
    "max": "ceiling",
    "min_improvement": "improvement on the champion, at least",
    "max_regression": "regression against the champion, at most",
}


def models_overview(registry: ConsoleRegistry) -> dict[str, Any]:
    rows = []
    for name in registry.model_names():
        versions = registry.versions(name)
        committed = [v for v in versions if v.committed]
        rows.append({"name": name, "champion": registry.champion(name), "versions": len(committed),
                     "latest": committed[-1] if committed else None})
    return {"models": rows}


def existing_model(registry: ConsoleRegistry, model: str) -> str:
    try:
        names = registry.model_names()
    except RegistryError:
        names = []
    if model not in names:
        known = ", ".join(names) or "none yet"
        raise NotFound(f"no model {model!r} in the registry (models: {known})")
    return model


def model_page(registry: ConsoleRegistry, events: EventLog, model: str) -> dict[str, Any]:
    existing_model(registry, model)
    champion = registry.champion(model)
    versions = registry.versions(model)
    committed = [v for v in versions if v.committed]
    metric_names = sorted({name for v in committed for name in v.test_metrics()})
    values = {name: [v.test_metrics().get(name) for v in committed] for name in metric_names}
    names = [v.version for v in committed]
    champion_version = champion.version if champion else None
    return {
        "model": model,
        "champion": champion,
        "versions": versions,
        "metric_names": metric_names,
        "charts": [charts.version_metrics(names, values, champion_version, name) for name in metric_names],
        "promotions": list(reversed(events.promotions_of(model))),
        "feed_caught_up": events.caught_up.is_set(),
        "promotable": [v.version for v in reversed(committed) if v.version != champion_version],
    }


def version_page(registry: ConsoleRegistry, model: str, version: str) -> dict[str, Any]:
    existing_model(registry, model)
    found = committed_version(registry, model, version)
    champion = registry.champion(model)
    decision = found.decision
    return {
        "model": model,
        "version": found,
        "card": found.card,
        "marker": registry.version_marker(model, version),
        "is_champion": champion is not None and champion.version == version,
        "champion": champion,
        "decision": decision,
        "evaluation": evaluation_rows(decision) if decision else [],
        "policy": policy_rows(decision) if decision else [],
        "slices": slice_rows(decision) if decision else [],
        "history_chart": charts.training_history(found.card["history"]) if found.card.get("history") else None,
    }


def committed_version(registry: ConsoleRegistry, model: str, version: str) -> ModelVersion:
    try:
        found = registry.version(model, version)
    except RegistryError:
        found = None
    if found is None or not found.committed:
        state = "is not committed yet" if found is not None else "does not exist"
        raise NotFound(f"version {version!r} of model {model!r} {state}")
    return found


def evaluation_rows(decision: DecisionRecord) -> list[dict[str, Any]]:
    """Each metric of the candidate next to the champion's, on the same test rows."""
    champion = decision.champion.metrics if decision.champion else {}
    names = sorted(set(decision.candidate.metrics) | set(champion))
    return [{"metric": name, "candidate": decision.candidate.metrics.get(name),
             "interval": decision.candidate.intervals.get(name), "champion": champion.get(name)}
            for name in names]


def policy_rows(decision: DecisionRecord) -> list[dict[str, Any]]:
    """Every threshold of the policy applied, next to the candidate's (and the champion's) value."""
    policy = decision.policy
    champion = decision.champion.metrics if decision.champion else {}
    rows = []
    for field, rule in POLICY_RULES.items():
        for metric, threshold in sorted((policy.get(field) or {}).items()):
            rows.append({"rule": rule, "metric": metric, "threshold": threshold,
                         "candidate": decision.candidate.metrics.get(metric), "champion": champion.get(metric)})
    for rule in policy.get("slices") or []:
        for field in ("min", "max"):
            for metric, threshold in sorted((rule.get(field) or {}).items()):
                rows.append({"rule": f"{POLICY_RULES[field]} on each {rule['feature']} slice "
                                     f"(at least {rule.get('min_rows', 0)} rows)",
                             "metric": metric, "threshold": threshold, "candidate": None, "champion": None})
    latency = policy.get("latency")
    if latency:
        measured = decision.candidate.latency
        theirs = decision.champion.latency if decision.champion else None
        rows.append({"rule": f"p95 latency at batch {latency['batch_size']}, at most", "metric": "p95 ms",
                     "threshold": latency["p95_ms"], "candidate": measured.p95_ms if measured else None,
                     "champion": theirs.p95_ms if theirs else None})
    return rows


def slice_rows(decision: DecisionRecord) -> list[dict[str, Any]]:
    champion = decision.champion.slices if decision.champion else {}
    rows = []
    for feature, values in sorted(decision.candidate.slices.items()):
        for value, evaluation in sorted(values.items()):
            theirs = champion.get(feature, {}).get(value)
            rows.append({"slice": f"{feature}={value}", "rows": evaluation.rows, "candidate": evaluation.metrics,
                         "champion": theirs.metrics if theirs else {}})
    return rows
