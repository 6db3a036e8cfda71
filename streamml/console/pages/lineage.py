"""Lineage: a model version → its dataset version → the raw objects → their topic, partition and offsets.

Both ways: from a raw object, the dataset versions built from it and the
model versions trained on those. Each step shows its content hashes: the
model's files (sha256, from its commit marker), the dataset's splits (sha256
over their sorted rows, from its manifest) and each raw object (its MD5,
from the store's listing).
"""

from __future__ import annotations

from typing import Any

from streamml.console import charts
from streamml.console.pages import NotFound
from streamml.console.pages.models import committed_version, existing_model
from streamml.console.reads import ConsoleRegistry, ModelVersion
from streamml.manifest import DatasetManifest
from streamml.registry.keys import parse_raw_key, raw_dataset

PARTITION_COLOUR, DATASET_COLOUR, MODEL_COLOUR = "#78909c", "#1565c0", "#2e7d32"


def model_lineage(registry: ConsoleRegistry, model: str, version: str) -> dict[str, Any]:
    existing_model(registry, model)
    found = committed_version(registry, model, version)
    dataset, number = found.dataset
    manifest = registry.manifest(dataset, number)
    hashes = registry.raw_hashes(dataset) if manifest else {}
    return {
        "model": model,
        "version": found,
        "marker": registry.version_marker(model, version),
        "dataset": dataset,
        "dataset_version": number,
        "recorded": found.card["dataset"],
        "manifest": manifest,
        "raw": raw_rows(manifest, hashes) if manifest else [],
        "partitions": partition_rows(manifest) if manifest else [],
        "flow_chart": flow_chart(manifest, found) if manifest else None,
    }


def raw_rows(manifest: DatasetManifest, hashes: dict[str, str]) -> list[dict[str, Any]]:
    return [{"source": source, "md5": hashes.get(source.key)} for source in manifest.lineage]


def partition_rows(manifest: DatasetManifest) -> list[dict[str, Any]]:
    """The offset range and rows each topic partition gave the version."""
    grouped: dict[tuple[str, int], dict[str, Any]] = {}
    for source in manifest.lineage:
        row = grouped.setdefault((source.topic, source.partition), {
            "topic": source.topic, "partition": source.partition, "first": source.first_offset,
            "last": source.last_offset, "rows": 0, "objects": 0})
        row["first"] = min(row["first"], source.first_offset)
        row["last"] = max(row["last"], source.last_offset)
        row["rows"] += source.rows
        row["objects"] += 1
    return [grouped[key] for key in sorted(grouped)]


def flow_chart(manifest: DatasetManifest, model: ModelVersion) -> dict[str, Any]:
    partitions = partition_rows(manifest)
    nodes = [f"{p['topic']} p{p['partition']} offsets {p['first']}–{p['last']}" for p in partitions]
    dataset_node = len(nodes)
    nodes += [f"{manifest.dataset} v{manifest.version}", f"{model.model} {model.version}"]
    links = [(index, dataset_node, max(1, p["rows"])) for index, p in enumerate(partitions)]
    links.append((dataset_node, dataset_node + 1, max(1, manifest.rows.get("train", 0))))
    colours = [PARTITION_COLOUR] * len(partitions) + [DATASET_COLOUR, MODEL_COLOUR]
    return charts.lineage_flow(nodes, links, colours)


def raw_lineage(registry: ConsoleRegistry, key: str) -> dict[str, Any]:
    """A raw object, the dataset versions built from it, and the model versions trained on those."""
    raw, dataset = parse_raw_key(key), raw_dataset(key)
    if raw is None or dataset is None:
        raise NotFound(f"{key!r} is not a raw object key (raw/<dataset>/date=<day>/<topic>/p<partition>/"
                       "<first offset>-<last offset>.parquet)")
    md5 = registry.raw_hashes(dataset).get(key)
    used = [manifest for manifest in registry.manifests(dataset)
            if any(source.key == key for source in manifest.lineage)]
    if md5 is None and not used:
        raise NotFound(f"no raw object {key!r} in the store, and no dataset version names it")
    rows = next((source.rows for m in used for source in m.lineage if source.key == key), None)
    return {
        "key": key, "raw": raw, "dataset": dataset, "md5": md5, "rows": rows,
        "datasets": used,
        "models": trained_on(registry, dataset, {manifest.version for manifest in used}),
    }


def trained_on(registry: ConsoleRegistry, dataset: str, versions: set[int]) -> list[ModelVersion]:
    """Every committed model version trained on one of ``versions`` of ``dataset``."""
    if not versions:
        return []
    return [v for name in registry.model_names() for v in registry.versions(name)
            if v.dataset is not None and v.dataset[0] == dataset and v.dataset[1] in versions]
