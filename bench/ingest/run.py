"""Ingest throughput against its ceiling, on a private Tansu broker and Ceph.

    .venv/bin/python bench/ingest/run.py [--records 1000000] [--partitions 4]

Prints: the raw confluent-kafka consume rate on the topic (batch consume, no
work: the ceiling), the rate at which one ingest replica lands the same
records as Parquet in Ceph (validation, Parquet, upload, data.landed, commit),
their ratio, the peak RSS of the replica with its member processes, and the
CPU time each side spends per record.

The ceiling is the median of three passes (a pass takes about a second, and
on a shared 2-core machine the passes of one run differed by up to 1.5x). Both
clocks start at the first record received, so neither counts joining
the group or the first fetch; the ceiling stops at the last record
received, ingest at the last batch landed.

CPU per record is steadier than the rates when other work shares the
machine, and sizes a deployment: records/s per core is its inverse. The
ceiling's counts the consuming process (its polling thread and librdkafka's
threads); ingest's counts the replica and its members from the first
partition assignment on, so it leaves out start-up but not the first fetch.
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
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

import psutil
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from streamml.datagen import to_json_records, transactions  # noqa: E402
from streamml.kafka import EventProducer  # noqa: E402
from streamml.settings import KafkaSettings  # noqa: E402
from streamml.stack.ceph import CephCluster  # noqa: E402
from streamml.stack.ports import free_port  # noqa: E402
from streamml.stack.tansu import TansuBroker  # noqa: E402

STALL_S = 60
POLL_S = 0.05
FLUSH_ROWS = 50_000
CEILING_PASSES = 3


def produce(kafka: KafkaSettings, topic: str, total: int, partitions: int) -> int:
    """Publish ``total`` records, keyed, spread evenly over the partitions.

    Even spreading (not the key hash) lets every partition end on a full
    batch: a partial last batch would wait for the age limit, and the run
    would measure that setting rather than throughput.
    """
    producer = EventProducer(kafka, "bench", **{"linger.ms": 50, "batch.num.messages": 10000})
    size = 0
    for start in range(0, total, 50_000):
        records = to_json_records(transactions(min(50_000, total - start), seed=11, start=start))
        for i, record in enumerate(records, start):
            producer.produce(topic, record, f"tx-{i:010d}", partition=i % partitions)
            size += len(record)
        producer.flush()
    return size


def raw_consume_rate(kafka: KafkaSettings, topic: str, total: int) -> tuple[float, float]:
    """Records/s, and CPU seconds per record of this process (the polling thread and librdkafka's)."""
    consumer = Consumer({**kafka.client_config(), "group.id": f"raw-{time.time()}", "auto.offset.reset": "earliest",
                         "enable.auto.commit": False, "fetch.queue.backoff.ms": 10, "fetch.wait.max.ms": 50})
    consumer.subscribe([topic])
    count, started, cpu_started = 0, None, 0.0
    while count < total:
        batch = consumer.consume(10_000, 1.0)
        if batch and started is None:
            started, cpu_started = time.monotonic(), time.process_time()
        count += sum(1 for m in batch if m.error() is None)
    elapsed, cpu = time.monotonic() - started, time.process_time() - cpu_started
    consumer.close()
    return total / elapsed, cpu / total


def log_time(line: dict) -> float:
    return datetime.fromisoformat(line["time"]).timestamp()


def tree_usage(process: psutil.Process) -> tuple[int, float]:
    """RSS and CPU seconds (user and system) of the replica and its member processes."""
    rss, cpu = 0, 0.0
    for member in [process, *process.children(recursive=True)]:
        try:
            with member.oneshot():
                rss += member.memory_info().rss
                times = member.cpu_times()
                cpu += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return rss, cpu


@dataclass(frozen=True)
class IngestRun:
    rate: float  # records/s from the first record polled to the last landing
    seconds: float  # that span
    first_fetch_s: float  # from the first assignment to the first record
    peak_rss: int  # of the replica and its members
    cpu_per_record: float  # CPU seconds of the replica and its members, from the first assignment on
    cores: float  # that CPU time over the seconds from the first assignment to the last landing


def run_ingest(env: dict[str, str], log_path: Path, total: int) -> IngestRun:
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "services.ingest"], env=env, stdout=log,
                                   stderr=subprocess.STDOUT, cwd=ROOT)
    handle = psutil.Process(process.pid)
    peak, landed, assigned, first, last = 0, 0, None, None, None
    cpu, cpu_at_assignment = 0.0, None
    progress, progressed_at = -1, time.monotonic()
    # Read only what the log gained since the last look: this loop shares the
    # machine with the replica it measures.
    with open(log_path, "rb") as reader:
        try:
            while landed < total:
                if process.poll() is not None:
                    raise SystemExit(f"ingest exited: {log_path.read_text()[-2000:]}")
                if landed != progress:
                    progress, progressed_at = landed, time.monotonic()
                elif time.monotonic() - progressed_at > STALL_S:
                    raise SystemExit(f"ingest landed nothing for {STALL_S}s at {landed:,} of {total:,} records")
                rss, cpu = tree_usage(handle)
                peak = max(peak, rss)
                for raw in complete_lines(reader):
                    if not raw.startswith(b"{"):
                        continue
                    line = json.loads(raw)
                    if line["message"] == "partitions assigned" and assigned is None:
                        assigned = log_time(line)
                    elif line["message"] == "consuming" and first is None:
                        first = log_time(line)  # the first record any member polled
                    elif line["message"] == "landed":
                        landed += line["rows"]
                        last = log_time(line)
                if assigned is not None and cpu_at_assignment is None:
                    # Start-up (imports, checks, the group join) is behind; members wait for the first fetch.
                    cpu_at_assignment = cpu
                time.sleep(POLL_S)
            cpu = tree_usage(handle)[1]
        finally:
            process.terminate()
            process.wait(timeout=30)
    cpu -= cpu_at_assignment
    return IngestRun(rate=total / (last - first), seconds=last - first, first_fetch_s=first - assigned,
                     peak_rss=peak, cpu_per_record=cpu / total, cores=cpu / (last - assigned))


