"""``streamml datasets``: dataset specs, and the versions prep committed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from streamml.cli.common import StateDir, check_files, connect_store, console, fail

app = typer.Typer(help="Dataset specs and versions.", no_args_is_help=True)


@app.command("validate")
def datasets_validate(
    files: Annotated[list[Path], typer.Argument(help="dataset spec YAML files")],
) -> None:
    """Check dataset specs and report every problem at once."""
    from streamml.specs import SpecError, load_dataset_spec

    def check(path: Path) -> tuple[str, list[str]]:
        try:
            spec = load_dataset_spec(path)
        except SpecError as error:
            return "", error.problems
        time = f"event time {spec.event_time!r}" if spec.event_time else "event time: the Kafka timestamp"
        return (f"dataset {spec.name!r}, {len(spec.fields)} fields, {time}, topic {spec.ingest_topic}, "
                f"fingerprint {spec.fingerprint()}"), []

    check_files(files, check)


@app.command("list")
def datasets_list(
    name: Annotated[str | None, typer.Argument(help="one dataset (default: all)")] = None,
    state_dir: StateDir = None,
) -> None:
    """Committed versions of each dataset: rows per split, trigger, raw objects; and a pending drift build."""
    from streamml.registry.datasets import committed_manifests, dataset_names
    from streamml.registry.drift_requests import read_drift_request

    store = connect_store(state_dir)
    names = [name] if name else dataset_names(store)
    table = Table("dataset", "version", "created", "train", "validation", "test", "trigger", "raw objects")
    for dataset in names:
        for m in committed_manifests(store, dataset):
            trigger = m.trigger if m.drift is None else (
                f"{m.trigger} ({m.drift.training_window}: {m.drift.rows_before} rows before, "
                f"{m.drift.rows_after} after)")
            table.add_row(dataset, f"v{m.version}", m.created.strftime("%Y-%m-%d %H:%M:%S"), str(m.rows["train"]),
                          str(m.rows["validation"]), str(m.rows["test"]), trigger, str(len(m.lineage)))
    console.print(table)
    for dataset in names:
        request = read_drift_request(store, dataset)
        if request is not None:
            reason = request.status.reason if request.status else "not looked at by prep yet"
            console.print(f"{dataset}: drift build pending since {request.requested:%Y-%m-%d %H:%M:%S} "
                          f"({request.kind} drift of {request.model}, event {request.event_id}): {reason}",
                          highlight=False)


@app.command("show")
def datasets_show(
    ref: Annotated[str, typer.Argument(help="NAME or NAME:VERSION (default: the newest)")],
    state_dir: StateDir = None,
) -> None:
    """One version's manifest: rows, hashes, lineage and feature statistics."""
    from streamml.registry.datasets import latest_manifest, read_manifest
    from streamml.store import ObjectNotFound

    store = connect_store(state_dir)
    name, _, version = ref.partition(":")
    try:
        manifest = read_manifest(store, name, int(version.lstrip("v"))) if version else latest_manifest(store, name)
    except (ObjectNotFound, ValueError):
        manifest = None
    if manifest is None:
        fail(f"no committed version {ref!r}; see `streamml datasets list`", 2)
    console.print(f"[bold]{manifest.dataset} v{manifest.version}[/bold] created {manifest.created:%Y-%m-%d %H:%M:%S}, "
                  f"trigger {manifest.trigger}, engine {manifest.engine}, code {manifest.code_version}")
    source = ("each record's Kafka timestamp (the spec names no event_time)"
              if manifest.event_time_source == "kafka_timestamp" else "a field of the records")
    console.print(f"  event time {manifest.event_time}: {source}", highlight=False)
    if manifest.engine_reason is not None:
        console.print(f"  engine {manifest.engine}: {manifest.engine_reason}", highlight=False)
    if manifest.rows_since is not None:
        console.print(f"  reads landed rows since {manifest.rows_since:%Y-%m-%d %H:%M:%S} (a drift build's window)",
                      highlight=False)
    if (drift := manifest.drift) is not None:
        waited = f"; built after max_wait_s with {drift.landed_rows_after} landed" if drift.waited_out else ""
        weights = f" (rows weighed by recency: half_life_s {drift.half_life_s:g})" if drift.half_life_s else ""
        console.print(f"  built for the {drift.kind} drift of {drift.model} (event {drift.event_id}), drift point "
                      f"{drift.point:%Y-%m-%d %H:%M:%S}: window {drift.training_window}{weights}, "
                      f"{drift.rows_before} rows "
                      f"before, {drift.rows_after} after; test split post-drift only "
                      f"({drift.test_rows_left_out} older test rows left out){waited}", highlight=False)
    for split in ("train", "validation", "test"):
        console.print(f"  {split:<10} {manifest.rows[split]:>9} rows  sha256 {manifest.content_sha256[split][:16]}…")
    stats = Table("feature", "kind", "transform", "reference")
    for feature in manifest.features:
        t, r = manifest.transform[feature], manifest.reference[feature]
        if t.kind == "numeric":
            stats.add_row(feature, "numeric", f"mean {t.mean:.4g} std {t.std:.4g}", f"{len(r.edges)} quantile edges")
        else:
            top = sorted(r.frequencies.items(), key=lambda kv: -kv[1])[:3]
            stats.add_row(feature, "category", f"{len(t.vocabulary)} values + OOV",
                          ", ".join(f"{k} {v:.0%}" for k, v in top))
    console.print(stats)
    lineage = Table("raw object", "partition", "offsets", "rows")
    for source in manifest.lineage:
        lineage.add_row(source.key.rsplit("/", 1)[-1], str(source.partition),
                        f"{source.first_offset}-{source.last_offset}", str(source.rows))
    console.print(lineage)
    for key, reason in manifest.quarantined.items():
        console.print(f"[yellow]quarantined[/yellow] {key}: {reason}")
