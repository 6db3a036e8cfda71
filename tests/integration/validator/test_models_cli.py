"""`streamml models` against a real registry in Ceph and a real broker."""

from __future__ import annotations

import json
import threading

import pytest
from typer.testing import CliRunner

from registry_world import MODEL, now, put_dataset, put_version, trained
from services.validator.promote import ChampionChanged, set_champion
from streamml.cli.models import app as models_app
from streamml.events import ModelPromoted
from streamml.registry.models import read_champion

pytestmark = pytest.mark.integration


@pytest.fixture
def cli(stack, world, tmp_path):
    runner = CliRunner()
    env = {**stack.env(world.bucket), **world.env, "STREAMML_CONFIG_FILE": ""}

    def run(*args: str):
        result = runner.invoke(models_app, list(args), env=env)  # the STREAMML_* settings name the stack
        return result

    return run


def test_promote_and_rollback_by_hand_record_who_and_why_and_announce(world, cli):
    put_dataset(world.store, 1)
    put_version(world.store, "v1", trained("weak", 1))
    put_version(world.store, "v2", trained("strong", 1))
    set_champion(world.store, MODEL, "v1", expected=None, actor="validator@x", reason="first", time=now())

    refused = cli("promote", MODEL, "v2", "--reason", "looks better")
    assert refused.exit_code == 2, refused.output
    assert "never judged" in refused.output and "--force" in refused.output
    assert read_champion(world.store, MODEL)[0].version == "v1"

    missing = cli("promote", MODEL, "v9", "--force", "--reason", "typo")
    assert missing.exit_code == 2 and "no committed version 'v9'" in missing.output

    forced = cli("promote", MODEL, "v2", "--force", "--reason", "hotfix for web", "--actor", "ana@laptop")
    assert forced.exit_code == 0, forced.output
    pointer = read_champion(world.store, MODEL)[0]
    assert (pointer.version, pointer.previous) == ("v2", "v1")
    assert (pointer.actor, pointer.reason) == ("ana@laptop", "hotfix for web")

    back = cli("rollback", MODEL, "--reason", "false positives", "--actor", "bo@laptop")
    assert back.exit_code == 0, back.output
    pointer = read_champion(world.store, MODEL)[0]
    assert (pointer.version, pointer.previous) == ("v1", "v2")
    assert (pointer.actor, pointer.reason) == ("bo@laptop", "false positives")

    events = world.events("model.promoted", 2)
    assert [(e.version, e.previous_champion, e.actor, e.reason) for e in events] == [
        ("v2", "v1", "ana@laptop", "hotfix for web"), ("v1", "v2", "bo@laptop", "false positives")]
    assert all(isinstance(e, ModelPromoted) and e.metrics for e in events)

    listed = cli("list", "--json")
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.output) == [{"model": MODEL, "champion": "v1", "versions": 2,
                                          "since": pointer.time.isoformat()}]
    shown = json.loads(cli("show", MODEL, "--json").output)
    assert shown["champion"]["version"] == "v1"
    assert [v["version"] for v in shown["versions"]] == ["v1", "v2"]
    assert shown["versions"][1]["metrics"]["auc"] > 0.9


def test_of_writers_that_read_the_same_champion_exactly_one_wins_on_ceph(world):
    """The compare-and-swap the validator and the CLI rely on, with RGW's If-Match / If-None-Match."""
    put_dataset(world.store, 1)
    versions = [f"v{i}" for i in range(1, 7)]
    for version in versions:
        put_version(world.store, version, trained("weak", 1))
    for expected in (None, "v1"):  # creating the pointer, then replacing it
        if expected is not None:
            set_champion(world.store, MODEL, "v1", expected=None, actor="t", reason="seed", time=now())
        contenders = [v for v in versions if v != expected]
        barrier = threading.Barrier(len(contenders))
        outcomes: dict[str, str] = {}

        def promote(version: str) -> None:
            barrier.wait()
            try:
                set_champion(world.store, MODEL, version, expected=expected, actor=version, reason="race", time=now())
                outcomes[version] = "won"
            except ChampionChanged:
                outcomes[version] = "lost"

        threads = [threading.Thread(target=promote, args=(v,)) for v in contenders]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        winners = [v for v, outcome in outcomes.items() if outcome == "won"]
        assert len(winners) == 1, outcomes
        pointer = read_champion(world.store, MODEL)[0]
        assert (pointer.version, pointer.actor, pointer.previous) == (winners[0], winners[0], expected)
        world.store.delete(f"models/{MODEL}/champion.json")
