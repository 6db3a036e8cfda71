"""``streamml drift``: what the monitor sees in a model's live traffic.

    streamml drift report fraud                  # latest judged window, drifted bins, performance, events
    streamml drift report fraud --png fraud.png  # and a chart of reference against live shares per bin
    streamml drift report fraud --window 12      # an earlier window the monitor still keeps

The monitor writes its last reports to ``monitor/<model>/latest.json`` in the
object store whenever a window closes; this command reads them from there,
so it works from any machine with the STREAMML_S3_* settings. When the
monitor cannot watch the champion (``monitor/<model>/unwatched.json``), it
says why and exits 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from streamml.cli.common import StateDir, connect_store, console, err, fail

app = typer.Typer(help="Drift monitoring: the monitor's window reports and drift events.", no_args_is_help=True)


@app.callback()
def drift() -> None:
    """Drift monitoring: the monitor's window reports and drift events."""


@app.command()
def report(
    model: Annotated[str, typer.Argument(help="model name")],
    png: Annotated[Path | None, typer.Option("--png", help="also write a chart of the window to this PNG file")] = None,
    window: Annotated[int | None, typer.Option("--window", help="window index; default: the latest judged")] = None,
    wait: Annotated[float, typer.Option(
        "--wait", help="first wait up to this many seconds until the monitor has judged a window")] = 0,
    state_dir: StateDir = None,
) -> None:
    """The latest window report of MODEL: tests per column, drifted bins, performance and recent events."""
    from services.monitor.report import print_report, save_png
    from streamml.registry.keys import RegistryError, monitor_state_key
    from streamml.registry.monitor import read_monitor_state, read_unwatched
    from streamml.store import StoreError

    import time

    store = connect_store(state_dir)
    deadline = time.monotonic() + wait
    while True:
        try:
            state = read_monitor_state(store, model)
            unwatched = read_unwatched(store, model)
        except (StoreError, RegistryError) as error:
            fail(str(error), 3 if isinstance(error, StoreError) else 2)
        if (state is not None and state.latest_judged() is not None) or unwatched or time.monotonic() >= deadline:
            break
        time.sleep(2)
    if unwatched is not None:
        reason = (f"the monitor cannot watch {model}'s champion {unwatched.version or '(unreadable pointer)'} "
                  f"(since {unwatched.since:%Y-%m-%d %H:%M:%S} UTC): {unwatched.reason}")
        if state is None or state.version == unwatched.version:
            fail(reason, 1)
        err.print(f"[red]error:[/red] {reason}; below: what it saw of champion {state.version}", highlight=False)
    if state is None:
        fail(f"no monitor report for {model!r} at {monitor_state_key(model)}: the monitor writes one when the first "
              "window of the champion's predictions closes (every windows.size predictions)", 2)
    if window is None:
        chosen = state.latest_judged()
    else:
        chosen = next((r for r in reversed(state.window_reports) if r.index == window), None)
        if chosen is None:
            kept = sorted({r.index for r in state.window_reports})
            fail(f"window {window} is not kept for {model!r}; kept: {kept or 'none'}", 2)
    version = f"v{state.dataset_version}" if state.dataset_version is not None else "(version unknown)"
    console.print(
        f"[bold]{model}[/bold] champion {state.version}, reference {state.dataset} {version}; "
        f"{len(state.window_reports)} windows kept, updated {state.updated:%Y-%m-%d %H:%M:%S} UTC; "
        f"drift active: {', '.join(state.active()) or 'none'}",
        highlight=False,
    )
    if chosen is None:
        console.print("no prediction window has closed yet")
    else:
        print_report(chosen, state.performance_reports[-5:], console)
    if state.events:
        console.print(events_table(state.events[-10:]))
    if png is not None:
        if chosen is None:
            fail("no window to chart yet", 2)
        try:
            written = save_png(chosen, png)
        except (ValueError, OSError) as error:
            fail(f"cannot write {png}: {error}", 2)
        console.print(f"wrote {written}", highlight=False)
    if unwatched is not None:
        raise typer.Exit(1)


def events_table(events: list) -> Table:
    table = Table(title="drift events raised")
    for name in ("window end", "kind", "severity", "rows", "features"):
        table.add_column(name)
    for event in events:
        tests: dict[str, list[str]] = {}
        for feature in event.features:
            tests.setdefault(feature.feature, []).append(feature.test)
        features = ", ".join(f"{name} ({', '.join(names)})" for name, names in tests.items())
        table.add_row(f"{event.window.end:%Y-%m-%d %H:%M:%S}", event.kind, event.severity,
                      str(event.window.count), features or "-")
    return table
