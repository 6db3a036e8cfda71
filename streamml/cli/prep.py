"""``streamml prep``: build a dataset version now, or run the prep service."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from streamml.cli.common import StateDir, client_settings, console, fail
from streamml.cli.services import service_command

app = typer.Typer(help="Dataset preparation.", no_args_is_help=True)


@app.command("run")
def prep_run(
    dataset: Annotated[str, typer.Argument(help="dataset name")],
    specs: Annotated[Path, typer.Option(envvar="STREAMML_PREP_SPECS_DIR", help="folder of dataset specs")] = Path("datasets"),
    engine: Annotated[str, typer.Option(envvar="STREAMML_PREP_ENGINE",
                                        help="spark, duckdb or auto (a spec's prep.engine overrides it)")] = "auto",
    spark_master: Annotated[str, typer.Option(help="Spark master")] = "local[*]",
    jars_dir: Annotated[Path, typer.Option(help="folder with the S3A jars")] = Path("vendor/jars"),
    state_dir: StateDir = None,
) -> None:
    """Build a new version of DATASET now (trigger "manual") and announce it."""
    from services.prep.builder import BuildFailed, DatasetBuilder
    from services.prep.spark import SparkOnDemand, spark_session
    from streamml.events import DatasetReady
    from streamml.kafka import EventProducer
    from streamml.specs import load_dataset_specs
    from streamml.store import ObjectStore

    if engine not in ("spark", "duckdb", "auto"):
        fail(f"--engine / STREAMML_PREP_ENGINE={engine!r}: use spark, duckdb or auto", 2)
    settings = client_settings(state_dir)
    spec = load_dataset_specs(specs).get(dataset)
    if spec is None:
        fail(f"no dataset {dataset!r} in {specs}/", 2)
    store = ObjectStore.connect(settings.s3)
    spark = SparkOnDemand(lambda: spark_session(spark_master, state_dir / "prep-cli", settings.s3, jars_dir))
    try:
        manifest = DatasetBuilder(store, settings.s3, spark, engine=engine).build(spec, "manual")
    except BuildFailed as error:
        fail(str(error))
    finally:
        spark.stop()
    EventProducer(settings.kafka, "streamml-cli").send_now(DatasetReady.of(manifest, "manual"))
    console.print(f"{dataset} v{manifest.version} ready: {manifest.rows} (engine {manifest.engine}: "
                  f"{manifest.engine_reason})")


service_command(app, "serve", "prep", "the prep service")
