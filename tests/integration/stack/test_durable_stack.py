"""The durable embedded stack keeps topics, committed offsets and objects through
`streamml restart`, SIGKILL of the broker and of Ceph's daemons, and `down`/`up`;
a damaged OSD store stops `up` with one line and is left as it was."""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streamml.settings import ServiceSettings
from streamml.stack.control import down, restart, status, up
from streamml.stack.ports import free_port
from streamml.stack.supervisor import StackConfig
from streamml.store import ObjectStore

pytestmark = pytest.mark.integration
TOPIC, GROUP, RECORDS, COMMITTED = "resume", "resume-group", 100, 40


def settings_of(state_dir: Path) -> ServiceSettings:
    os.environ["STREAMML_CONFIG_FILE"] = str(state_dir / "config.yaml")
    try:
        return ServiceSettings()
    finally:
        del os.environ["STREAMML_CONFIG_FILE"]


def consumer(bootstrap: str) -> Consumer:
    return Consumer({"bootstrap.servers": bootstrap, "group.id": GROUP, "auto.offset.reset": "earliest",
                     "enable.auto.commit": False, "session.timeout.ms": 6000, "fetch.wait.max.ms": 50})


def write_data(settings: ServiceSettings) -> None:
    ObjectStore.connect(settings.s3).put("models/m/champion.json", b'{"version": "kept"}')
    bootstrap = settings.kafka.bootstrap
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(TOPIC, 1, 1)]).values():
        future.result(timeout=20)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for i in range(RECORDS):
        producer.produce(TOPIC, f"r{i}".encode(), key=b"k")
    assert producer.flush(30) == 0
    group = consumer(bootstrap)
    group.assign([TopicPartition(TOPIC, 0, 0)])
    got = []
    while len(got) < COMMITTED:
        got += [m for m in group.consume(COMMITTED - len(got), 1) if m.error() is None]
    group.commit(offsets=[TopicPartition(TOPIC, 0, COMMITTED)], asynchronous=False)
    group.close()


def assert_kept(settings: ServiceSettings, when: str) -> None:
    assert ObjectStore.connect(settings.s3).get_bytes("models/m/champion.json") == b'{"version": "kept"}', when
    group = consumer(settings.kafka.bootstrap)
    try:
        committed = group.committed([TopicPartition(TOPIC, 0)], timeout=20)[0].offset
        assert committed == COMMITTED, f"{when}: committed offset {committed}"
        group.assign([TopicPartition(TOPIC, 0, committed)])
        values, deadline = [], time.monotonic() + 30
        while len(values) < RECORDS - COMMITTED and time.monotonic() < deadline:
            values += [m.value() for m in group.consume(100, 1) if m.error() is None]
        assert values == [f"r{i}".encode() for i in range(COMMITTED, RECORDS)], when
    finally:
        group.close()


def head(path: Path) -> bytes:
    with open(path, "rb") as f:  # the block file is sparse and large
        return f.read(4096)


def wait_healthy(state_dir: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        components = status(state_dir)
        if components and all(c.healthy for c in components):
            return
        time.sleep(0.5)
    raise AssertionError(f"not healthy after {timeout}s: {[c for c in status(state_dir) if not c.healthy]}")


def test_data_survives_restart_sigkill_and_down_up_and_a_damaged_osd_is_kept(tmp_path):
    config = StackConfig(state_dir=tmp_path / "stack", kafka_port=free_port(), s3_port=free_port(),
                         http_base_port=free_port(), services=())
    state = config.state_dir
    up(config, echo=lambda *_: None)
    try:
        settings = settings_of(state)
        write_data(settings)
        for component in ("kafka", "ceph", "rgw-proxy"):
            restart(state, component)
            assert_kept(settings, f"after streamml restart {component}")

        stack = json.loads((state / "stack.json").read_text())
        for pid in [stack["kafka"]["pid"], *stack["s3"]["pids"].values(), stack["rgw_proxy"]["pid"]]:
            os.kill(pid, signal.SIGKILL)
        time.sleep(1)
        wait_healthy(state)
        assert_kept(settings, "after SIGKILL of the broker, the proxy and every Ceph daemon")
    finally:
        down(state)

    up(config, echo=lambda *_: None)
    try:
        assert_kept(settings_of(state), "after down and up")
    finally:
        down(state)

    # A damaged OSD store: one line naming it, and the store left exactly as it was.
    block = state / "ceph" / "osd" / "0" / "block"
    with open(block, "r+b") as f:
        f.write(uuid.uuid4().bytes * 256)  # the label bluestore reads first
    size, damaged = block.stat().st_size, head(block)
    ports = [f"--kafka-port={config.kafka_port}", f"--s3-port={config.s3_port}",
             f"--http-base-port={config.http_base_port}"]
    started = subprocess.run([sys.executable, "-m", "streamml.cli", "up", "--state-dir", str(state), *ports],
                             capture_output=True, text=True, timeout=180,
                             env={k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")})
    down(state)
    message = " ".join(started.stderr.split())
    assert started.returncode == 1, started.stdout + started.stderr
    assert "ceph-osd died during start" in message and f"{state}/ceph/osd/0 may be damaged" in message, message
    assert "nothing was deleted" in message and "Traceback" not in message
    assert block.stat().st_size == size and head(block) == damaged
