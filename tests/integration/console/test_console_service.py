"""The console process on the real broker and Ceph: its pages over HTTP, the live stream, actions, settings.

The registry is ``console_world``'s, written to a Ceph bucket; the event
topics live under the test's own prefix. The browser tests
(``tests/integration/e2e/test_console_browser.py``) look at the pages the
loop itself fills.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import httpx
import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from console_world import fill

from registry_world import wait_for
from streamml.console import links
from streamml.demo import EVENT_TOPICS
from streamml.events import ModelPromoted, decode
from streamml.kafka import BatchConsumer, EventProducer
from streamml.registry.models import read_champion
from streamml.stack.ports import free_port

pytestmark = pytest.mark.integration
TOKEN = "integration-console-token"


@pytest.fixture
def console(stack, bucket, store, unique, tmp_path):
    """A filled registry, the event topics, and ``python -m streamml.console`` serving them."""
    world = fill(store, model_versions=5, dataset_versions=2)
    prefix = f"c{unique}."
    kafka = stack.settings().kafka.model_copy(update={"topic_prefix": prefix})
    admin = AdminClient(kafka.client_config())
    for future in admin.create_topics([NewTopic(kafka.topic(name), 1, 1) for name in EVENT_TOPICS]).values():
        future.result()
    # History the console must read back from Kafka: a promotion made before it started.
    EventProducer(kafka, "test").send_now(ModelPromoted(
        model=world.model, version=world.model_versions[0], artifact_prefix="models/fraud/x/", metrics={},
        actor="ops@history", reason="the first champion, by hand"))
    port = free_port()
    env = {**os.environ, **stack.env(bucket), "STREAMML_KAFKA_TOPIC_PREFIX": prefix, "STREAMML_HTTP_PORT": str(port),
           "STREAMML_CONSOLE_TOKEN": TOKEN, "STREAMML_CONSOLE_STATUS_INTERVAL_S": "1"}
    log = open(tmp_path / "console.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "streamml.console"], env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    process.log_path = tmp_path / "console.log"
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: _ready(base), 60, process, "the console's /readyz")
    yield world, base, kafka, process, stack
    if process.poll() is None:
        process.kill()
        process.wait()


def _ready(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/readyz", timeout=1) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def test_pages_show_the_registry_in_ceph_and_the_promotions_kafka_keeps(console):
    world, base, _, process, _ = console
    model = httpx.get(base + links.model(world.model))
    assert model.status_code == 200 and world.champion in model.text
    wait_for(lambda: "the first champion, by hand" in httpx.get(base + links.model(world.model)).text, 30, process,
             "the promotion read back from Kafka")
    for url in ("/models", links.version(world.model, world.champion), links.model_lineage(world.model, world.champion),
                links.raw(world.raw_keys[0]), links.dataset_version(world.dataset, 2), links.drift(world.model),
                "/loop", "/datasets", "/drift", "/lineage"):
        assert httpx.get(base + url).status_code == 200, url
    missing = httpx.get(base + "/models/fraud/versions/nope")
    assert missing.status_code == 404 and "version &#39;nope&#39; of model &#39;fraud&#39; does not exist" in missing.text


def test_the_loop_streams_a_new_event_and_the_health_it_measured(console):
    world, base, kafka, process, _ = console
    wait_for(lambda: "the first champion, by hand" in httpx.get(base + "/loop").text, 30, process, "the history")
    after = re.search(r'data-after="(\d+)"', httpx.get(base + "/loop").text)[1]
    received, status = None, None
    with httpx.stream("GET", f"{base}/loop/events?after={after}", timeout=30) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        EventProducer(kafka, "test").send_now(ModelPromoted(
            model=world.model, version=world.champion, artifact_prefix="models/fraud/y/", metrics={},
            actor="validator@live", reason="streamed"))
        deadline = time.monotonic() + 60
        for line in response.iter_lines():  # a keep-alive comment comes at least every 15 s
            if line.startswith("data: ") and '"components": [{' in line:
                status = json.loads(line[6:])
            elif line.startswith("data: ") and "PROMOTED" in line:
                received = json.loads(line[6:])
            if (received and status) or time.monotonic() > deadline:
                break
    assert received is not None, "no model.promoted arrived on the stream"
    assert received["type"] == "model.promoted" and received["link"] == links.version(world.model, world.champion)
    assert "streamed" in received["text"]
    assert status is not None, "no health measurement arrived on the stream"
    components = {c["name"]: c for c in status["components"]}
    assert components["kafka"]["healthy"] and components["object store"]["healthy"]
    assert not components["trainer"]["healthy"] and "no consumer running" in components["trainer"]["detail"]


def test_promote_with_the_token_moves_the_pointer_in_ceph_and_announces_it(console, store):
    world, base, kafka, _, _ = console
    before, _ = read_champion(store, world.model)
    other = next(v for v in world.model_versions if v != before.version)  # forced: approved or not
    form = {"version": other, "reason": "integration", "actor": "tester", "token": TOKEN,
            "expected": before.version, "force": "on"}
    refused = httpx.post(f"{base}{links.model(world.model)}/promote", data={**form, "token": "nope"})
    assert refused.status_code == 403 and read_champion(store, world.model)[0] == before
    answer = httpx.post(f"{base}{links.model(world.model)}/promote", data=form)
    assert answer.status_code == 303
    after, _ = read_champion(store, world.model)
    assert (after.version, after.previous, after.actor) == (other, before.version, "tester (console)")
    consumer = BatchConsumer(kafka, f"read-{time.monotonic_ns()}", [kafka.topic("model.promoted")])
    events = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(e.actor == "tester (console)" for e in events):
        events += [decode(m.headers(), m.key(), m.value())[0] for m in consumer.poll(100, 0.5)]
    consumer.close()
    assert any(e.version == other and e.actor == "tester (console)" for e in events)


def test_no_page_shows_a_secret(console):
    world, base, _, _, stack = console
    secrets = (TOKEN, stack.secret_key, stack.access_key)
    for url in ("/models", links.model(world.model), links.version(world.model, world.champion), "/loop",
                links.drift(world.model), "/datasets", "/metrics", "/nope"):
        body = httpx.get(base + url).text
        assert not [secret for secret in secrets if secret in body], url


def test_sigterm_stops_it_promptly_with_a_browser_still_listening(console):
    _, base, _, process, _ = console
    with httpx.stream("GET", f"{base}/loop/events", timeout=30) as response:
        next(response.iter_lines())
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    assert time.monotonic() - started < 20
    assert '"message": "stopped"' in process.log_path.read_text()


def test_bad_settings_and_an_unreachable_broker_stop_it_at_start(stack, bucket):
    base_env = {**os.environ, **stack.env(bucket)}
    bad = subprocess.run([sys.executable, "-m", "streamml.console"], env={**base_env, "STREAMML_HTTP_PORT": "eighty"},
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "STREAMML_HTTP_PORT" in bad.stderr
    away = subprocess.run([sys.executable, "-m", "streamml.console"],
                          env={**base_env, "STREAMML_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
                               "STREAMML_KAFKA_CONNECT_TIMEOUT_S": "2"}, capture_output=True, text=True, timeout=60)
    assert away.returncode == 3 and "STREAMML_KAFKA_BOOTSTRAP" in away.stderr
