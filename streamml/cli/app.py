"""The ``streamml`` command: every command group, assembled in the order ``--help`` lists them."""

from __future__ import annotations

import typer

from streamml.cli import datasets, drift, lag, models, prep, publish, schemas, stack, topics
from streamml.cli.services import service_command

app = typer.Typer(
    help="streamml: Kafka ingest -> Ceph -> Spark datasets -> PyTorch models -> validated "
    "promotion -> drift monitoring, automated.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
for command in (stack.up, stack.down, stack.status, stack.demo, publish.publish, lag.lag):
    app.command()(command)
for name in ("ingest", "trainer", "validator", "monitor"):
    service_command(app, name, name, f"the {name} service")
service_command(app, "serve", "serve", "the inference server of one model")
app.add_typer(topics.app, name="topics")
app.add_typer(schemas.app, name="schemas")
app.add_typer(datasets.app, name="datasets")
app.add_typer(prep.app, name="prep")
app.add_typer(drift.app, name="drift")
app.add_typer(models.app, name="models")


def main() -> None:
    app()
