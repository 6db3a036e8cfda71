"""`streamml status` shows each model whose champion the monitor cannot watch as degraded, with the reason."""

import json
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from streamml.cli.app import app
from streamml.registry.keys import monitor_unwatched_key
from streamml.registry.monitor import UnwatchedChampion
from streamml.stack.control import Component
from streamml.store import ObjectStore
from tests.memory_store import MemoryStore

pytestmark = pytest.mark.unit
REASON = "the model card of iris v3 names manifest 'datasets/flowers/v2/manifest.json', which does not exist"


@pytest.fixture
def store(monkeypatch) -> MemoryStore:
    """The stack's store, and a stack whose ceph and monitor answer their health checks."""
    store = MemoryStore()
    healthy = [Component("ceph", True, "s3"), Component("monitor", True, "http://127.0.0.1:1")]
    monkeypatch.setattr("streamml.stack.control.status", lambda state_dir: list(healthy))
    monkeypatch.setattr("streamml.cli.stack.client_settings", lambda state_dir: SimpleNamespace(s3=None))
    monkeypatch.setattr(ObjectStore, "connect", classmethod(lambda cls, settings: store))
    return store


def status(tmp_path) -> tuple[int, list[dict]]:
    result = CliRunner().invoke(app, ["status", "--state-dir", str(tmp_path), "--json"])
    return result.exit_code, json.loads(result.output)


def test_a_model_the_monitor_cannot_watch_is_degraded_with_the_reason_and_status_exits_1(store, tmp_path):
    note = UnwatchedChampion(model="iris", version="v3", reason=REASON, since=datetime(2026, 3, 1, 12, tzinfo=UTC))
    store.put(monitor_unwatched_key("iris"), note.model_dump_json().encode())
    store.put("monitor/fraud/latest.json", b"{}")  # a watched model: no row
    code, rows = status(tmp_path)
    assert code == 1
    assert [(row["name"], row["health"]) for row in rows] == [
        ("ceph", "ok"), ("monitor", "ok"), ("monitor iris", "degraded")]
    assert rows[-1]["detail"] == f"champion v3 not watched since 2026-03-01 12:00:00 UTC: {REASON}"


def test_when_every_champion_is_watched_status_is_ok(store, tmp_path):
    assert status(tmp_path) == (0, [
        {"name": "ceph", "healthy": True, "detail": "s3", "health": "ok", "responding": True},
        {"name": "monitor", "healthy": True, "detail": "http://127.0.0.1:1", "health": "ok", "responding": True}])
