"""`streamml topics apply` creates what is missing, is idempotent, and reports what it cannot fix."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

pytestmark = pytest.mark.integration
EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "datasets"


def apply(stack, prefix, *args):
    env = {**os.environ, **stack.env(), "STREAMML_KAFKA_TOPIC_PREFIX": prefix}
    return subprocess.run([sys.executable, "-m", "streamml.cli", "topics", "apply", *args],
                          capture_output=True, text=True, timeout=60, env=env)


def test_apply_twice_then_report_a_difference(stack, unique):
    prefix = f"t{unique}."
    first = apply(stack, prefix, "--specs", str(EXAMPLES), "--model", "fraud")
    assert first.returncode == 0, first.stderr
    assert f"created   {prefix}data.landed" in first.stdout
    assert f"created   {prefix}ingest.transactions" in first.stdout
    assert f"created   {prefix}predictions.fraud" in first.stdout

    admin = AdminClient(stack.settings().kafka.client_config())
    topics = admin.list_topics(timeout=10).topics
    assert len(topics[f"{prefix}data.landed"].partitions) == 4
    assert len(topics[f"{prefix}dlq.ingest"].partitions) == 1

    second = apply(stack, prefix, "--specs", str(EXAMPLES), "--model", "fraud")
    assert second.returncode == 0
    assert "created" not in second.stdout

    other = f"o{unique}."
    admin.create_topics([NewTopic(f"{other}dataset.ready", 2, 1)])[f"{other}dataset.ready"].result()
    third = apply(stack, other)
    assert third.returncode == 1
    assert f"{other}dataset.ready: has 2 partitions, declared 4" in third.stdout
