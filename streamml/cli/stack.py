"""``streamml up``, ``down``, ``status`` and ``demo``: the embedded stack on this machine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from streamml.cli.common import DEFAULT_STATE, EXAMPLES, StateDir, client_settings, console, fail


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


def down(state_dir: StateDir = DEFAULT_STATE) -> None:
    """Stop everything `streamml up` started, by PID."""
    from streamml.stack.control import down as stack_down

    killed = stack_down(state_dir)
    suffix = f" (killed leftover PIDs {killed})" if killed else ""
    console.print(f"stack in {state_dir} stopped{suffix}")


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
