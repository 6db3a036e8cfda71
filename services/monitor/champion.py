"""What the monitor needs to know about a model's champion, read from the registry.

The reference is the champion's model card (``expected_features``, which the
trainer copies from its dataset's manifest); a card without it falls back to
the manifest it names. The performance baseline is the validator's test
metric from ``decision.json`` with its sampling error, else the card's
validation metric, else none (the change detector still runs).

    champion = read_champion_setup(store, "fraud")      # None before any promotion
    monitor = ModelMonitor(champion.reference, baseline=champion.baseline, ...)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from services.monitor.performance import DEFAULT_METRIC, METRICS, MetricBaseline, PerformanceBaseline
from services.monitor.reference import MonitorReference
from streamml.classes import family, members
from streamml.manifest import DatasetManifest
from streamml.registry.datasets import manifest_at
from streamml.registry.decisions import Evaluation, read_decision
from streamml.registry.keys import RegistryError, dataset_manifest_key
from streamml.registry.models import read_card, read_champion
from streamml.store import ObjectNotFound


@dataclass(frozen=True)
class Champion:
    model: str
    version: str
    reference: MonitorReference
    baseline: PerformanceBaseline | None


def read_champion_version(store: Any, model: str) -> str | None:
    pointer, _ = read_champion(store, model)
    return pointer.version if pointer is not None else None


def read_champion_setup(store: Any, model: str, version: str | None = None) -> Champion | None:
    """The champion (or ``version``) with its reference and baseline; None when there is no champion.

    Raises RegistryError naming the object when the card or its manifest cannot give a reference.
    """
    version = version or read_champion_version(store, model)
    if version is None:
        return None
    card = read_card(store, model, version)
    decision = read_decision(store, model, version)
    manifest = None
    if not card.get("expected_features"):
        manifest = _read_manifest(store, card, model, version)
    return champion_from(model, version, card, decision.candidate if decision else None, manifest,
                         decision.policy if decision else None)


def champion_from(
    model: str,
    version: str,
    card: dict[str, Any],
    test: Evaluation | None = None,
    manifest: DatasetManifest | None = None,
    policy: dict[str, Any] | None = None,
) -> Champion:
    """Pure: the champion's reference and baseline from its card, the validator's test evaluation and the
    promotion policy it applied, and a manifest."""
    where = _card(model, version)
    try:
        if card.get("expected_features"):
            reference = MonitorReference.from_card({**card, "model": model})
        elif manifest is not None:
            reference = MonitorReference.from_manifest(
                manifest,
                model=model,
                prediction=card.get("expected_prediction"),
                classes=(card.get("outputs") or {}).get("classes"),
            )
        else:
            raise RegistryError(f"{where} has no expected_features and names no dataset manifest to read them from")
    except (KeyError, TypeError, ValidationError) as error:
        raise RegistryError(f"{where} does not give a drift reference: {_describe(error)}") from None
    if not reference.features:
        raise RegistryError(f"{where}: the reference has no feature statistics; nothing to compare traffic with")
    return Champion(model, version, reference, baseline_from(card, test, policy))


def baseline_from(
    card: dict[str, Any], test: Evaluation | None, policy: dict[str, Any] | None = None
) -> PerformanceBaseline | None:
    """The metric the trainer selected on, valued by the validator's test run when there is one, and beside
    it every other metric the promotion policy names that the validator valued (``recall_per_class``: the
    recall of each class, ``recall[<class>]``)."""
    task = card.get("task")
    if task not in METRICS:
        return None
    metric = (card.get("selection") or {}).get("metric") or DEFAULT_METRIC[task]
    if metric not in METRICS[task]:
        metric = DEFAULT_METRIC[task]
    value = test.metrics.get(metric) if test is not None else None
    # The validator's sampling error of its test metric; unknown for older decisions and for the card's metric.
    error = _standard_error(test, metric) if test is not None and value is not None else None
    if value is None:
        value = (card.get("metrics") or {}).get(metric)
    classes = (card.get("outputs") or {}).get("classes")
    # A per-class metric is watched on each class the validator valued it for.
    named = [name for rule in policy_metrics(policy) for name in members(rule, test.metrics)] if test else []
    others = {
        name: MetricBaseline(value=test.metrics[name], standard_error=_standard_error(test, name))
        for name in named
        if name != metric and family(name) in METRICS[task] and test.metrics.get(name) is not None
    }
    return PerformanceBaseline(
        task=task,
        metric=metric,
        value=value,
        standard_error=error,
        classes=classes if task == "multiclass" else None,
        others=others,
    )


def policy_metrics(policy: dict[str, Any] | None) -> list[str]:
    """The metrics a promotion policy's model-wide rules name (floors, ceilings, against the champion)."""
    rules = [(policy or {}).get(field) or {} for field in ("min", "max", "max_regression", "min_improvement")]
    return list(dict.fromkeys(name for rule in rules for name in rule))


def _standard_error(test: Evaluation, metric: str) -> float | None:
    interval = test.intervals.get(metric)
    return interval.standard_error if interval is not None else None


def _read_manifest(store: Any, card: dict[str, Any], model: str, version: str) -> DatasetManifest | None:
    dataset = card.get("dataset") or {}
    key = dataset.get("manifest_key")
    if key is None and dataset.get("name") and dataset.get("version"):
        key = dataset_manifest_key(dataset["name"], dataset["version"])
    if key is None:
        return None
    try:
        return manifest_at(store, key)
    except ObjectNotFound:
        raise RegistryError(f"{_card(model, version)} names manifest {key!r}, which does not exist") from None


def _card(model: str, version: str) -> str:
    return f"the model card of {model} {version}"


def _describe(error: Exception) -> str:
    if isinstance(error, ValidationError):
        return "; ".join(
            f"{'.'.join(map(str, item['loc']))}: {item['msg']}" for item in error.errors(include_url=False)[:5]
        )
    if isinstance(error, KeyError):
        return f"missing {error.args[0]!r}"
    return str(error)
