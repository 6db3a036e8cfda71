"""The embedded stack's supervisor: one process that owns Ceph, the broker,
the RGW proxy, the five services and the console on this machine.

``streamml up`` starts it detached and returns once ``stack.json`` reports
every component healthy; ``streamml down`` sends it SIGTERM, and it stops
services first, then the broker, then the proxy, then Ceph. Any component
that exits on its own (a Ceph daemon, the proxy, the broker or a service) is
started again, with exponential backoff while it keeps failing; its output
goes to ``<state>/logs/``. ``streamml restart COMPONENT`` asks for a clean
stop and an immediate start (SIGUSR1 plus a request file in ``run/``).

Durable (the default): the broker keeps topics, records and committed
offsets in Ceph (Tansu's ``s3://`` engine, through ``rgw_proxy``), and the
OSD keeps objects in bluestore, so ``up`` on an existing folder resumes
where the stack stopped. Ephemeral (``--ephemeral``): an in-memory broker
and a memstore OSD, emptied at every start.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from streamml.stack import procs
from streamml.stack.ceph import CephCluster, CephEndpoint
from streamml.stack.files import redact, write_private
from streamml.stack.ports import free_port, wait_for_port
from streamml.stack.tansu import TansuBroker
from streamml.topics import apply_declared

SERVICES = ("ingest", "prep", "trainer", "validator", "monitor")
DATA_BUCKET = "streamml"
CONSOLE = "console"  # supervised like a service; it runs the web console (streamml.console)
BROKER_BUCKET = "tansu"
# Components that are not services, as `streamml restart` names them.
INFRASTRUCTURE = ("ceph", "rgw-proxy", "kafka")


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
    jars_dir: Path | None = None
    code_dir: Path | None = None  # Python modules the model specs name; the trainer imports them
    extra_env: dict[str, str] = field(default_factory=dict)
    console_port: int = 0  # 0: a free port, chosen when the supervisor starts
    ephemeral: bool = False

    def folder_env(self) -> dict[str, str]:
        """The services' settings that name the declared datasets, models, policies and prep's jars."""
        env = {}
        if self.jars_dir:
            env["STREAMML_PREP_JARS_DIR"] = str(self.jars_dir)
        if self.specs_dir:
            env["STREAMML_INGEST_SPECS_DIR"] = env["STREAMML_PREP_SPECS_DIR"] = str(self.specs_dir)
        if self.models_dir:
            env["STREAMML_TRAINER_MODELS_DIR"] = str(self.models_dir)
            env["STREAMML_MONITOR_MODELS"] = json.dumps(_model_names(self.models_dir))
        if self.policies_dir:
            env["STREAMML_VALIDATOR_POLICIES_DIR"] = str(self.policies_dir)
        if self.code_dir:
            env["STREAMML_TRAINER_CODE_DIR"] = str(self.code_dir)
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
            "jars_dir": str(self.jars_dir) if self.jars_dir else None,
            "code_dir": str(self.code_dir) if self.code_dir else None,
            "extra_env": self.extra_env,
            "console_port": self.console_port,
            "ephemeral": self.ephemeral,
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
            jars_dir=Path(data["jars_dir"]) if data.get("jars_dir") else None,
            code_dir=Path(data["code_dir"]) if data.get("code_dir") else None,
            extra_env=data.get("extra_env", {}),
            console_port=data.get("console_port", 0),
            ephemeral=data.get("ephemeral", False),
        )


# Settings the stack gives its services itself: its broker and store, ports, state and folders.
STACK_OWNED = ("STREAMML_KAFKA_", "STREAMML_S3_", "STREAMML_HTTP_", "STREAMML_STATE_DIR", "STREAMML_CONFIG_FILE",
               "STREAMML_STACK_", "STREAMML_INGEST_PROCESSES", "STREAMML_INGEST_SPECS_DIR", "STREAMML_PREP_SPECS_DIR",
               "STREAMML_PREP_JARS_DIR", "STREAMML_TRAINER_MODELS_DIR", "STREAMML_MONITOR_MODELS",
               "STREAMML_VALIDATOR_POLICIES_DIR")


def passed_through(environ: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """The caller's STREAMML_* variables the services get (say STREAMML_TRAINER_MAX_THREADS), and the
    names left out because the stack sets them."""
    passed, ignored = {}, []
    for name, value in sorted(environ.items()):
        if name.startswith("STREAMML_"):
            if name.startswith(STACK_OWNED):
                if not name.startswith(("STREAMML_STACK_", "STREAMML_PREP_JARS_DIR")):  # read by `up` itself
                    ignored.append(name)
            else:
                passed[name] = value
    return passed, ignored


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


def config_file(state_dir: Path) -> Path:
    """The StackConfig the supervisor runs (mode 0600: extra_env may hold secrets)."""
    return state_dir / "run" / "stack-config.json"


def restart_request(state_dir: Path, component: str) -> Path:
    return state_dir / "run" / f"restart-{component}"


@dataclass
class ServiceProcess:
    name: str
    port: int
    pid: int | None = None
    restarts: int = 0
    started: float = 0.0
    next_start: float = 0.0
    exited_at: float | None = None  # wall clock of the last exit nobody asked for: `status` shows it


@dataclass
class Daemon:
    """Ceph, the proxy or the broker: kept running by the supervisor."""

    name: str
    alive: Callable[[], bool]
    start: Callable[[], object]
    stop: Callable[[], object]
    restarts: int = 0
    failures: int = 0  # consecutive failed starts, for the backoff
    next_start: float = 0.0
    error: str | None = None
    exited_at: float | None = None  # wall clock of the last time it was found not running


class Supervisor:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.dir = config.state_dir.resolve()
        self.stopping = threading.Event()
        self.restart_asked = threading.Event()
        self.ceph = CephCluster(self.dir, rgw_port=config.s3_port, log=self._log,
                                objectstore="memstore" if config.ephemeral else "bluestore")
        self.broker: TansuBroker | None = None
        self.endpoint: CephEndpoint | None = None
        self.proxy_port: int | None = None
        self.proxy_pid: int | None = None
        self.services = {
            name: ServiceProcess(name, config.http_base_port + i)
            for i, name in enumerate(config.services)
        }
        self.services[CONSOLE] = ServiceProcess(CONSOLE, config.console_port or free_port())
        self.daemons: dict[str, Daemon] = {}
        self.phase = "starting"
        self.error: str | None = None

    def _log(self, message: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {self._redact(message)}", flush=True)

    def _redact(self, text: str) -> str:
        return redact(text, [self.endpoint.secret_key if self.endpoint else None])

    def run(self) -> int:
        signal.signal(signal.SIGTERM, lambda *_: self.stopping.set())
        signal.signal(signal.SIGINT, lambda *_: self.stopping.set())
        signal.signal(signal.SIGUSR1, lambda *_: self.restart_asked.set())
        try:
            self._start_dependencies()
            self.phase = "running"
            self._write_state()
            while not self.stopping.wait(0.5):
                if self.restart_asked.is_set():
                    self.restart_asked.clear()
                    self._restart_requested()
                self._supervise()
        except Exception as error:  # reported in stack.json for `up` to show
            self.phase, self.error = "failed", self._redact(f"{type(error).__name__}: {error}")
            self._log(self.error)
            self._write_state()
        finally:
            self._stop_all()
        return 0 if self.error is None else 1

    # ------------------------------------------------------------ start

    def _start_dependencies(self) -> None:
        self._write_state()
        if self.config.ephemeral:
            # The in-memory broker starts empty, so the store must too: raw object
            # keys are made of topic offsets, which a fresh broker reuses.
            shutil.rmtree(self.dir / "ceph", ignore_errors=True)
        started = time.monotonic()
        self.endpoint = self.ceph.start()
        self._log(f"ceph ready at {self.endpoint.url} in {time.monotonic() - started:.1f}s")
        self.daemons["ceph"] = Daemon("ceph", self._ceph_alive, self._revive_ceph, self.ceph.stop)
        self._write_client_config()
        self._write_state()
        if self.config.ephemeral:
            storage, s3 = "memory://tansu/", None
        else:
            self.proxy_port = free_port()
            self._start_proxy()
            self.daemons["rgw-proxy"] = Daemon("rgw-proxy", self._proxy_alive, self._start_proxy,
                                               self._stop_proxy)
            storage = f"s3://{BROKER_BUCKET}/"
            s3 = CephEndpoint(f"http://127.0.0.1:{self.proxy_port}", self.endpoint.access_key,
                              self.endpoint.secret_key, self.endpoint.region)
        self.broker = TansuBroker(self.dir, port=self.config.kafka_port, storage=storage, s3=s3, log=self._log)
        bootstrap = self.broker.start()
        self._log(f"broker ready at {bootstrap} ({storage})")
        self.daemons["kafka"] = Daemon("kafka", self.broker.healthy, self.broker.start, self.broker.stop)
        self._write_state()
        self._apply_topics()
        for service in self.services.values():
            self._start_service(service)
        self._write_state()

    def _ceph_alive(self) -> bool:
        return len(self.ceph.pids()) == 3

    def _revive_ceph(self) -> None:
        if self.ceph.pids():
            self._log(f"ceph: restarting {', '.join(self.ceph.revive())}")
        else:
            self.ceph.start()

    def _start_proxy(self) -> None:
        assert self.proxy_port is not None
        self.proxy_pid = procs.spawn(
            [sys.executable, "-m", "streamml.stack.rgw_proxy", "--listen-port", str(self.proxy_port),
             "--rgw-port", str(self.config.s3_port), "--keys", str(self.ceph.dir / "s3.json")],
            log_path=self.dir / "logs" / "rgw-proxy.log", pid_path=self.dir / "run" / "rgw-proxy.pid",
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        wait_for_port("127.0.0.1", self.proxy_port, 10)
        self._log(f"rgw-proxy on 127.0.0.1:{self.proxy_port} (pid {self.proxy_pid})")

    def _proxy_alive(self) -> bool:
        return bool(self.proxy_pid) and procs.pid_alive(self.proxy_pid)

    def _stop_proxy(self) -> None:
        if self.proxy_pid is not None:
            procs.terminate(self.proxy_pid, timeout=5)
            self.proxy_pid = None

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

    def _client_document(self) -> dict:
        env = self.client_env()
        return {
            "kafka": {"bootstrap": env["STREAMML_KAFKA_BOOTSTRAP"], "session_timeout_ms": 6000},
            "s3": {
                "endpoint": env["STREAMML_S3_ENDPOINT"],
                "bucket": DATA_BUCKET,
                "region": env["STREAMML_S3_REGION"],
                "access_key_id": env["STREAMML_S3_ACCESS_KEY_ID"],
                "secret_access_key": env["STREAMML_S3_SECRET_ACCESS_KEY"],
            },
        }

    def client_settings(self):  # -> ServiceSettings
        from streamml.settings import ServiceSettings

        return ServiceSettings(**self._client_document())

    def _write_client_config(self) -> None:
        write_private(client_config_file(self.dir), yaml.safe_dump(self._client_document(), sort_keys=False))

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

    # ------------------------------------------------------- supervise

    def _supervise(self) -> None:
        changed = False
        for daemon in self.daemons.values():  # in start order: ceph, proxy, broker
            if self.stopping.is_set():
                return
            changed |= self._keep_running(daemon)
        now = time.monotonic()
        for service in self.services.values():
            if service.pid is not None and procs.pid_alive(service.pid):
                continue
            if service.pid is not None:
                uptime = now - service.started
                # A service that ran a while before dying starts over at 1 s.
                backoff = 1.0 if uptime > 60 else min(30.0, 2.0 ** min(service.restarts, 5))
                service.pid, service.next_start = None, now + backoff
                service.restarts += 1
                service.exited_at = time.time()
                self._log(f"{service.name} exited after {uptime:.0f}s; restart in {backoff:.0f}s")
                changed = True
            elif now >= service.next_start:
                self._start_service(service)
                changed = True
        if changed:
            self._write_state()

    def _keep_running(self, daemon: Daemon) -> bool:
        """Start a daemon that is not running; back off while starts keep failing."""
        if daemon.alive() or time.monotonic() < daemon.next_start:
            return False
        self._log(f"{daemon.name} is not running; starting it")
        if daemon.failures == 0:
            daemon.exited_at = time.time()
        try:
            daemon.start()
        except Exception as error:  # logged and retried: the stack keeps going
            daemon.failures += 1
            delay = min(30.0, 2.0 ** daemon.failures)
            daemon.next_start = time.monotonic() + delay
            daemon.error = self._redact(f"{type(error).__name__}: {error}").splitlines()[0]
            self._log(f"{daemon.name} failed to start ({self._redact(str(error))}); retry in {delay:.0f}s")
        else:
            daemon.restarts += 1
            daemon.failures, daemon.error = 0, None
        return True

    def _restart_requested(self) -> None:
        """Clean stop and immediate start of each component named in run/restart-*."""
        for request in sorted((self.dir / "run").glob("restart-*")):
            name = request.name.removeprefix("restart-")
            self._log(f"restart of {name} requested")
            if name in self.daemons:
                daemon = self.daemons[name]
                exited_at = daemon.exited_at  # an asked-for restart is not a crash
                daemon.stop()
                daemon.next_start = 0.0
                self._keep_running(daemon)
                daemon.exited_at = exited_at
            elif name in self.services:
                service = self.services[name]
                if service.pid is not None:
                    procs.terminate(service.pid, timeout=20)
                self._start_service(service)
                service.restarts += 1
            request.unlink(missing_ok=True)
            self._write_state()

    def _stop_all(self) -> None:
        self.phase = "stopping" if self.error is None else self.phase
        self._write_state()
        for service in self.services.values():
            if service.pid is not None:
                procs.terminate(service.pid, timeout=20)
        if self.broker is not None:
            self.broker.stop()
        self._stop_proxy()
        self.ceph.stop()
        if self.error is None:
            self.phase = "stopped"
        self._write_state()

    def _write_state(self) -> None:
        restarts = {name: d.restarts for name, d in self.daemons.items()}
        exited = {name: d.exited_at for name, d in self.daemons.items()}
        state = {
            "phase": self.phase,
            "error": self.error,
            "supervisor_pid": os.getpid(),
            "config": self.config.to_json(),
            "kafka": {
                "bootstrap": f"127.0.0.1:{self.config.kafka_port}",
                "pid": self.broker.pid() if self.broker else None,
                "storage": "memory" if self.config.ephemeral else f"s3://{BROKER_BUCKET}/ (durable)",
                "restarts": restarts.get("kafka", 0),
                "exited_at": exited.get("kafka"),
            },
            "s3": {
                "endpoint": self.endpoint.url if self.endpoint else None,
                "bucket": DATA_BUCKET,
                "pids": self.ceph.pids(),
                "objectstore": self.ceph.objectstore,
                "restarts": restarts.get("ceph", 0),
                "exited_at": exited.get("ceph"),
            },
            "rgw_proxy": None if self.config.ephemeral else {
                "port": self.proxy_port, "pid": self.proxy_pid, "restarts": restarts.get("rgw-proxy", 0),
                "exited_at": exited.get("rgw-proxy"),
            },
            "errors": {name: d.error for name, d in self.daemons.items() if d.error},
            "services": {
                s.name: {"pid": s.pid, "port": s.port, "restarts": s.restarts, "exited_at": s.exited_at}
                for s in self.services.values()
            },
        }
        # extra_env may carry a secret of the user's: the file is private like config.yaml.
        write_private(state_file(self.dir), json.dumps(state, indent=2))


def main() -> None:
    state_dir = Path(sys.argv[1]).resolve()
    config = StackConfig.from_json(json.loads(config_file(state_dir).read_text()))
    raise SystemExit(Supervisor(config).run())


if __name__ == "__main__":
    main()
