"""An embedded stack for a test of the whole loop, and the policies such a test runs under."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from landing_checks import landed

from streamml.demo import EXAMPLES, DemoPlan, Timeline
from streamml.events import DatasetReady, DriftDetected, ModelPromoted, ModelTrained, decode
from streamml.lag import partition_lags
from streamml.manifest import DatasetManifest
from streamml.registry.datasets import committed_manifests, latest_manifest, raw_objects
from streamml.settings import KafkaSettings, ServiceSettings
from streamml.stack.control import down, up
from streamml.stack.ports import free_port, free_ports
from streamml.stack.supervisor import SERVICES, StackConfig
from streamml.store import ObjectStore

# Long enough for the demo's application to answer and label 500 requests many times over, short
# enough for a shadow begun after it stopped to end well within a wait for the loop to settle.
SHADOW_S = 60
EVENT_TOPICS = ("dataset.ready", "model.trained", "model.promoted", "model.rejected", "drift.detected")


def print_stack_logs(state_dir: Path, demo_log: Path, lines: int = 30) -> None:
    """What the demo and the stack said last, for a failure seen only in CI's output. The Kafka
    client's own lines (a broker away, reconnecting) are counted, not shown: they would crowd
    out what the services said."""
    for path in [demo_log, *sorted((state_dir / "logs").glob("*.log"))]:
        if path.exists():
            every = path.read_text(errors="replace").splitlines()
            said = [line for line in every if '"logger": "streamml.librdkafka"' not in line]
            tail = [line[:600] for line in said[-lines:]]
            client = f", {len(every) - len(said)} Kafka client lines left out" if len(said) < len(every) else ""
            print(f"----- {path.name} (last {len(tail)} lines{client})", *tail, sep="\n")


def loop_policies(folder: Path, p95_ms: float | None, shadow_s: float = SHADOW_S) -> Path:
    """The example policies for a loop test, written to ``folder``: latency budgets (offline and
    in shadow) of ``p95_ms``, or none, and a shadow that lasts at most ``shadow_s``.

    The example budgets are for a quiet machine; a test about what survives or what a page shows
    must not have its loop stopped by a host busy with restarts or other tests. A candidate that
    goes into shadow after the demo's application stopped has no traffic to be judged on: it
    waits out the shadow's duration, holding its validator's partition meanwhile, and a test
    that waits for every group to catch up waits for it."""
    folder.mkdir()
    for path in (EXAMPLES / "policies").glob("*.yaml"):
        policy = yaml.safe_load(path.read_text())
        if p95_ms is None:
            policy.pop("latency", None)
        else:
            policy["latency"]["p95_ms"] = p95_ms
        if "shadow" in policy:
            rules = [r for r in policy["shadow"]["rules"] if "max_latency_p95_ms" not in r]
            policy["shadow"]["rules"] = rules + ([{"max_latency_p95_ms": p95_ms}] if p95_ms is not None else [])
            policy["shadow"]["max_duration_s"] = shadow_s
        (folder / path.name).write_text(yaml.safe_dump(policy))
    return folder


def start_stack(state_dir: Path, ephemeral: bool, policies: Path = EXAMPLES / "policies",
                timeout: float = 120, specs: Path = EXAMPLES / "datasets", models: Path = EXAMPLES / "models",
                extra_env: dict[str, str] | None = None) -> tuple[StackConfig, ServiceSettings]:
    """``streamml up`` on free ports, with the example folders unless told others, and ``extra_env``
    (``STREAMML_*`` settings) for every service; the stack's config and the client settings it wrote."""
    config = StackConfig(
        state_dir=state_dir, kafka_port=free_port(), s3_port=free_port(), http_base_port=free_ports(5)[0],
        console_port=free_port(), specs_dir=specs, models_dir=models,
        policies_dir=policies, ephemeral=ephemeral, extra_env=extra_env or {},
    )
    try:
        up(config, timeout=timeout, echo=lambda *_: None)
    except BaseException:
        down(config.state_dir)  # a stack that never became healthy is still running
        raise
    os.environ["STREAMML_CONFIG_FILE"] = str(config.state_dir / "config.yaml")
    try:
        settings = ServiceSettings()
    finally:
        del os.environ["STREAMML_CONFIG_FILE"]
    return config, settings


def read_events(kafka: KafkaSettings) -> list[tuple[str, object]]:
    """Every event on the loop's topics with its CloudEvents id, each topic in partition order."""
    consumer = Consumer({**kafka.client_config(), "group.id": f"check-{time.monotonic_ns()}",
                         "enable.auto.commit": False})
    partitions = []
    for topic in EVENT_TOPICS:
        name = kafka.topic(topic)
        count = len(consumer.list_topics(name, timeout=10).topics[name].partitions)
        partitions += [TopicPartition(name, p, OFFSET_BEGINNING) for p in range(count)]
    consumer.assign(partitions)
    found = []
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < 5:
        for message in consumer.consume(500, 0.5):
            if message.error() is None:
                event, attributes = decode(message.headers(), message.key(), message.value())
                found.append((attributes["id"], event))
                quiet_since = time.monotonic()
    consumer.close()
    return found


