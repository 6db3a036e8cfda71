"""Promote and rollback from the console: refused without the token, a reason or a fresh page; else the CLI's
compare-and-swap, announced with model.promoted, and never the token on a page."""

from __future__ import annotations

import pytest
from console_world import CONSOLE_TOKEN as TOKEN

from streamml.console import links
from streamml.registry.decisions import read_decision
from streamml.registry.models import read_champion

pytestmark = pytest.mark.unit


def form(**fields) -> dict:
    return {"reason": "canary looks good", "actor": "ana", "token": TOKEN, **fields}


def champion(store, model="fraud"):
    return read_champion(store, model)[0]


def approved_other(store, world) -> str:
    current = champion(store).version
    return next(v for v in reversed(world.model_versions)
                if v != current and read_decision(store, world.model, v).promote)


def test_without_a_token_the_console_is_read_only(read_only, filled):
    store, world = filled
    before = champion(store)
    answer = read_only.post(f"{links.model(world.model)}/promote",
                            data=form(version=world.model_versions[0], expected=before.version))
    assert answer.status_code == 403
    assert "the console is read-only: set STREAMML_CONSOLE_TOKEN" in answer.text
    assert champion(store) == before
    assert 'disabled' in read_only.get(links.model(world.model)).text


@pytest.mark.parametrize("change, status, says", [
    ({"token": "guess"}, 403, "wrong console token; nothing was changed"),
    ({"reason": " "}, 400, "give a reason"),
    ({"expected": "d0-0000"}, 409, "not d0-0000 as the page showed"),
])
def test_a_change_needs_the_token_a_reason_and_the_champion_the_page_showed(with_token, filled, change, status, says):
    client, store, sent = with_token
    _, world = filled
    before = champion(store)
    fields = form(version=approved_other(store, world), expected=before.version) | change
    answer = client.post(f"{links.model(world.model)}/promote", data=fields)
    assert answer.status_code == status and says in answer.text
    assert champion(store) == before and sent.sent == []


def test_promote_then_rollback_move_the_pointer_and_announce_each_move(with_token, filled):
    client, store, sent = with_token
    _, world = filled
    before = champion(store)
    target = approved_other(store, world)
    answer = client.post(f"{links.model(world.model)}/promote", data=form(version=target, expected=before.version),
                         follow_redirects=False)
    assert answer.status_code == 303
    moved = champion(store)
    assert (moved.version, moved.previous, moved.actor, moved.reason) == (
        target, before.version, "ana (console)", "canary looks good")
    assert [(e.version, e.previous_champion, e.actor) for e in sent.sent] == [(target, before.version, "ana (console)")]
    page = client.get(answer.headers["location"]).text
    assert f"The champion is now {target}, set by ana (console): canary looks good" in page

    back = client.post(f"{links.model(world.model)}/rollback", data=form(reason="false positives", expected=target))
    assert back.status_code == 200  # followed the redirect
    assert champion(store).version == before.version and sent.sent[-1].version == before.version
    assert TOKEN not in back.text and TOKEN not in page


def test_a_rejected_version_needs_force(with_token, filled):
    client, store, sent = with_token
    _, world = filled
    rejected = next(v for v in world.model_versions if not read_decision(store, world.model, v).promote)
    before = champion(store)
    refused = client.post(f"{links.model(world.model)}/promote", data=form(version=rejected, expected=before.version))
    assert refused.status_code == 409 and "was rejected" in refused.text and "tick “force”" in refused.text
    forced = client.post(f"{links.model(world.model)}/promote",
                         data=form(version=rejected, expected=before.version, force="on"))
    assert forced.status_code == 200 and champion(store).version == rejected


def test_no_page_renders_the_token(with_token, filled):
    client, _, _ = with_token
    _, world = filled
    for url in ("/models", links.model(world.model), links.version(world.model, world.champion), "/loop",
                links.drift(world.model), links.dataset(world.dataset), "/nope"):
        assert TOKEN not in client.get(url).text
