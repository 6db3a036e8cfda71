"""Inference server throughput and latency, before and after a change, and during a model swap,
on a private Tansu broker and Ceph.

    .venv/bin/python bench/serve/run.py [--before main] [--slices 40] [--slice-s 1] [--concurrency 4] [--batch 1]

Two versions of a model (MLP 64-64 on the trainer's synthetic dataset) are
registered. Two servers run side by side, each ``python -m services.serve``
with the prediction log on (unless ``--no-log``): the one at git ref
``--before`` (its ``services`` and ``streamml`` packages exported with ``git
archive`` into a temporary folder) and this checkout's. Client threads on
127.0.0.1, each with one keep-alive connection to each server, send Open
Inference Protocol requests of ``--batch`` records in a closed loop to one
server at a time, switching every ``--slice-s`` seconds for ``--slices``
slices in the order A B B A: on a machine that others share, short
alternating slices expose both servers to the same noise, which whole passes
one after the other did not.
Printed per server, over its slices: predictions/s, p50/p99 latency, errors,
and the server's CPU time per 1,000 predictions (steadier than rates when
other work shares the machine), then the ratios.

Then the second version is promoted (pointer + ``model.promoted``, as the
validator does) while this checkout's server serves, and the swap window
(promotion until one second after the last answer from the old version) is
reported the same way, with how long the swap took and the prediction log's
counts. The clients share the machine's cores with the servers.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psutil
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from services.trainer.artifact import export_portable, model_card  # noqa: E402
from services.trainer.data import FeatureLayout, tensors_from_table  # noqa: E402
from services.trainer.publish import VersionFile, publish_version  # noqa: E402
from services.trainer.spec import ModelSpec  # noqa: E402
from services.trainer.synthetic import synthetic_dataset  # noqa: E402
from services.trainer.train import train  # noqa: E402
from services.validator.promote import set_champion  # noqa: E402
from streamml.events import ModelPromoted  # noqa: E402
from streamml.kafka import EventProducer  # noqa: E402
from streamml.manifest import NumericTransform  # noqa: E402
from streamml.registry.keys import CARD_FILE, version_prefix  # noqa: E402
from streamml.settings import KafkaSettings, S3Settings  # noqa: E402
from streamml.stack.ceph import CephCluster  # noqa: E402
from streamml.stack.ports import free_port  # noqa: E402
from streamml.stack.tansu import TansuBroker  # noqa: E402
from streamml.store import ObjectStore  # noqa: E402

MODEL = "fraud"
MAX_SWAP_WAIT_S = 60
IDLE_RECONNECT_S = 4.0  # below the servers' keep-alive timeout (5 s)


def register(store: ObjectStore) -> list[dict]:
    """Versions v1 and v2 in the registry; returns raw records to send."""
    manifest, splits = synthetic_dataset(20_000, seed=1, name="transactions")
    layout = FeatureLayout.from_manifest(manifest, "binary")
    train_data, validation = (tensors_from_table(splits[s], layout) for s in ("train", "validation"))
    for version, seed in (("v1", 1), ("v2", 2)):
        spec = ModelSpec(name=MODEL, dataset="transactions", task="binary", max_epochs=2, seed=seed,
                         architecture={"hidden": [64, 64]})
        result = train(spec, layout, train_data, validation, device="cpu")
        portable = export_portable(result.net, layout)
        card = model_card(spec=spec, manifest=manifest, layout=layout, result=result, portable=portable,
                          model_version=version, code_version="bench")
        publish_version(store, MODEL, version, [VersionFile(portable.filename, portable.data),
                                                VersionFile(CARD_FILE, json.dumps(card).encode())])
    test = splits["test"]
    records: list[dict] = [{} for _ in range(test.num_rows)]
    for name, transform in manifest.transform.items():
        for record, value in zip(records, test.column(name).to_pylist(), strict=True):
            record[name] = value if isinstance(transform, NumericTransform) else (
                transform.vocabulary[value - 1] if value else "unseen")
    return records


class Client(threading.Thread):
    """Closed loop: one request at a time, to the server ``target[0]`` names, on a keep-alive connection to each."""

    def __init__(self, ports: dict[str, int], bodies: list[bytes], stop: threading.Event, target: list[str]) -> None:
        super().__init__(daemon=True)
        self.ports, self.bodies, self.stop, self.target = ports, bodies, stop, target
        # (server, end time, seconds, version or None on error)
        self.samples: list[tuple[str, float, float, str | None]] = []

    def run(self) -> None:
        connections = {name: self._connect(name) for name in self.ports}
        used = dict.fromkeys(self.ports, time.perf_counter())
        index = 0
        while not self.stop.is_set():
            server = self.target[0]
            body = self.bodies[index % len(self.bodies)]
            index += 1
            if time.perf_counter() - used[server] > IDLE_RECONNECT_S:
                # The server closes a keep-alive connection idle for 5 s (while the others had their slices);
                # a client opens a new one rather than fail on the closed one, as HTTP clients' pools do.
                connections[server].close()
                connections[server] = self._connect(server)
            started = time.perf_counter()
            try:
                connection = connections[server]
                connection.request("POST", f"/v2/models/{MODEL}/infer", body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                answer = response.read()
                version = json.loads(answer)["model_version"] if response.status == 200 else None
            except (OSError, http.client.HTTPException, ValueError):
                connections[server].close()
                connections[server] = self._connect(server)
                version = None
            ended = time.perf_counter()
            used[server] = ended
            self.samples.append((server, ended, ended - started, version))

    def _connect(self, server: str) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.ports[server], timeout=30)


@dataclass(frozen=True)
class Pass:
    seconds: float
    predictions_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_ms_per_1000: float  # the server's CPU time per 1,000 predictions

    def line(self, label: str) -> str:
        return (f"{label:<16} {self.predictions_per_s:10,.0f} pred/s  p50 {self.p50_ms:6.2f} ms  "
                f"p99 {self.p99_ms:6.2f} ms  errors {self.errors:<4}  server CPU {self.cpu_ms_per_1000:6.0f} ms "
                f"per 1,000 predictions")


def measure(samples: list[tuple[float, float, str | None]], seconds: float, batch: int, cpu_s: float) -> Pass:
    """A server's numbers from its (end time, seconds, version) samples over ``seconds`` of load."""
    ok = [s[1] for s in samples if s[2] is not None]
    p50, p99 = (np.percentile(ok, [50, 99]) * 1000) if ok else (float("nan"), float("nan"))
    predictions = len(ok) * batch
    return Pass(seconds, predictions / seconds, float(p50), float(p99), len(samples) - len(ok),
                cpu_s * 1000 / max(predictions, 1) * 1000)


