from __future__ import annotations

from typing import Any

import pytest

from . import chartlib


@pytest.fixture(scope="session")
def rendered_cases() -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Every case of the values matrix, rendered once per session."""
    out = {}
    for name, values in chartlib.cases().items():
        out[name] = chartlib.render(values)
    return out
