"""The chart rendered once per value set for the whole session."""

from __future__ import annotations

from collections.abc import Iterator

import helm_python as helm
import pytest
from deploy_support import CHART, VALUE_SETS, Render, load_values_file, render


@pytest.fixture(scope="session")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


@pytest.fixture(scope="session")
def renders(chart: helm.Chart) -> dict[str, Render]:
    result = {}
    for value_set in VALUE_SETS:
        overrides = {} if value_set == "values.yaml" else load_values_file(value_set)
        result[value_set] = Render(value_set, chart.merge_values(overrides), render(chart, overrides))
    return result


@pytest.fixture(scope="session", params=VALUE_SETS)
def release(request: pytest.FixtureRequest, renders: dict[str, Render]) -> Render:
    return renders[request.param]
