"""``streamml datasets``: dataset specs, and the versions prep committed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from streamml.cli.common import StateDir, check_files, client_settings, connect_store, console, err, fail

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


@app.command("rebuild")
def datasets_rebuild(
    ref: Annotated[str, typer.Argument(help="NAME:VERSION, e.g. transactions:3")],
    verify: Annotated[bool, typer.Option("--verify", help="compare rows, statistics and content hashes with the "
                                         "stored version; exit 1 when anything differs")] = False,
    keep: Annotated[bool, typer.Option("--keep", help="keep the scratch prefix even when --verify finds the "
                                       "rebuild identical")] = False,
    spark_master: Annotated[str, typer.Option(help="Spark master, for a version its manifest says Spark built")]
    = "local[*]",
    jars_dir: Annotated[Path, typer.Option(envvar="STREAMML_PREP_JARS_DIR",
                                           help="folder with the S3A jars (Spark only)")] = Path("vendor/jars"),
    max_record_bytes: Annotated[int, typer.Option(
        envvar="STREAMML_INGEST_MAX_RECORD_BYTES",
        help="ingest's record size limit, for landing lost records again the way ingest did")] = 1 << 20,
    state_dir: StateDir = None,
) -> None:
    """Rebuild a dataset version from its lineage into a scratch prefix, and with --verify check it is identical.

    The version's manifest names what it was built from: each raw object (key, topic, partition, offset
    range, sha256), the whole spec, the engine (DuckDB or Spark: the rebuild uses the same one), the
    training window and a drift build's drift point. The rebuild reads exactly those objects and writes
    the splits and a manifest under rebuilds/NAME/vVERSION/ATTEMPT/ in the bucket; the version itself is
    never touched.

    A raw object that is lost is landed again at its own key from the recorded offsets, while the
    ingest topic still retains them (the same records give the same bytes); one whose bytes differ from
    the recorded sha256 is left as it is, and its records are landed again under the scratch prefix for
    the rebuild to read. Nothing existing is ever overwritten.

    Exit status: 0 rebuilt (with --verify: identical; the scratch prefix is then deleted unless --keep),
    1 the rebuild differs (each difference is listed; the scratch prefix is kept to inspect),
    2 no such version, 3 the store cannot be reached, 4 the version cannot be rebuilt (a raw object is
    gone beyond the topic's retention, the version predates manifests that record their spec, or the
    engine cannot run: Spark without its S3A jars, say).

    Examples:
      streamml datasets rebuild transactions:3 --verify
      streamml datasets rebuild transactions:3 --keep     # then read rebuilds/transactions/v3/...
    """
    import tempfile

    from services.prep.rebuild import (
        RawCheck,
        RebuildError,
        check_lineage,
        compare,
        prepare_again,
        rebuildable,
    )
    from services.prep.rules import PrepError
    from services.prep.spark import SparkJarsMissing, SparkOnDemand, spark_session
    from streamml.registry.datasets import read_manifest
    from streamml.registry.keys import new_attempt, rebuild_prefix
    from streamml.store import ObjectNotFound, ObjectStore, StoreError

    name, _, number = ref.partition(":")
    if not number.lstrip("v").isdigit():
        fail(f"{ref!r} names no version: give NAME:VERSION, e.g. {name or 'transactions'}:1 "
             "(`streamml datasets list` shows them)", 2)
    version = int(number.lstrip("v"))
    settings = client_settings(state_dir)
    try:
        store = ObjectStore.connect(settings.s3)
        stored = read_manifest(store, name, version)
    except ObjectNotFound:
        fail(f"no committed version {ref!r}; see `streamml datasets list`", 2)
    except StoreError as error:
        fail(str(error), 3)
    try:
        rebuildable(stored)
    except RebuildError as error:
        fail(str(error), 4)
    prefix = rebuild_prefix(name, version, new_attempt())
    console.print(f"rebuilding {name} v{version} ({stored.engine}, {len(stored.lineage)} raw objects) into "
                  f"s3://{settings.s3.bucket}/{prefix}", highlight=False)

    def reland(source, key):
        return _land_again(store, settings, stored, source, key, max_record_bytes)

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console,
                  transient=True) as progress:
        task = progress.add_task("checking raw objects", total=len(stored.lineage))

        def checked(check: RawCheck) -> None:
            progress.advance(task)
            if check.state not in ("ok", "unverified"):
                progress.console.print(f"[yellow]{check.state}[/yellow] {check.source.key}: {check.detail}",
                                       highlight=False, soft_wrap=True)

        checks = check_lineage(store, stored, prefix, reland, checked)
    states = {state: sum(check.state == state for check in checks) for state in ("ok", "unverified", "lost", "changed")}
    console.print("raw objects: " + ", ".join(f"{count} {state}" for state, count in states.items() if count)
                  + (f" ({sum(check.relanded for check in checks)} landed again)" if states["lost"] + states["changed"]
                     else ""), highlight=False)
    if states["unverified"]:
        console.print(f"  {states['unverified']} object(s) checked by row count only: the version recorded no sha256",
                      highlight=False)
    spark = SparkOnDemand(lambda: spark_session(spark_master, (state_dir or Path(tempfile.mkdtemp())) / "prep-cli",
                                                settings.s3, jars_dir))
    try:
        with console.status(f"preparing with {stored.engine}…"):
            rebuilt = prepare_again(store, settings.s3, stored, checks, prefix, spark)
    except (RebuildError, PrepError, SparkJarsMissing, ValueError) as error:
        store.delete_prefix(prefix)
        fail(str(error), 4)
    finally:
        spark.stop()
    console.print(f"rebuilt: {rebuilt.rows} rows, manifest s3://{settings.s3.bucket}/{prefix}manifest.json",
                  highlight=False)
    if not verify:
        return
    differences = compare(stored, rebuilt)
    if rebuilt.code_version != stored.code_version:
        console.print(f"  built by code {stored.code_version}, rebuilt by {rebuilt.code_version}", highlight=False)
    if not differences:
        if not keep:
            store.delete_prefix(prefix)
        console.print(f"[green]identical[/green]: rows, statistics and content hashes of {name} v{version} "
                      "match the rebuild" + ("" if keep else "; scratch prefix deleted"), highlight=False)
        return
    err.print(f"[red]differs[/red]: {len(differences)} difference(s) between {name} v{version} and its rebuild "
              f"(kept at s3://{settings.s3.bucket}/{prefix}):", highlight=False)
    for difference in differences[:SHOWN_DIFFERENCES]:
        err.print(f"  {difference}", highlight=False, markup=False, soft_wrap=True)
    if len(differences) > SHOWN_DIFFERENCES:
        err.print(f"  … and {len(differences) - SHOWN_DIFFERENCES} more", highlight=False)
    raise typer.Exit(1)


SHOWN_DIFFERENCES = 40


def _land_again(store, settings, stored, source, key, max_record_bytes):
    """``land_again`` for the rebuild: a Relanding with the sha256 of what is at ``key`` now, or why not."""
    import hashlib

    from confluent_kafka import KafkaException

    from services.ingest.reland import NotRetained, land_again
    from services.prep.rebuild import Relanding

    try:
        landed = land_again(store, settings.kafka, stored.spec, source, key, max_record_bytes)
    except (NotRetained, KafkaException) as error:
        return Relanding(key, problem=str(error))
    if landed.created:
        return Relanding(key, sha256=landed.sha256)
    # Landed by someone else meanwhile: it was kept; the rebuild reads what is there.
    return Relanding(key, sha256=hashlib.sha256(store.get_bytes(key)).hexdigest())
