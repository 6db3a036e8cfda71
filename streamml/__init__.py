"""streamml: event-driven MLOps on Kafka, Ceph/S3, Spark and PyTorch."""

from __future__ import annotations

import functools
import os
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def code_version() -> str:
    """The package version, plus ``git describe`` when running from a source checkout.

    Dataset manifests and model cards record it, so a version says which code made it.
    """
    try:
        release = version("streamml")
    except PackageNotFoundError:
        release = "0+unknown"
    # Only our own checkout: an installed package may sit inside some other repository.
    if not (SOURCE_ROOT / ".git").exists():
        return release
    try:
        commit = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=SOURCE_ROOT,
            capture_output=True, text=True, timeout=5, check=True,
            # Reading only: git would otherwise refresh the index file as a side effect.
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return release
    return f"{release}+{commit}" if commit else release
