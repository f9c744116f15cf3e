from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from . import chartlib


@pytest.fixture(scope="session")
def chart_with_observability(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return chartlib.chart_copy(tmp_path_factory.mktemp("chart"))


@pytest.fixture(scope="session")
def rendered_cases(chart_with_observability: Path) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Every case of the values matrix, rendered once per session."""
    out = {}
    for name, values in chartlib.cases().items():
        chart = chart_with_observability if name == "monitoring" else chartlib.CHART
        out[name] = chartlib.render(values, chart)
    return out
