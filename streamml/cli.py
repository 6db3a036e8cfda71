"""The ``streamml`` command.

    streamml up                     # embedded Kafka-protocol broker + Ceph + the five services
    streamml status                 # health of each component
    streamml topics apply           # create the declared topics
    streamml datasets validate examples/datasets/transactions.yaml
    streamml down

Commands that talk to Kafka or S3 read the same STREAMML_* settings as the
services; after ``streamml up`` they default to the embedded stack's
``.streamml/config.yaml``.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from streamml.settings import CONFIG_FILE_ENV, ServiceSettings, load_settings_or_exit

app = typer.Typer(
    help="streamml: Kafka ingest -> Ceph -> Spark datasets -> PyTorch models -> validated "
    "promotion -> drift monitoring, automated.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
topics_app = typer.Typer(help="Topics as code (topics.yaml).", no_args_is_help=True)
schemas_app = typer.Typer(help="JSON Schemas of the events.", no_args_is_help=True)
datasets_app = typer.Typer(help="Dataset specs and versions.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")
app.add_typer(schemas_app, name="schemas")
app.add_typer(datasets_app, name="datasets")


def _register_late_apps() -> None:
    from streamml.cli_drift import drift_app
    from streamml.cli_models import models_app

    app.add_typer(drift_app, name="drift")
    app.add_typer(models_app, name="models")

console = Console()
err = Console(stderr=True)
StateDir = Annotated[
    Path, typer.Option("--state-dir", envvar="STREAMML_STACK_DIR", help="the embedded stack's folder")
]
DEFAULT_STATE = Path(".streamml")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def fail(message: str, code: int = 1) -> None:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


def client_settings(state_dir: Path = DEFAULT_STATE) -> ServiceSettings:
    """Settings from the environment, or from the embedded stack when one is up."""
    stack_config = state_dir / "config.yaml"
    if CONFIG_FILE_ENV not in os.environ and stack_config.is_file():
        os.environ[CONFIG_FILE_ENV] = str(stack_config)
    return load_settings_or_exit(ServiceSettings)


# ----------------------------------------------------------------- stack


@app.command()
def up(
    state_dir: StateDir = DEFAULT_STATE,
    kafka_port: Annotated[int, typer.Option(help="broker port")] = 9092,
    s3_port: Annotated[int, typer.Option(help="Ceph RADOS Gateway (S3) port")] = 7480,
    http_base_port: Annotated[int, typer.Option(help="first service health/metrics port")] = 8081,
    specs: Annotated[Path, typer.Option(help="folder of dataset specs")] = EXAMPLES / "datasets",
    models: Annotated[Path, typer.Option(help="folder of model specs")] = EXAMPLES / "models",
    policies: Annotated[Path, typer.Option(help="folder of promotion policies")] = EXAMPLES / "policies",
    foreground: Annotated[bool, typer.Option(help="stay attached; Ctrl-C stops the stack")] = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait for health")] = 120,
    ephemeral: Annotated[bool, typer.Option(
        help="in-memory broker and memstore OSD, emptied at every start (faster; for tests)")] = False,
) -> None:
    """Start the embedded stack: Ceph, the broker, topics and the five services.

    Durable by default: on an existing state folder it resumes where the stack
    stopped (topics, offsets, data, datasets, models, champion)."""
    from streamml.stack.control import StackError, prepare_state_folder
    from streamml.stack.control import up as stack_up
    from streamml.stack.supervisor import StackConfig, Supervisor

    config = StackConfig(
        state_dir=state_dir.resolve(),
        kafka_port=kafka_port,
        s3_port=s3_port,
        http_base_port=http_base_port,
        specs_dir=specs.resolve(),
        models_dir=models.resolve(),
        policies_dir=policies.resolve(),
        ephemeral=ephemeral,
    )
    try:
        if foreground:
            prepare_state_folder(config)
            raise typer.Exit(Supervisor(config).run())
        components = stack_up(config, timeout=timeout, echo=console.print)
    except StackError as error:
        fail(str(error))
    _print_components(components)
    console.print(f"client settings: {state_dir}/config.yaml (used by streamml commands here)")


@app.command()
def down(state_dir: StateDir = DEFAULT_STATE) -> None:
    """Stop everything `streamml up` started, by PID."""
    from streamml.stack.control import down as stack_down

    killed = stack_down(state_dir)
    suffix = f" (killed leftover PIDs {killed})" if killed else ""
    console.print(f"stack in {state_dir} stopped{suffix}")


@app.command()
def restart(
    component: Annotated[str, typer.Argument(help="kafka, ceph, rgw-proxy, or a service (ingest, prep, ...)")],
    state_dir: StateDir = DEFAULT_STATE,
    timeout: Annotated[float, typer.Option(help="seconds to wait for health")] = 120,
) -> None:
    """Stop one component of the running stack cleanly and start it again; data is kept."""
    from streamml.stack.control import StackError
    from streamml.stack.control import restart as stack_restart

    try:
        components = stack_restart(state_dir, component, timeout=timeout)
    except StackError as error:
        fail(str(error))
    _print_components(components)


@app.command()
def status(
    state_dir: StateDir = DEFAULT_STATE,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Health of each component of the embedded stack; exit 1 when any is unhealthy."""
    from streamml.stack.control import status as stack_status

    components = stack_status(state_dir)
    if as_json:
        print(json.dumps([c.__dict__ for c in components], indent=2))
    elif not components:
        console.print(f"no stack in {state_dir}: start one with `streamml up`")
    else:
        _print_components(components)
    if not components or not all(c.healthy for c in components):
        raise typer.Exit(1)


