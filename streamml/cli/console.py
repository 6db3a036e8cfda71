"""``streamml console``: the web console, in this process."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from streamml.cli.common import StateDir, fail


def console(
    host: Annotated[str | None, typer.Option(help="address to listen on (default STREAMML_HTTP_HOST, else "
                                                  "127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default STREAMML_HTTP_PORT, else 8090)")] = None,
    state_dir: StateDir = None,
) -> None:
    """Serve the web console: models, lineage, datasets, drift and the live loop.

    Read-only unless STREAMML_CONSOLE_TOKEN is set; then promote and rollback
    work for whoever gives the token. `python -m streamml.console --help`
    lists every setting.
    """
    from streamml.console.server import serve
    from streamml.locate import StackNotFound, locate
    from streamml.settings import CONFIG_FILE_ENV

    try:
        found = locate(state_dir)
    except StackNotFound as error:
        fail(str(error), 2)
    if found.config_file is not None:  # the embedded stack's settings; the console reads them as every service does
        os.environ[CONFIG_FILE_ENV] = str(found.config_file)
    if host is not None:
        os.environ["STREAMML_HTTP_HOST"] = host
    if port is not None:
        os.environ["STREAMML_HTTP_PORT"] = str(port)
    serve()
