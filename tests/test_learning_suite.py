"""bench/learning_suite.py: its task flags are flags `a2c local` knows, and a tiny pass produces its table.

The suite itself (full budgets, minutes to hours) is run by hand; this checks the script still works
against the current CLI and metrics format, so a renamed flag or a changed journal breaks CI, not the
next person who runs the benchmark.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from a2c import cli, config

SUITE = Path(__file__).resolve().parents[1] / "bench" / "learning_suite.py"


def _suite() -> object:
    spec = importlib.util.spec_from_file_location("learning_suite", SUITE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def test_every_task_uses_flags_a2c_local_accepts() -> None:
    suite = _suite()
    for name, task in suite.TASKS.items():  # type: ignore[attr-defined]
        role, cfg = cli.parse_role(["local", "--env-id", task.env_id, *task.a2c], environ={})
        assert role == "local" and isinstance(cfg, config.LocalConfig), name
        assert cfg.env.env_id == name


@pytest.mark.slow
@pytest.mark.timeout(340)  # a pass of the benchmark script, learning runs included: the script is given 300 s
def test_a_tiny_pass_prints_the_table_with_measured_scores(tmp_path: Path) -> None:
    out_json = tmp_path / "suite.json"
    proc = subprocess.run([sys.executable, str(SUITE), "--tasks", "CartPole-v1", "--budget-scale", "0.01",
                           "--episodes", "2", "--json", str(out_json)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads(out_json.read_text())["results"]
    assert [r["task"] for r in results] == ["CartPole-v1"]
    a2c = results[0]["a2c"]
    assert 5_000 <= a2c["env_steps"] <= 6_000, "trained for the budget (500k x 0.01), no early stop"
    assert math.isfinite(a2c["eval_mean"]) and 8 <= a2c["eval_mean"] <= 500, "a CartPole return was measured"
    row = next(line for line in proc.stdout.splitlines() if line.startswith("| CartPole-v1 |"))
    assert f"{a2c['eval_mean']:.1f}" in row and "500.0 ± 0.0 (CartPole-v1, 500k)" in row