def groups_behind(kafka: KafkaSettings) -> dict[str, int]:
    """How many records each service's consumer group has yet to commit."""
    groups = [f"{kafka.group_prefix}streamml-{name}" for name in SERVICES]
    return {group: sum(p.lag for p in partition_lags(kafka, group)) for group in groups}


def wait_until_settled(kafka: KafkaSettings, timeout: float = 180, quiet_s: float = 10) -> dict[str, int]:
    """Wait until the loop has nothing left to do: every service's group at the end of its input
    for ``quiet_s`` on end. Each service publishes before it commits, so one look could fall
    between a commit and the work it hands on. What each group has behind at the end."""
    deadline = time.monotonic() + timeout
    settled_since = None
    while True:
        behind = groups_behind(kafka)
        settled_since = None if any(behind.values()) else settled_since or time.monotonic()
        if settled_since is not None and time.monotonic() - settled_since >= quiet_s:
            return behind
        if time.monotonic() > deadline:
            return behind
        time.sleep(2)


def unbuilt_objects(store: ObjectStore, dataset: str) -> set[str]:
    """Landed objects no committed version of ``dataset`` has read yet: prep will build them
    (on its row or staleness rule) even though no consumer group is behind."""
    landed = {raw.key for raw in raw_objects(store, dataset)}
    latest = latest_manifest(store, dataset)
    if latest is None:
        return landed
    return landed - {source.key for source in latest.lineage} - set(latest.quarantined)


def rebuild_every_version(state_dir: Path, store: ObjectStore, dataset: str) -> list[DatasetManifest]:
    """``streamml datasets rebuild NAME:V --verify`` of every committed version, each found identical."""
    manifests = list(committed_manifests(store, dataset))
    for manifest in manifests:
        done = subprocess.run(
            [sys.executable, "-m", "streamml.cli", "datasets", "rebuild", f"{dataset}:{manifest.version}",
             "--verify", "--state-dir", str(state_dir)],
            capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "400"})
        assert done.returncode == 0 and "identical" in done.stdout, (
            f"{dataset} v{manifest.version} did not rebuild identically:\n{done.stdout}{done.stderr}")
    return manifests


def assert_final_state(settings: ServiceSettings, timeline: Timeline, plan: DemoPlan,
                       consecutive_versions: bool = True) -> None:
    """What every run of the demo loop ends with, from its events and the object store."""
    promoted = [e for _, e in timeline.events if isinstance(e, ModelPromoted)]
    assert len({e.version for e in promoted}) >= 2
    assert len(promoted) == len({(e.version, e.previous_champion) for e in promoted}), "a promotion was announced twice"
    assert promoted[1].previous_champion == promoted[0].version
    store = ObjectStore.connect(settings.s3)
    # Rows left over when the demo ends can still make a later champion: the pointer must name
    # the last promotion announced, once the announcement of a move in flight has arrived.
    deadline = time.monotonic() + 60
    while True:
        champion = json.loads(store.get_bytes("models/fraud/champion.json"))
        announced = [e for _, e in read_events(settings.kafka) if isinstance(e, ModelPromoted)]
        if champion["version"] == announced[-1].version or time.monotonic() > deadline:
            break
    assert champion["version"] == announced[-1].version, (champion, [e.version for e in announced])
    assert [e.version for e in promoted] == [e.version for e in announced[: len(promoted)]]
    ready = [e for _, e in timeline.events if isinstance(e, DatasetReady)]
    versions = sorted(e.version for e in ready)
    # A prep killed mid-build leaves its version number unused: the next build takes the next one.
    assert versions[:2] == [1, 2] if consecutive_versions else len(set(versions)) >= 2
    for event in ready:
        manifest = json.loads(store.get_bytes(event.manifest_key))
        assert manifest["version"] == event.version and manifest["rows"] == event.rows
    trained = [e for _, e in timeline.events if isinstance(e, ModelTrained)]
    for event in trained:
        assert store.exists(f"{event.artifact_prefix.rstrip('/')}/manifest.json")
    drift = [e for _, e in timeline.events if isinstance(e, DriftDetected)]
    assert len(drift) >= 1
    # Every published transaction landed exactly once: none lost, none twice by key or by offset.
    published = {f"tx-{i:010d}" for i in range(plan.first_records + plan.drift_records)}
    deadline = time.monotonic() + 60
    while len((landed_now := landed(store))[0]) < len(published) and time.monotonic() < deadline:
        time.sleep(1)
    offsets, keys = landed_now
    assert len(offsets) == len(set(offsets)), "a record landed twice (same partition and offset)"
    assert len(keys) == len(set(keys)), "a record landed twice (same key at two offsets)"
    assert set(keys) == published, f"{len(published - set(keys))} published records never landed"
