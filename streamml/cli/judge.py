"""``streamml models judge NAME VERSION``: judge a version again under the current policy.

A policy is read when a version is trained; a version rejected under an old
policy is never judged again by itself. This command runs the validator's own
judgement (``ValidatorService.judge``: evaluate on the test split, decide,
move the champion by compare-and-swap on promote) with the policy the
validator reads now, replaces the version's decision (keeping the earlier one
in its ``earlier`` list), and sends ``model.promoted`` or ``model.rejected``,
exactly as the validator would have.

    streamml models judge fraud d3-1f2e3d4c          # the stack's policies folder
    streamml models judge fraud d3-1f2e3d4c --policies policies/
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from streamml.cli.common import StateDir, console, default_actor, fail
from streamml.registry.decisions import DecisionRecord


def judge(
    model: Annotated[str, typer.Argument(help="model name")],
    version: Annotated[str, typer.Argument(help="the version to judge again")],
    policies: Annotated[Path | None, typer.Option(
        "--policies", help="folder of promotion policies [default: the stack's, else $STREAMML_VALIDATOR_POLICIES_DIR]",
        show_default=False)] = None,
    actor: Annotated[str | None, typer.Option("--actor", help="who; default $USER@hostname")] = None,
    state_dir: StateDir = None,
) -> None:
    """Judge VERSION again under the current policy: a new decision, the champion moved on promote, and the event."""
    from services.validator.promote import announcement, announcement_id
    from services.validator.policy import PolicyError, load_policies
    from services.validator.service import ValidatorService, ValidatorSettings
    from streamml.events import ModelPromoted, ModelTrained
    from streamml.kafka import DeliveryError, EventProducer
    from streamml.locate import StackNotFound, locate
    from streamml.registry.decisions import read_decision_to_replace
    from streamml.registry.keys import RegistryError, check_name, version_prefix
    from streamml.registry.models import is_committed, read_card, read_champion
    from streamml.settings import load_settings_or_exit
    from streamml.store import ObjectStore, StoreError

    try:
        found = locate(state_dir)
    except StackNotFound as error:
        fail(str(error), 2)
    settings = load_settings_or_exit(ValidatorSettings, found.config_file)
    folder = policies or _stack_policies(found.state_dir) or settings.validator.policies_dir
    try:
        policy = load_policies(folder).get(model)
    except PolicyError as error:
        fail(f"the policies in {folder} cannot be read: {error}", 2)
    if policy is None:
        fail(f"no policy for model {model!r} in {folder}; add one (model: {model}) or name the folder with --policies", 2)
    try:
        store = ObjectStore.connect(settings.s3)
        check_name(model)
        if not is_committed(store, model, version):
            fail(f"model {model!r} has no committed version {version!r}; `streamml models show {model}` lists them", 2)
        card = read_card(store, model, version)
        earlier = read_decision_to_replace(store, model, version)
    except StoreError as error:
        fail(str(error), 3)
    except RegistryError as error:
        fail(str(error), 2)
    event = ModelTrained(
        model=model, version=version, dataset=card["dataset"]["name"], dataset_version=card["dataset"]["version"],
        artifact_prefix=version_prefix(model, version), device=card.get("device", "cpu"),
        metrics={k: float(v) for k, v in (card.get("metrics") or {}).items() if isinstance(v, int | float)},
        training_seconds=float(card.get("training_seconds") or 0.0),
    )
    validator = ValidatorService.for_judging(settings, store, actor or f"{default_actor()} (streamml models judge)")
    console.print(f"judging {model} {version} on {event.dataset} v{event.dataset_version}'s test split under "
                  f"{folder}/ ...", highlight=False)
    record, stands, pointer = validator.judge(event, policy, {}, replacing=earlier)
    if stands is not record:
        console.print("another judgement of this version was recorded first; it stands:", highlight=False)
    print_decision(stands)
    if earlier is not None:
        console.print(f"replaced the decision of {earlier[0].time:%Y-%m-%d %H:%M:%S} "
                      f"({'promoted' if earlier[0].promote else 'rejected'})", highlight=False)
    event_out = announcement(stands, pointer)
    champion, _ = read_champion(store, model)
    console.print(f"champion of {model!r}: {champion.version if champion else 'none'}", highlight=False)
    if event_out is None:
        return
    try:
        EventProducer(settings.kafka, client_id="streamml-cli").send_now(
            event_out, timeout=settings.kafka.connect_timeout_s * 3, event_id=announcement_id(event_out, pointer))
    except DeliveryError as error:
        fail(f"the decision is recorded, but {event_out.TYPE} was not sent ({error}); applications pick up a new "
             "champion when they next read the pointer", 1)
    kind = "model.promoted" if isinstance(event_out, ModelPromoted) else "model.rejected"
    console.print(f"announced on {settings.kafka.topic(kind)}", highlight=False)


def _stack_policies(state_dir: Path | None) -> Path | None:
    """The policies folder the stack's validator reads."""
    from streamml.stack.supervisor import config_file

    if state_dir is None:
        return None
    try:
        folder = json.loads(config_file(state_dir).read_text()).get("policies_dir")
    except (OSError, ValueError):
        return None
    return Path(folder) if folder else None


def print_decision(record: DecisionRecord, indent: str = "  ") -> None:
    """The verdict, every failed rule, every rule that held, and the latency measurements."""
    verdict = "[green]promoted[/green]" if record.promote else "[red]rejected[/red]"
    console.print(f"{indent}{verdict} by {record.actor} at {record.time:%Y-%m-%d %H:%M:%S}"
                  f"{f' against champion {record.champion_version}' if record.champion_version else ''}")
    for reason in record.reasons:
        console.print(f"{indent}  failed: {reason}", highlight=False, markup=False, soft_wrap=True)
    for note in record.notes:
        console.print(f"{indent}  held:   {note}", highlight=False, markup=False, soft_wrap=True)
    if (latency := record.candidate.latency) is not None:
        rounds = ", ".join(f"{p95:.3g}" for p95 in latency.round_p95_ms)
        console.print(f"{indent}  latency at batch {latency.batch_size}: p50 {latency.p50_ms:.3g} ms, p95 "
                      f"{latency.p95_ms:.3g} ms (the least disturbed of {len(latency.round_p95_ms) or 1} rounds of "
                      f"{latency.calls} calls; p95 per round: {rounds or '-'} ms)", highlight=False, soft_wrap=True)
