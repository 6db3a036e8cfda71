"""The embedded stack's supervisor: one process that owns Ceph, the broker,
the five services and the console on this machine.

``streamml up`` starts it detached and returns once ``stack.json`` reports
every component healthy; ``streamml down`` sends it SIGTERM, and it stops
services first, then the broker, then Ceph. A service that exits on its own
is restarted with exponential backoff; its output goes to
``<state>/logs/<service>.log``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from streamml.stack import procs
from streamml.stack.ceph import CephCluster, CephEndpoint
from streamml.stack.ports import free_port
from streamml.stack.tansu import TansuBroker
from streamml.topics import apply_declared

SERVICES = ("ingest", "prep", "trainer", "validator", "monitor")
DATA_BUCKET = "streamml"
CONSOLE = "console"  # supervised like a service; it runs the web console (streamml.console)


@dataclass(frozen=True)
class StackConfig:
    state_dir: Path
    kafka_port: int = 9092
    s3_port: int = 7480
    http_base_port: int = 8081
    services: tuple[str, ...] = SERVICES
    specs_dir: Path | None = None
    models_dir: Path | None = None
    policies_dir: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    console_port: int = 0  # 0: a free port, chosen when the supervisor starts

    def folder_env(self) -> dict[str, str]:
        """The services' settings that name the declared datasets, models and policies."""
        env = {}
        if self.specs_dir:
            env["STREAMML_INGEST_SPECS_DIR"] = env["STREAMML_PREP_SPECS_DIR"] = str(self.specs_dir)
        if self.models_dir:
            env["STREAMML_TRAINER_MODELS_DIR"] = str(self.models_dir)
            env["STREAMML_MONITOR_MODELS"] = json.dumps(_model_names(self.models_dir))
        if self.policies_dir:
            env["STREAMML_VALIDATOR_POLICIES_DIR"] = str(self.policies_dir)
        return env

    def to_json(self) -> dict:
        return {
            "state_dir": str(self.state_dir),
            "kafka_port": self.kafka_port,
            "s3_port": self.s3_port,
            "http_base_port": self.http_base_port,
            "services": list(self.services),
            "specs_dir": str(self.specs_dir) if self.specs_dir else None,
            "models_dir": str(self.models_dir) if self.models_dir else None,
            "policies_dir": str(self.policies_dir) if self.policies_dir else None,
            "extra_env": self.extra_env,
            "console_port": self.console_port,
        }

    @classmethod
    def from_json(cls, data: dict) -> StackConfig:
        return cls(
            state_dir=Path(data["state_dir"]),
            kafka_port=data["kafka_port"],
            s3_port=data["s3_port"],
            http_base_port=data["http_base_port"],
            services=tuple(data["services"]),
            specs_dir=Path(data["specs_dir"]) if data["specs_dir"] else None,
            models_dir=Path(data["models_dir"]) if data.get("models_dir") else None,
            policies_dir=Path(data["policies_dir"]) if data.get("policies_dir") else None,
            extra_env=data.get("extra_env", {}),
            console_port=data.get("console_port", 0),
        )


def _model_names(models_dir: Path) -> list[str]:
    names = []
    for path in sorted([*models_dir.glob("*.yaml"), *models_dir.glob("*.yml")]):
        document = yaml.safe_load(path.read_text()) or {}
        if isinstance(document, dict) and isinstance(document.get("name"), str):
            names.append(document["name"])
    return names


def state_file(state_dir: Path) -> Path:
    return state_dir / "stack.json"


def client_config_file(state_dir: Path) -> Path:
    """Settings for clients of this stack (``streamml publish`` etc.), mode 0600."""
    return state_dir / "config.yaml"


@dataclass
class ServiceProcess:
    name: str
    port: int
    pid: int | None = None
    restarts: int = 0
    started: float = 0.0
    next_start: float = 0.0


