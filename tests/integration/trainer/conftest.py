"""Fixtures of the trainer's integration tests: one world per test on the session's stack."""

from __future__ import annotations

import pytest

from trainer_world import World, create_topics


@pytest.fixture
def world(stack, unique, bucket, store, tmp_path) -> World:
    prefix = f"tr{unique}."
    kafka = stack.settings().kafka.model_copy(update={"topic_prefix": prefix})
    create_topics(kafka)
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    env = {"STREAMML_KAFKA_TOPIC_PREFIX": prefix, "STREAMML_TRAINER_MODELS_DIR": str(models_dir),
           "STREAMML_TRAINER_DEVICE": "cpu",
           # One thread: the machine is shared, and torch's default of one per core slows a busy one down.
           "STREAMML_TRAINER_CPU_THREADS": "1"}
    return World(kafka, store, bucket, models_dir, env)
