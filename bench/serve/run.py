"""Inference server throughput and latency, steady and during a model swap, on a private Tansu broker and Ceph.

    .venv/bin/python bench/serve/run.py [--concurrency 4] [--batch 1] [--steady-s 10] [--no-log]

Two versions of a model (MLP 64-64 on the trainer's synthetic dataset) are
registered; ``python -m services.serve`` serves the first. Client threads on
127.0.0.1, one keep-alive connection each, send Open Inference Protocol
requests of ``--batch`` records in a closed loop. After the steady phase the
second version is promoted (pointer + ``model.promoted``, as the validator
does) while the load continues. Prints, for the steady phase and for the
swap window (promotion until one second after the last answer from the old
version): requests/s, predictions/s, p50/p99 latency, errors; and how long
the swap took. The client shares the machine's cores with the server.
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
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
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
    """Closed loop: one request at a time on one keep-alive connection."""

    def __init__(self, port: int, bodies: list[bytes], stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port, self.bodies, self.stop = port, bodies, stop
        self.samples: list[tuple[float, float, str | None]] = []  # (end time, seconds, version or None on error)

    def run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        index = 0
        while not self.stop.is_set():
            body = self.bodies[index % len(self.bodies)]
            index += 1
            started = time.perf_counter()
            try:
                connection.request("POST", f"/v2/models/{MODEL}/infer", body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                answer = response.read()
                version = json.loads(answer)["model_version"] if response.status == 200 else None
            except (OSError, http.client.HTTPException, ValueError):
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                version = None
            ended = time.perf_counter()
            self.samples.append((ended, ended - started, version))


def summarise(label: str, samples: list[tuple[float, float, str | None]], start: float, end: float, batch: int) -> None:
    window = [s for s in samples if start <= s[0] < end]
    seconds = max(end - start, 1e-9)
    ok = [s[1] for s in window if s[2] is not None]
    errors = len(window) - len(ok)
    p50, p99 = (np.percentile(ok, [50, 99]) * 1000) if ok else (float("nan"), float("nan"))
    print(f"{label:<8} {seconds:6.1f}s  {len(ok) / seconds:9,.0f} req/s  {len(ok) * batch / seconds:10,.0f} pred/s"
          f"  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  errors {errors}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=4, help="client threads (keep-alive connections)")
    parser.add_argument("--batch", type=int, default=1, help="records per request")
    parser.add_argument("--steady-s", type=float, default=10.0, help="seconds measured before the swap")
    parser.add_argument("--no-log", action="store_true", help="do not send predictions to Kafka")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="streamml-bench-serve-"))
    ceph = CephCluster(root, rgw_port=free_port(), log=lambda _: None)
    broker = TansuBroker(root, port=free_port(), log=lambda _: None)
    server = None
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

        port, health = free_port(), free_port()
        env = {**os.environ, "STREAMML_KAFKA_BOOTSTRAP": kafka.bootstrap, "STREAMML_S3_ENDPOINT": endpoint.url,
               "STREAMML_S3_BUCKET": "bench", "STREAMML_S3_REGION": endpoint.region,
               "STREAMML_S3_ACCESS_KEY_ID": endpoint.access_key, "STREAMML_S3_SECRET_ACCESS_KEY": endpoint.secret_key,
               "STREAMML_HTTP_PORT": str(health), "STREAMML_SERVE_MODEL": MODEL,
               "STREAMML_SERVE_PORT": str(port), "STREAMML_SERVE_LOG_PREDICTIONS": str(not args.no_log).lower()}
        with open(root / "serve.log", "wb") as log:
            server = subprocess.Popen([sys.executable, "-m", "services.serve"], env=env, cwd=ROOT,
                                      stdout=log, stderr=subprocess.STDOUT)
        wait_ready(server, port, root / "serve.log")

        bodies = [json.dumps({"inputs": [{"name": "records", "datatype": "BYTES", "shape": [args.batch],
                                          "data": [json.dumps(r) for r in records[i:i + args.batch]]}]}).encode()
                  for i in range(0, len(records) - args.batch, args.batch)][:200]
        stop = threading.Event()
        clients = [Client(port, bodies, stop) for _ in range(args.concurrency)]
        for client in clients:
            client.start()
        time.sleep(2.0)  # warm-up, not measured
        steady_start = time.perf_counter()
        time.sleep(args.steady_s)
        promoted_at = time.perf_counter()
        set_champion(store, MODEL, "v2", expected="v1", actor="bench", reason="swap", time=datetime.now(UTC))
        EventProducer(kafka, "bench").send_now(ModelPromoted(
            model=MODEL, version="v2", artifact_prefix=version_prefix(MODEL, "v2"), metrics={}, previous_champion="v1",
            actor="bench", reason="swap"))
        wait_switched(clients, promoted_at)
        time.sleep(1.0)
        stop.set()
        for client in clients:
            client.join()
        samples = sorted(s for client in clients for s in client.samples)
        last_old = max(s[0] for s in samples if s[2] == "v1")
        first_new = min(s[0] for s in samples if s[2] == "v2")

        print(f"inference server: {args.concurrency} client threads, {args.batch} record(s) per request, "
              f"prediction log {'off' if args.no_log else 'on'}, {os.cpu_count()} CPUs shared with the client")
        summarise("steady", samples, steady_start, promoted_at, args.batch)
        summarise("swap", samples, promoted_at, last_old + 1.0, args.batch)
        print(f"swap: first answer from v2 {first_new - promoted_at:.2f}s after the promotion, "
              f"last from v1 {last_old - promoted_at:.2f}s after it")
        if not args.no_log:
            logged = prediction_log(health)
            print(f"prediction log: {logged['delivered']:,.0f} delivered, {logged['dropped']:,.0f} dropped "
                  f"(buffer full), {logged['failed']:,.0f} failed")
    finally:
        if server is not None and server.poll() is None:
            server.terminate()
            server.wait(timeout=30)
        broker.stop()
        ceph.stop()
        shutil.rmtree(root, ignore_errors=True)


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
        if all(client.samples and client.samples[-1][2] == "v2" for client in clients):
            return
        time.sleep(0.01)
    raise SystemExit(f"no answer from v2 within {MAX_SWAP_WAIT_S}s of the promotion")


if __name__ == "__main__":
    main()
