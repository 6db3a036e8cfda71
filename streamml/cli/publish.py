"""``streamml publish``: a file's rows to ``ingest.<dataset>``, checked as the ingest service checks them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from streamml.cli.common import StateDir, client_settings, console, err, fail


def publish(
    dataset: Annotated[str, typer.Argument(help="dataset name, as in its spec")],
    file: Annotated[Path, typer.Argument(help="a .csv, .jsonl or .parquet file", exists=True, dir_okay=False)],
    specs: Annotated[
        Path, typer.Option(envvar="STREAMML_INGEST_SPECS_DIR", help="folder of dataset specs")
    ] = Path("datasets"),
    rate: Annotated[float | None, typer.Option(help="records per second (default: as fast as possible)")] = None,
    validate: Annotated[bool, typer.Option(help="check each row against the spec; rejected rows are not sent")] = True,
    max_record_bytes: Annotated[int, typer.Option(help="the ingest service's record size limit")] = 1 << 20,
    state_dir: StateDir = None,
) -> None:
    """Publish a file's rows to ingest.<dataset>, keyed by the dataset's key field.

    The file is streamed a few thousand rows at a time, so its size does not
    matter; CSV columns take the types the spec declares. Rows the ingest
    service would reject are reported and not sent, unless --no-validate. A
    value that cannot be read stops the command, and the rows before it stay sent.
    """
    from services.ingest import publish as publisher
    from streamml.specs import SpecError, load_dataset_specs

    settings = client_settings(state_dir)
    try:
        spec = load_dataset_specs(specs).get(dataset)
    except SpecError as error:
        fail(str(error), 2)
    if spec is None:
        fail(f"no dataset {dataset!r} in {specs}/ (set --specs or STREAMML_INGEST_SPECS_DIR)", 2)
    try:
        batches = publisher.read_batches(file, spec)
    except publisher.PublishError as error:
        fail(str(error), 2)
    summary = publisher.PublishSummary()
    try:
        publisher.publish(batches, spec, settings.kafka,
                          max_record_bytes if validate else None, rate, err.is_terminal, summary)
        failure = None
    except (publisher.PublishError, OSError, ValueError) as error:
        failure = str(error)
    for row, reason in summary.reasons:
        err.print(f"row {row + 1}: {reason}", highlight=False)
    if summary.rejected > len(summary.reasons):
        err.print(f"... and {summary.rejected - len(summary.reasons)} more rejected rows")
    console.print(
        f"published {summary.records} records ({summary.bytes / 1e6:.1f} MB) to "
        f"{settings.kafka.topic(spec.ingest_topic)} in {summary.seconds:.1f}s "
        f"({summary.records / max(summary.seconds, 1e-9):,.0f}/s); rejected {summary.rejected}"
    )
    if failure is not None:
        fail(failure, 2)