def _print_components(components: list) -> None:
    table = Table("component", "health", "where")
    for c in components:
        table.add_row(c.name, "[green]ok[/green]" if c.healthy else "[red]down[/red]", c.detail)
    console.print(table)


@app.command()
def demo(
    state_dir: StateDir = DEFAULT_STATE,
    kafka_port: Annotated[int, typer.Option(help="broker port")] = 9092,
    s3_port: Annotated[int, typer.Option(help="Ceph RADOS Gateway (S3) port")] = 7480,
    http_base_port: Annotated[int, typer.Option(help="first service health/metrics port")] = 8081,
    rate: Annotated[float, typer.Option(help="transactions published per second")] = 4000,
    records: Annotated[int, typer.Option(help="transactions before and again after the drift")] = 40_000,
    timeout: Annotated[float, typer.Option(help="give up after this many seconds")] = 900,
) -> None:
    """The whole loop on the embedded stack: data in, model promoted, drift, retrained, new champion.

    Brings the stack up if needed (with examples/ as datasets, models and
    policies), narrates each event as it happens, and ends with a summary.
    Ctrl-C stops the demo; the stack keeps running until `streamml down`.
    """
    from streamml.demo import DemoFailed, DemoPlan, models_table, run_demo, summary_table
    from streamml.stack.control import StackError
    from streamml.stack.control import up as stack_up
    from streamml.stack.supervisor import StackConfig

    config = StackConfig(
        state_dir=state_dir.resolve(), kafka_port=kafka_port, s3_port=s3_port, http_base_port=http_base_port,
        specs_dir=EXAMPLES / "datasets", models_dir=EXAMPLES / "models", policies_dir=EXAMPLES / "policies",
    )
    try:
        _print_components(stack_up(config, echo=console.print))
    except StackError as error:
        fail(str(error))
    plan = DemoPlan(rate=rate, first_records=records, drift_records=records, timeout_s=timeout)
    try:
        timeline = run_demo(client_settings(state_dir), plan, console)
    except DemoFailed as error:
        fail(f"{error} (logs: {state_dir}/logs/)")
    except KeyboardInterrupt:
        console.print("demo stopped; the stack is still up (`streamml down` stops it)")
        raise typer.Exit(130) from None
    console.print(summary_table(timeline))
    console.print(models_table(timeline))
    console.print(
        f"where to look: service logs in {state_dir}/logs/, metrics at "
        f"http://127.0.0.1:{http_base_port}-{http_base_port + 4}/metrics, objects in bucket 'streamml' "
        f"(raw/, datasets/, models/); `streamml lag streamml-ingest` shows lag; `streamml down` stops the stack"
    )


