"""``streamml ingest``, ``trainer``, ...: run a service in this process, as ``python -m services.<name>`` does."""

from __future__ import annotations

import runpy
import sys

import typer


def service_command(group: typer.Typer, name: str, service: str, what: str) -> None:
    """Add command ``name`` to ``group``, running ``services.<service>`` with the arguments given."""

    # The service answers --help itself, listing its settings.
    @group.command(name, context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                                           "help_option_names": []})
    def command(context: typer.Context) -> None:
        sys.argv = [context.command_path, *context.args]
        runpy.run_module(f"services.{service}", run_name="__main__")

    command.__doc__ = f"Run {what}; --help lists its STREAMML_* settings."
