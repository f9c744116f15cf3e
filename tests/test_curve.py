"""curve.py: the learning-curve picture reads training rows as the line and evaluation rows as points."""

from __future__ import annotations

import json
from pathlib import Path

from a2c import curve

ROWS = [
    {"iteration": 1, "env_steps": 128, "mean_return": None, "episodes": 0, "time_s": 0.1},
    {"iteration": 2, "env_steps": 256, "mean_return": 20.0, "episodes": 5, "time_s": 0.2},
    {"iteration": 3, "env_steps": 384, "mean_return": 25.0, "episodes": 9, "time_s": 0.3},
    # written when the evaluation came back, after later training rows; about the weights of iteration 2
    {"iteration": 2, "env_steps": 256, "time_s": 0.2, "eval_mean_return": 40.0, "eval_std_return": 5.0,
     "eval_mean_length": 40.0, "eval_episodes": 10, "eval_seed": 0, "eval_seconds": 0.5},
    {"iteration": 1, "env_steps": 128, "time_s": 0.1, "eval_mean_return": 9.0, "eval_std_return": 1.0,
     "eval_mean_length": 9.0, "eval_episodes": 10, "eval_seed": 0, "eval_seconds": 0.5},
]


def _journal(tmp_path: Path, rows: list[dict[str, object]]) -> Path:
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"iteration": 4, "env_st')  # torn last line
    return path


def test_plot_with_and_without_evaluations(tmp_path: Path) -> None:
    for name, rows in (("with", ROWS), ("without", ROWS[:3])):
        png = curve.plot(_journal(tmp_path, rows), tmp_path / f"{name}.png", target=475.0)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "with.png").stat().st_size != (tmp_path / "without.png").stat().st_size
