"""Time from ``dataset.ready`` to ``model.trained`` through the trainer service, on a
private Tansu broker and Ceph.

    .venv/bin/python bench/trainer/service_latency.py [--rows 100000] [--epochs 3] [--rounds 3]

One trainer replica runs as ``python -m services.trainer``. Each round commits a
new synthetic dataset version to Ceph the way prep does (split Parquet files,
manifest last), sends its ``dataset.ready`` and waits for ``model.trained``.
Per round it prints the end-to-end latency and its parts, taken from the
trainer's log lines (same clock): event to training start (delivery, manifest
and splits read from Ceph, Parquet to tensors), training (all epochs), export
and commit (portable program, weights, card, manifest), and announcement
(``model.trained`` produced and fetched). A last round sends an already
trained version's ``dataset.ready`` again: the latency of announcing without
training.
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

import yaml
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from services.trainer.publish import model_version  # noqa: E402
from services.trainer.spec import parse_model_spec  # noqa: E402
from services.trainer.synthetic_store import write_synthetic_version  # noqa: E402
from streamml.events import DatasetReady, ModelTrained, decode  # noqa: E402
from streamml.kafka import BatchConsumer, EventProducer  # noqa: E402
from streamml.settings import KafkaSettings, S3Settings  # noqa: E402
from streamml.stack.ceph import CephCluster  # noqa: E402
from streamml.stack.ports import free_port  # noqa: E402
from streamml.stack.tansu import TansuBroker  # noqa: E402
from streamml.store import ObjectStore  # noqa: E402

DATASET = "bench"
TOPICS = ("dataset.ready", "model.trained", "dlq.trainer")


def log_lines(path: Path) -> list[dict]:
    lines = []
    for raw in path.read_text().splitlines():
        if raw.startswith("{"):
            lines.append(json.loads(raw))
    return lines


def log_time(line: dict) -> float:
    return datetime.fromisoformat(line["time"]).timestamp()


def wait_for_log(path: Path, process: subprocess.Popen, message: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"trainer exited ({process.returncode}):\n{path.read_text()[-3000:]}")
        for line in log_lines(path):
            if line["message"] == message:
                return line
        time.sleep(0.1)
    raise SystemExit(f"no {message!r} in the trainer's log within {timeout}s:\n{path.read_text()[-3000:]}")


def wait_for_trained(consumer: BatchConsumer, version: str, process: subprocess.Popen, log: Path) -> float:
    """Wall time at which ``model.trained`` of ``version`` was fetched."""
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"trainer exited ({process.returncode}):\n{log.read_text()[-3000:]}")
        for message in consumer.poll(10, 0.05):
            event, _ = decode(message.headers(), message.key(), message.value())
            if isinstance(event, ModelTrained) and event.version == version:
                return time.time()
    raise SystemExit(f"no model.trained for {version} within 30 minutes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="rows per dataset version (80%% train)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="dataset versions trained in turn")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--cpu-threads", type=int, help="STREAMML_TRAINER_CPU_THREADS (default: the service's)")
    args = parser.parse_args()

    spec_document = {
        "name": "bench_model", "dataset": DATASET, "task": "binary",
        "architecture": {"hidden": [64, 64], "normalisation": "batch"},
        "optimiser": {"name": "adamw", "lr": 0.002}, "batch_size": args.batch_size,
        "max_epochs": args.epochs, "early_stopping": {"patience": None}, "seed": 1,
    }
    spec = parse_model_spec(spec_document)
    root = Path(tempfile.mkdtemp(prefix="streamml-bench-trainer-"))
    ceph = CephCluster(root, rgw_port=free_port(), log=lambda _: None)
    broker = TansuBroker(root, port=free_port(), log=lambda _: None)
    trainer = None
    try:
        endpoint = ceph.start()
        kafka = KafkaSettings(bootstrap=broker.start(), session_timeout_ms=6000)
        admin = AdminClient(kafka.client_config())  # must outlive its futures
        for future in admin.create_topics([NewTopic(topic, 1, 1) for topic in TOPICS]).values():
            future.result()
        s3 = S3Settings(endpoint=endpoint.url, access_key_id=endpoint.access_key,
                        secret_access_key=endpoint.secret_key, region=endpoint.region)
        store = ObjectStore.connect(s3)
        models = root / "models"
        models.mkdir()
        (models / "bench_model.yaml").write_text(yaml.safe_dump(spec_document))

        env = {**os.environ, "STREAMML_KAFKA_BOOTSTRAP": kafka.bootstrap, "STREAMML_KAFKA_SESSION_TIMEOUT_MS": "6000",
               "STREAMML_S3_ENDPOINT": endpoint.url, "STREAMML_S3_ACCESS_KEY_ID": endpoint.access_key,
               "STREAMML_S3_SECRET_ACCESS_KEY": endpoint.secret_key, "STREAMML_S3_REGION": endpoint.region,
               "STREAMML_TRAINER_MODELS_DIR": str(models), "STREAMML_TRAINER_DEVICE": args.device,
               "STREAMML_HTTP_PORT": str(free_port()), "STREAMML_LOG": "info"}
        if args.cpu_threads:
            env["STREAMML_TRAINER_CPU_THREADS"] = str(args.cpu_threads)
        log = root / "trainer.log"
        with open(log, "wb") as out:
            trainer = subprocess.Popen([sys.executable, "-m", "services.trainer"], env=env, stdout=out,
                                       stderr=subprocess.STDOUT, cwd=ROOT)
        consumer = BatchConsumer(kafka, "bench-reader", [kafka.topic("model.trained")])
        while not consumer.assignment:
            consumer.poll(1, 0.2)
        loaded = wait_for_log(log, trainer, "model specs loaded")
        wait_for_log(log, trainer, "partitions assigned")
        producer = EventProducer(kafka, "bench")
        print(f"trainer on {loaded['device']}, {loaded['code_version']}; {args.rows:,} rows per version, "
              f"{args.epochs} epochs, batch {args.batch_size}, MLP {spec.architecture.hidden}")

        totals = []
        for round_ in range(1, args.rounds + 1):
            manifest, _ = write_synthetic_version(store, DATASET, round_, args.rows, seed=round_)
            version = model_version(spec, round_)
            sent = time.time()
            producer.send_now(DatasetReady.of(manifest, "manual"))
            fetched = wait_for_trained(consumer, version, trainer, log)
            lines = [line for line in log_lines(log) if line.get("version") == version]
            start = next(log_time(line) for line in lines if line["message"] == "training")
            epochs = [line for line in lines if line["message"] == "epoch"]
            done = next(line for line in lines if line["message"] == "trained")
            totals.append(fetched - sent)
            print(f"round {round_}: dataset.ready -> model.trained {fetched - sent:6.2f} s = "
                  f"read {start - sent:5.2f} s + train {log_time(epochs[-1]) - start:6.2f} s + "
                  f"export/commit {log_time(done) - log_time(epochs[-1]):5.2f} s + "
                  f"announce {fetched - log_time(done):5.2f} s  "
                  f"(samples/s per epoch {[line['samples_per_s'] for line in epochs]}, "
                  f"auc {done['metrics']['auc']:.4f})")

        sent = time.time()
        producer.send_now(DatasetReady.of(manifest, "manual"))
        fetched = wait_for_trained(consumer, model_version(spec, args.rounds), trainer, log)
        again = [line for line in log_lines(log) if line["message"] == "trained before; announcing it again"]
        print(f"redelivered dataset.ready -> model.trained (no training): {fetched - sent:.3f} s = "
              f"delivery and registry check {log_time(again[-1]) - sent:.3f} s + "
              f"announce {fetched - log_time(again[-1]):.3f} s")
        print(f"median end-to-end over {args.rounds} rounds: {sorted(totals)[len(totals) // 2]:.2f} s")
        consumer.close()
    finally:
        if trainer is not None:
            trainer.terminate()
            trainer.wait(timeout=60)
        broker.stop()
        ceph.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
