"""Which code made a dataset version or a model: the package version, and the commit of a checkout."""

from importlib.metadata import version

import pytest

import streamml

pytestmark = pytest.mark.unit


def test_code_version_names_the_release_and_in_a_checkout_the_commit():
    described = streamml.code_version()
    release, _, commit = described.partition("+")
    assert release == version("streamml")
    assert (streamml.SOURCE_ROOT / ".git").exists() == bool(commit)
