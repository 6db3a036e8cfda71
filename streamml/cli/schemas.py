"""``streamml schemas``: the JSON Schema of each event type."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from streamml.cli.common import console

app = typer.Typer(help="JSON Schemas of the events.", no_args_is_help=True)


@app.command("write")
def schemas_write(
    folder: Annotated[Path, typer.Argument(help="output folder")] = Path("schemas"),
) -> None:
    """Regenerate the JSON Schema of every event type from the models in code."""
    from streamml.events import write_schemas

    for path in write_schemas(folder):
        console.print(f"wrote {path}")
