"""Client side of the embedded stack: ``up``, ``down`` and ``status``."""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from streamml.stack import procs
from streamml.stack.ceph import ceph_missing_packages
from streamml.stack.ports import port_open
from streamml.stack.supervisor import StackConfig, state_file

SETUP_HINT = "run `make setup` (installs ceph-mon ceph-osd radosgw ceph-common as root)"


class StackError(Exception):
    pass


@dataclass(frozen=True)
class Component:
    name: str
    healthy: bool
    detail: str


def read_state(state_dir: Path) -> dict | None:
    try:
        return json.loads(state_file(state_dir).read_text())
    except (OSError, ValueError):
        return None


def running_supervisor(state_dir: Path) -> int | None:
    state = read_state(state_dir)
    if state and state.get("phase") in ("starting", "running"):
        pid = state.get("supervisor_pid")
        if pid and procs.pid_alive(pid):
            return pid
    return None


def up(config: StackConfig, timeout: float = 120, echo=print) -> list[Component]:
    """Start the stack detached (or find it running) and wait until it is healthy."""
    if missing := ceph_missing_packages():
        raise StackError(f"Ceph binaries not found: {', '.join(missing)}; {SETUP_HINT}")
    state_dir = config.state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    if running_supervisor(state_dir) is None:
        _check_ports_free(config)
        state_file(state_dir).unlink(missing_ok=True)
        procs.spawn(
            [sys.executable, "-m", "streamml.stack.supervisor", json.dumps(config.to_json())],
            log_path=state_dir / "logs" / "supervisor.log",
            pid_path=state_dir / "run" / "supervisor.pid",
        )
        echo(f"starting the embedded stack in {state_dir} (log: {state_dir}/logs/supervisor.log)")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read_state(state_dir)
        if state and state["phase"] == "failed":
            raise StackError(f"the stack failed to start: {state['error']}")
        components = status(state_dir)
        if components and all(c.healthy for c in components):
            return components
        time.sleep(0.5)
    raise StackError(f"the stack was not healthy after {timeout:.0f}s; see {state_dir}/logs/")


def _check_ports_free(config: StackConfig) -> None:
    ports = {"--kafka-port": config.kafka_port, "--s3-port": config.s3_port, "--console-port": config.console_port}
    ports |= {f"service {name}": config.http_base_port + i for i, name in enumerate(config.services)}
    busy = [f"{what} {port}" for what, port in ports.items() if port_open("127.0.0.1", port)]
    if busy:
        raise StackError(f"ports already in use: {', '.join(busy)}; choose others or run `streamml down`")


def status(state_dir: Path) -> list[Component]:
    state = read_state(state_dir.resolve())
    if state is None:
        return []
    components = [_supervisor(state)]
    kafka = state["kafka"]
    host, _, port = kafka["bootstrap"].rpartition(":")
    components.append(
        Component(
            "kafka",
            bool(kafka["pid"]) and procs.pid_alive(kafka["pid"]) and port_open(host, int(port)),
            f"{kafka['bootstrap']} pid {kafka['pid']} storage {kafka['storage']}",
        )
    )
    s3 = state["s3"]
    components.append(
        Component(
            "ceph",
            bool(s3["endpoint"]) and _http_ok(s3["endpoint"] + "/"),
            f"{s3['endpoint']} bucket {s3['bucket']} pids {sorted(s3['pids'].values())}",
        )
    )
    for name, service in state["services"].items():
        ready = service["pid"] is not None and _http_ok(f"http://127.0.0.1:{service['port']}/readyz")
        components.append(
            Component(
                name,
                ready,
                f"http://127.0.0.1:{service['port']} pid {service['pid']} restarts {service['restarts']}",
            )
        )
    return components


def _supervisor(state: dict) -> Component:
    pid = state["supervisor_pid"]
    alive = procs.pid_alive(pid)
    detail = f"pid {pid} {state['phase']}" + (f": {state['error']}" if state["error"] else "")
    return Component("supervisor", alive and state["phase"] == "running", detail)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status < 400
    except OSError:
        return False


def down(state_dir: Path, timeout: float = 60) -> list[int]:
    """Stop everything the stack started; returns PIDs that had to be killed."""
    state_dir = state_dir.resolve()
    state = read_state(state_dir)
    if state is None:
        return []
    pid = state["supervisor_pid"]
    if procs.pid_alive(pid):
        procs.terminate(pid, timeout=timeout)
    # Whatever the supervisor could not stop (it was killed, say) is stopped by PID.
    leftovers = [s["pid"] for s in state["services"].values() if s["pid"]]
    leftovers += [state["kafka"]["pid"]] if state["kafka"]["pid"] else []
    leftovers += list(state["s3"]["pids"].values())
    killed = []
    for leftover in set(leftovers):
        if procs.pid_alive(leftover):
            procs.terminate(leftover, timeout=10)
            killed.append(leftover)
    return killed

