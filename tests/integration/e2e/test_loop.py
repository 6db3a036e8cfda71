"""The whole loop on the durable embedded stack while every component is SIGKILLed, asserted
event by event, then in the object store. The ephemeral stack's loop is asserted the same way
in test_console_browser.py, whose pages are looked at on it."""

import hashlib
import io
import json
import os
import random
import signal
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from loop_stack import (
    assert_final_state,
    loop_policies,
    print_stack_logs,
    start_stack,
    wait_until_settled,
)
from rich.console import Console

from streamml.demo import DemoFailed, DemoPlan, run_demo
from streamml.events import ModelPromoted, ModelTrained
from streamml.registry.models import read_version_files
from streamml.stack import procs
from streamml.stack.control import down
from streamml.stack.supervisor import SERVICES
from streamml.store import ObjectStore, StoreUnavailable

pytestmark = pytest.mark.integration
# Each killed service starts over (prep's Spark session cold again), and a
# shared machine can slow every step several times over: a roomy deadline.
CHAOS_PLAN = DemoPlan(rate=3000, first_records=12_000, drift_records=12_000, timeout_s=900)


# Every process of the stack, the broker twice: SIGKILLed one at a time, at random moments.
VICTIMS = ("kafka", "kafka", "ceph-mon", "ceph-osd", "radosgw", "rgw-proxy",
           "ingest", "prep", "trainer", "validator", "monitor")


def victim_pid(state: dict, victim: str) -> int | None:
    if victim == "kafka":
        return state["kafka"]["pid"]
    if victim == "rgw-proxy":
        return state["rgw_proxy"]["pid"]
    if victim in state["services"]:
        return state["services"][victim]["pid"]
    return state["s3"]["pids"].get(victim)


class Chaos(threading.Thread):
    """Kills each victim once, in a random order, 4-10 s apart, each after the
    supervisor has brought the previous one back."""

    def __init__(self, state_file: Path, seed: int) -> None:
        super().__init__(daemon=True, name="chaos")
        self.state_file, self.rng = state_file, random.Random(seed)
        self.order = self.rng.sample(VICTIMS, len(VICTIMS))
        self.killed: list[tuple[str, int, float]] = []  # victim, pid, seconds after the start
        self.stopping = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        for victim in self.order:
            if self.stopping.wait(self.rng.uniform(4, 10)):
                return
            pid = self._wait_alive(victim)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                self.killed.append((victim, pid, round(time.monotonic() - started, 1)))

    def _wait_alive(self, victim: str, timeout: float = 90) -> int | None:
        """The victim's PID once it runs, with every other component back too."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stopping.is_set():
            state = json.loads(self.state_file.read_text())
            pids = [victim_pid(state, v) for v in set(VICTIMS)]
            if all(pid and procs.pid_alive(pid) for pid in pids):
                return victim_pid(state, victim)
            time.sleep(0.5)
        return None


def assert_store_consistent(store: ObjectStore, timeline) -> None:
    """Every dataset version's manifest matches its data; every model version is complete or absent."""
    for key in [k for k in store.list("datasets/transactions/") if k.endswith("/manifest.json")]:
        manifest = json.loads(store.get_bytes(key))
        for split, entries in manifest["files"].items():
            for entry in entries:
                data = store.get_bytes(entry["key"])
                assert hashlib.sha256(data).hexdigest() == entry["sha256"], f"{entry['key']} differs from {key}"
                assert pq.read_metadata(io.BytesIO(data)).num_rows == entry["rows"]
            assert sum(e["rows"] for e in entries) == manifest["rows"][split], f"{key}: {split} row count"
    named = {e.version for _, e in timeline.events if isinstance(e, ModelTrained | ModelPromoted)}
    named.add(json.loads(store.get_bytes("models/fraud/champion.json"))["version"])
    versions = {k.split("/")[2] for k in store.list("models/fraud/") if k.count("/") >= 3}
    for version in versions:
        prefix = f"models/fraud/{version}/"
        if not store.exists(prefix + "manifest.json"):
            assert version not in named, f"{version} is named by an event or the champion but has no manifest"
            continue
        manifest, files = read_version_files(store, "fraud", version)  # VersionMismatch: a file differs
        assert sorted(files) == sorted(manifest.files), f"{prefix}: not every file of the manifest was read"


