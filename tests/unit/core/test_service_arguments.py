"""A service takes settings, not arguments: --help lists them, anything else stops it before it connects."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

STREAMML = str(Path(sys.executable).parent / "streamml")


def run(*command: str) -> subprocess.CompletedProcess:
    # No broker or object store at these addresses: a service that tried to start would fail with exit 3.
    env = {"PATH": "/usr/bin:/bin", "STREAMML_KAFKA_BOOTSTRAP": "127.0.0.1:1", "STREAMML_S3_ENDPOINT": "http://127.0.0.1:1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)


def test_help_through_the_cli_lists_every_setting_with_its_default():
    result = run(STREAMML, "ingest", "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: streamml ingest\n")
    assert "STREAMML_INGEST_FLUSH_ROWS  (default: 100000)" in result.stdout
    assert "STREAMML_KAFKA_BOOTSTRAP  (default: 127.0.0.1:9092)" in result.stdout  # the default, not this env
    assert "services/ingest/README.md" in result.stdout


def test_the_prep_service_runs_as_prep_serve():
    result = run(STREAMML, "prep", "serve", "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: streamml prep serve" in result.stdout
    assert "STREAMML_PREP_SPARK_MASTER  (default: local[*])" in result.stdout


def test_help_as_a_module_names_the_module_command():
    result = run(sys.executable, "-m", "services.serve", "-h")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m services.serve\n")
    assert "STREAMML_SERVE_MODEL  (default: required)" in result.stdout


@pytest.mark.parametrize("command", [[STREAMML, "validator", "--policies", "p"],
                                     [sys.executable, "-m", "services.validator", "--policies", "p"]])
def test_an_argument_is_a_usage_error_that_points_to_help(command):
    result = run(*command)
    assert result.returncode == 2
    assert "unexpected argument '--policies'" in result.stderr
    assert "--help" in result.stderr
    assert "no Kafka broker answered" not in result.stderr