class Supervisor:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.dir = config.state_dir.resolve()
        self.stopping = threading.Event()
        self.ceph = CephCluster(self.dir, rgw_port=config.s3_port, log=self._log)
        self.broker: TansuBroker | None = None
        self.endpoint: CephEndpoint | None = None
        self.services = {
            name: ServiceProcess(name, config.http_base_port + i)
            for i, name in enumerate(config.services)
        }
        self.services[CONSOLE] = ServiceProcess(CONSOLE, config.console_port or free_port())
        self.phase = "starting"
        self.error: str | None = None

    def _log(self, message: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, lambda *_: self.stopping.set())
        signal.signal(signal.SIGINT, lambda *_: self.stopping.set())
        try:
            self._start_dependencies()
            self.phase = "running"
            self._write_state()
            while not self.stopping.wait(0.5):
                self._supervise()
        except Exception as error:  # reported in stack.json for `up` to show
            self.phase, self.error = "failed", f"{type(error).__name__}: {error}"
            self._log(self.error)
            self._write_state()
        finally:
            self._stop_all()
        return 0 if self.error is None else 1

    def _start_dependencies(self) -> None:
        self._write_state()
        # The broker keeps no data across starts, so neither does the store: raw
        # object keys are made of topic offsets, which a fresh broker reuses.
        shutil.rmtree(self.dir / "ceph", ignore_errors=True)
        started = time.monotonic()
        self.endpoint = self.ceph.start()
        self._log(f"ceph ready at {self.endpoint.url} in {time.monotonic() - started:.1f}s")
        self._write_client_config()
        self._write_state()
        # Tansu's durable s3:// engine needs quoted If-Match ETags, which Ceph
        # 16.2's RGW rejects (412 on every watermark update), so the embedded
        # broker keeps topics in memory: a broker restart loses unconsumed data.
        storage = "memory://tansu/"
        self.broker = TansuBroker(self.dir, port=self.config.kafka_port, storage=storage, log=self._log)
        bootstrap = self.broker.start()
        self._log(f"broker ready at {bootstrap} ({storage})")
        self._write_state()
        self._apply_topics()
        for service in self.services.values():
            self._start_service(service)
        self._write_state()

    def _apply_topics(self) -> None:
        models = _model_names(self.config.models_dir) if self.config.models_dir else []
        report = apply_declared(self.client_settings().kafka, specs_dir=self.config.specs_dir, models=models)
        self._log(f"topics: {len(report.created)} created, {len(report.unchanged)} present")

    def client_env(self) -> dict[str, str]:
        assert self.endpoint is not None
        return {
            "STREAMML_KAFKA_BOOTSTRAP": f"127.0.0.1:{self.config.kafka_port}",
            # The embedded broker makes a first group join wait session.timeout/2.
            "STREAMML_KAFKA_SESSION_TIMEOUT_MS": "6000",
            # When two members of a group leave at once (a replica's processes on stop), the
            # embedded broker can keep the departed leader as the group's leader, and later
            # members never get an assignment. One ingest process leaves alone.
            "STREAMML_INGEST_PROCESSES": "1",
            "STREAMML_S3_ENDPOINT": self.endpoint.url,
            "STREAMML_S3_BUCKET": DATA_BUCKET,
            "STREAMML_S3_REGION": self.endpoint.region,
            "STREAMML_S3_ACCESS_KEY_ID": self.endpoint.access_key,
            "STREAMML_S3_SECRET_ACCESS_KEY": self.endpoint.secret_key,
        }

    def client_settings(self):  # -> ServiceSettings
        from streamml.settings import ServiceSettings

        env = self.client_env()
        return ServiceSettings(
            kafka={"bootstrap": env["STREAMML_KAFKA_BOOTSTRAP"], "session_timeout_ms": 6000},
            s3={
                "endpoint": env["STREAMML_S3_ENDPOINT"],
                "bucket": DATA_BUCKET,
                "region": env["STREAMML_S3_REGION"],
                "access_key_id": env["STREAMML_S3_ACCESS_KEY_ID"],
                "secret_access_key": env["STREAMML_S3_SECRET_ACCESS_KEY"],
            },
        )

    def _write_client_config(self) -> None:
        env = self.client_env()
        document = {
            "kafka": {"bootstrap": env["STREAMML_KAFKA_BOOTSTRAP"], "session_timeout_ms": 6000},
            "s3": {
                "endpoint": env["STREAMML_S3_ENDPOINT"],
                "bucket": DATA_BUCKET,
                "region": env["STREAMML_S3_REGION"],
                "access_key_id": env["STREAMML_S3_ACCESS_KEY_ID"],
                "secret_access_key": env["STREAMML_S3_SECRET_ACCESS_KEY"],
            },
        }
        path = client_config_file(self.dir)
        path.touch(mode=0o600, exist_ok=True)
        path.write_text(yaml.safe_dump(document, sort_keys=False))

    def _service_env(self, service: ServiceProcess) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")}
        env.update(self.client_env())
        env.update(
            {
                "STREAMML_HTTP_PORT": str(service.port),
                "STREAMML_STATE_DIR": str(self.dir / "services" / service.name),
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.config.folder_env())
        env.update(self.config.extra_env)
        if service.name == CONSOLE and "STREAMML_CONSOLE_TOKEN" in os.environ:
            env["STREAMML_CONSOLE_TOKEN"] = os.environ["STREAMML_CONSOLE_TOKEN"]  # promote and rollback enabled
        return env

    def _start_service(self, service: ServiceProcess) -> None:
        service.pid = procs.spawn(
            [sys.executable, "-m", "streamml.console" if service.name == CONSOLE else f"services.{service.name}"],
            log_path=self.dir / "logs" / f"{service.name}.log",
            pid_path=self.dir / "run" / f"{service.name}.pid",
            env=self._service_env(service),
        )
        service.started = time.monotonic()
        self._log(f"{service.name} started (pid {service.pid}, http {service.port})")

    def _supervise(self) -> None:
        now = time.monotonic()
        changed = False
        for service in self.services.values():
            if service.pid is not None and procs.pid_alive(service.pid):
                continue
            if service.pid is not None:
                uptime = now - service.started
                # A service that ran a while before dying starts over at 1 s.
                backoff = 1.0 if uptime > 60 else min(30.0, 2.0 ** min(service.restarts, 5))
                service.pid, service.next_start = None, now + backoff
                service.restarts += 1
                self._log(f"{service.name} exited after {uptime:.0f}s; restart in {backoff:.0f}s")
                changed = True
            elif now >= service.next_start:
                self._start_service(service)
                changed = True
        if changed:
            self._write_state()

    def _stop_all(self) -> None:
        self.phase = "stopping" if self.error is None else self.phase
        self._write_state()
        for service in self.services.values():
            if service.pid is not None:
                procs.terminate(service.pid, timeout=20)
        if self.broker is not None:
            self.broker.stop()
        self.ceph.stop()
        if self.error is None:
            self.phase = "stopped"
        self._write_state()

    def _write_state(self) -> None:
        state = {
            "phase": self.phase,
            "error": self.error,
            "supervisor_pid": os.getpid(),
            "config": self.config.to_json(),
            "kafka": {
                "bootstrap": f"127.0.0.1:{self.config.kafka_port}",
                "pid": self.broker.pid() if self.broker else None,
                "storage": "memory",
            },
            "s3": {
                "endpoint": self.endpoint.url if self.endpoint else None,
                "bucket": DATA_BUCKET,
                "pids": self.ceph.pids(),
            },
            "services": {
                s.name: {"pid": s.pid, "port": s.port, "restarts": s.restarts}
                for s in self.services.values()
            },
        }
        path = state_file(self.dir)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(path)


def main() -> None:
    config = StackConfig.from_json(json.loads(sys.argv[1]))
    config.state_dir.mkdir(parents=True, exist_ok=True)
    raise SystemExit(Supervisor(config).run())


if __name__ == "__main__":
    main()
