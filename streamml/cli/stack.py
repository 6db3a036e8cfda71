"""``streamml up``, ``down``, ``status`` and ``demo``: the embedded stack on this machine."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from streamml.cli.common import EXAMPLES, StateDir, client_settings, console, fail, stack_folder
from streamml.locate import STACK_DIR_ENV

# The ports are options and variables, so a script (or a test) can move a stack off the defaults
# without changing its commands.
KafkaPort = Annotated[int, typer.Option(envvar="STREAMML_STACK_KAFKA_PORT", help="broker port")]
S3Port = Annotated[int, typer.Option(envvar="STREAMML_STACK_S3_PORT", help="Ceph RADOS Gateway (S3) port")]
HttpBasePort = Annotated[
    int, typer.Option(envvar="STREAMML_STACK_HTTP_BASE_PORT", help="first service health/metrics port")
]
DEFAULT_JARS = Path(__file__).resolve().parents[2] / "vendor" / "jars"

ConsolePort = Annotated[
    int, typer.Option(envvar="STREAMML_STACK_CONSOLE_PORT", help="the web console's port (pages, /healthz, /metrics)")
]


def up(
    state_dir: StateDir = None,
    kafka_port: KafkaPort = 9092,
    s3_port: S3Port = 7480,
    http_base_port: HttpBasePort = 8081,
    console_port: ConsolePort = 8090,
    specs: Annotated[Path, typer.Option(help="folder of dataset specs")] = EXAMPLES / "datasets",
    models: Annotated[Path, typer.Option(help="folder of model specs")] = EXAMPLES / "models",
    policies: Annotated[Path, typer.Option(help="folder of promotion policies")] = EXAMPLES / "policies",
    code: Annotated[Path | None, typer.Option(
        help="folder of Python modules your model specs name (architecture.module, training.entrypoint); "
        "the trainer imports and runs them with its own permissions")] = None,
    jars_dir: Annotated[Path, typer.Option(
        envvar="STREAMML_PREP_JARS_DIR", help="folder with prep's Spark S3A jars")] = DEFAULT_JARS,
    foreground: Annotated[bool, typer.Option(help="stay attached; Ctrl-C stops the stack")] = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait for health")] = 120,
    ephemeral: Annotated[bool, typer.Option(
        help="in-memory broker and memstore OSD, emptied at every start (faster; for tests)")] = False,
) -> None:
    """Start the embedded stack: Ceph, the broker, topics, the five services and the web console.

    Durable by default: on an existing state folder it resumes where the stack
    stopped (topics, offsets, data, datasets, models, champion). Works from any
    folder: every path is made absolute, and the services get the STREAMML_*
    variables of this shell (except those that name the stack's own broker,
    store and ports)."""
    from streamml.stack.control import StackError, prepare_state_folder
    from streamml.stack.control import up as stack_up
    from streamml.stack.supervisor import StackConfig, Supervisor, passed_through

    state_dir = stack_folder(state_dir, new=True)
    folders = (("--specs", specs), ("--models", models), ("--policies", policies), ("--code", code))
    for name, folder in folders:
        if folder is not None and not folder.is_dir():
            fail(f"{name} {folder}: no such folder (from {Path.cwd()}); give the folder of your YAML files")
    passed, ignored = passed_through(os.environ)
    if ignored:
        console.print(f"not passed to the services (the stack sets them): {', '.join(ignored)}", highlight=False)
    config = StackConfig(
        state_dir=state_dir,
        kafka_port=kafka_port,
        s3_port=s3_port,
        http_base_port=http_base_port,
        console_port=console_port,
        specs_dir=specs.resolve(),
        models_dir=models.resolve(),
        policies_dir=policies.resolve(),
        jars_dir=jars_dir.resolve(),
        code_dir=code.resolve() if code is not None else None,
        extra_env=passed,
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
    console.print(f"client settings: {state_dir}/config.yaml; streamml commands and the SDK find it from "
                  f"{state_dir.parent} and the folders below it, or anywhere with {STACK_DIR_ENV}={state_dir}",
                  highlight=False)
    _print_console_address(console_port)


def down(state_dir: StateDir = None) -> None:
    """Stop everything `streamml up` started, by PID."""
    from streamml.stack.control import down as stack_down

    state_dir = stack_folder(state_dir)
    killed = stack_down(state_dir)
    suffix = f" (killed leftover PIDs {killed})" if killed else ""
    console.print(f"stack in {state_dir} stopped{suffix}")


def restart(
    component: Annotated[str, typer.Argument(help="kafka, ceph, rgw-proxy, or a service (ingest, prep, ...)")],
    state_dir: StateDir = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for health")] = 120,
) -> None:
    """Stop one component of the running stack cleanly and start it again; data is kept."""
    from streamml.stack.control import StackError
    from streamml.stack.control import restart as stack_restart

    state_dir = stack_folder(state_dir)
    try:
        components = stack_restart(state_dir, component, timeout=timeout)
    except StackError as error:
        fail(str(error))
    _print_components(components)


def status(
    state_dir: StateDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Health of each component of the embedded stack, and each model the monitor cannot watch (degraded);
    exit 1 when any is unhealthy."""
    from streamml.stack.control import status as stack_status

    state_dir = stack_folder(state_dir)
    components = stack_status(state_dir)
    components += _unwatched_models(state_dir, components)
    if as_json:
        print(json.dumps([c.__dict__ for c in components], indent=2))
    elif not components:
        console.print(f"no stack in {state_dir}: start one with `streamml up`")
    else:
        _print_components(components)
    if not components or not all(c.healthy for c in components):
        raise typer.Exit(1)


