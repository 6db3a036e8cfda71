"""``streamml topics``: topics as code (``topics.yaml``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from streamml.cli.common import StateDir, client_settings, console, fail

app = typer.Typer(help="Topics as code (topics.yaml).", no_args_is_help=True)


@app.command("apply")
def topics_apply(
    file: Annotated[Path, typer.Option(help="declarative topics file")] = None,
    specs: Annotated[Path | None, typer.Option(help="add ingest.<dataset> per spec here")] = None,
    model: Annotated[list[str], typer.Option(help="add predictions/feedback topics")] = [],
    replication_factor: Annotated[
        int | None, typer.Option(help="override every topic's replication factor")
    ] = None,
    state_dir: StateDir = None,
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
