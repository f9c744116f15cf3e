"""Code-quality gates, run with the suite: ruff, mypy, the import layers, generated code up to date."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(*cmd: str) -> None:
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}"


def test_generated_protobuf_code_matches_protos() -> None:
    _run(sys.executable, "tools/gen_protos.py", "--check")


def test_ruff() -> None:
    _run(sys.executable, "-m", "ruff", "check", ".")


@pytest.mark.slow
def test_mypy() -> None:
    _run(sys.executable, "-m", "mypy", "a2c", "tools", "bench")


def test_import_layers() -> None:
    """cli > local > roles > service > core; the controller never imports torch (pyproject.toml)."""
    _run(str(Path(sys.executable).parent / "lint-imports"))
