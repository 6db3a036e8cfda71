"""`streamml up` / `status` / `down` run the whole embedded stack as a user would."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streamml.stack.ports import free_port, port_open
from streamml.stack.procs import pid_alive

pytestmark = pytest.mark.integration
EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "datasets"


def streamml(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamml.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")})


def test_up_status_down_leaves_nothing_behind(tmp_path):
    state = tmp_path / "stack"
    ports = {"--kafka-port": free_port(), "--s3-port": free_port(), "--http-base-port": free_port(),
             "--console-port": free_port()}
    args = [f"{flag}={port}" for flag, port in ports.items()]
    started = time.monotonic()
    up = streamml("up", "--state-dir", str(state), *args, "--specs", str(EXAMPLES))
    took = time.monotonic() - started
    try:
        assert up.returncode == 0, up.stdout + up.stderr + (state / "logs" / "supervisor.log").read_text()
        assert took < 60, f"up took {took:.0f}s"
        assert f"web console: http://127.0.0.1:{ports['--console-port']} (read-only" in up.stdout
        status = streamml("status", "--state-dir", str(state), "--json")
        assert status.returncode == 0, status.stdout
        components = {c["name"]: c for c in json.loads(status.stdout)}
        assert set(components) == {"supervisor", "kafka", "ceph", "ingest", "prep", "trainer", "validator", "monitor",
                                   "console"}
        assert all(c["healthy"] for c in components.values())
        config = (state / "config.yaml").read_text()
        assert f"127.0.0.1:{ports['--kafka-port']}" in config
        assert oct((state / "config.yaml").stat().st_mode & 0o777) == "0o600"

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
