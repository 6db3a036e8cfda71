"""Client side of the embedded stack: ``up``, ``down``, ``status`` and ``restart``."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from streamml.stack import procs
from streamml.stack.ceph import ceph_missing_packages
from streamml.stack.files import write_private
from streamml.stack.ports import port_open
from streamml.stack.state_folder import (
    StateFolderError,
    check_free_space,
    check_state_folder,
    make_private_folder,
    mark_state_folder,
)
from streamml.stack.supervisor import INFRASTRUCTURE, StackConfig, config_file, restart_request, state_file

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
    if running_supervisor(state_dir) is None:
        prepare_state_folder(config)
        state_file(state_dir).unlink(missing_ok=True)
        procs.spawn(
            [sys.executable, "-m", "streamml.stack.supervisor", str(state_dir)],
            log_path=state_dir / "logs" / "supervisor.log",
            pid_path=state_dir / "run" / "supervisor.pid",
        )
        mode = "ephemeral: emptied at every start" if config.ephemeral else "durable"
        echo(f"starting the embedded stack ({mode}) in {state_dir} (log: {state_dir}/logs/supervisor.log)")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read_state(state_dir)
        if state and state["phase"] == "failed":
            first_line = (state["error"] or "unknown error").splitlines()[0]
            raise StackError(f"the stack failed to start: {first_line} "
                             f"(details: {state_dir}/logs/supervisor.log)")
        components = status(state_dir)
        if components and all(c.healthy for c in components):
            return components
        time.sleep(0.5)
    raise StackError(f"the stack was not healthy after {timeout:.0f}s; see {state_dir}/logs/")


def prepare_state_folder(config: StackConfig) -> None:
    """Check the folder, the disk and the ports, then hand the supervisor its config."""
    state_dir = config.state_dir.resolve()
    make_private_folder(state_dir)
    try:
        check_state_folder(state_dir, config.ephemeral)
        check_free_space(state_dir)
    except StateFolderError as error:
        raise StackError(str(error)) from None
    _check_ports_free(config)
    mark_state_folder(state_dir, config.ephemeral)
    write_private(config_file(state_dir), json.dumps(config.to_json()))


def _check_ports_free(config: StackConfig) -> None:
    ports = {"--kafka-port": config.kafka_port, "--s3-port": config.s3_port}
    ports |= {f"service {name} (--http-base-port)": config.http_base_port + i
              for i, name in enumerate(config.services)}
    try:  # the mon's port is fixed when its cluster is made
        mon_port = json.loads((config.state_dir / "ceph" / "cluster.json").read_text())["mon_port"]
        ports["the Ceph monitor (fixed for this state folder)"] = mon_port
    except (OSError, ValueError, KeyError):
        pass
    busy = [f"{what} {port}" for what, port in ports.items() if port_open("127.0.0.1", port)]
    if busy:
        raise StackError(f"port already in use: {', '.join(busy)}; stop what uses it, choose another port, "
                         "or run `streamml down` if it is an earlier stack")


def status(state_dir: Path) -> list[Component]:
    state = read_state(state_dir.resolve())
    if state is None:
        return []
    components = [_supervisor(state)]
    errors = state.get("errors", {})
    s3 = state["s3"]
    components.append(
        Component(
            "ceph",
            bool(s3["endpoint"]) and len(s3["pids"]) == 3 and _http_ok(s3["endpoint"] + "/"),
            f"{s3['endpoint']} bucket {s3['bucket']} {s3['objectstore']} pids {sorted(s3['pids'].values())} "
            f"restarts {s3['restarts']}" + _error(errors, "ceph"),
        )
    )
    if proxy := state.get("rgw_proxy"):
        components.append(
            Component(
                "rgw-proxy",
                bool(proxy["pid"]) and procs.pid_alive(proxy["pid"]) and port_open("127.0.0.1", proxy["port"]),
                f"127.0.0.1:{proxy['port']} pid {proxy['pid']} restarts {proxy['restarts']}"
                + _error(errors, "rgw-proxy"),
            )
        )
    kafka = state["kafka"]
    host, _, port = kafka["bootstrap"].rpartition(":")
    components.append(
        Component(
            "kafka",
            bool(kafka["pid"]) and procs.pid_alive(kafka["pid"]) and port_open(host, int(port)),
            f"{kafka['bootstrap']} pid {kafka['pid']} storage {kafka['storage']} restarts {kafka['restarts']}"
            + _error(errors, "kafka"),
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


def _error(errors: dict, name: str) -> str:
    return f"; last start failed: {errors[name]}" if errors.get(name) else ""


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
    leftovers += [state["rgw_proxy"]["pid"]] if (state.get("rgw_proxy") or {}).get("pid") else []
    leftovers += list(state["s3"]["pids"].values())
    killed = []
    for leftover in set(leftovers):
        if procs.pid_alive(leftover):
            procs.terminate(leftover, timeout=10)
            killed.append(leftover)
    return killed



def restart(state_dir: Path, component: str, timeout: float = 120) -> list[Component]:
    """Stop one component cleanly and start it again; wait until the stack is healthy."""
    state_dir = state_dir.resolve()
    pid = running_supervisor(state_dir)
    if pid is None:
        raise StackError(f"no stack is running in {state_dir}; start it with `streamml up`")
    state = read_state(state_dir) or {}
    known = [*INFRASTRUCTURE, *state.get("services", {})]
    if state.get("rgw_proxy") is None:
        known.remove("rgw-proxy")
    if component not in known:
        raise StackError(f"no component {component!r} in this stack; choose one of {', '.join(known)}")
    request = restart_request(state_dir, component)
    request.touch()
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not request.exists():
            components = status(state_dir)
            if components and all(c.healthy for c in components):
                return components
        elif running_supervisor(state_dir) is None:
            raise StackError(f"the stack stopped during the restart; see {state_dir}/logs/supervisor.log")
        time.sleep(0.5)
    raise StackError(f"{component} was not healthy {timeout:.0f}s after the restart; see {state_dir}/logs/")
