"""Learning test on Acrobot-v1 through the real `a2c local`: 2 trainer and 2 player processes, gRPC, DDP.

Acrobot has no native vector environment, so players run gymnasium's SyncVectorEnv with same-step
autoreset: an episode's last observation arrives in info["final_obs"] of the step that ends it, and
most of an untrained policy's episodes end by truncation at 500 steps, so the final_obs path
(bootstrapping from the true last observation of a truncated episode) is exercised end to end, which
CartPole's next-step vector environment does not do.

Tuned on a 2-core machine shared with other jobs. A uniformly random policy scores about -500 (the
time limit). With these flags the mean return of the last 100 episodes reached -100 (and the run
stopped) after 15k, 68k, 71k, 29k, 77k, 140k, 65k, 40k env steps for seeds 0, 1, 4-9 (6-44 s of
training). The slow runs first collapse to a policy that never swings up (-500 for 30-60k steps) and
then recover; without the entropy bonus such plateaus were longer (seeds 0-5: 21k-129k steps). The
budget is twice the slowest run seen, and the assertion asks for -150, not the -100 that stops the run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from a2c.model import checkpoint
from a2c.observe import journal

BUDGET = 300_000


@pytest.mark.slow
@pytest.mark.timeout(440)  # a learning run of up to 300k env steps: the run itself is given 400 s
def test_local_learns_acrobot(tmp_path: Path) -> None:
    # the settings it was tuned with, the defaults before issue 27 (a constant rate, raw rewards)
    cmd = [sys.executable, "-m", "a2c", "local", "--env-id", "Acrobot-v1", "--ent-coef", "0.01",
           "--lr-schedule", "constant", "--normalize-reward", "false",
           "--target-return", "-100", "--max-env-steps", str(BUDGET), "--seed", "1",
           "--progress", "false", "--plot", "false", "--run-dir", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    rows = journal.training(journal.read(tmp_path / "metrics.jsonl"))
    final = rows[-1]
    assert final["mean_return"] is not None and final["mean_return"] > -150, out
    assert final["episodes"] >= 100, "the mean is over a full window of episodes"
    assert final["env_steps"] <= BUDGET + 20_000
    newest = checkpoint.list_checkpoints(tmp_path)[-1]
    assert checkpoint.load(newest)["progress"]["env_steps"] == final["env_steps"], "a final checkpoint was written"