# ----------------------------------------------------------------- topics


@topics_app.command("apply")
def topics_apply(
    file: Annotated[Path, typer.Option(help="declarative topics file")] = None,
    specs: Annotated[Path | None, typer.Option(help="add ingest.<dataset> per spec here")] = None,
    model: Annotated[list[str], typer.Option(help="add predictions/feedback topics")] = [],
    replication_factor: Annotated[
        int | None, typer.Option(help="override every topic's replication factor")
    ] = None,
    state_dir: StateDir = DEFAULT_STATE,
) -> None:
    """Create the declared topics that are missing; report what differs. Idempotent."""
    from streamml.topics import DEFAULT_FILE, apply_declared

    settings = client_settings(state_dir)
    try:
        report = apply_declared(
            settings.kafka, file or DEFAULT_FILE, specs, model, replication_factor
        )
    except ValueError as error:
        fail(str(error), 2)
    for name in report.created:
        console.print(f"created   {name}")
    for name in report.unchanged:
        console.print(f"present   {name}")
    for line in report.differences:
        console.print(f"[yellow]differs[/yellow]   {line}")
    if not report.ok:
        raise typer.Exit(1)


# ----------------------------------------------------------------- schemas


@schemas_app.command("write")
def schemas_write(
    folder: Annotated[Path, typer.Argument(help="output folder")] = Path("schemas"),
) -> None:
    """Regenerate the JSON Schema of every event type from the models in code."""
    from streamml.events import write_schemas

    for path in write_schemas(folder):
        console.print(f"wrote {path}")


# ----------------------------------------------------------------- datasets


@datasets_app.command("validate")
def datasets_validate(
    files: Annotated[list[Path], typer.Argument(help="dataset spec YAML files")],
) -> None:
    """Check dataset specs and report every problem at once."""
    from streamml.specs import SpecError, load_dataset_spec

    bad = 0
    for path in files:
        try:
            spec = load_dataset_spec(path)
        except SpecError as error:
            bad += 1
            for problem in error.problems:
                err.print(f"{path}: {problem}", highlight=False)
            continue
        console.print(
            f"{path}: ok — dataset {spec.name!r}, {len(spec.fields)} fields, "
            f"topic {spec.ingest_topic}, fingerprint {spec.fingerprint()}"
        )
    if bad:
        raise typer.Exit(2)


@app.command()
def publish(
    dataset: Annotated[str, typer.Argument(help="dataset name, as in its spec")],
    file: Annotated[Path, typer.Argument(help="a .csv, .jsonl or .parquet file", exists=True, dir_okay=False)],
    specs: Annotated[
        Path, typer.Option(envvar="STREAMML_INGEST_SPECS_DIR", help="folder of dataset specs")
    ] = Path("datasets"),
    rate: Annotated[float | None, typer.Option(help="records per second (default: as fast as possible)")] = None,
    validate: Annotated[bool, typer.Option(help="check rows against the spec before sending")] = True,
    max_record_bytes: Annotated[int, typer.Option(help="the ingest service's record size limit")] = 1 << 20,
    state_dir: StateDir = DEFAULT_STATE,
) -> None:
    """Publish a file's rows to ingest.<dataset>, keyed by the dataset's key field.

    Rows the ingest service would reject are reported and not sent, unless --no-validate.
    """
    from services.ingest import publish as publisher
    from streamml.specs import SpecError, load_dataset_specs

    settings = client_settings(state_dir)
    try:
        spec = load_dataset_specs(specs).get(dataset)
    except SpecError as error:
        fail(str(error), 2)
    if spec is None:
        fail(f"no dataset {dataset!r} in {specs}/ (set --specs or STREAMML_INGEST_SPECS_DIR)", 2)
    try:
        records = publisher.read_records(file)
    except (publisher.PublishError, OSError, ValueError) as error:
        fail(str(error), 2)
    rejected = publisher.validate(records, spec, max_record_bytes) if validate else {}
    for row, reason in sorted(rejected.items())[:20]:
        err.print(f"row {row + 1}: {reason}", highlight=False)
    if len(rejected) > 20:
        err.print(f"... and {len(rejected) - 20} more rejected rows")
    summary = publisher.publish(records, spec, settings.kafka, rate, set(rejected), err.is_terminal)
    console.print(
        f"published {summary.records} records ({summary.bytes / 1e6:.1f} MB) to "
        f"{settings.kafka.topic(spec.ingest_topic)} in {summary.seconds:.1f}s "
        f"({summary.records / max(summary.seconds, 1e-9):,.0f}/s); rejected {len(rejected)}"
    )


