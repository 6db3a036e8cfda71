"""An embedded stack for a test of the whole loop, and the policies such a test runs under."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from streamml.demo import EXAMPLES
from streamml.settings import ServiceSettings
from streamml.stack.control import down, up
from streamml.stack.ports import free_port
from streamml.stack.supervisor import StackConfig


def roomy_latency_policies(folder: Path, p95_ms: float) -> Path:
    """The example policies with a latency budget of ``p95_ms``, written to ``folder``.

    The example budget is for a quiet machine; a test about what survives or what a page shows
    must not have its loop stopped by a host busy with restarts or other tests."""
    folder.mkdir()
    for path in (EXAMPLES / "policies").glob("*.yaml"):
        policy = yaml.safe_load(path.read_text())
        policy["latency"]["p95_ms"] = p95_ms
        (folder / path.name).write_text(yaml.safe_dump(policy))
    return folder


def start_stack(state_dir: Path, ephemeral: bool, policies: Path = EXAMPLES / "policies",
                timeout: float = 120) -> tuple[StackConfig, ServiceSettings]:
    """``streamml up`` on free ports; the stack's config and the client settings it wrote."""
    config = StackConfig(
        state_dir=state_dir, kafka_port=free_port(), s3_port=free_port(), http_base_port=free_port(),
        console_port=free_port(), specs_dir=EXAMPLES / "datasets", models_dir=EXAMPLES / "models",
        policies_dir=policies, ephemeral=ephemeral,
    )
    try:
        up(config, timeout=timeout, echo=lambda *_: None)
    except BaseException:
        down(config.state_dir)  # a stack that never became healthy is still running
        raise
    os.environ["STREAMML_CONFIG_FILE"] = str(config.state_dir / "config.yaml")
    try:
        settings = ServiceSettings()
    finally:
        del os.environ["STREAMML_CONFIG_FILE"]
    return config, settings