def restarts_recorded(state_file: Path, timeout: float = 60) -> dict:
    """The supervisor's state once it has counted every victim's restart (or after ``timeout``):
    a fast loop can end seconds after the last kill, before the state file says so."""
    deadline = time.monotonic() + timeout
    while True:
        stack = json.loads(state_file.read_text())
        counted = (stack["kafka"]["restarts"] >= 2 and stack["s3"]["restarts"] >= 3
                   and all(stack["services"][name]["restarts"] >= 1 for name in SERVICES))
        if counted or time.monotonic() > deadline:
            return stack
        time.sleep(0.5)


def store_once_back(settings, timeout: float = 120) -> ObjectStore:
    """The object store, once it answers again after a kill of radosgw or its proxy."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return ObjectStore.connect(settings.s3)
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


@pytest.mark.timeout(1500)
def test_the_loop_survives_sigkill_of_every_component(tmp_path):
    """SIGKILL, at random moments during the loop, the broker (twice), each
    Ceph daemon, the RGW proxy and every service; the durable stack brings
    each back and the loop loses, duplicates and corrupts nothing."""
    # The latency rule measures a model on a machine that is busy restarting
    # processes; this test is about what survives, so it gets a roomy budget.
    policies = loop_policies(tmp_path / "policies", p95_ms=1000)
    seed = int(os.environ.get("STREAMML_CHAOS_SEED") or random.randrange(1 << 30))
    config, settings = start_stack(tmp_path / "stack", ephemeral=False, policies=policies)
    chaos = Chaos(config.state_dir / "stack.json", seed)
    print(f"chaos seed {seed} (set STREAMML_CHAOS_SEED to replay): {' '.join(chaos.order)}")
    chaos.start()
    try:
        try:
            timeline = run_demo(settings, CHAOS_PLAN, Console(file=open(tmp_path / "demo.log", "w"), width=200))
        except DemoFailed as failed:
            print_stack_logs(config.state_dir, tmp_path / "demo.log")
            kills = ", ".join(f"{victim} at {at:.0f}s" for victim, _, at in chaos.killed)
            raise DemoFailed(f"{failed} (killed so far: {kills})") from failed
        chaos.join(timeout=240)  # the loop can finish before the last kill
        assert [v for v, _, _ in chaos.killed] == chaos.order, f"not every victim was killed: {chaos.killed}"
        # The last victim may have died just now: look at the store once everything is back.
        stack = restarts_recorded(config.state_dir / "stack.json")
        store = store_once_back(settings)
        assert_final_state(settings, timeline, CHAOS_PLAN, consecutive_versions=False)
        promoted = [e for _, e in timeline.events if isinstance(e, ModelPromoted)]
        for before, after in zip(promoted, promoted[1:]):
            assert after.previous_champion == before.version, "a champion move was announced twice or never"
        assert_store_consistent(store, timeline)
        # A service killed as the loop ended gets its partitions back only once its dead
        # predecessor's group session (45 s) has expired, and a candidate in shadow holds its
        # validator's partition for up to SHADOW_S with no traffic left to judge it on.
        behind = wait_until_settled(settings.kafka, timeout=240, quiet_s=0)
        if any(behind.values()):
            print_stack_logs(config.state_dir, tmp_path / "demo.log", lines=60)
        assert not any(behind.values()), f"consumer groups left behind: {behind}"
        assert stack["kafka"]["restarts"] >= 2 and stack["s3"]["restarts"] >= 3
        assert all(stack["services"][name]["restarts"] >= 1 for name in SERVICES)
    finally:
        chaos.stopping.set()
        down(config.state_dir)
