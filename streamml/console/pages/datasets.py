"""Datasets: each dataset's versions, rows per split and trigger; one version's statistics and reference plots."""

from __future__ import annotations

from typing import Any

from streamml.console import charts
from streamml.console.pages import NotFound
from streamml.console.pages.lineage import partition_rows, trained_on
from streamml.console.reads import ConsoleRegistry
from streamml.manifest import SPLITS, CategoryReference, DatasetManifest, NumericReference


def datasets_overview(registry: ConsoleRegistry) -> dict[str, Any]:
    rows = []
    for name in registry.dataset_names():
        manifests = registry.manifests(name)
        rows.append({"name": name, "versions": len(manifests), "latest": manifests[-1] if manifests else None})
    return {"datasets": rows}


def dataset_page(registry: ConsoleRegistry, dataset: str) -> dict[str, Any]:
    names = registry.dataset_names()
    if dataset not in names:
        raise NotFound(f"no dataset {dataset!r} in the store (datasets: {', '.join(names) or 'none yet'})")
    manifests = registry.manifests(dataset)
    labels = [f"v{m.version}" for m in manifests]
    rows = {split: [m.rows.get(split, 0) for m in manifests] for split in SPLITS}
    return {"dataset": dataset, "manifests": list(reversed(manifests)),
            "rows_chart": charts.rows_per_version(labels, rows) if manifests else None}


def dataset_version_page(registry: ConsoleRegistry, dataset: str, version: int) -> dict[str, Any]:
    manifest = registry.manifest(dataset, version) if dataset in registry.dataset_names() else None
    if manifest is None:
        raise NotFound(f"dataset {dataset!r} has no committed version v{version}")
    features = [{"name": name, "transform": manifest.transform.get(name), "reference": manifest.reference.get(name),
                 "chart": reference_chart(name, manifest.reference[name])}
                for name in manifest.features if name in manifest.reference]
    label = manifest.label_reference
    return {
        "dataset": dataset,
        "manifest": manifest,
        "features": features,
        "label_chart": reference_chart(f"label {manifest.label}", label) if label is not None else None,
        "partitions": partition_rows(manifest),
        "models": trained_on(registry, dataset, {version}),
        "drift_event": drift_event_id(manifest),
    }


def reference_chart(name: str, reference: NumericReference | CategoryReference) -> dict[str, Any]:
    if isinstance(reference, NumericReference):
        if reference.sample:
            return charts.reference_histogram(name, reference.sample, reference.count)
        return charts.reference_distribution(name, reference.bin_labels(), reference.fractions)
    ordered = sorted(reference.frequencies.items(), key=lambda item: -item[1])
    return charts.reference_distribution(name, [k for k, _ in ordered], [v for _, v in ordered])


def drift_event_id(manifest: DatasetManifest) -> str | None:
    """The CloudEvents id of the drift.detected a version was built for (trigger ``drift:<id>``)."""
    kind, _, detail = manifest.trigger.partition(":")
    return detail if kind == "drift" and detail else None
