"""A service with an unreachable dependency stops at start, naming the setting."""

import os
import subprocess
import sys

import pytest

from streamml.stack.ports import free_port

pytestmark = pytest.mark.integration


def run_service(env: dict[str, str]) -> tuple[int, str]:
    """The service's exit code and stderr; it must stop by itself (a service that waits forever for a
    dependency that is not there raises TimeoutExpired here)."""
    result = subprocess.run(
        [sys.executable, "-m", "services.ingest"],
        env={**os.environ, **env, "STREAMML_HTTP_PORT": str(free_port())},
        capture_output=True, text=True, timeout=120,
    )
    return result.returncode, result.stderr


def test_unreachable_kafka_names_the_setting(stack):
    code, stderr = run_service({**stack.env(), "STREAMML_KAFKA_BOOTSTRAP": "127.0.0.1:1"})
    assert code != 0
    assert "STREAMML_KAFKA_BOOTSTRAP='127.0.0.1:1'" in stderr.splitlines()[-1]


def test_unreachable_s3_names_the_setting(stack):
    code, stderr = run_service({**stack.env(), "STREAMML_S3_ENDPOINT": f"http://127.0.0.1:{free_port()}"})
    assert code != 0
    assert "STREAMML_S3_ENDPOINT" in stderr.splitlines()[-1]


def test_bad_setting_exits_2_with_one_line_per_problem():
    code, stderr = run_service({"STREAMML_KAFKA_BOOTSTRAP": "nohost", "STREAMML_S3_SECRET_ACCESS_KEY": "hunter2",
                                   "STREAMML_KAFKA_SESSION_TIMEOUT_MS": "10"})
    assert code == 2
    lines = stderr.strip().splitlines()
    assert any("STREAMML_KAFKA_BOOTSTRAP='nohost'" in line for line in lines)
    assert any("STREAMML_KAFKA_SESSION_TIMEOUT_MS" in line for line in lines)
    assert "hunter2" not in stderr
