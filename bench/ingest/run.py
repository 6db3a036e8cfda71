"""Ingest side by side with the raw-consume ceiling and two other ways to land
Kafka records as Parquet, in one run, on a private Tansu broker and Ceph.

    .venv/bin/python bench/ingest/run.py [--records 1000000] [--partitions 3 4] [--rounds 2]
        [--rates 50000 200000] [--sustain-s 60]

The records are ``readings.py``'s (an id, an ISO-8601 time, six floats, two
of them nullable, two ints, two categories and a label; about 220 bytes of
JSON). The tools:

- ``ceiling``: one confluent-kafka consumer polling and dropping batches,
  ``fetch.queue.backoff.ms`` low (``ceiling.py``);
- ``streamml``: one ingest replica (``python -m services.ingest``) with its
  defaults;
- ``plain``: consume -> ``json.loads`` -> pyarrow -> boto3 in one loop, which
  lands partial batches when a poll finds nothing new (``plain_loop.py``);
- ``quix``: Quix Streams' S3 file sink writing Parquet (``quix_sink.py``), in a
  virtualenv of its own, since it pins older confluent-kafka and pydantic:

      python3 -m venv bench/ingest/.venv-quix
      bench/ingest/.venv-quix/bin/pip install 'quixstreams[s3,parquet]==3.28.1'

Burst: RECORDS records keyed by id wait in a topic of each partition count;
each tool, with a fresh consumer group and bucket, lands them all. Rounds
alternate the tools' order, so each meets the machine's other load alike.
Reported per tool (the median round; the highest RSS):

- end to end: from the first record a tool received to the moment its last
  row was in the store (the bench lists the bucket every 0.1 s);
- steady rate: rows landed between the landings that brought the total past
  20 % and past 80 %, over the time between them (for the ceiling: records
  over its whole span), and its ratio to the ceiling's;
- CPU per row: user and system time of the tool's processes, from its
  partition assignment to the end, over the rows;
- peak RSS: the sum of the kernel's high-water mark of each of its processes;
- rows verified: every landed row read back, counted and checked for a
  missing or repeated id.

Sustained: a producer (``steady_producer.py``) publishes at each RATE for
``--sustain-s`` seconds to a 3-partition topic that the tool, already
running, consumes; each row's time from production (its ``time`` field) to
the listing that first showed its object gives p50 and p99.

On a shared machine the rates move with other work; CPU per row much less.
The load average is printed at the start and the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from confluent_kafka.admin import AdminClient, NewTopic

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from readings import SPEC, reading_id, readings  # noqa: E402
from streamml.kafka import EventProducer  # noqa: E402
from streamml.settings import KafkaSettings, S3Settings  # noqa: E402
from streamml.stack.ceph import CephCluster, CephEndpoint  # noqa: E402
from streamml.stack.ports import free_port  # noqa: E402
from streamml.stack.tansu import TansuBroker  # noqa: E402
from streamml.store import make_client  # noqa: E402

QUIX_PYTHON = HERE / ".venv-quix" / "bin" / "python"
TOOLS = ("ceiling", "streamml", "plain", "quix")
# streamml+NAME: streamml with these settings, to compare with its defaults in the same run (--variant).
VARIANTS: dict[str, dict[str, str]] = {}
LIST_EVERY_S = 0.1
STALL_S = 90
SUSTAINED_PARTITIONS = 3


@dataclass
class Stack:
    kafka: KafkaSettings
    s3: CephEndpoint
    specs: Path  # a folder holding the readings spec only
    logs: Path

    def s3_settings(self, bucket: str) -> S3Settings:
        return S3Settings(endpoint=self.s3.url, bucket=bucket, region=self.s3.region,
                          access_key_id=self.s3.access_key, secret_access_key=self.s3.secret_key)

    def filesystem(self) -> pafs.S3FileSystem:
        return pafs.S3FileSystem(access_key=self.s3.access_key, secret_key=self.s3.secret_key, region=self.s3.region,
                                 endpoint_override=self.s3.url.removeprefix("http://"), scheme="http")


@dataclass
class Landings:
    """The objects of a bucket as the bench saw them appear: key -> (first seen, rows)."""

    seen: dict[str, tuple[float, int]] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(rows for _, rows in self.seen.values())

    def last(self) -> float:
        return max(when for when, _ in self.seen.values())

    def steady_rate(self, total: int) -> float | None:
        """Rows over time between the landings that took the total past 20 % and past 80 %."""
        landed, marks = 0, {}
        for when, rows in sorted(self.seen.values()):
            before, landed = landed, landed + rows
            for share in (0.2, 0.8):
                if share not in marks and landed >= share * total:
                    marks[share] = (when, before if share == 0.2 else landed)
        if len(marks) < 2 or marks[0.8][0] <= marks[0.2][0]:
            return None
        return (marks[0.8][1] - marks[0.2][1]) / (marks[0.8][0] - marks[0.2][0])


class Watcher(threading.Thread):
    """Lists a bucket every LIST_EVERY_S and reads the row count of each new object from its footer."""

    def __init__(self, stack: Stack, bucket: str) -> None:
        super().__init__(daemon=True)
        self.client = make_client(stack.s3_settings(bucket))
        self.fs = stack.filesystem()
        self.bucket = bucket
        self.landings = Landings()
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(LIST_EVERY_S):
            now = time.time()
            for key in landed_keys(self.client, self.bucket):
                if key not in self.landings.seen:
                    rows = pq.ParquetFile(self.fs.open_input_file(f"{self.bucket}/{key}")).metadata.num_rows
                    self.landings.seen[key] = (now, rows)


def list_keys(client, bucket: str, suffix: str = "") -> list[str]:
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys += [item["Key"] for item in page.get("Contents", []) if item["Key"].endswith(suffix)]
    return keys


def landed_keys(client, bucket: str) -> list[str]:
    """The Parquet objects: ingest also stores the dataset spec it enforces (JSON) in the bucket."""
    return list_keys(client, bucket, ".parquet")


@dataclass(frozen=True)
class Result:
    tool: str
    seconds: float  # first record received -> last row landed (ceiling: last record received)
    steady: float | None  # records/s
    cpu_per_row: float  # seconds
    peak_rss: int  # bytes, all processes
    rows: int
    unique: int
    expected: int
    latency: tuple[float, float] | None = None  # p50, p99 seconds (sustained)
    produced_rate: float | None = None

    @property
    def verified(self) -> str:
        if self.rows == self.unique == self.expected:
            return f"{self.rows:,} ok"
        return f"{self.rows:,} rows, {self.unique:,} ids of {self.expected:,}"


class ToolRun:
    """One tool as a process tree, its log read for 'partitions assigned' and 'consuming'."""

    def __init__(self, stack: Stack, tool: str, topic_prefix: str, group: str, bucket: str, total: int) -> None:
        self.tool = tool
        tool, _, variant = tool.partition("+")
        self.log_path = stack.logs / f"{tool}-{group}.log"
        topic = f"{topic_prefix}ingest.readings"
        s3_env = {"AWS_ENDPOINT_URL_S3": stack.s3.url, "AWS_ACCESS_KEY_ID": stack.s3.access_key,
                  "AWS_SECRET_ACCESS_KEY": stack.s3.secret_key, "AWS_REGION": stack.s3.region,
                  "AWS_DEFAULT_REGION": stack.s3.region}
        env = {**os.environ}
        if tool == "ceiling":
            command = [sys.executable, str(HERE / "ceiling.py"), stack.kafka.bootstrap, topic, group, str(total)]
        elif tool == "streamml":
            command = [sys.executable, "-m", "services.ingest"]
            env.update({
                "PYTHONPATH": str(ROOT), "STREAMML_KAFKA_BOOTSTRAP": stack.kafka.bootstrap,
                "STREAMML_KAFKA_SESSION_TIMEOUT_MS": "6000", "STREAMML_KAFKA_TOPIC_PREFIX": topic_prefix,
                "STREAMML_KAFKA_GROUP_PREFIX": f"{group}-", "STREAMML_S3_ENDPOINT": stack.s3.url,
                "STREAMML_S3_BUCKET": bucket, "STREAMML_S3_REGION": stack.s3.region,
                "STREAMML_S3_ACCESS_KEY_ID": stack.s3.access_key,
                "STREAMML_S3_SECRET_ACCESS_KEY": stack.s3.secret_key,
                "STREAMML_INGEST_SPECS_DIR": str(stack.specs), "STREAMML_HTTP_PORT": str(free_port()),
                **VARIANTS.get(variant, {}),
            })
        elif tool == "plain":
            command = [sys.executable, str(HERE / "plain_loop.py"), stack.kafka.bootstrap, topic, group, bucket]
            env.update(s3_env)
        else:
            command = [str(QUIX_PYTHON), str(HERE / "quix_sink.py"), stack.kafka.bootstrap, topic, group, bucket]
            env.update(s3_env)
        if tool != "ceiling":
            make_client(stack.s3_settings(bucket)).create_bucket(Bucket=bucket)
        self.watcher = None if tool == "ceiling" else Watcher(stack, bucket)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        self.handle = psutil.Process(self.process.pid)
        self.reader = open(self.log_path, "rb")
        self.assigned = self.first = self.consumed = None
        self.cpu_at_assignment = 0.0
        if self.watcher:
            self.watcher.start()

    def follow(self) -> None:
        """Read what the log gained; raise if the tool exited."""
        if self.process.poll() is not None:
            raise SystemExit(f"{self.tool} exited: {self.log_path.read_text()[-3000:]}")
        for raw in complete_lines(self.reader):
            if not raw.startswith(b"{"):
                continue
            line = json.loads(raw)
            when = line["time"] if isinstance(line["time"], float) else datetime.fromisoformat(line["time"]).timestamp()
            if line["message"] == "partitions assigned" and self.assigned is None:
                self.assigned = when
                # Start-up (imports, checks, the group join) is behind; the first fetch is not.
                self.cpu_at_assignment = tree_cpu(self.handle)
            elif line["message"] == "consuming" and self.first is None:
                self.first = when
            elif line["message"] == "consumed":
                self.consumed = when

    def rows(self) -> int:
        return self.landings.rows if self.watcher else 0

    @property
    def landings(self) -> Landings:
        return self.watcher.landings

    def __enter__(self) -> ToolRun:
        return self

    def __exit__(self, *failure: object) -> None:
        if self.process.poll() is None:
            self.stop()

    def stop(self) -> tuple[float, int]:
        """CPU seconds since assignment and peak RSS, then SIGTERM."""
        cpu, peak = tree_cpu(self.handle) - self.cpu_at_assignment, tree_peak_rss(self.handle)
        if os.environ.get("BENCH_SHARES"):
            shares = []
            for member in tree(self.handle):
                t = member.cpu_times()
                threads = sorted((th.user_time + th.system_time for th in member.threads()), reverse=True)[:4]
                shares.append(f"{member.pid}:{t.user + t.system:.2f}[" + ",".join(f"{x:.2f}" for x in threads) + "]")
            print("   per-process CPU (since start):", " ".join(shares), flush=True)
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.watcher:
            self.watcher.stopped.set()
            self.watcher.join()
        self.reader.close()
        return cpu, peak


def wait_until(run: ToolRun, done, what: str) -> None:
    progress, progressed_at = -1, time.monotonic()
    while not done():
        run.follow()
        now = run.rows() if run.watcher else int(run.first is not None)
        if now != progress:
            progress, progressed_at = now, time.monotonic()
        elif time.monotonic() - progressed_at > STALL_S:
            raise SystemExit(f"{run.tool}: no progress for {STALL_S}s while waiting for {what}; see {run.log_path}")
        time.sleep(0.05)


def burst(stack: Stack, tool: str, prefix: str, group: str, total: int) -> Result:
    bucket = group.replace("+", "-").lower()
    with ToolRun(stack, tool, prefix, group, bucket, total) as run:
        if tool == "ceiling":
            wait_until(run, lambda: run.consumed is not None, "every record")
            cpu, peak = run.stop()
            seconds = run.consumed - run.first
            return Result(tool, seconds, total / seconds, cpu / total, peak, total, total, total)
        wait_until(run, lambda: run.rows() >= total, "every row to land")
        cpu, peak = run.stop()
    landings = run.landings
    rows, unique, _ = read_back(stack, bucket)
    drop_bucket(stack, bucket)
    return Result(tool, landings.last() - run.first, landings.steady_rate(total), cpu / total, peak, rows, unique,
                  total)


def sustained(stack: Stack, admin: AdminClient, tool: str, rate: int, seconds: float) -> Result:
    prefix = f"s{rate // 1000}k-{tool}."
    create_topics(admin, prefix, SUSTAINED_PARTITIONS)
    bucket = f"s{rate // 1000}k-{tool}"
    with ToolRun(stack, tool, prefix, f"{tool}-s{rate // 1000}k", bucket, 0) as run:
        wait_until(run, lambda: run.assigned is not None, "the partition assignment")
        time.sleep(1)  # the group settles; the topic is empty
        producer = subprocess.run([sys.executable, str(HERE / "steady_producer.py"), stack.kafka.bootstrap,
                                   f"{prefix}ingest.readings", str(rate), str(seconds)],
                                  capture_output=True, text=True, check=True)
        produced = json.loads(producer.stdout.strip().splitlines()[-1])
        total = produced["records"]
        deadline = time.monotonic() + max(30.0, seconds)
        while run.rows() < total and time.monotonic() < deadline:
            run.follow()
            time.sleep(0.1)
        cpu, peak = run.stop()
    rows, unique, latencies = read_back(stack, bucket, run.landings)
    drop_bucket(stack, bucket)
    admin.delete_topics([f"{prefix}ingest.readings"])  # the broker keeps topics in memory
    latency = (float(np.percentile(latencies, 50)), float(np.percentile(latencies, 99))) if len(latencies) else None
    return Result(tool, 0.0, None, cpu / max(rows, 1), peak, rows, unique, total, latency,
                  total / produced["seconds"])


def read_back(stack: Stack, bucket: str, landings: Landings | None = None) -> tuple[int, int, np.ndarray]:
    """Rows and distinct ids of every object; with ``landings``, each row's seconds from production
    (its ``time``) to the listing that first showed its object."""
    fs, client = stack.filesystem(), make_client(stack.s3_settings(bucket))
    ids, latencies = [], []
    for key in landed_keys(client, bucket):
        table = pq.read_table(f"{bucket}/{key}", columns=["id", "time"] if landings else ["id"], filesystem=fs)
        ids.append(table.column("id").combine_chunks())
        if landings and key in landings.seen:  # not one written as the tool stopped
            latencies.append(landings.seen[key][0] - epoch_seconds(table.column("time")))
    unique = len(pc.unique(pa.chunked_array(ids, pa.string()))) if ids else 0
    return sum(map(len, ids)), unique, np.concatenate(latencies) if latencies else np.array([])


def epoch_seconds(column: pa.ChunkedArray) -> np.ndarray:
    """A ``time`` column, landed as a timestamp or (Quix) as its ISO-8601 string, in epoch seconds."""
    if pa.types.is_string(column.type):
        column = column.cast(pa.timestamp("us", tz="UTC"))
    return column.cast(pa.int64()).to_numpy() / 1e6


def drop_bucket(stack: Stack, bucket: str) -> None:
    client = make_client(stack.s3_settings(bucket))
    for key in list_keys(client, bucket):
        client.delete_object(Bucket=bucket, Key=key)
    client.delete_bucket(Bucket=bucket)


def tree(process: psutil.Process) -> list[psutil.Process]:
    return [process, *process.children(recursive=True)]


def tree_cpu(process: psutil.Process) -> float:
    """CPU seconds (user and system) of a process and its descendants."""
    total = 0.0
    for member in tree(process):
        try:
            total += sum(member.cpu_times()[:2])
        except psutil.NoSuchProcess:
            pass
    return total


def tree_peak_rss(process: psutil.Process) -> int:
    """The sum of each process's peak RSS (the kernel's high-water mark), at least their peak together.

    Read once at the end: sampling RSS would cost the tool CPU while it runs and could miss a short peak.
    """
    peak = 0
    for member in tree(process):
        status = Path(f"/proc/{member.pid}/status").read_text()
        peak += int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) * 1024
    return peak


def complete_lines(reader: BinaryIO) -> list[bytes]:
    """The lines written since the last call; a line still being written is left for the next."""
    lines = reader.readlines()
    if lines and not lines[-1].endswith(b"\n"):
        reader.seek(-len(lines.pop()), os.SEEK_CUR)
    return lines


def create_topics(admin: AdminClient, prefix: str, partitions: int) -> None:
    topics = [NewTopic(f"{prefix}ingest.readings", partitions, 1),
              NewTopic(f"{prefix}data.landed", 1, 1), NewTopic(f"{prefix}dlq.ingest", 1, 1)]
    for future in admin.create_topics(topics).values():
        future.result()


def publish_burst(kafka: KafkaSettings, topic: str, total: int) -> int:
    """``total`` readings keyed by id (the producer's partitioner spreads them); returns their bytes."""
    producer = EventProducer(kafka, "bench", **{"linger.ms": 50, "batch.num.messages": 10_000})
    size = 0
    for start in range(0, total, 50_000):
        for index, record in enumerate(readings(start, min(50_000, total - start)), start):
            producer.produce(topic, record, reading_id(index))
            size += len(record)
        producer.flush()
    return size


def median_result(results: list[Result]) -> Result:
    """The round with the median end-to-end time, with the highest peak RSS of all rounds."""
    chosen = sorted(results, key=lambda r: r.seconds)[len(results) // 2]
    return Result(**{**chosen.__dict__, "peak_rss": max(r.peak_rss for r in results)})


def load() -> str:
    return "load average " + ", ".join(f"{value:.2f}" for value in os.getloadavg())


def print_burst(partitions: int, results: dict[str, Result], rounds: dict[str, list[Result]]) -> None:
    ceiling = results.get("ceiling")
    print(f"\nburst of {next(iter(results.values())).expected:,} records over {partitions} partitions "
          f"(median of {len(next(iter(rounds.values())))} rounds; end-to-end times of every round in brackets)")
    print("| tool | end to end | steady rate | of the ceiling | CPU per row | peak RSS | rows verified |")
    print("|---|---|---|---|---|---|---|")
    for tool, result in results.items():
        steady = f"{result.steady:,.0f}/s" if result.steady else "–"
        share = f"{result.steady / ceiling.steady:.2f}" if result.steady and ceiling else "–"
        each = ", ".join(f"{r.seconds:.2f}" for r in rounds[tool])
        print(f"| {tool} | {result.seconds:.2f} s ({each}) | {steady} | {share} | {result.cpu_per_row * 1e6:.2f} µs"
              f" | {result.peak_rss / 2**20:,.0f} MiB | {result.verified} |")


def print_targets(by_partitions: dict[int, dict[str, Result]], sustained_results: list[Result]) -> None:
    print("\ntargets")
    for partitions, results in by_partitions.items():
        ours = results.get("streamml")
        if not ours:
            continue
        for peer, needed in (("plain", 3), ("quix", 6)):
            if peer in results:
                speedup = results[peer].seconds / ours.seconds
                print(f"  {partitions} partitions: burst {speedup:.1f}x {peer} (target >= {needed}): "
                      f"{'met' if speedup >= needed else 'NOT met'}")
        if "ceiling" in results and ours.steady:
            share = ours.steady / results["ceiling"].steady
            print(f"  {partitions} partitions: steady {share:.2f} of the ceiling (target >= 0.4): "
                  f"{'met' if share >= 0.4 else 'NOT met'}")
        if "plain" in results:
            cpu = ours.cpu_per_row / results["plain"].cpu_per_row
            print(f"  {partitions} partitions: CPU per row {cpu:.2f} of the plain loop's (target <= 0.5): "
                  f"{'met' if cpu <= 0.5 else 'NOT met'}")
        print(f"  {partitions} partitions: peak RSS {ours.peak_rss / 2**20:,.0f} MiB (target < 1024): "
              f"{'met' if ours.peak_rss < 2**30 else 'NOT met'}")
    for result in sustained_results:
        if result.tool == "streamml" and result.latency and round(result.produced_rate, -3) <= 50_000:
            print(f"  p99 produce -> landed at {result.produced_rate:,.0f}/s: {result.latency[1]:.2f} s "
                  f"(target <= 2 s): {'met' if result.latency[1] <= 2 else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, nargs="+", default=[3, 4])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tools", nargs="+", default=list(TOOLS),
                        help=f"of {', '.join(TOOLS)}, and streamml+NAME for each --variant")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:VAR=VALUE,...",
                        help="streamml+NAME runs streamml with these environment variables")
    parser.add_argument("--rates", type=int, nargs="*", default=[50_000, 200_000])
    parser.add_argument("--sustain-s", type=float, default=60)
    parser.add_argument("--sustain-tools", nargs="*", choices=TOOLS[1:], default=list(TOOLS[1:]))
    parser.add_argument("--json", type=Path, help="also write every result here")
    args = parser.parse_args()
    for variant in args.variant:
        name, _, settings = variant.partition(":")
        VARIANTS[name] = dict(setting.split("=", 1) for setting in settings.split(","))
    unknown = [t for t in args.tools if t not in TOOLS and t.removeprefix("streamml+") not in VARIANTS]
    if unknown:
        parser.error(f"unknown tools {unknown}: name {', '.join(TOOLS)} or streamml+NAME of a --variant")
    tools = [t for t in args.tools if t != "quix" or QUIX_PYTHON.exists()]
    if len(tools) < len(args.tools) or ("quix" in args.sustain_tools and not QUIX_PYTHON.exists()):
        print(f"skipping Quix Streams: {QUIX_PYTHON} not found (python3 -m venv bench/ingest/.venv-quix && "
              "bench/ingest/.venv-quix/bin/pip install 'quixstreams[s3,parquet]==3.28.1')", file=sys.stderr)
        args.sustain_tools = [t for t in args.sustain_tools if t != "quix"]

    root = Path(tempfile.mkdtemp(prefix="streamml-bench-ingest-"))
    ceph = CephCluster(root, rgw_port=free_port(), log=lambda _: None)
    broker = TansuBroker(root, port=free_port(), log=lambda _: None)
    print(f"start: {load()}, {psutil.cpu_count()} CPUs", flush=True)
    try:
        endpoint = ceph.start()
        kafka = KafkaSettings(bootstrap=broker.start(), session_timeout_ms=6000)
        specs = root / "specs"
        specs.mkdir()
        shutil.copy(SPEC, specs / SPEC.name)
        (root / "logs").mkdir()
        stack = Stack(kafka, endpoint, specs, root / "logs")
        admin = AdminClient(kafka.client_config())  # must outlive its futures
        by_partitions: dict[int, dict[str, Result]] = {}
        everything: dict = {"burst": {}, "sustained": []}
        for partitions in args.partitions:
            prefix = f"p{partitions}."
            create_topics(admin, prefix, partitions)
            size = publish_burst(kafka, f"{prefix}ingest.readings", args.records)
            print(f"published {args.records:,} records over {partitions} partitions, "
                  f"{size / args.records:.0f} B each on average; {load()}", flush=True)
            rounds: dict[str, list[Result]] = {tool: [] for tool in tools}
            for round_ in range(args.rounds):
                order = tools[round_ % len(tools):] + tools[:round_ % len(tools)]
                for tool in order:
                    result = burst(stack, tool, prefix, f"{tool}-r{round_}-p{partitions}", args.records)
                    rounds[tool].append(result)
                    print(f"  round {round_ + 1}, {tool}: {result.seconds:.2f} s, "
                          f"{result.cpu_per_row * 1e6:.2f} µs/row, {result.verified}; {load()}", flush=True)
            by_partitions[partitions] = {tool: median_result(rounds[tool]) for tool in tools}
            everything["burst"][partitions] = {tool: [r.__dict__ for r in rs] for tool, rs in rounds.items()}
            print_burst(partitions, by_partitions[partitions], rounds)
            admin.delete_topics([f"{prefix}ingest.readings"])
        sustained_results = []
        for rate in args.rates:
            for tool in args.sustain_tools:
                result = sustained(stack, admin, tool, rate, args.sustain_s)
                sustained_results.append(result)
                everything["sustained"].append(result.__dict__)
                latency = (f"p50 {result.latency[0]:.2f} s, p99 {result.latency[1]:.2f} s"
                           if result.latency else "nothing landed")
                print(f"sustained {rate:,}/s ({result.produced_rate:,.0f}/s produced for {args.sustain_s:g} s), "
                      f"{tool}: {latency}, {result.cpu_per_row * 1e6:.2f} µs/row, "
                      f"{result.peak_rss / 2**20:,.0f} MiB, {result.verified}; {load()}", flush=True)
        print_targets(by_partitions, sustained_results)
        print(f"end: {load()}")
        if args.json:
            args.json.write_text(json.dumps(everything, indent=1, default=str))
    finally:
        broker.stop()
        ceph.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
