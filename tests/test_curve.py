"""curve.py: the learning-curve picture reads training rows as the line and evaluation rows as points."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from a2c.observe import curve

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


def test_the_painter_draws_in_its_own_process_out_of_ctrl_c_reach(tmp_path: Path) -> None:
    """`a2c local`'s painter: the picture comes from the side process (started at once, matplotlib warmed up
    there), which is out of the reach of a terminal's Ctrl-C (sent to the launcher's process group: the
    launcher ends the painter), and which exits by itself once it has answered."""
    painter = curve.Painter()
    proc = painter.process
    assert proc is not None
    assert os.getpgid(proc.pid) != os.getpgid(0), "in the launcher's process group, Ctrl-C would kill it"
    png = painter.plot(_journal(tmp_path, ROWS), tmp_path / "curve.png", target=475.0, title="t")
    assert png == tmp_path / "curve.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert proc.wait(60) == 0, "it drew the picture, answered and exited"
    painter.close()


def test_a_painter_that_is_gone_or_silent_leaves_the_picture_to_the_caller(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    journal = _journal(tmp_path, ROWS)
    dead = curve.Painter()
    assert dead.process is not None
    dead.process.kill()
    dead.process.wait(60)
    silent = curve.Painter([sys.executable, "-c", "import sys; sys.stdin.readline()"])  # reads, never answers
    for name, painter in (("dead", dead), ("silent", silent)):
        png = painter.plot(journal, tmp_path / f"{name}.png", target=475.0)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and painter.process is None
    assert caplog.text.count("did not draw the picture") == 2


def test_closing_a_painter_that_drew_nothing_ends_its_process() -> None:
    painter = curve.Painter()
    proc = painter.process
    assert proc is not None
    painter.close(wait_s=60)
    assert proc.returncode == 0, "end of input: it exits by itself"