def complete_lines(reader: BinaryIO) -> list[bytes]:
    """The lines written since the last call; a line still being written is left for the next."""
    lines = reader.readlines()
    if lines and not lines[-1].endswith(b"\n"):
        reader.seek(-len(lines.pop()), os.SEEK_CUR)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args()
    if args.records % (args.partitions * FLUSH_ROWS):
        parser.error(f"--records must be a multiple of --partitions x {FLUSH_ROWS:,} (the batch size), so that "
                     f"every batch fills and none waits for the age limit; got {args.records:,}")

    root = Path(tempfile.mkdtemp(prefix="streamml-bench-ingest-"))
    ceph = CephCluster(root, rgw_port=free_port(), log=lambda _: None)
    broker = TansuBroker(root, port=free_port(), log=lambda _: None)
    try:
        endpoint = ceph.start()
        kafka = KafkaSettings(bootstrap=broker.start(), session_timeout_ms=6000)
        topics = ["ingest.transactions", "data.landed", "dlq.ingest"]
        admin = AdminClient(kafka.client_config())  # must outlive its futures
        for future in admin.create_topics(
            [NewTopic(t, args.partitions if t.startswith("ingest") else 1, 1) for t in topics]
        ).values():
            future.result()
        size = produce(kafka, topics[0], args.records, args.partitions)
        print(f"published {args.records:,} records, {size / args.records:.0f} B each on average")
        passes = sorted(raw_consume_rate(kafka, topics[0], args.records) for _ in range(CEILING_PASSES))
        ceiling, ceiling_cpu = passes[len(passes) // 2]
        env = {**os.environ, "STREAMML_KAFKA_BOOTSTRAP": kafka.bootstrap, "STREAMML_KAFKA_SESSION_TIMEOUT_MS": "6000",
               "STREAMML_S3_ENDPOINT": endpoint.url, "STREAMML_S3_ACCESS_KEY_ID": endpoint.access_key,
               "STREAMML_S3_SECRET_ACCESS_KEY": endpoint.secret_key, "STREAMML_S3_REGION": endpoint.region,
               "STREAMML_INGEST_SPECS_DIR": str(ROOT / "examples" / "datasets"),
               "STREAMML_HTTP_PORT": str(free_port()), "STREAMML_LOG": "info",
               # Batches end on the row limit only; every partition's share fills whole batches.
               "STREAMML_INGEST_FLUSH_ROWS": str(FLUSH_ROWS), "STREAMML_INGEST_FLUSH_AGE_S": "300"}
        ingest = run_ingest(env, root / "ingest.log", args.records)
        mb = size / args.records / 1e6
        print(f"raw consume (ceiling):   {ceiling:12,.0f} records/s  {ceiling * mb:8.1f} MB/s"
              f"  (median of {', '.join(f'{rate:,.0f}' for rate, _ in passes)})")
        print(f"ingest landed:           {ingest.rate:12,.0f} records/s  {ingest.rate * mb:8.1f} MB/s"
              f"  ({args.records:,} records in {ingest.seconds:.1f}s;"
              f" first record {ingest.first_fetch_s:.2f}s after assignment)")
        print(f"ratio ingest / ceiling:  {ingest.rate / ceiling:12.2f}   (target >= 0.5)")
        print(f"ingest peak RSS (all):   {ingest.peak_rss / 2**20:12.0f} MiB   (target < 1024)")
        print(f"CPU per record:          {ceiling_cpu * 1e6:12.2f} µs ceiling, {ingest.cpu_per_record * 1e6:.2f} µs ingest"
              f"   (cores busy: {ceiling * ceiling_cpu:.1f} and {ingest.cores:.1f})")
    finally:
        broker.stop()
        ceph.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
