"""Learning test: CartPole-v1 at `a2c local`'s defaults, trained on past solving (no early stop), stays solved.

Issue 27: with the earlier defaults (raw rewards, constant lr 4e-3) runs solved CartPole and then forgot it
for hundreds of iterations: at 3M env steps 4 of seeds 1-5 spent 9-14% of the iterations after their first
solve below a mean return of 400 (docs/benchmarks.md#stability). This run is one of those: with the old
defaults (`--normalize-reward false --lr-schedule constant`) seed 4 solves at 149k env steps, falls below 400
at 219k and stays there for 248 iterations (its mean sinks to 92), so this test fails on them. With the
defaults (rewards scaled by the running std of the return, lr decayed linearly over the budget) it solves at
118k and no iteration after that has a mean below 400.
Outcomes per seed are deterministic (synchronous rounds): a shared machine changes the wall time only.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from a2c.observe import journal

SEED, BUDGET = 4, 600_000
SOLVED, LOW = 475.0, 400.0


def below_after_solving(rows: list[dict[str, object]]) -> tuple[int, int]:
    """(iterations after the first solve with a mean below LOW, iterations after the first solve)."""
    means = [r["mean_return"] for r in rows]
    first = next(i for i, m in enumerate(means) if isinstance(m, float | int) and m >= SOLVED)
    after = means[first + 1:]
    return sum(1 for m in after if not isinstance(m, float | int) or m < LOW), len(after)


@pytest.mark.slow
@pytest.mark.timeout(640)  # a learning run of 600k env steps: the run itself is given 600 s
def test_cartpole_at_the_defaults_stays_solved_after_solving(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "a2c", "local", "--seed", str(SEED), "--max-env-steps", str(BUDGET),
           "--target-return", "1e9", "--progress", "false", "--plot", "false", "--run-dir", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    rows = journal.training(journal.read(tmp_path / "metrics.jsonl"))
    assert rows[-1]["env_steps"] >= BUDGET, "trained to the budget: no early stop"
    low, after = below_after_solving(rows)
    assert after > 200, "solved early enough to be watched for a while"
    assert low <= 0.05 * after, f"{low} of {after} iterations after the first solve had a mean below {LOW}"
    assert rows[-1]["mean_return"] >= SOLVED, "ends solved"
