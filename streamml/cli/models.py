"""``streamml models``: model specs, and the model registry from the command line.

    streamml models validate models/fraud.yaml       # every problem at once, checked against ./datasets
    streamml models list
    streamml models show fraud
    streamml models promote fraud 20240601-2 --reason "hotfix for the web channel"
    streamml models promote fraud 20240601-1 --force --reason "rejected on latency, accepted for now"
    streamml models rollback fraud --reason "false positives since 14:00"

``promote`` and ``rollback`` change the champion pointer with the same
conditional write as the validator, record ``--actor`` (default
``$USER@hostname``) and ``--reason`` in it, and send ``model.promoted`` so
applications follow. Without ``--force``, only a version the validator
approved can be promoted.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from streamml.cli.common import (
    AsJson,
    StateDir,
    check_files,
    client_settings,
    connect_store,
    console,
    default_actor,
    fail,
    folder_or_default,
)
from streamml.cli.judge import judge

app = typer.Typer(help="Model specs, and the registry: versions, champion, judging, promotion and rollback.",
                  no_args_is_help=True)
DatasetsDir = Annotated[Path | None, typer.Option(
    "--datasets", help="folder of dataset specs to check against [default: ./datasets when it exists]")]

Reason = Annotated[str, typer.Option("--reason", help="why; recorded in champion.json and the event")]
Actor = Annotated[str | None, typer.Option("--actor", help="who; default $USER@hostname")]


@app.command("validate")
def validate(
    files: Annotated[list[Path], typer.Argument(help="model spec YAML files")],
    datasets: DatasetsDir = None,
    code: Annotated[Path | None, typer.Option(
        "--code", help="folder of the Python modules the specs name (as the trainer's STREAMML_TRAINER_CODE_DIR)")] = None,
) -> None:
    """Check model specs, and that each can learn its dataset's label; report every problem at once.

    A spec with its own code is imported (this runs it), and its module answers a dry forward pass
    shaped like the dataset spec."""
    from services.trainer.spec import dataset_problems, load_model_spec
    from services.trainer.user_code import add_code_dir, check_against_dataset
    from streamml.specs import SpecError, load_dataset_specs, read_yaml

    if code is not None:
        if not code.is_dir():
            fail(f"--code {code}: no such folder; give the folder of the Python modules your specs name", 2)
        add_code_dir(code)
    folder = folder_or_default(datasets, "datasets")
    known, folder_problems = {}, []
    if folder is not None:
        try:
            known = load_dataset_specs(folder)
        except SpecError as error:
            folder_problems = [f"cannot check against {folder}/: {line}" for line in error.problems]

    def check(path: Path) -> tuple[str, list[str]]:
        try:
            spec = load_model_spec(path)
        except SpecError as error:
            problems = list(error.problems)
            try:  # the dataset it names may be wrong too: say so now, not after the next fix
                dataset = (read_yaml(path) or {}).get("dataset")
            except (SpecError, AttributeError):
                dataset = None
            if folder is not None and not folder_problems and isinstance(dataset, str) and dataset not in known:
                problems.append(f"dataset: {dataset!r} is not among the dataset specs in {folder}/ "
                                f"(they declare: {', '.join(sorted(known)) or 'none'})")
            return "", problems
        problems = folder_problems or (dataset_problems(spec, known) if folder is not None else [])
        if not problems and spec.code_references and spec.dataset in known:
            problems = check_against_dataset(spec, known[spec.dataset])
        against = f"checked against {folder}/" if folder is not None else "not checked against datasets (--datasets)"
        return f"model {spec.name!r}, {spec.task} on dataset {spec.dataset!r}, {against}", problems

    check_files(files, check)


app.command("judge")(judge)


@app.command("list")
def list_models(state_dir: StateDir = None, as_json: AsJson = False) -> None:
    """Every model in the registry with its champion."""
    from streamml.registry.models import read_champion

    from streamml.registry.models import model_names, model_versions

    store = connect_store(state_dir)
    rows = []
    for name in model_names(store):
        champion, _ = read_champion(store, name)
        rows.append({"model": name, "champion": champion.version if champion else None,
                     "versions": len(model_versions(store, name)),
                     "since": champion.time.isoformat() if champion else None})
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("model", "champion", "versions", "since")
    for row in rows:
        table.add_row(row["model"], row["champion"] or "-", str(row["versions"]), row["since"] or "-")
    console.print(table)


@app.command("show")
def show(
    model: Annotated[str, typer.Argument(help="model name")],
    wait: Annotated[float, typer.Option(
        "--wait", help="first wait up to this many seconds until a version of MODEL is judged and the champion "
                "pointer shows the decision")] = 0,
    state_dir: StateDir = None,
    as_json: AsJson = False,
) -> None:
    """The champion, and every version with its dataset, its metrics on the validation split (the trainer's) and
    the test split (the validator's), its decision and every rule it failed."""
    from streamml.registry.decisions import read_decision
    from streamml.registry.keys import RegistryError, check_name
    from streamml.registry.models import model_versions, read_card, read_champion
    from streamml.registry.shadow import read_shadow
    from streamml.store import ObjectNotFound

    store = connect_store(state_dir)
    try:
        check_name(model)
        if wait > 0:
            _wait_for_a_decision(store, model, wait)
        champion, _ = read_champion(store, model)
        in_shadow = read_shadow(store, model)
    except RegistryError as error:
        fail(str(error), 2)
    versions = []
    for version in model_versions(store, model):
        try:
            card = read_card(store, model, version)
        except (ObjectNotFound, RegistryError):
            card = {}
        decision = read_decision(store, model, version)
        selection = card.get("selection") or {}
        versions.append({
            "version": version,
            "created": card.get("created"),
            "dataset": card.get("dataset", {}).get("version"),
            "decision": ("in shadow" if in_shadow is not None and in_shadow.version == version else None)
            if decision is None else ("promoted" if decision.promote else "rejected"),
            "summary": decision.summary if decision else None,
            "failed_rules": decision.reasons if decision else [],
            # The trainer's metrics come from the validation split (the best epoch's); the validator's from the test split.
            "validation_metrics": card.get("metrics") or {},
            "validation_epoch": selection.get("best_epoch"),
            "test_metrics": dict(decision.candidate.metrics) if decision else {},
            "latency": decision.candidate.latency.model_dump() if decision and decision.candidate.latency else None,
            "metrics": dict(decision.candidate.metrics) if decision else card.get("metrics", {}),
            "judged_on": decision.judged_on.model_dump(mode="json") if decision and decision.judged_on else None,
            "judged_on_text": decision.judged_on.text if decision and decision.judged_on else None,
            "shadow": decision.shadow.model_dump(mode="json") if decision and decision.shadow else None,
        })
    if not versions and champion is None:
        fail(f"no model {model!r} in the registry; `streamml models list` shows the models", 2)
    pointer = champion.model_dump(mode="json") if champion else None
    if as_json:
        print(json.dumps({"model": model, "champion": pointer, "versions": versions}, indent=2))
        return
    if in_shadow is not None:
        console.print(f"in shadow: [bold]{in_shadow.version}[/bold] beside {in_shadow.champion_version or '-'} since "
                      f"{in_shadow.started.isoformat()}, decided by {in_shadow.deadline.isoformat()} at the latest",
                      highlight=False)
    if champion:
        console.print(f"champion [bold]{champion.version}[/bold] (previous {champion.previous or '-'}) "
                      f"set by {champion.actor} at {champion.time.isoformat()}: {champion.reason}", highlight=False)
    else:
        console.print("no champion yet")
    table = Table("version", "created", "dataset", "decision", "validation split (trainer, best epoch)",
                  "test split (validator)")
    for row in versions:
        cells = (row["created"], row["dataset"], row["decision"])
        epoch = f" (epoch {row['validation_epoch']})" if row["validation_epoch"] is not None else ""
        table.add_row(row["version"], *(str(cell) if cell is not None else "-" for cell in cells),
                      _metrics(row["validation_metrics"]) + epoch, _metrics(row["test_metrics"]) or "not judged")
    console.print(table)
    for row in versions:
        if row["judged_on_text"]:
            console.print(f"{row['version']} judged on: {row['judged_on_text']}", highlight=False, soft_wrap=True)
        if row["shadow"]:
            live = row["shadow"]
            console.print(f"{row['version']} live, in shadow beside the champion: {live['rows']} labelled requests, "
                          f"{_metrics(live['candidate'])} vs champion {_metrics(live['champion'])}",
                          highlight=False, soft_wrap=True)
        for rule in row["failed_rules"]:
            console.print(f"{row['version']} failed: {rule}", highlight=False, markup=False, soft_wrap=True)
    if versions:
        console.print(f"every rule and the latency rounds: `streamml models judge {model} VERSION` judges one again; "
                      f"its decision is in models/{model}/<version>/decision.json", highlight=False)


def _wait_for_a_decision(store: Any, model: str, seconds: float) -> None:
    """Until the validator has judged some version of ``model`` and followed its decision (a fresh stack: data
    lands, prep builds, the trainer trains); fail naming what exists after ``seconds``."""
    import time

    from streamml.registry.decisions import read_decision
    from streamml.registry.models import model_versions, read_champion

    deadline = time.monotonic() + seconds
    while True:
        versions = model_versions(store, model)
        decisions = [decision for version in versions if (decision := read_decision(store, model, version))]
        champion = read_champion(store, model)[0] if decisions else None
        if any(_followed(decision, champion) for decision in decisions):
            return
        if time.monotonic() >= deadline:
            if not versions:
                found = "no version yet"
            elif not decisions:
                found = f"versions {', '.join(versions)}, none judged yet"
            else:
                found = "a promotion the champion pointer does not show yet"
            fail(f"no version of {model!r} was judged within {seconds:g}s ({found}); the logs of prep, the trainer "
                 "and the validator are in the stack's logs/ folder", 1)
        time.sleep(2)


def _followed(decision: Any, champion: Any) -> bool:
    """Whether the champion pointer shows ``decision``: the validator records a decision before it moves the
    pointer (services/validator/promote.py), so a promotion is done once the pointer left the champion it was
    judged against."""
    if not decision.promote:
        return True
    return (champion.version if champion else None) != decision.champion_version


def _metrics(metrics: dict) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items()) if isinstance(v, int | float))