@app.command()
def lag(
    group: Annotated[list[str], typer.Argument(help="consumer groups, e.g. streamml-ingest")],
    lag_threshold: Annotated[int, typer.Option(help="KEDA lagThreshold, for the replica column")] = 1000,
    max_replicas: Annotated[int | None, typer.Option(help="KEDA maxReplicaCount")] = None,
    interval: Annotated[float, typer.Option(help="seconds between the two samples that give the rate")] = 2.0,
    watch: Annotated[bool, typer.Option(help="refresh until Ctrl-C")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    state_dir: StateDir = DEFAULT_STATE,
) -> None:
    """Lag per group, topic and partition, consume rate, time to drain, and KEDA's replica count."""
    import time as clock

    from streamml.lag import partition_lags, topic_lags

    settings = client_settings(state_dir).kafka
    while True:
        before = [p for g in group for p in partition_lags(settings, g)]
        clock.sleep(interval)
        after = [p for g in group for p in partition_lags(settings, g)]
        topics = topic_lags(before, after, interval, lag_threshold, max_replicas)
        understated = any(p.end_understated for p in after)
        if as_json:
            print(json.dumps({"topics": [t.as_dict() for t in topics],
                              "partitions": [p.__dict__ for p in after],
                              "end_offsets_understated": understated}, indent=2))
        else:
            _print_lag(topics, after, understated)
        if not watch:
            return
        clock.sleep(max(0.0, 5 - interval))


def _print_lag(topics: list, partitions: list, understated: bool) -> None:
    table = Table("group", "topic", "partition", "committed", "end", "lag")
    for p in partitions:
        table.add_row(p.group, p.topic, str(p.partition), str(p.committed), str(p.end), str(p.lag))
    console.print(table)
    summary = Table("group", "topic", "lag", "rate/s", "drain", "KEDA replicas")
    for t in topics:
        rate = f"{t.rate:,.0f}" if t.rate is not None else "-"
        drain = f"{t.drain_seconds:,.0f}s" if t.drain_seconds is not None else "never at this rate"
        summary.add_row(t.group, t.topic, str(t.lag), rate, drain, str(t.keda_replicas))
    console.print(summary)
    if understated:
        console.print("[yellow]note:[/yellow] this broker reports end offsets too low from ListOffsets "
                      "(the embedded Tansu does); ends shown are the fetched high watermarks")


@datasets_app.command("list")
def datasets_list(
    name: Annotated[str | None, typer.Argument(help="one dataset (default: all)")] = None,
    state_dir: StateDir = DEFAULT_STATE,
) -> None:
    """Committed versions of each dataset: rows per split, trigger, raw objects."""
    from services.prep.versions import version_numbers
    from streamml.manifest import DatasetManifest, manifest_key
    from streamml.store import ObjectNotFound, ObjectStore

    store = ObjectStore.connect(client_settings(state_dir).s3)
    names = [name] if name else [p.rstrip("/").rsplit("/", 1)[-1] for p in store.list_prefixes("datasets/")]
    table = Table("dataset", "version", "created", "train", "validation", "test", "trigger", "raw objects")
    for dataset in names:
        for number in version_numbers(store, dataset):
            try:
                m = DatasetManifest.model_validate_json(store.get_bytes(manifest_key(dataset, number)))
            except ObjectNotFound:
                continue  # claimed by a build that has not committed
            table.add_row(dataset, f"v{m.version}", m.created.strftime("%Y-%m-%d %H:%M:%S"), str(m.rows["train"]),
                          str(m.rows["validation"]), str(m.rows["test"]), m.trigger, str(len(m.lineage)))
    console.print(table)


@datasets_app.command("show")
def datasets_show(
    ref: Annotated[str, typer.Argument(help="NAME or NAME:VERSION (default: the newest)")],
    state_dir: StateDir = DEFAULT_STATE,
) -> None:
    """One version's manifest: rows, hashes, lineage and feature statistics."""
    from services.prep.versions import latest_manifest
    from streamml.manifest import DatasetManifest, manifest_key
    from streamml.store import ObjectNotFound, ObjectStore

    store = ObjectStore.connect(client_settings(state_dir).s3)
    name, _, version = ref.partition(":")
    try:
        manifest = (DatasetManifest.model_validate_json(store.get_bytes(manifest_key(name, int(version.lstrip("v")))))
                    if version else latest_manifest(store, name))
    except (ObjectNotFound, ValueError):
        manifest = None
    if manifest is None:
        fail(f"no committed version {ref!r}; see `streamml datasets list`", 2)
    console.print(f"[bold]{manifest.dataset} v{manifest.version}[/bold] created {manifest.created:%Y-%m-%d %H:%M:%S}, "
                  f"trigger {manifest.trigger}, engine {manifest.engine}, code {manifest.code_version}")
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


prep_app = typer.Typer(help="Dataset preparation.", no_args_is_help=True)
app.add_typer(prep_app, name="prep")


@prep_app.command("run")
def prep_run(
    dataset: Annotated[str, typer.Argument(help="dataset name")],
    specs: Annotated[Path, typer.Option(envvar="STREAMML_PREP_SPECS_DIR", help="folder of dataset specs")] = Path("datasets"),
    spark_master: Annotated[str, typer.Option(help="Spark master")] = "local[*]",
    jars_dir: Annotated[Path, typer.Option(help="folder with the S3A jars")] = Path("vendor/jars"),
    state_dir: StateDir = DEFAULT_STATE,
) -> None:
    """Build a new version of DATASET now (trigger "manual") and announce it."""
    from services.prep.builder import BuildFailed, DatasetBuilder
    from services.prep.spark import spark_session
    from streamml.events import DatasetReady
    from streamml.kafka import EventProducer
    from streamml.specs import load_dataset_specs
    from streamml.store import ObjectStore

    settings = client_settings(state_dir)
    spec = load_dataset_specs(specs).get(dataset)
    if spec is None:
        fail(f"no dataset {dataset!r} in {specs}/", 2)
    store = ObjectStore.connect(settings.s3)
    spark = spark_session(spark_master, state_dir / "prep-cli", settings.s3, jars_dir)
    try:
        manifest = DatasetBuilder(store, settings.s3, spark).build(spec, "manual")
    except BuildFailed as error:
        fail(str(error))
    EventProducer(settings.kafka, "streamml-cli").send_now(DatasetReady(
        dataset=dataset, version=manifest.version, manifest_key=f"datasets/{dataset}/v{manifest.version}/manifest.json",
        rows=manifest.rows, trigger="manual", quarantined=sorted(manifest.quarantined)))
    console.print(f"{dataset} v{manifest.version} ready: {manifest.rows}")


# ----------------------------------------------------------------- services


def _service_command(group: typer.Typer, name: str, service: str, what: str) -> None:
    # The service answers --help itself, listing its settings.
    @group.command(name, context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                                           "help_option_names": []})
    def command(context: typer.Context) -> None:
        sys.argv = [context.command_path, *context.args]
        runpy.run_module(f"services.{service}", run_name="__main__")

    command.__doc__ = f"Run {what}; --help lists its STREAMML_* settings."


for _name in ("ingest", "trainer", "validator", "monitor"):
    _service_command(app, _name, _name, f"the {_name} service")
_service_command(app, "serve", "serve", "the inference server of one model")
_service_command(prep_app, "serve", "prep", "the prep service")


_register_late_apps()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