def _unwatched_models(state_dir: Path, components: list) -> list:
    """A degraded row per model whose champion the running monitor cannot watch (its notes in the store)."""
    from streamml.registry.keys import RegistryError
    from streamml.registry.monitor import read_all_unwatched
    from streamml.stack.control import Component
    from streamml.store import ObjectStore, StoreError

    if not {"monitor", "ceph"} <= {c.name for c in components if c.healthy}:
        return []  # the monitor's (or the store's) own row says what is wrong
    try:
        notes = read_all_unwatched(ObjectStore.connect(client_settings(state_dir).s3))
    except (StoreError, RegistryError) as error:
        return [Component("monitor models", False, f"cannot read which models the monitor watches: {error}")]
    return [
        Component(f"monitor {note.model}", False,
                  f"champion {note.version or '(unreadable pointer)'} not watched since "
                  f"{note.since:%Y-%m-%d %H:%M:%S} UTC: {note.reason}", "degraded")
        for note in notes
    ]


def _print_components(components: list) -> None:
    table = Table("component", "health", "where")
    colours = {"ok": "green", "restarting": "yellow", "degraded": "yellow"}
    for c in components:
        table.add_row(c.name, f"[{colours.get(c.health, 'red')}]{c.health}[/]", c.detail)
    console.print(table)


def _print_console_address(port: int) -> None:
    if "STREAMML_CONSOLE_TOKEN" in os.environ:
        mode = "promote and rollback for whoever gives STREAMML_CONSOLE_TOKEN"
    else:
        mode = "read-only: set STREAMML_CONSOLE_TOKEN for `streamml up` to enable promote and rollback"
    console.print(f"web console: http://127.0.0.1:{port} ({mode})", highlight=False)


def demo(
    state_dir: StateDir = None,
    kafka_port: KafkaPort = 9092,
    s3_port: S3Port = 7480,
    http_base_port: HttpBasePort = 8081,
    console_port: ConsolePort = 8090,
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
    from streamml.stack.supervisor import StackConfig, passed_through

    state_dir = stack_folder(state_dir, new=True)
    config = StackConfig(
        state_dir=state_dir, kafka_port=kafka_port, s3_port=s3_port, http_base_port=http_base_port,
        console_port=console_port, specs_dir=EXAMPLES / "datasets", models_dir=EXAMPLES / "models",
        policies_dir=EXAMPLES / "policies", jars_dir=DEFAULT_JARS, extra_env=passed_through(os.environ)[0],
    )
    try:
        _print_components(stack_up(config, echo=console.print))
    except StackError as error:
        fail(str(error))
    _print_console_address(console_port)
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
        f"where to look: the web console at http://127.0.0.1:{console_port}, service logs in {state_dir}/logs/, "
        f"metrics at "
        f"http://127.0.0.1:{http_base_port}-{http_base_port + 4}/metrics, objects in bucket 'streamml' "
        f"(raw/, datasets/, models/); `streamml lag streamml-ingest` shows lag; `streamml down` stops the stack"
    )
