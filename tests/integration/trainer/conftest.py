"""Fixtures of the trainer's integration tests: one world per test on the session's stack."""

from __future__ import annotations

import pytest

from registry_world import World, make_world


@pytest.fixture
def world(stack, unique, bucket, store, tmp_path) -> World:
    env = {"STREAMML_TRAINER_MODELS_DIR": str(tmp_path / "models"), "STREAMML_TRAINER_DEVICE": "cpu",
           # One thread: the machine is shared, and torch's default of one per core slows a busy one down.
           "STREAMML_TRAINER_CPU_THREADS": "1"}
    topics = {"dataset.ready": 1, "model.trained": 1, "dlq.trainer": 1}
    return make_world(stack, store, bucket, tmp_path / "models", f"tr{unique}.", topics, env)
