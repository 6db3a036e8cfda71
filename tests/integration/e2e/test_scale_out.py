"""The loop with two replicas of every service on one stack, one replica of each SIGKILLed at a random
moment: the store and the topics must show what one replica of each would have left.

The services run as ``python -m services.<name>`` against the session's broker and Ceph (the
``services`` fixture); the demo drives the loop (records, an application on the SDK, a drift).
``STREAMML_SCALE_SEED`` replays a run's kill schedule (each run prints its seed).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import signal
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from loop_stack import loop_policies, read_events
from rich.console import Console

from streamml.demo import EXAMPLES, DemoFailed, DemoPlan, run_demo
from streamml.events import DatasetReady, DriftDetected, ModelPromoted, ModelRejected, ModelTrained
from streamml.manifest import DatasetManifest
from streamml.registry.datasets import raw_objects, read_manifest, version_numbers
from streamml.registry.decisions import read_decision
from streamml.registry.keys import dataset_manifest_key
from streamml.registry.models import is_committed, model_versions, read_champion, read_version_files
from streamml.topics import apply_declared

pytestmark = pytest.mark.integration
SERVICES = ("ingest", "prep", "trainer", "validator", "monitor")
# Ten services and two Spark jobs share the host, and killed replicas leave work to be taken over:
# a roomy deadline, as for the chaos test of the loop.
PLAN = DemoPlan(rate=3000, first_records=12_000, drift_records=12_000, timeout_s=900)
DATASET, MODEL = "transactions", "fraud"
KILL_WITHIN_S = (5.0, 50.0)  # s after all replicas are ready: before the loop ends (~70 s on a quiet host)


@pytest.mark.timeout(1500)
def test_two_replicas_of_every_service_with_one_of_each_killed_leave_what_one_would(
    stack, services, unique, bucket, store, tmp_path
):
    prefix = f"s{unique}."
    kafka = stack.settings().kafka.model_copy(update={"topic_prefix": prefix, "group_prefix": prefix})
    apply_declared(kafka, specs_dir=EXAMPLES / "datasets", models=[MODEL])
    # The example policy, with a latency budget a host busy with ten services and two Spark jobs meets:
    # what is under test is who decides, not how fast the model answers.
    policies = loop_policies(tmp_path / "policies", p95_ms=500)
    env = {
        "STREAMML_KAFKA_TOPIC_PREFIX": prefix,
        "STREAMML_KAFKA_GROUP_PREFIX": prefix,
        "STREAMML_INGEST_SPECS_DIR": str(EXAMPLES / "datasets"),
        "STREAMML_INGEST_PROCESSES": "1",
        "STREAMML_INGEST_FLUSH_AGE_S": "2",
        "STREAMML_PREP_SPECS_DIR": str(EXAMPLES / "datasets"),
        # Spark, not DuckDB: a DuckDB build of this data is over in a second or two, so the kills
        # would rarely land inside one, and the whole loop would end before the last kill is due.
        "STREAMML_PREP_ENGINE": "spark",
        "STREAMML_PREP_SPARK_MASTER": "local[2]",
        "STREAMML_PREP_DRIVER_MEMORY": "1g",
        "STREAMML_PREP_JARS_DIR": str(Path.cwd() / "vendor" / "jars"),
        "STREAMML_PREP_LEASE_S": "10",
        "STREAMML_TRAINER_MODELS_DIR": str(EXAMPLES / "models"),
        "STREAMML_TRAINER_CPU_THREADS": "1",
        "STREAMML_VALIDATOR_POLICIES_DIR": str(policies),
        "STREAMML_MONITOR_MODELS": json.dumps([MODEL]),
        "STREAMML_MONITOR_CHECKPOINT_INTERVAL_S": "2",
        "STREAMML_MONITOR_CHAMPION_REFRESH_S": "2",
    }
    replicas = {
        name: [services.start(name, bucket, **env, STREAMML_STATE_DIR=str(tmp_path / f"{name}-{i}")) for i in range(2)]
        for name in SERVICES
    }
    wait_until_ready(replicas)
    seed = int(os.environ.get("STREAMML_SCALE_SEED", time.time_ns() % 2**32))
    chaos = Chaos(replicas, random.Random(seed))
    print(f"kill schedule (STREAMML_SCALE_SEED={seed}): {chaos.describe()}")
    settings = stack.settings(bucket=bucket).model_copy(update={"kafka": kafka})
    started = time.monotonic()
    chaos.start()
    try:
        run_demo(settings, PLAN, Console(file=open(tmp_path / "demo.log", "w")))
    except DemoFailed as failure:
        raise AssertionError(f"{failure}\n{tails(replicas)}") from None
    finally:
        chaos.stop.set()
        chaos.join()
    print(f"loop done in {time.monotonic() - started:.0f} s; killed: {chaos.killed}")
    assert len(chaos.killed) == len(SERVICES), f"not every service lost a replica: {chaos.killed}"

    published = PLAN.first_records + PLAN.drift_records
    wait_until_landed(store, published, replicas)
    events, settled = read_settled_events(store, kafka)
    check_dataset_versions(store, events[DatasetReady], settled.datasets)
    check_model_versions(store, events[ModelTrained], settled.models)
    check_decisions_and_promotions(store, events[ModelPromoted], events[ModelRejected], settled.champion)
    check_one_drift_per_injection(events[DriftDetected])
    offsets = landed_offsets(store)
    assert len(offsets) == len(set(offsets)) == published, "a published record landed twice, or not at all"


class Chaos(threading.Thread):
    """SIGKILLs one replica of each service, each at its own random moment."""

    def __init__(self, replicas: dict, rng: random.Random) -> None:
        super().__init__(daemon=True, name="chaos")
        self.schedule = sorted((rng.uniform(*KILL_WITHIN_S), name, rng.randrange(2)) for name in replicas)
        self.replicas = replicas
        self.stop = threading.Event()
        self.killed: list[tuple[str, int, float]] = []

    def describe(self) -> str:
        return ", ".join(f"{name}[{index}] at {at:.0f}s" for at, name, index in self.schedule)

    def run(self) -> None:
        started = time.monotonic()
        for at, name, index in self.schedule:
            if self.stop.wait(max(0.0, started + at - time.monotonic())):
                return
            process = self.replicas[name][index]
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
            self.killed.append((name, index, round(time.monotonic() - started, 1)))


@dataclass(frozen=True)
class Settled:
    """What the store held when every piece of it had been announced."""

    datasets: set[int]
    models: set[str]
    champion: str | None


def read_settled_events(store, kafka, timeout: float = 120) -> tuple[dict[type, list], Settled]:
    """The loop's events once the store holds nothing they have yet to announce, and what it held
    then. A build or a training that ends as the demo ends writes its manifest a moment before its
    event, and the champion pointer moves a moment before model.promoted. Work goes on after that
    moment (prep builds leftover rows on its staleness rule), so the checks look at what the store
    held then: each piece was written before its event, so the events read then announce exactly it."""
    deadline = time.monotonic() + timeout
    while True:
        events = defaultdict(list)
        for event_id, event in read_events(kafka):
            events[type(event)].append((event_id, event))
        datasets = {n for n in version_numbers(store, DATASET) if store.exists(dataset_manifest_key(DATASET, n))}
        models = {v for v in model_versions(store, MODEL) if is_committed(store, MODEL, v)}
        pointer, _ = read_champion(store, MODEL)
        settled = (datasets <= {e.version for _, e in events[DatasetReady]}
                   and models <= {e.version for _, e in events[ModelTrained]}
                   and (pointer is None or pointer.version in {e.version for _, e in events[ModelPromoted]}))
        if settled or time.monotonic() > deadline:
            return events, Settled(datasets, models, pointer.version if pointer else None)
        time.sleep(2)


def check_dataset_versions(store, ready: list[tuple[str, DatasetReady]], committed: set[int]) -> None:
    """Each version built once: one manifest naming one attempt's files, all there with their hashes,
    announced under one id."""
    for number in sorted(committed):
        manifest: DatasetManifest = read_manifest(store, DATASET, number)
        keys = [entry for files in manifest.files.values() for entry in files]
        attempts = {entry.key.split("/attempts/", 1)[1].split("/", 1)[0] for entry in keys}
        assert len(attempts) == 1, f"v{number} names the files of several attempts: {attempts}"
        for entry in keys:
            data = store.get_bytes(entry.key)
            assert pq.read_metadata(io.BytesIO(data)).num_rows == entry.rows, entry.key
            assert hashlib.sha256(data).hexdigest() == entry.sha256, f"{entry.key} is not the file built"
    assert sorted(committed)[:2] == [1, 2], committed
    announced = defaultdict(set)
    for event_id, event in ready:
        announced[event.version].add(event_id)
    assert sorted(announced) == sorted(committed)
    assert all(len(ids) == 1 for ids in announced.values()), f"a version was announced as two events: {announced}"


def check_model_versions(store, trained: list[tuple[str, ModelTrained]], versions: set[str]) -> None:
    """Each version complete, every file matching its manifest, published once."""
    for version in versions:
        manifest, files = read_version_files(store, MODEL, version)  # refuses a file that does not match
        assert sorted(files) == sorted(manifest.files) and {"card.json", "state_dict.pt"} <= set(files)
    announced = defaultdict(set)
    for event_id, event in trained:
        announced[event.version].add(event_id)
    assert set(announced) == set(versions)
    assert all(len(ids) == 1 for ids in announced.values()), f"a version was published twice: {announced}"


def check_decisions_and_promotions(store, promoted: list[tuple[str, ModelPromoted]],
                                   rejected: list[tuple[str, ModelRejected]], champion: str | None) -> None:
    """One decision per version, agreeing with every announcement and with the pointer; one
    model.promoted per champion move."""
    for _, event in promoted:
        assert read_decision(store, MODEL, event.version).promote, f"{event.version} promoted against its decision"
    for _, event in rejected:
        assert not read_decision(store, MODEL, event.version).promote, f"{event.version} rejected against its decision"
    assert not {e.version for _, e in promoted} & {e.version for _, e in rejected}
    moves = defaultdict(set)
    for event_id, event in promoted:
        moves[(event.previous_champion, event.version)].add(event_id)
    assert all(len(ids) == 1 for ids in moves.values()), f"a champion move was announced twice: {moves}"
    chain = [None]
    for previous, version in moves:  # in the order the moves were first announced
        assert previous == chain[-1], f"the moves do not follow one another: {list(moves)}"
        chain.append(version)
    assert champion == chain[-1] and len(chain) >= 3
    assert read_decision(store, MODEL, champion).promote


def check_one_drift_per_injection(drifts: list[tuple[str, DriftDetected]]) -> None:
    """The demo injects one drift: the champion serving then (the first, or one built from late
    first records) raises one event for it, however many monitor replicas came and went."""
    by_champion = defaultdict(set)
    for event_id, event in drifts:
        by_champion[event.dataset_version].add(event_id)
    assert by_champion, "no drift event for the injected drift"
    assert all(len(ids) == 1 for ids in by_champion.values()), f"a drift was raised twice: {drifts}"


def landed_offsets(store) -> list[tuple[int, int]]:
    offsets = []
    for raw in raw_objects(store, DATASET):
        table = pq.read_table(io.BytesIO(store.get_bytes(raw.key)), columns=["_partition", "_offset"])
        offsets += zip(table.column(0).to_pylist(), table.column(1).to_pylist(), strict=True)
    return offsets


def wait_until_ready(replicas: dict, timeout: float = 600) -> None:  # two cold Spark sessions on a busy host
    deadline = time.monotonic() + timeout
    for name, processes in replicas.items():
        for process in processes:
            while '"message": "ready"' not in process.log_path.read_text():
                assert process.poll() is None and time.monotonic() < deadline, f"{name} never got ready\n{tails(replicas)}"
                time.sleep(0.5)


def wait_until_landed(store, published: int, replicas: dict, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while len(landed_offsets(store)) < published:
        assert time.monotonic() < deadline, f"not every record landed within {timeout}s\n{tails(replicas)}"
        time.sleep(1)


def tails(replicas: dict) -> str:
    return "\n".join(f"--- {name}[{i}] (exit {p.poll()}):\n{p.log_path.read_text()[-1500:]}"
                     for name, processes in replicas.items() for i, p in enumerate(processes))
