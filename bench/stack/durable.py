"""What durability costs: ingest on the durable embedded stack against the ephemeral one.

    .venv/bin/python bench/stack/durable.py [--records 400000] [--rounds 3]

Brings up two embedded stacks without services (`streamml up` minus the
services): durable (Tansu's s3:// engine through the RGW proxy, bluestore
OSD) and ephemeral (in-memory broker, memstore OSD). Each round publishes
the same records to a fresh topic on each stack, then runs one ingest
replica that lands them as Parquet, alternating the two stacks so both meet
the same noise on a shared machine. Prints per stack the publish rate,
ingest's landed records/s (from the first record polled to the last batch
landed, as bench/ingest does), the CPU the broker and the proxy each spent
per thousand records over both phases, and the durable/ephemeral ratio of
the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import psutil
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from streamml.datagen import to_json_records, transactions  # noqa: E402
from streamml.kafka import EventProducer  # noqa: E402
from streamml.settings import KafkaSettings  # noqa: E402
from streamml.stack.control import down, up  # noqa: E402
from streamml.stack.ports import free_port  # noqa: E402
from streamml.stack.supervisor import StackConfig  # noqa: E402

PARTITIONS = 4
FLUSH_ROWS = 25_000
STALL_S = 120


def start(root: Path, ephemeral: bool) -> tuple[StackConfig, dict]:
    config = StackConfig(state_dir=root / ("ephemeral" if ephemeral else "durable"), kafka_port=free_port(),
                         s3_port=free_port(), http_base_port=free_port(), services=(), ephemeral=ephemeral)
    up(config, echo=lambda *_: None)
    return config, json.loads((config.state_dir / "stack.json").read_text())


def cpu_seconds(pids: list[int]) -> float:
    return sum(sum(psutil.Process(pid).cpu_times()[:2]) for pid in pids)


def publish(kafka: KafkaSettings, topic: str, total: int) -> float:
    """Records/s from the first produce to the last acknowledgement."""
    batches = [to_json_records(transactions(min(50_000, total - s), seed=11, start=s)) for s in range(0, total, 50_000)]
    producer = EventProducer(kafka, "bench", **{"linger.ms": 50, "batch.num.messages": 10000})
    started = time.monotonic()
    i = 0
    for records in batches:
        for record in records:
            producer.produce(topic, record, f"tx-{i:010d}", partition=i % PARTITIONS)
            i += 1
    producer.flush(300)
    return total / (time.monotonic() - started)


def land(env: dict[str, str], log_path: Path, total: int) -> float:
    """Ingest's landed records/s, read from its JSON log."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "services.ingest"], env=env, stdout=log,
                                   stderr=subprocess.STDOUT, cwd=ROOT)
    landed, first, last, progressed = 0, None, None, time.monotonic()
    try:
        with open(log_path, "rb") as reader:
            while landed < total:
                if process.poll() is not None:
                    raise SystemExit(f"ingest exited: {log_path.read_text()[-2000:]}")
                if time.monotonic() - progressed > STALL_S:
                    raise SystemExit(f"ingest landed nothing for {STALL_S}s at {landed:,} of {total:,}")
                for raw in reader.readlines():
                    if not raw.startswith(b"{") or not raw.endswith(b"\n"):
                        continue
                    line = json.loads(raw)
                    at = datetime.fromisoformat(line["time"]).timestamp()
                    if line["message"] == "consuming" and first is None:
                        first = at
                    elif line["message"] == "landed":
                        landed, last, progressed = landed + line["rows"], at, time.monotonic()
                time.sleep(0.05)
    finally:
        process.terminate()
        process.wait(timeout=30)
    return total / (last - first)


