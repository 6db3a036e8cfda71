"""The console's app on an in-memory registry: no broker, no store process, no browser."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator

import pytest
from console_world import CONSOLE_TOKEN, World, fill
from memory_store import MemoryStore
from pydantic import SecretStr

with warnings.catch_warnings():  # Starlette would rather have httpx2, which is not on the package index
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from streamml.console.actions import ChampionActions
from streamml.console.app import Console, console_app
from streamml.console.live import EventLog
from streamml.console.reads import ConsoleRegistry
from streamml.console.status import Component, LoopStatus, TopicLag
from streamml.settings import KafkaSettings

class SentEvents:
    """Stands in for the producer: what would have been announced."""

    def __init__(self) -> None:
        self.sent: list = []

    def send_now(self, event, topic=None, timeout=60.0) -> None:
        self.sent.append(event)


@pytest.fixture(scope="session")
def filled() -> tuple[MemoryStore, World]:
    store = MemoryStore()
    return store, fill(store, model_versions=6, dataset_versions=3)


def make_console(store, token: str | None, producer=None) -> Console:
    status = LoopStatus(1, None, [Component("kafka", True, "1 broker(s)")], [TopicLag("ingest", "g", "t", 5)])
    events = EventLog(100)
    events.caught_up.set()
    actions = ChampionActions(store, KafkaSettings(), SecretStr(token) if token else None, producer)
    return Console(ConsoleRegistry(store), events, lambda: status, actions, threading.Event())


@pytest.fixture
def read_only(filled) -> Iterator[TestClient]:
    store, _ = filled
    console = make_console(store, None)
    with TestClient(console_app(console)) as client:
        client.app_console = console
        yield client
    console.registry.close()


@pytest.fixture
def with_token(filled) -> Iterator[tuple[TestClient, MemoryStore, SentEvents]]:
    """A console with the token set, on a copy of the world (its champion moves)."""
    original, _ = filled
    store = MemoryStore()
    store.objects = dict(original.objects)
    sent = SentEvents()
    console = make_console(store, CONSOLE_TOKEN, sent)
    with TestClient(console_app(console)) as client:
        yield client, store, sent
    console.registry.close()
