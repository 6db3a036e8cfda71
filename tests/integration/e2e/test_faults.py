"""The loop rides out a 30 s object-store outage and a 15 s broker outage with nothing lost.

The five services and the demo's application reach Ceph and the broker only
through loopback proxies (tests/fault_proxy.py); the broker advertises its
proxy's address, so every connection to it passes there too. The object
store goes away (connections refused, then 503 SlowDown) shortly after the
first data lands, while datasets are being built; the broker goes away
(connections refused) once the application serves the first champion and
logs its predictions.
"""

from __future__ import annotations

import http.client
import threading
import time

import pytest
from fault_proxy import FaultProxy, broker_behind_proxy
from landing_checks import landed
from loop_stack import loop_policies
from rich.console import Console

from streamml.demo import EXAMPLES, DemoPlan, run_demo
from streamml.events import DataLanded, PredictionBatch, decode
from streamml.kafka import BatchConsumer
from streamml.settings import ServiceSettings
from streamml.stack import procs
from streamml.stack.ports import free_port
from streamml.stack.supervisor import SERVICES, StackConfig
from streamml.store import ObjectStore
from streamml.topics import apply_declared

pytestmark = pytest.mark.integration
PLAN = DemoPlan(rate=3000, first_records=12_000, drift_records=12_000, timeout_s=600)
STORE_OUTAGE_S, BROKER_OUTAGE_S = 30, 15


class Chaos(threading.Thread):
    """Takes the store away after the first data landed, the broker after the first logged prediction."""

    def __init__(self, settings: ServiceSettings, store: FaultProxy, broker: FaultProxy) -> None:
        super().__init__(daemon=True)
        self.store, self.broker = store, broker
        self.outages: dict[str, tuple[float, float]] = {}
        self.stopping = threading.Event()
        topics = [settings.kafka.topic(name) for name in ("data.landed", "predictions.fraud")]
        self.consumer = BatchConsumer(settings.kafka, "test-chaos", topics)

    def wait_for(self, kind: type) -> bool:
        while not self.stopping.is_set():
            for message in self.consumer.poll(100, 0.5):
                if isinstance(decode(message.headers(), message.key(), message.value())[0], kind):
                    return True
        return False

    def outage(self, name: str, proxy: FaultProxy, modes: list[str], seconds: float) -> None:
        started = time.monotonic()
        for mode in modes:
            proxy.fail(mode)
            self.stopping.wait(seconds / len(modes))
        proxy.heal()
        self.outages[name] = (started, time.monotonic())

    def run(self) -> None:
        if self.wait_for(DataLanded) and not self.stopping.wait(5):
            self.outage("store", self.store, ["refuse", "http503"], STORE_OUTAGE_S)
        if self.wait_for(PredictionBatch) and not self.stopping.wait(3):
            self.outage("broker", self.broker, ["refuse"], BROKER_OUTAGE_S)
        self.consumer.close()


class Readiness(threading.Thread):
    """Asks each service's /readyz twice a second; keeps (time, ready) per service."""

    def __init__(self, ports: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.ports = ports
        self.seen: dict[str, list[tuple[float, bool]]] = {name: [] for name in ports}
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.5):
            for name, port in self.ports.items():
                try:
                    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
                    connection.request("GET", "/readyz")
                    ready = connection.getresponse().status == 200
                    connection.close()
                except OSError:
                    continue  # restarting: says nothing about readiness
                self.seen[name].append((time.monotonic(), ready))


def dead_letters(settings: ServiceSettings) -> int:
    topics = [settings.kafka.topic(f"dlq.{name}") for name in SERVICES]
    assigned = threading.Event()
    consumer = BatchConsumer(settings.kafka, "test-dead-letters", topics, on_assign=lambda _: assigned.set())
    found = 0
    while not assigned.is_set():
        found += len(consumer.poll(100, 1.0))
    found += sum(len(consumer.poll(100, 1.0)) for _ in range(5))
    consumer.close()
    return found


@pytest.mark.timeout(1200)
def test_the_loop_rides_out_a_store_and_a_broker_outage(stack, bucket, services, tmp_path):
    broker_pid, broker = broker_behind_proxy(tmp_path)
    store_proxy = FaultProxy(int(stack.s3_endpoint.rsplit(":", 1)[1]))
    settings = ServiceSettings(
        kafka={"bootstrap": f"127.0.0.1:{broker.port}", "session_timeout_ms": 6000},
        s3=stack.settings(bucket).s3.model_copy(update={"endpoint": f"http://127.0.0.1:{store_proxy.port}"}),
    )
    folders = StackConfig(state_dir=tmp_path, specs_dir=EXAMPLES / "datasets", models_dir=EXAMPLES / "models",
                          policies_dir=loop_policies(tmp_path / "policies", None)).folder_env()
    apply_declared(settings.kafka, specs_dir=EXAMPLES / "datasets", models=["fraud"])
    ports = {name: free_port() for name in SERVICES}
    for name in SERVICES:
        services.start(name, bucket, **folders, STREAMML_KAFKA_BOOTSTRAP=settings.kafka.bootstrap,
                       STREAMML_S3_ENDPOINT=settings.s3.endpoint, STREAMML_INGEST_PROCESSES="1",
                       STREAMML_HTTP_PORT=str(ports[name]), STREAMML_STATE_DIR=str(tmp_path / name))
    readiness, chaos = Readiness(ports), Chaos(settings, store_proxy, broker)
    readiness.start()
    try:
        # A service that cannot reach a dependency at start exits (its supervisor restarts it; here none does).
        deadline = time.monotonic() + 300
        while not all(seen and seen[-1][1] for seen in readiness.seen.values()):
            assert time.monotonic() < deadline and all(p.poll() is None for p in services.running), readiness.seen
            time.sleep(0.5)
        chaos.start()
        run_demo(settings, PLAN, Console(file=open(tmp_path / "demo.log", "w")))  # raises unless a 2nd champion
        chaos.join(60)
        assert set(chaos.outages) == {"store", "broker"}, "the loop finished before both outages"
        assert all(process.poll() is None for process in services.running), "a service exited"
        assert dead_letters(settings) == 0
        store = ObjectStore.connect(settings.s3)
        offsets, keys = landed(store)
        assert len(offsets) == len(set(offsets)) == len(set(keys)) == PLAN.first_records + PLAN.drift_records
        for outage, (started, ended) in chaos.outages.items():
            for name, seen in readiness.seen.items():
                assert any(not ready for at, ready in seen if started <= at <= ended + 10), (name, outage)
                assert any(ready for at, ready in seen if at > ended), (name, outage)
    finally:
        for worker in (readiness, chaos):
            worker.stopping.set()
        store_proxy.heal()
        broker.heal()
        services.stop_all()
        procs.terminate(broker_pid, 10)
        broker.close()
        store_proxy.close()
