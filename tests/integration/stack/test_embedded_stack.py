"""`streamml up` / `status` / `restart` / `down` run the whole embedded stack as a user would."""

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from streamml.stack.ports import free_port, free_ports, port_open
from streamml.stack.procs import pid_alive

pytestmark = pytest.mark.integration
EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "datasets"


def streamml(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamml.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")})


def port_args() -> tuple[dict[str, int], list[str]]:
    ports = {"--kafka-port": free_port(), "--s3-port": free_port(), "--http-base-port": free_ports(5)[0],
             "--console-port": free_port()}
    return ports, [f"{flag}={port}" for flag, port in ports.items()]


class ProcessTable(threading.Thread):
    """Every command line on the machine, sampled every 20 ms until stopped."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.seen: set[str] = set()
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.02):
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    self.seen.add(cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
                except OSError:
                    pass


def test_up_status_down_leaves_nothing_behind_and_never_shows_the_secret(tmp_path):
    state = tmp_path / "stack"
    ports, args = port_args()
    table = ProcessTable()
    table.start()
    started = time.monotonic()
    up = streamml("up", "--state-dir", str(state), *args, "--specs", str(EXAMPLES))
    took = time.monotonic() - started
    table.stopping.set()
    try:
        assert up.returncode == 0, up.stdout + up.stderr + (state / "logs" / "supervisor.log").read_text()
        assert took < 90, f"up took {took:.0f}s"
        assert f"web console: http://127.0.0.1:{ports['--console-port']} (read-only" in up.stdout
        status = streamml("status", "--state-dir", str(state), "--json")
        assert status.returncode == 0, status.stdout
        components = {c["name"]: c for c in json.loads(status.stdout)}
        assert set(components) == {"supervisor", "ceph", "rgw-proxy", "kafka",
                                   "ingest", "prep", "trainer", "validator", "monitor", "console"}
        assert all(c["healthy"] for c in components.values())
        config = (state / "config.yaml").read_text()
        assert f"127.0.0.1:{ports['--kafka-port']}" in config
        assert oct((state / "config.yaml").stat().st_mode & 0o777) == "0o600"
        assert "durable" in components["kafka"]["detail"] and "bluestore" in components["ceph"]["detail"]

        # The S3 secret is on no command line, in no log, and only in files no one else can read.
        secret = json.loads((state / "ceph" / "s3.json").read_text())["secret_key"]
        assert len(table.seen) > 20 and not [c for c in table.seen if secret in c]
        assert secret not in up.stdout + up.stderr
        files = [f for f in state.rglob("*") if f.is_file()]
        # Ceph's own stores (the mon's RocksDB, the OSD's block file) hold the keys by design.
        stores = [f for f in files if f.is_relative_to(state / "ceph" / "mon") or f.name == "block"]
        holding = [f for f in files if f not in stores and secret.encode() in f.read_bytes()]
        assert {f.relative_to(state).as_posix() for f in holding} == {"config.yaml", "ceph/s3.json"}
        assert not [f for f in (state / "logs").rglob("*") if f.is_file() and secret in f.read_text()]
        assert state.stat().st_mode & 0o777 == 0o700
        readable = [f.relative_to(state).as_posix() for f in [*holding, *stores] if f.stat().st_mode & 0o077]
        assert not readable, f"files with the secret that others may read: {readable}"

        # A crashed service is restarted by the supervisor.
        stack = json.loads((state / "stack.json").read_text())
        victim = stack["services"]["validator"]["pid"]
        os.kill(victim, 9)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            stack = json.loads((state / "stack.json").read_text())
            if stack["services"]["validator"]["restarts"] == 1 and stack["services"]["validator"]["pid"]:
                break
            time.sleep(0.5)
        assert stack["services"]["validator"]["restarts"] == 1
        pids = [stack["supervisor_pid"], stack["kafka"]["pid"], *stack["s3"]["pids"].values(),
                *(s["pid"] for s in stack["services"].values())]
    finally:
        down = streamml("down", "--state-dir", str(state))
    assert down.returncode == 0, down.stderr
    alive = [pid for pid in pids if pid_alive(pid)]
    assert not alive, f"still running after down: {alive}"
    listening = [port for port in [*ports.values(), ports["--http-base-port"] + 4] if port_open("127.0.0.1", port)]
    assert not listening, f"ports still open after down: {listening}"
    assert "killed leftover" not in down.stdout  # everything stopped on SIGTERM, in order


def test_up_names_a_taken_port_in_one_line_and_starts_nothing(tmp_path):
    state = tmp_path / "stack"
    ports, args = port_args()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports["--kafka-port"]))
        taken.listen()
        up = streamml("up", "--state-dir", str(state), *args)
    assert up.returncode == 1
    message = " ".join(up.stderr.split())  # rich wraps long lines
    assert f"port already in use: --kafka-port {ports['--kafka-port']}" in message, up.stderr
    assert "Traceback" not in up.stderr
    assert not (state / "stack.json").exists()


def test_up_refuses_a_state_folder_of_another_version_and_keeps_it(tmp_path):
    state = tmp_path / "stack"
    (state / "ceph").mkdir(parents=True)
    (state / "ceph" / "user-data").write_text("kept")
    (state / "state-format.json").write_text(json.dumps({"format": 99, "mode": "durable"}))
    _, args = port_args()
    up = streamml("up", "--state-dir", str(state), *args)
    assert up.returncode == 1
    message = " ".join(up.stderr.split())
    assert "holds a stack in state format 99" in message and "nothing was deleted" in message, up.stderr
    assert (state / "ceph" / "user-data").read_text() == "kept"


def test_up_refuses_a_full_disk(tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(small)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        _, args = port_args()
        up = streamml("up", "--state-dir", str(small / "stack"), *args)
        assert up.returncode == 1
        message = " ".join(up.stderr.split())
        assert "MiB free and the stack needs at least 1024 MiB" in message, up.stderr
        assert "choose a --state-dir on another disk" in message
    finally:
        subprocess.run(["umount", str(small)], check=True)