class Server:
    """``python -m services.serve`` from a source folder, with its own ports and log."""

    def __init__(self, source: Path, env: dict[str, str], log: Path, command: tuple[str, ...] = ()) -> None:
        """``command`` (its last argument the port to listen on) instead of the server."""
        self.port, self.health = free_port(), free_port()
        env = {**env, "PYTHONPATH": str(source), "STREAMML_SERVE_PORT": str(self.port),
               "STREAMML_HTTP_PORT": str(self.health)}
        argv = [sys.executable, *command, str(self.port)] if command else [sys.executable, "-m", "services.serve"]
        with open(log, "ab") as out:
            self.process = subprocess.Popen(argv, env=env, cwd=source, stdout=out, stderr=subprocess.STDOUT)
        self.cpu = psutil.Process(self.process.pid)
        wait_ready(self.process, self.port, log)

    def cpu_s(self) -> float:
        times = self.cpu.cpu_times()
        return times.user + times.system

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


def compare(servers: dict[str, Server], bodies: list[bytes], args) -> dict[str, Pass]:
    """Alternate the load between the servers, slice by slice; each server's numbers over its slices."""
    target = [next(iter(servers))]
    stop = threading.Event()
    ports = {name: server.port for name, server in servers.items()}
    clients = [Client(ports, bodies, stop, target) for _ in range(args.concurrency)]
    for client in clients:
        client.start()
    windows: dict[str, list[tuple[float, float]]] = {name: [] for name in servers}
    cpu = dict.fromkeys(servers, 0.0)
    names = list(servers)
    # A B B A ... (A B C C B A ... for three): each server's slices follow the others' as often as its
    # own, so whatever one leaves behind (a prediction log draining, the last requests) weighs on all alike.
    order = (names + names[::-1]) * (args.slices // len(names) + 1)
    order = order[:args.slices + len(names)]
    for index, name in enumerate(order):  # the first slice of each warms it up, unmeasured
        target[0] = name
        time.sleep(0.05)  # requests to the other server finish
        started, before = time.perf_counter(), servers[name].cpu_s()
        time.sleep(args.slice_s)
        if index >= len(names):
            windows[name].append((started, time.perf_counter()))
            cpu[name] += servers[name].cpu_s() - before
    stop.set()
    for client in clients:
        client.join()
    samples = [s for client in clients for s in client.samples]
    result = {}
    for name, spans in windows.items():
        mine = [(end, seconds, version) for server, end, seconds, version in samples if server == name
                and any(start <= end < stop_ for start, stop_ in spans)]
        result[name] = measure(mine, sum(stop_ - start for start, stop_ in spans), args.batch, cpu[name])
    return result


def export(ref: str, into: Path) -> Path:
    """The ``services`` and ``streamml`` packages at git ref ``ref``, in a folder of their own."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", ref, "services", "streamml"], cwd=ROOT, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


@dataclass(frozen=True)
class Stack:
    root: Path  # a temporary folder for logs and exports
    kafka: KafkaSettings
    store: ObjectStore
    records: list[dict]  # raw records of the test split, to send
    env: dict[str, str]  # the environment a server needs to reach both, serving MODEL


@contextmanager
def bench_stack(prefix: str) -> Iterator[Stack]:
    """A private Ceph and Tansu broker with v1 and v2 registered and v1 the champion; stopped after."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    ceph = CephCluster(root, rgw_port=free_port(), log=lambda _: None)
    broker = TansuBroker(root, port=free_port(), log=lambda _: None)
    try:
        endpoint = ceph.start()
        kafka = KafkaSettings(bootstrap=broker.start(), session_timeout_ms=6000)
        admin = AdminClient(kafka.client_config())
        topics = ["model.promoted", f"predictions.{MODEL}", f"feedback.{MODEL}"]
        for future in admin.create_topics([NewTopic(t, 1, 1) for t in topics]).values():
            future.result()
        s3 = S3Settings(endpoint=endpoint.url, bucket="bench", region=endpoint.region,
                        access_key_id=endpoint.access_key, secret_access_key=endpoint.secret_key)
        store = ObjectStore.connect(s3)
        records = register(store)
        set_champion(store, MODEL, "v1", expected=None, actor="bench", reason="start", time=datetime.now(UTC))
        env = {**os.environ, "STREAMML_KAFKA_BOOTSTRAP": kafka.bootstrap, "STREAMML_S3_ENDPOINT": endpoint.url,
               "STREAMML_S3_BUCKET": "bench", "STREAMML_S3_REGION": endpoint.region,
               "STREAMML_S3_ACCESS_KEY_ID": endpoint.access_key, "STREAMML_S3_SECRET_ACCESS_KEY": endpoint.secret_key,
               "STREAMML_SERVE_MODEL": MODEL}
        yield Stack(root, kafka, store, records, env)
    finally:
        broker.stop()
        ceph.stop()
        shutil.rmtree(root, ignore_errors=True)


def request_bodies(records: list[dict], batch: int) -> list[bytes]:
    """Up to 200 infer request bodies of ``batch`` records each."""
    return [json.dumps({"inputs": [{"name": "records", "datatype": "BYTES", "shape": [batch],
                                    "data": [json.dumps(r) for r in records[i:i + batch]]}]}).encode()
            for i in range(0, len(records) - batch, batch)][:200]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default="main", help="git ref of the server to compare with")
    parser.add_argument("--slices", type=int, default=40, help="measured slices, alternating between the servers")
    parser.add_argument("--slice-s", type=float, default=1.0, help="seconds per slice")
    parser.add_argument("--concurrency", type=int, default=4, help="client threads (keep-alive connections)")
    parser.add_argument("--batch", type=int, default=1, help="records per request")
    parser.add_argument("--no-log", action="store_true", help="do not send predictions to Kafka")
    args = parser.parse_args()

    with bench_stack("streamml-bench-serve-") as stack:
        before = export(args.before, stack.root / "before")
        env = {**stack.env, "STREAMML_SERVE_LOG_PREDICTIONS": str(not args.no_log).lower()}
        bodies = request_bodies(stack.records, args.batch)
        print(f"inference server: {args.concurrency} client threads, {args.batch} record(s) per request, "
              f"prediction log {'off' if args.no_log else 'on'}, {os.cpu_count()} CPUs shared with the client, "
              f"load average {os.getloadavg()[0]:.1f} at the start")
        servers: dict[str, Server] = {}
        try:
            servers = {"before": Server(before, env, stack.root / "serve-before.log"),
                       "after": Server(ROOT, env, stack.root / "serve-after.log")}
            result = compare(servers, bodies, args)
            for label, found in result.items():
                print(found.line(f"{label} ({args.before if label == 'before' else 'this'})"))
            after, previous = result["after"], result["before"]
            print(f"after/before: {after.predictions_per_s / previous.predictions_per_s:.2f}x predictions/s, "
                  f"p50 {after.p50_ms / previous.p50_ms:.2f}x, p99 {after.p99_ms / previous.p99_ms:.2f}x, "
                  f"CPU per prediction {after.cpu_ms_per_1000 / previous.cpu_ms_per_1000:.2f}x; "
                  f"load average {os.getloadavg()[0]:.1f} at the end")
            servers.pop("before").stop()
            swap(servers["after"], stack.store, stack.kafka, bodies, args)
        finally:
            for server in servers.values():
                server.stop()


