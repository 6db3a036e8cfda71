"""Ingest throughput against its ceiling, on a private Tansu broker and Ceph.

    .venv/bin/python bench/ingest/run.py [--records 1000000] [--partitions 4]

Prints: the raw confluent-kafka consume rate on the topic (batch consume, no
work: the ceiling), the rate at which one ingest replica lands the same
records as Parquet in Ceph (validation, Parquet, upload, data.landed, commit),
their ratio, the peak RSS of the replica with its member processes, and the
CPU time each side spends per record.

Both sides are measured three times, alternating (a ceiling pass, then an
ingest run with a fresh consumer group and bucket), and each reports its
median: on a shared 2-core machine the passes of one run differed by up to
1.5x, and alternating exposes both sides to the same noise. Both clocks
start at the first record received, so neither counts joining the group or
the first fetch; the ceiling stops at the last record received, ingest at
the last batch landed.

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
ROUNDS = 3


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
                         "session.timeout.ms": kafka.session_timeout_ms,  # the broker forms a new group sooner
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


def tree(process: psutil.Process) -> list[psutil.Process]:
    """The replica and its member processes."""
    return [process, *process.children(recursive=True)]


def tree_cpu(process: psutil.Process) -> float:
    """CPU seconds (user and system) of the replica and its members."""
    return sum(sum(member.cpu_times()[:2]) for member in tree(process))


def tree_peak_rss(process: psutil.Process) -> int:
    """The sum of each process's peak RSS (the kernel's high-water mark), at least their peak together.

    Read once at the end, where sampling RSS would cost the replica CPU
    while it runs and could miss a short peak.
    """
    peak = 0
    for member in tree(process):
        status = Path(f"/proc/{member.pid}/status").read_text()
        peak += int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) * 1024
    return peak


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
    landed, assigned, first, last, cpu_at_assignment = 0, None, None, None, 0.0
    progress, progressed_at = -1, time.monotonic()
    # The loop shares the machine with the replica it measures: it reads only
    # what the log gained since the last look, and the processes only twice.
    with open(log_path, "rb") as reader:
        try:
            while landed < total:
                if process.poll() is not None:
                    raise SystemExit(f"ingest exited: {log_path.read_text()[-2000:]}")
                if landed != progress:
                    progress, progressed_at = landed, time.monotonic()
                elif time.monotonic() - progressed_at > STALL_S:
                    raise SystemExit(f"ingest landed nothing for {STALL_S}s at {landed:,} of {total:,} records")
                for raw in complete_lines(reader):
                    if not raw.startswith(b"{"):
                        continue
                    line = json.loads(raw)
                    if line["message"] == "partitions assigned" and assigned is None:
                        assigned = log_time(line)
                        # Start-up (imports, checks, the group join) is behind; members wait for the first fetch.
                        cpu_at_assignment = tree_cpu(handle)
                    elif line["message"] == "consuming" and first is None:
                        first = log_time(line)  # the first record any member polled
                    elif line["message"] == "landed":
                        landed += line["rows"]
                        last = log_time(line)
                time.sleep(POLL_S)
            cpu, peak = tree_cpu(handle) - cpu_at_assignment, tree_peak_rss(handle)
        finally:
            process.terminate()
            process.wait(timeout=30)
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
        env = {**os.environ, "STREAMML_KAFKA_BOOTSTRAP": kafka.bootstrap, "STREAMML_KAFKA_SESSION_TIMEOUT_MS": "6000",
               "STREAMML_S3_ENDPOINT": endpoint.url, "STREAMML_S3_ACCESS_KEY_ID": endpoint.access_key,
               "STREAMML_S3_SECRET_ACCESS_KEY": endpoint.secret_key, "STREAMML_S3_REGION": endpoint.region,
               "STREAMML_INGEST_SPECS_DIR": str(ROOT / "examples" / "datasets"), "STREAMML_LOG": "info",
               # Batches end on the row limit only; every partition's share fills whole batches.
               "STREAMML_INGEST_FLUSH_ROWS": str(FLUSH_ROWS), "STREAMML_INGEST_FLUSH_AGE_S": "300"}
        passes, runs = [], []
        for round_ in range(ROUNDS):
            passes.append(raw_consume_rate(kafka, topics[0], args.records))
            # A fresh group and bucket: each run lands every record, as the first did.
            fresh = {"STREAMML_KAFKA_GROUP_PREFIX": f"bench{round_}-", "STREAMML_S3_BUCKET": f"bench-{round_}",
                     "STREAMML_HTTP_PORT": str(free_port())}
            runs.append(run_ingest({**env, **fresh}, root / f"ingest-{round_}.log", args.records))
            print(f"round {round_ + 1} of {ROUNDS}: ceiling {passes[-1][0]:,.0f} records/s, "
                  f"ingest {runs[-1].rate:,.0f} records/s", flush=True)
        ceiling, ceiling_cpu = sorted(passes)[len(passes) // 2]
        ingest = sorted(runs, key=lambda run: run.rate)[len(runs) // 2]
        mb = size / args.records / 1e6
        print(f"raw consume (ceiling):   {ceiling:12,.0f} records/s  {ceiling * mb:8.1f} MB/s"
              f"  (median of {', '.join(f'{rate:,.0f}' for rate, _ in passes)})")
        print(f"ingest landed:           {ingest.rate:12,.0f} records/s  {ingest.rate * mb:8.1f} MB/s"
              f"  (median of {', '.join(f'{run.rate:,.0f}' for run in runs)};"
              f" {args.records:,} records in {ingest.seconds:.1f}s,"
              f" first record {ingest.first_fetch_s:.2f}s after assignment)")
        print(f"ratio ingest / ceiling:  {ingest.rate / ceiling:12.2f}   (target >= 0.5)")
        print(f"ingest peak RSS (all):   {max(run.peak_rss for run in runs) / 2**20:12.0f} MiB   (target < 1024;"
              f" the highest of the {ROUNDS} runs)")
        print(f"CPU per record:          {ceiling_cpu * 1e6:12.2f} µs ceiling, {ingest.cpu_per_record * 1e6:.2f} µs ingest"
              f"   (cores busy: {ceiling * ceiling_cpu:.1f} and {ingest.cores:.1f})")
    finally:
        broker.stop()
        ceph.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
