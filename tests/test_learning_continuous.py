"""Learning test for continuous actions through the real `a2c local`: InvertedPendulum-v5 (MuJoCo, Box
actions in [-3, 3]), 2 trainer and 2 player processes, gRPC, DDP, with observation normalisation (the
statistics travel to the players inside the weights) and return normalisation (in the players).

Tuned on a 2-core machine shared with other jobs, at 8 copies per player and lr 2e-3 (the defaults then,
set here). The pendulum pays 1 per step it stays up, at most 1000
per episode; an untrained policy scores about 5-10. With these flags the mean return of the last 20 episodes
reached 950 (and the run stopped) after 37k, 51k, 35k, 39k env steps for seeds 0-3 (about 50 s each
with the machine busy). With the default rmsprop lr 2e-3 and --normalize-obs alone, seed 1 needed 147k steps
(window 100). The budget is about twice the slowest run seen, the assertion asks for 700, not the 950 that
stops the run, and the greedy policy of the final checkpoint (what `a2c eval` plays, with the statistics from
the checkpoint) must hold the pendulum up for at least half of the 1000 steps (it held 1000 in every run).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from a2c.evaluation import evaluate
from a2c.model import checkpoint
from a2c.observe import journal

BUDGET = 100_000


@pytest.mark.slow
@pytest.mark.timeout(340)  # a learning run of up to 100k env steps: the run itself is given 300 s
def test_local_learns_inverted_pendulum(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "a2c", "local", "--env-id", "InvertedPendulum-v5", "--num-envs", "8", "--lr", "2e-3",
           "--lr-schedule", "constant", "--normalize-obs", "true",
           "--normalize-reward", "true", "--return-window", "20", "--target-return", "950",
           "--max-env-steps", str(BUDGET), "--seed", "0",
           "--progress", "false", "--plot", "false", "--run-dir", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    rows = journal.training(journal.read(tmp_path / "metrics.jsonl"))  # the last row may be an evaluation's
    final = rows[-1]
    assert final["mean_return"] is not None and final["mean_return"] > 700, out
    assert final["episodes"] >= 20, "the mean is over a full window of episodes"
    assert final["env_steps"] <= BUDGET + 2_000
    newest = checkpoint.list_checkpoints(tmp_path)[-1]
    assert checkpoint.load(newest)["progress"]["env_steps"] == final["env_steps"], "a final checkpoint was written"
    loaded = evaluate.load(tmp_path)
    assert loaded.agent.obs_norm is not None and float(loaded.agent.obs_norm.count) > 1000
    result = evaluate.evaluate(loaded.agent, loaded.env_cfg, episodes=3, seed=0)
    assert result.mean_return >= 500, result.summary()


@pytest.mark.slow
@pytest.mark.timeout(340)  # a learning run of up to 100k env steps: the run itself is given 300 s
def test_local_learns_inverted_pendulum_with_gsde(tmp_path: Path) -> None:
    """--use-sde: players act with their own exploration matrices (resampled every 4 steps here), trainers
    train the log-prob of the marginal Gaussian (the zoo's gSDE log-std init, -2). Same budget and bars as
    above; how fast it learned by seed is in docs/continuous.md."""
    cmd = [sys.executable, "-m", "a2c", "local", "--env-id", "InvertedPendulum-v5", "--num-envs", "8", "--lr", "2e-3",
           "--lr-schedule", "constant", "--normalize-obs", "true",
           "--normalize-reward", "true", "--use-sde", "true", "--sde-sample-freq", "4", "--log-std-init", "-2",
           "--return-window", "20", "--target-return", "950", "--max-env-steps", str(BUDGET), "--seed", "0",
           "--progress", "false", "--plot", "false", "--run-dir", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    final = journal.training(journal.read(tmp_path / "metrics.jsonl"))[-1]  # not an evaluation's row
    assert final["mean_return"] is not None and final["mean_return"] > 700, out
    assert final["episodes"] >= 20 and final["env_steps"] <= BUDGET + 2_000
    loaded = evaluate.load(tmp_path)
    assert loaded.agent.sde and tuple(loaded.agent.log_std.shape) == (64, 1), "the policy that learned was gSDE's"
    result = evaluate.evaluate(loaded.agent, loaded.env_cfg, episodes=3, seed=0)
    assert result.mean_return >= 500, result.summary()