def swap(server: Server, store: ObjectStore, kafka: KafkaSettings, bodies: list[bytes], args) -> None:
    """Promote v2 under load; report the swap window, how long it took, and the prediction log."""
    stop = threading.Event()
    clients = [Client({"after": server.port}, bodies, stop, ["after"]) for _ in range(args.concurrency)]
    for client in clients:
        client.start()
    time.sleep(2.0)
    promoted_at, cpu = time.perf_counter(), server.cpu_s()
    set_champion(store, MODEL, "v2", expected="v1", actor="bench", reason="swap", time=datetime.now(UTC))
    EventProducer(kafka, "bench").send_now(ModelPromoted(
        model=MODEL, version="v2", artifact_prefix=version_prefix(MODEL, "v2"), metrics={}, previous_champion="v1",
        actor="bench", reason="swap"))
    wait_switched(clients, promoted_at)
    time.sleep(1.0)
    stop.set()
    for client in clients:
        client.join()
    samples = sorted(s[1:] for client in clients for s in client.samples)
    last_old = max(s[0] for s in samples if s[2] == "v1")
    first_new = min(s[0] for s in samples if s[2] == "v2")
    window = [s for s in samples if promoted_at <= s[0] < last_old + 1.0]
    print(measure(window, last_old + 1.0 - promoted_at, args.batch, server.cpu_s() - cpu).line("swap (this)"))
    print(f"swap: first answer from v2 {first_new - promoted_at:.2f}s after the promotion, "
          f"last from v1 {last_old - promoted_at:.2f}s after it")
    if not args.no_log:
        logged = prediction_log(server.health)
        print(f"prediction log: {logged['delivered']:,.0f} delivered (acknowledged), {logged['dropped']:,.0f} "
              f"dropped, {logged['failed']:,.0f} failed")


def prediction_log(health_port: int) -> dict[str, float]:
    connection = http.client.HTTPConnection("127.0.0.1", health_port, timeout=10)
    connection.request("GET", "/metrics")
    text = connection.getresponse().read().decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            for outcome in ("delivered", "dropped", "failed"):
                if sample.name == f"streamml_prediction_log_{outcome}_total":
                    found[outcome] = sample.value
    return found


def wait_ready(server: subprocess.Popen, port: int, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited: {log.read_text()[-2000:]}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/v2/health/ready")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the server was not ready within {timeout:g}s: {log.read_text()[-2000:]}")


def wait_switched(clients: list[Client], since: float) -> None:
    deadline = time.perf_counter() + MAX_SWAP_WAIT_S
    while time.perf_counter() < deadline:
        if all(client.samples and client.samples[-1][3] == "v2" for client in clients):
            return
        time.sleep(0.01)
    raise SystemExit(f"no answer from v2 within {MAX_SWAP_WAIT_S}s of the promotion")


if __name__ == "__main__":
    main()
