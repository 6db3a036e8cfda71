"""What every ``streamml`` command shares: output, failing with an exit code, settings and the store.

Every command finds the stack as ``streamml/locate.py`` says: ``--state-dir``,
then ``STREAMML_STACK_DIR`` (or ``STREAMML_CONFIG_FILE``, or ``STREAMML_KAFKA_*``
and ``STREAMML_S3_*`` settings), then the nearest ``.streamml/`` folder.
"""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.text import Text

from streamml.locate import STACK_DIR_ENV, STATE_FOLDER, StackNotFound, locate, nearest_state_folder
from streamml.settings import ServiceSettings, load_settings_or_exit
from streamml.store import ObjectStore, StoreError

console = Console()
err = Console(stderr=True)
StateDir = Annotated[
    Path | None,
    typer.Option("--state-dir", show_default=False,
                 help=f"the embedded stack's folder [default: ${STACK_DIR_ENV}, else the nearest {STATE_FOLDER}/ "
                      "here or above]"),
]
AsJson = Annotated[bool, typer.Option("--json", help="machine-readable output")]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def fail(message: str, code: int = 1) -> NoReturn:
    # Text, not markup: a message may quote brackets from a log line. No
    # wrapping: a path broken across lines cannot be copied back.
    err.print(Text.assemble(("error:", "red"), " ", message), highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def default_actor() -> str:
    """Who a person's change is recorded as: ``$USER@hostname``."""
    user = os.environ.get("USER") or getpass.getuser()
    return f"{user}@{socket.gethostname()}"


def stack_folder(state_dir: Path | None, *, new: bool = False) -> Path:
    """The folder of the stack a stack command acts on: the flag, STREAMML_STACK_DIR, the nearest
    ``.streamml/``; for ``new`` (``up``), ``./.streamml`` when there is none yet."""
    chosen = state_dir or (Path(os.environ[STACK_DIR_ENV]) if os.environ.get(STACK_DIR_ENV) else None)
    chosen = chosen or nearest_state_folder()
    if chosen is None:
        if not new:
            fail(f"no streamml stack found: --state-dir not given, {STACK_DIR_ENV} unset, and no {STATE_FOLDER}/ "
                 f"in {Path.cwd()} or any folder above it; start one with `streamml up`, or point at one with "
                 f"--state-dir DIR or {STACK_DIR_ENV}=DIR")
        chosen = Path(STATE_FOLDER)
    return chosen.expanduser().resolve()


def client_settings(state_dir: Path | None = None) -> ServiceSettings:
    """Settings of the stack this command talks to; exit 2 naming where streamml looked when there is none."""
    try:
        found = locate(state_dir)
    except StackNotFound as error:
        fail(str(error), 2)
    return load_settings_or_exit(ServiceSettings, found.config_file)


def connect_store(state_dir: Path | None) -> ObjectStore:
    """The object store of these settings; exit 3 naming the setting to check when it cannot be used."""
    try:
        return ObjectStore.connect(client_settings(state_dir).s3)
    except StoreError as error:
        fail(str(error), 3)


def check_files(files: list[Path], check: Callable[[Path], tuple[str, list[str]]]) -> None:
    """``check`` each file (its ok line, its problems); print every problem of every file, then exit 2 if any."""
    bad = 0
    for path in files:
        ok, problems = check(path)
        for problem in problems:
            err.print(f"{path}: {problem}", highlight=False, markup=False, soft_wrap=True)
        if problems:
            bad += 1
        else:
            console.print(f"{path}: ok — {ok}", highlight=False, markup=False, soft_wrap=True)
    if bad:
        err.print(f"{bad} of {len(files)} file(s) have problems", highlight=False, soft_wrap=True)
        raise typer.Exit(2)


def folder_or_default(given: Path | None, default: str) -> Path | None:
    """``given``, else ``./default`` when that folder exists (what ``streamml init`` writes), else None."""
    if given is not None:
        return given
    return Path(default) if Path(default).is_dir() else None
