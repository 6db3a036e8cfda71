"""The whole loop on the embedded stack, asserted event by event, then in the object store."""

import io
import json
import os
import signal
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from rich.console import Console

from streamml.demo import EXAMPLES, DemoPlan, run_demo
from streamml.events import DatasetReady, DriftDetected, ModelPromoted, ModelTrained
from streamml.settings import ServiceSettings
from streamml.stack.control import down, up
from streamml.stack.ports import free_port
from streamml.stack.supervisor import SERVICES, StackConfig
from streamml.store import ObjectStore

pytestmark = pytest.mark.integration
PLAN = DemoPlan(rate=3000, first_records=12_000, drift_records=12_000, timeout_s=420)


def start_stack(tmp_path: Path) -> tuple[StackConfig, ServiceSettings]:
    config = StackConfig(
        state_dir=tmp_path / "stack", kafka_port=free_port(), s3_port=free_port(), http_base_port=free_port(),
        specs_dir=EXAMPLES / "datasets", models_dir=EXAMPLES / "models", policies_dir=EXAMPLES / "policies",
    )
    up(config, timeout=120, echo=lambda *_: None)
    os.environ["STREAMML_CONFIG_FILE"] = str(config.state_dir / "config.yaml")
    try:
        settings = ServiceSettings()
    finally:
        del os.environ["STREAMML_CONFIG_FILE"]
    return config, settings


def landed_offsets(store: ObjectStore) -> list[tuple[int, int]]:
    offsets = []
    for key in store.list("raw/transactions/"):
        table = pq.read_table(io.BytesIO(store.get_bytes(key)), columns=["_partition", "_offset"])
        offsets += zip(table.column(0).to_pylist(), table.column(1).to_pylist())
    return offsets


def assert_final_state(settings: ServiceSettings, timeline) -> None:
    promoted = [e for _, e in timeline.events if isinstance(e, ModelPromoted)]
    assert len({e.version for e in promoted}) >= 2
    assert len(promoted) == len({(e.version, e.previous_champion) for e in promoted}), "a promotion was announced twice"
    assert promoted[1].previous_champion == promoted[0].version
    store = ObjectStore.connect(settings.s3)
    champion = json.loads(store.get_bytes("models/fraud/champion.json"))
    assert champion["version"] == promoted[-1].version
    ready = [e for _, e in timeline.events if isinstance(e, DatasetReady)]
    versions = sorted(e.version for e in ready)
    assert versions[:2] == [1, 2]
    for event in ready:
        manifest = json.loads(store.get_bytes(event.manifest_key))
        assert manifest["version"] == event.version and manifest["rows"] == event.rows
    trained = [e for _, e in timeline.events if isinstance(e, ModelTrained)]
    for event in trained:
        assert store.exists(f"{event.artifact_prefix.rstrip('/')}/manifest.json")
    drift = [e for _, e in timeline.events if isinstance(e, DriftDetected)]
    assert len(drift) >= 1
    # Every published transaction landed exactly once.
    published = PLAN.first_records + PLAN.drift_records
    deadline = time.monotonic() + 60
    while len(offsets := landed_offsets(store)) < published and time.monotonic() < deadline:
        time.sleep(1)
    assert len(offsets) == len(set(offsets)) == published


def test_the_loop_reaches_a_second_champion(tmp_path):
    config, settings = start_stack(tmp_path)
    try:
        timeline = run_demo(settings, PLAN, Console(file=open(tmp_path / "demo.log", "w")))
        assert_final_state(settings, timeline)
    finally:
        down(config.state_dir)


def test_the_loop_survives_each_service_killed_once(tmp_path):
    """SIGKILL each service once during the loop; the supervisor restarts it.

    The broker is not restarted: the embedded broker keeps topics in memory
    (see README), so a restart would lose unconsumed records by design.
    """
    config, settings = start_stack(tmp_path)
    stop = threading.Event()

    def chaos() -> None:
        state_file = config.state_dir / "stack.json"
        for name in ("ingest", "prep", "trainer", "validator", "monitor"):
            if stop.wait(8):
                return
            pid = json.loads(state_file.read_text())["services"][name]["pid"]
            if pid:
                os.kill(pid, signal.SIGKILL)

    killer = threading.Thread(target=chaos, daemon=True)
    killer.start()
    try:
        timeline = run_demo(settings, PLAN, Console(file=open(tmp_path / "demo.log", "w")))
        assert_final_state(settings, timeline)
        stack = json.loads((config.state_dir / "stack.json").read_text())
        assert all(stack["services"][name]["restarts"] >= 1 for name in SERVICES)
    finally:
        stop.set()
        down(config.state_dir)
