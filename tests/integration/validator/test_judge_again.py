"""A policy edited while the validator runs is read at once, and `streamml models judge` judges a rejected
version again under it: a new decision (the old one kept), the champion moved by CAS, and the event."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from registry_world import MODEL, POLICY, put_dataset, put_version, trained, trained_event
from streamml.cli.app import app
from streamml.events import ModelPromoted
from streamml.registry.decisions import read_decision
from streamml.registry.models import read_champion

pytestmark = pytest.mark.integration
STRICT = POLICY.replace("min: {auc: 0.80}", "min: {auc: 0.999}")


def test_an_edited_policy_is_read_at_once_and_judge_applies_it_to_a_rejected_version(stack, world, services):
    (world.folder / f"{MODEL}.yaml").write_text(STRICT)
    put_dataset(world.store, 1)
    put_version(world.store, "v1", trained("strong", 1))
    put_version(world.store, "v2", trained("strong", 1))
    validator = services.start("validator", world.bucket, **world.env)
    world.send(trained_event("v1", trained("strong", 1)))
    (rejected,) = world.events("model.rejected", 1)
    assert rejected.version == "v1" and any("floor 0.999" in reason for reason in rejected.reasons)

    (world.folder / f"{MODEL}.yaml").write_text(POLICY)  # no restart: the next judgement reads it
    world.send(trained_event("v2", trained("strong", 1)))
    (promoted,) = world.events("model.promoted", 1)
    assert promoted.version == "v2", validator.log_path.read_text()[-3000:]

    (world.folder / f"{MODEL}.yaml").write_text(POLICY.replace("min_improvement: {auc: 0.01}", ""))
    env = {**stack.env(world.bucket), **world.env, "STREAMML_CONFIG_FILE": ""}
    show = CliRunner().invoke(app, ["models", "show", MODEL], env=env, terminal_width=200)
    assert "v1 failed: auc" in show.output and "< floor 0.999" in show.output, show.output

    judged = CliRunner().invoke(app, ["models", "judge", MODEL, "v1", "--policies", str(world.folder),
                                      "--actor", "ana@laptop"], env=env, terminal_width=200)
    assert judged.exit_code == 0, judged.output
    assert "promoted by ana@laptop" in judged.output and "against champion v2" in judged.output
    assert "latency at batch 64" in judged.output and "p95 per round" in judged.output
    assert "replaced the decision of" in judged.output and "champion of 'fraud': v1" in judged.output
    decision = read_decision(world.store, MODEL, "v1")
    assert decision.promote and decision.actor == "ana@laptop"
    assert [(e.promote, e.policy["min"]) for e in decision.earlier] == [(False, {"auc": 0.999})]
    pointer, _ = read_champion(world.store, MODEL)
    assert (pointer.version, pointer.previous, pointer.actor) == ("v1", "v2", "ana@laptop")
    (again,) = world.events("model.promoted", 2)[1:]
    assert isinstance(again, ModelPromoted) and (again.version, again.previous_champion) == ("v1", "v2")

    shown = json.loads(CliRunner().invoke(app, ["models", "show", MODEL, "--json"], env=env).output)
    v1 = next(v for v in shown["versions"] if v["version"] == "v1")
    assert v1["failed_rules"] == [] and v1["test_metrics"]["auc"] > 0.9 and v1["validation_metrics"]["auc"] > 0.9
