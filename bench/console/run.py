"""How fast each console page answers with 50 model versions and 20 dataset versions in the store.

    .venv/bin/python bench/console/run.py [--model-versions 50] [--dataset-versions 20] [--rounds 30]

A private Ceph and Tansu broker; ``tests/console_world.py`` fills the store
as the services would (dataset versions whose lineage names every raw object
landed before them, model versions with the trainer's files and the
validator's decisions, the champion moved through every approved version,
the monitor's state of the last two champions); ``python -m
streamml.console`` serves it. Each page is fetched once cold (the console's
first look: immutable documents are then cached), then ``--rounds`` times in
rounds that visit every page once, so load from other work on the machine
falls on all pages alike. Prints p50/p95/max per page in milliseconds, the
cold first answer, and the console's CPU time per request. Target: each page
under 300 ms.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from console_world import fill  # noqa: E402
from streamml.console import links  # noqa: E402
from streamml.demo import EVENT_TOPICS  # noqa: E402
from streamml.settings import KafkaSettings, S3Settings  # noqa: E402
from streamml.stack.ceph import CephCluster  # noqa: E402
from streamml.stack.ports import free_port  # noqa: E402
from streamml.stack.tansu import TansuBroker  # noqa: E402
from streamml.store import ObjectStore  # noqa: E402

TARGET_MS = 300


def pages(world) -> dict[str, str]:
    return {
        "models": "/models",
        "model": links.model(world.model),
        "version": links.version(world.model, world.champion),
        "lineage index": "/lineage",
        "lineage": links.model_lineage(world.model, world.champion),
        "raw object": links.raw(world.raw_keys[0]),
        "datasets": "/datasets",
        "dataset": links.dataset(world.dataset),
        "dataset version": links.dataset_version(world.dataset, world.dataset_versions[-1]),
        "drift index": "/drift",
        "drift": links.drift(world.model),
        "loop": "/loop",
    }


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-versions", type=int, default=50)
    parser.add_argument("--dataset-versions", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=30, help="timed visits of every page")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="streamml-bench-console-"))
    ceph = CephCluster(root, rgw_port=free_port(), log=lambda _: None)
    broker = TansuBroker(root, port=free_port(), log=lambda _: None)
    console = None
    try:
        endpoint = ceph.start()
        kafka = KafkaSettings(bootstrap=broker.start(), session_timeout_ms=6000)
        admin = AdminClient(kafka.client_config())
        for future in admin.create_topics([NewTopic(t, 1, 1) for t in EVENT_TOPICS]).values():
            future.result()
        s3 = S3Settings(endpoint=endpoint.url, bucket="bench", region=endpoint.region,
                        access_key_id=endpoint.access_key, secret_access_key=endpoint.secret_key)
        started = time.monotonic()
        world = fill(ObjectStore.connect(s3), model_versions=args.model_versions,
                     dataset_versions=args.dataset_versions)
        print(f"registry: {len(world.model_versions)} model versions, {len(world.dataset_versions)} dataset "
              f"versions, {len(world.raw_keys)} raw objects, written in {time.monotonic() - started:.0f}s")

        port = free_port()
        env = {**os.environ, "STREAMML_KAFKA_BOOTSTRAP": kafka.bootstrap, "STREAMML_S3_ENDPOINT": endpoint.url,
               "STREAMML_S3_BUCKET": "bench", "STREAMML_S3_REGION": endpoint.region,
               "STREAMML_S3_ACCESS_KEY_ID": endpoint.access_key, "STREAMML_S3_SECRET_ACCESS_KEY": endpoint.secret_key,
               "STREAMML_HTTP_PORT": str(port)}
        with open(root / "console.log", "wb") as log:
            console = subprocess.Popen([sys.executable, "-m", "streamml.console"], env=env, cwd=ROOT,
                                       stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=30) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or console.poll() is not None:
                    raise SystemExit(f"the console did not start; see {root / 'console.log'}")
                time.sleep(0.2)
            urls = pages(world)
            cold = {}
            for name, url in urls.items():
                began = time.perf_counter()
                answer = client.get(url)
                cold[name] = (time.perf_counter() - began) * 1000
                if answer.status_code != 200:
                    raise SystemExit(f"{url} answered {answer.status_code}")
            process = psutil.Process(console.pid)
            cpu_before = sum(process.cpu_times()[:2])
            samples: dict[str, list[float]] = {name: [] for name in urls}
            for _ in range(args.rounds):
                for name, url in urls.items():
                    began = time.perf_counter()
                    client.get(url).raise_for_status()
                    samples[name].append((time.perf_counter() - began) * 1000)
            cpu_ms = (sum(process.cpu_times()[:2]) - cpu_before) * 1000 / (args.rounds * len(urls))

        load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
        print(f"{args.rounds} rounds over {len(urls)} pages; {os.cpu_count()} CPUs, load average {load}")
        print(f"{'page':<16} {'cold ms':>8} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}  under {TARGET_MS} ms at p95")
        for name, values in samples.items():
            p95 = percentile(values, 0.95)
            print(f"{name:<16} {cold[name]:>8.0f} {statistics.median(values):>8.1f} {p95:>8.1f} "
                  f"{max(values):>8.1f}  {'yes' if p95 < TARGET_MS else 'NO'}")
        print(f"console CPU per page (user + system): {cpu_ms:.1f} ms")
    finally:
        if console is not None and console.poll() is None:
            console.terminate()
            console.wait(timeout=30)
        broker.stop()
        ceph.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