def measure(config: StackConfig, state: dict, round_: int, total: int, log_dir: Path) -> tuple[float, float, float, float]:
    """(publish records/s, landed records/s, broker and proxy CPU ms per 1k records)."""
    kafka = KafkaSettings(bootstrap=state["kafka"]["bootstrap"], session_timeout_ms=6000)
    prefix = f"r{round_}."
    admin = AdminClient(kafka.client_config())
    topics = [NewTopic(prefix + t, PARTITIONS if t.startswith("ingest") else 1, 1)
              for t in ("ingest.transactions", "data.landed", "dlq.ingest")]
    for future in admin.create_topics(topics).values():
        future.result(timeout=30)
    # Read again: a restart of either by the supervisor would change the PIDs.
    state = json.loads((config.state_dir / "stack.json").read_text())
    broker, proxy = [state["kafka"]["pid"]], [state["rgw_proxy"]["pid"]] if state.get("rgw_proxy") else []
    cpu = cpu_seconds(broker), cpu_seconds(proxy)
    published = publish(KafkaSettings(bootstrap=kafka.bootstrap, session_timeout_ms=6000, topic_prefix=prefix),
                         prefix + "ingest.transactions", total)
    keys = json.loads((config.state_dir / "ceph" / "s3.json").read_text())
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")},
           "STREAMML_KAFKA_BOOTSTRAP": kafka.bootstrap, "STREAMML_KAFKA_SESSION_TIMEOUT_MS": "6000",
           "STREAMML_KAFKA_TOPIC_PREFIX": prefix, "STREAMML_KAFKA_GROUP_PREFIX": prefix,
           "STREAMML_S3_ENDPOINT": state["s3"]["endpoint"], "STREAMML_S3_BUCKET": f"bench-{round_}",
           "STREAMML_S3_ACCESS_KEY_ID": keys["access_key"], "STREAMML_S3_SECRET_ACCESS_KEY": keys["secret_key"],
           "STREAMML_INGEST_SPECS_DIR": str(ROOT / "examples" / "datasets"), "STREAMML_HTTP_PORT": str(free_port()),
           "STREAMML_INGEST_FLUSH_ROWS": str(FLUSH_ROWS), "STREAMML_INGEST_FLUSH_AGE_S": "300",
           "STREAMML_INGEST_PROCESSES": "1", "STREAMML_LOG": "info"}
    landed = land(env, log_dir / f"ingest-{config.state_dir.name}-{round_}.log", total)
    per_1k = 1e6 / total
    return published, landed, (cpu_seconds(broker) - cpu[0]) * per_1k, (cpu_seconds(proxy) - cpu[1]) * per_1k


def line(publish_rate: float, landed: float, broker_cpu: float, proxy_cpu: float) -> str:
    return (f"publish {publish_rate:9,.0f} rec/s, landed {landed:9,.0f} rec/s, CPU per 1k records: "
            f"broker {broker_cpu:5.1f} ms, proxy {proxy_cpu:5.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=400_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.records % (PARTITIONS * FLUSH_ROWS):
        parser.error(f"--records must be a multiple of {PARTITIONS * FLUSH_ROWS:,} so every batch fills")
    root = Path(tempfile.mkdtemp(prefix="streamml-bench-durable-"))
    stacks = {}
    results: dict[str, list[tuple[float, float, float, float]]] = {"ephemeral": [], "durable": []}
    try:
        for mode in results:
            stacks[mode] = start(root, ephemeral=mode == "ephemeral")
        print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
        for round_ in range(args.rounds):
            for mode in (("ephemeral", "durable") if round_ % 2 == 0 else ("durable", "ephemeral")):
                results[mode].append(measure(*stacks[mode], round_, args.records, root))
                print(f"round {round_ + 1} {mode:9}: {line(*results[mode][-1])}", flush=True)
        medians = {mode: [sorted(r[i] for r in runs)[len(runs) // 2] for i in range(4)] for mode, runs in results.items()}
        for mode, values in medians.items():
            print(f"{mode:9} median : {line(*values)}")
        ratio = medians["durable"][1] / medians["ephemeral"][1]
        print(f"durable / ephemeral, landed records/s: {ratio:.2f} (budget >= 0.80); "
              f"publish: {medians['durable'][0] / medians['ephemeral'][0]:.2f}")
        print(f"load average after: {os.getloadavg()[0]:.1f}")
    finally:
        for config, _ in stacks.values():
            down(config.state_dir)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
