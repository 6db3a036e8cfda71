"""The console's parts that need no page: settings, the groups it watches, charts, the event stream."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import UTC, datetime, timedelta

import pytest
import yaml

from streamml.console import charts
from streamml.console.live import EventLog
from streamml.console.pages.loop import stream
from streamml.console.settings import SERVICE_GROUPS, ConsoleSettings
from streamml.console.status import LoopStatus
from streamml.events import DatasetReady
from streamml.settings import SettingsError, load_settings

pytestmark = pytest.mark.unit
ROOT = __import__("pathlib").Path(__file__).resolve().parents[3]


def test_the_console_listens_on_loopback_8090_read_only_unless_told(monkeypatch):
    for name in ("STREAMML_HTTP_HOST", "STREAMML_HTTP_PORT", "STREAMML_CONSOLE_TOKEN", "STREAMML_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(ConsoleSettings)
    assert (settings.http.host, settings.http.port, settings.console.token) == ("127.0.0.1", 8090, None)
    monkeypatch.setenv("STREAMML_HTTP_HOST", "0.0.0.0")
    monkeypatch.setenv("STREAMML_CONSOLE_TOKEN", "a-token-of-16-chars")
    settings = load_settings(ConsoleSettings)
    assert (settings.http.host, settings.http.port) == ("0.0.0.0", 8090)  # the port keeps its default
    assert settings.console.token.get_secret_value() == "a-token-of-16-chars"
    assert "a-token-of-16-chars" not in repr(settings)


def test_an_empty_token_is_read_only_and_a_short_one_is_refused_without_being_shown(monkeypatch):
    monkeypatch.setenv("STREAMML_CONSOLE_TOKEN", "")
    assert load_settings(ConsoleSettings).console.token is None
    monkeypatch.setenv("STREAMML_CONSOLE_TOKEN", "guessable")
    with pytest.raises(SettingsError) as refused:
        load_settings(ConsoleSettings)
    assert "STREAMML_CONSOLE_TOKEN=***: Value error, use at least 16 characters" in str(refused.value)
    assert "guessable" not in str(refused.value)


def test_it_watches_the_consumer_group_each_service_has_in_deploy_consumers():
    declared = yaml.safe_load((ROOT / "deploy" / "consumers.yaml").read_text())
    assert SERVICE_GROUPS == {service: entry["group"] for service, entry in declared.items()}


def test_a_drift_chart_marks_each_event_and_draws_each_threshold_once():
    start = datetime(2026, 1, 1, tzinfo=UTC)
    times = [start + timedelta(minutes=i) for i in range(3)]
    figure = charts.drift_series("num_0", {"psi (psi)": (times, [0.0, 0.2, 0.4]), "ks (ks)": (times, [0, 0.1, 0.2])},
                                 {"psi": 0.1, "ks": 0.1}, [(times[2], "covariate")], "effect size")
    assert [trace["name"] for trace in figure["data"]] == ["psi (psi)", "ks (ks)"]
    shapes = figure["layout"]["shapes"]
    assert [s["name"] for s in shapes] == ["threshold psi, ks", "drift.detected"]
    assert shapes[1]["x0"] == times[2].isoformat()
    texts = [a["text"] for a in figure["layout"]["annotations"]]
    assert texts == ["psi, ks threshold 0.1", "drift.detected (covariate)"]


def test_the_event_stream_sends_what_is_newer_then_the_status_then_stops_with_the_console():
    events, stopping = EventLog(10), threading.Event()
    now = datetime.now(UTC)
    old = events.add(DatasetReady(dataset="tx", version=1, manifest_key="k", rows={}, trigger="rows"), "a", now)
    events.add(DatasetReady(dataset="tx", version=2, manifest_key="k", rows={}, trigger="drift"), "b", now)

    async def first(count: int) -> list[str]:
        chunks = []
        async for chunk in stream(events, lambda: LoopStatus(3, now), old.seq, stopping):
            chunks.append(chunk)
            if len(chunks) == count:
                stopping.set()
        return chunks

    retry, event, status = asyncio.run(first(3))
    assert retry.startswith("retry:")
    lines = dict(line.split(": ", 1) for line in event.strip().split("\n"))
    assert lines["id"] == str(old.seq + 1) and lines["event"] == "event"
    assert json.loads(lines["data"])["link"] == "/datasets/tx/v2"
    assert "dataset tx v2 ready" in json.loads(lines["data"])["text"]
    assert status.startswith("event: status") and json.loads(status.split("data: ", 1)[1])["seq"] == 3
