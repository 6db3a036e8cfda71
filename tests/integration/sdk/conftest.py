"""SDK tests build their registry with the validator tests' helpers (registry_builders)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "validator"))

from registry_builders import World, make_world  # noqa: E402


@pytest.fixture
def world(stack, unique, bucket, store, tmp_path) -> World:
    return make_world(stack, unique, store, bucket, tmp_path)
