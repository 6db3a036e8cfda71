"""The ``streamml`` command: every command group, assembled in the order ``--help`` lists them."""

from __future__ import annotations

import typer

from streamml.cli.datasets import app as datasets_app
from streamml.cli.drift import app as drift_app
from streamml.cli.lag import lag
from streamml.cli.models import app as models_app
from streamml.cli.prep import app as prep_app
from streamml.cli.publish import publish
from streamml.cli.schemas import app as schemas_app
from streamml.cli.services import service_command
from streamml.cli.stack import demo, down, restart, status, up
from streamml.cli.topics import app as topics_app

app = typer.Typer(
    help="streamml: Kafka ingest -> Ceph -> Spark datasets -> PyTorch models -> validated "
    "promotion -> drift monitoring, automated.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
for command in (up, down, restart, status, demo, publish, lag):
    app.command()(command)
for name in ("ingest", "trainer", "validator", "monitor"):
    service_command(app, name, name, f"the {name} service")
service_command(app, "serve", "serve", "the inference server of one model")
app.add_typer(topics_app, name="topics")
app.add_typer(schemas_app, name="schemas")
app.add_typer(datasets_app, name="datasets")
app.add_typer(prep_app, name="prep")
app.add_typer(drift_app, name="drift")
app.add_typer(models_app, name="models")


def main() -> None:
    app()
