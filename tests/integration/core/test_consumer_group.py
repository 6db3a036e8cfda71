"""At-least-once consumption in a group survives a member killed with SIGKILL."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from streamml.kafka import EventProducer

WORKER = Path(__file__).with_name("group_worker.py")
EVENTS = 10_000

pytestmark = pytest.mark.integration


def processed_keys(files: list[Path]) -> list[str]:
    keys = []
    for path in files:
        if path.exists():
            keys += [line.split()[2] for line in path.read_text().splitlines() if line.count(" ") == 2]
    return keys


def test_group_of_two_loses_nothing_when_a_member_is_killed(stack, unique, tmp_path):
    topic, group = f"events-{unique}", f"group-{unique}"
    settings = stack.settings().kafka
    admin = AdminClient(settings.client_config())
    admin.create_topics([NewTopic(topic, 4, 1)])[topic].result()

    outputs = [tmp_path / "a.txt", tmp_path / "b.txt"]
    env = {**os.environ, "PYTHONPATH": str(Path.cwd())}
    workers = [
        subprocess.Popen([sys.executable, str(WORKER), stack.bootstrap, group, topic, str(out)], env=env)
        for out in outputs
    ]
    try:
        producer = EventProducer(settings, "test")
        for i in range(EVENTS):
            producer.produce(topic, f"payload-{i}".encode(), f"key-{i}")
            if i % 1000 == 999:
                producer.flush()
                time.sleep(0.2)  # a steady stream, so the kill lands mid-stream
            if i == EVENTS // 2:
                deadline = time.monotonic() + 30
                while not processed_keys(outputs[:1]) and time.monotonic() < deadline:
                    time.sleep(0.1)
                assert processed_keys(outputs[:1]), "member A processed nothing before the kill"
                workers[0].send_signal(signal.SIGKILL)
                workers[0].wait()
        producer.flush()

        deadline = time.monotonic() + 90
        while len(set(processed_keys(outputs))) < EVENTS and time.monotonic() < deadline:
            assert workers[1].poll() is None, "the surviving member died"
            time.sleep(0.5)
        keys = processed_keys(outputs)
        missing = {f"key-{i}" for i in range(EVENTS)} - set(keys)
        assert not missing, f"{len(missing)} events never processed, e.g. {sorted(missing)[:3]}"
        # Redelivery after the kill is allowed (at-least-once), bounded by one uncommitted batch per partition.
        assert len(keys) - EVENTS <= 4 * 200
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