@app.command("promote")
def promote(
    model: Annotated[str, typer.Argument(help="model name")],
    version: Annotated[str, typer.Argument(help="the version to serve")],
    reason: Reason,
    force: Annotated[
        bool, typer.Option("--force", help="promote even a version the validator did not approve")
    ] = False,
    actor: Actor = None,
    state_dir: StateDir = None,
) -> None:
    """Make VERSION the champion and announce it."""
    from streamml.registry.champion import promote_by_hand

    def change(store: Any, now: datetime):
        return promote_by_hand(store, model, version, force=force, actor=actor or default_actor(),
                               reason=reason, time=now)

    _change_and_announce(change, state_dir)


@app.command("rollback")
def rollback(
    model: Annotated[str, typer.Argument(help="model name")],
    reason: Reason,
    actor: Actor = None,
    state_dir: StateDir = None,
) -> None:
    """Make the champion's predecessor the champion again and announce it."""
    from streamml.registry.champion import roll_back

    _change_and_announce(
        lambda store, now: roll_back(store, model, actor=actor or default_actor(), reason=reason, time=now), state_dir
    )


def _change_and_announce(change: Any, state_dir: Path) -> None:
    from streamml.registry.champion import ChampionChanged, ManualPromotionRefused
    from streamml.kafka import DeliveryError, EventProducer
    from streamml.registry.keys import RegistryError

    settings = client_settings(state_dir)
    store = connect_store(state_dir)
    try:
        event = change(store, datetime.now(UTC))
    except (ManualPromotionRefused, RegistryError) as error:
        fail(str(error), 2)
    except ChampionChanged as error:
        fail(f"{error}; nothing was changed, run the command again", 1)
    producer = EventProducer(settings.kafka, client_id="streamml-cli")
    try:
        producer.send_now(event, timeout=settings.kafka.connect_timeout_s * 3)
    except DeliveryError as error:
        fail(f"champion of {event.model!r} is now {event.version}, but model.promoted was not sent ({error}); "
              f"applications pick it up when they next read the pointer, or run "
              f"`streamml models promote {event.model} {event.version} --reason ...` again to announce it", 1)
    console.print(f"champion of {event.model!r} is now {event.version} (was {event.previous_champion or '-'}); "
                  f"announced on {settings.kafka.topic('model.promoted')}", highlight=False)
