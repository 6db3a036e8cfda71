"""What every ``streamml`` command shares: output, failing with an exit code, settings and the store."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from streamml.settings import CONFIG_FILE_ENV, ServiceSettings, load_settings_or_exit
from streamml.store import ObjectStore, StoreError

console = Console()
err = Console(stderr=True)
StateDir = Annotated[
    Path, typer.Option("--state-dir", envvar="STREAMML_STACK_DIR", help="the embedded stack's folder")
]
AsJson = Annotated[bool, typer.Option("--json", help="machine-readable output")]
DEFAULT_STATE = Path(".streamml")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


def client_settings(state_dir: Path = DEFAULT_STATE) -> ServiceSettings:
    """Settings from the environment, or from the embedded stack when one is up."""
    stack_config = state_dir / "config.yaml"
    if CONFIG_FILE_ENV not in os.environ and stack_config.is_file():
        os.environ[CONFIG_FILE_ENV] = str(stack_config)
    return load_settings_or_exit(ServiceSettings)


def connect_store(state_dir: Path) -> ObjectStore:
    """The object store of these settings; exit 3 naming the setting to check when it cannot be used."""
    try:
        return ObjectStore.connect(client_settings(state_dir).s3)
    except StoreError as error:
        fail(str(error), 3)
