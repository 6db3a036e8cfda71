"""The SDK's tests read a registry the validator's world writes."""

from __future__ import annotations

import pytest

from registry_world import World, validator_world


@pytest.fixture
def world(stack, unique, bucket, store, tmp_path) -> World:
    return validator_world(stack, unique, store, bucket, tmp_path)
