"""A synthetic champion in the model registry, for tests and demos of the monitor without a trained model.

The card has the shape the trainer writes (``services/trainer/artifact.py``)
with the feature statistics of ``synthetic.training_reference``; no weights.

    reference, baseline = training_reference()
    put_champion(store, synthetic_card(reference, "v1", baseline))
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from services.monitor.performance import PerformanceBaseline
from services.monitor.reference import MonitorReference
from streamml.registry.keys import CARD_FILE, attempt_prefix, champion_key, dataset_manifest_key, model_manifest_key
from streamml.registry.models import ChampionPointer, VersionManifest


def synthetic_card(
    reference: MonitorReference,
    version: str,
    baseline: PerformanceBaseline,
    *,
    expected_prediction: bool = False,
) -> dict[str, Any]:
    """A model card for ``reference``; the prediction reference only when ``expected_prediction``."""
    card = {
        "model": reference.model,
        "version": version,
        "created": datetime.now(UTC).isoformat(),
        "task": baseline.task,
        "dataset": {
            "name": reference.dataset,
            "version": reference.dataset_version,
            "manifest_key": dataset_manifest_key(reference.dataset, reference.dataset_version or 1),
        },
        "metrics": {baseline.metric: baseline.value},
        "selection": {"metric": baseline.metric, "mode": baseline.better},
        "outputs": {"meaning": "probability that the label is 1, shape [N]", "label": "label",
                    "classes": reference.classes},
        "expected_features": {name: ref.model_dump(mode="json") for name, ref in reference.features.items()},
        "expected_label": None,
    }
    if expected_prediction and reference.prediction is not None:
        card["expected_prediction"] = reference.prediction.model_dump(mode="json")
    return card


def put_champion(store: Any, card: dict[str, Any], reason: str = "synthetic champion") -> ChampionPointer:
    """Commit a version holding the card and point the champion at it (unconditionally: for tests and demos)."""
    model, version = card["model"], card["version"]
    data = json.dumps(card).encode()
    prefix = attempt_prefix(model, version, "synthetic")
    store.put(prefix + CARD_FILE, data)
    manifest = VersionManifest.of(model, version, prefix, {CARD_FILE: data}, datetime.now(UTC))
    store.put(model_manifest_key(model, version), manifest.to_bytes())
    pointer = ChampionPointer(version=version, actor="synthetic", reason=reason, time=datetime.now(UTC))
    store.put(champion_key(model), pointer.to_bytes())
    return pointer
