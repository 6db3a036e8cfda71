"""``streamml lag``: consumer lag, consume rate, time to drain, and the replicas KEDA would run."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from streamml.cli.common import StateDir, client_settings, console


def lag(
    group: Annotated[list[str], typer.Argument(help="consumer groups, e.g. streamml-ingest")],
    lag_threshold: Annotated[int, typer.Option(help="KEDA lagThreshold, for the replica column")] = 1000,
    max_replicas: Annotated[int | None, typer.Option(help="KEDA maxReplicaCount")] = None,
    interval: Annotated[float, typer.Option(help="seconds between the two samples that give the rate")] = 2.0,
    watch: Annotated[bool, typer.Option(help="refresh until Ctrl-C")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    state_dir: StateDir = None,
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
