"""Whole-process wall time to solve CartPole-v1: `a2c local` (defaults) vs Stable-Baselines3 A2C.

Solved = mean return of the last 100 episodes >= 475. SB3 uses the rl-baselines3-zoo hyperparameters
for CartPole-v1 (8 envs, ent_coef 0.0, everything else SB3's A2C defaults) and one torch thread; each
run is a fresh process, timed from launch to exit, so imports and start-up count for both.

    pip install -e '.[bench]'
    python bench/solve_cartpole.py [--seeds 1 2 3] [--a2c-args "..."]

Prints every run, both medians, and last `ratio a2c/sb3 median time-to-solve: X.XX`.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from a2c.observe import journal

SB3_SCRIPT = r"""
import sys, json, time
import torch
torch.set_num_threads(1)
from stable_baselines3 import A2C
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.callbacks import BaseCallback

class StopWhenSolved(BaseCallback):
    def _on_step(self):
        buf = self.model.ep_info_buffer
        return not (len(buf) == 100 and sum(e["r"] for e in buf) / 100 >= 475)

seed = int(sys.argv[1])
env = make_vec_env("CartPole-v1", n_envs=8, seed=seed)
model = A2C("MlpPolicy", env, ent_coef=0.0, seed=seed, verbose=0)
model.learn(total_timesteps=1_000_000, callback=StopWhenSolved())
buf = model.ep_info_buffer
mean = sum(e["r"] for e in buf) / max(1, len(buf))
print(json.dumps({"env_steps": model.num_timesteps, "mean_return": mean, "solved": mean >= 475 and len(buf) == 100}))
"""


def run_sb3(seed: int) -> dict:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", SB3_SCRIPT, str(seed)], capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {"wall_s": wall, **result}


def run_a2c(seed: int, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        # Its defaults, the learning-curve picture included; only the progress bar is off (no terminal).
        out = subprocess.run([sys.executable, "-m", "a2c", "local", "--run-dir", tmp, "--seed", str(seed),
                              "--progress", "false", *extra], capture_output=True, text=True)
        wall = time.perf_counter() - start
        if out.returncode != 0:
            raise SystemExit(f"a2c local failed (exit {out.returncode}):\n{out.stdout}\n{out.stderr}")
        rows = journal.training(journal.read(Path(tmp) / "metrics.jsonl"))  # evaluation rows have their own
    last = rows[-1]
    mean = last["mean_return"] or 0.0
    return {"wall_s": wall, "env_steps": last["env_steps"], "mean_return": mean, "solved": mean >= 475}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--a2c-args", default="", help="extra flags for `a2c local`")
    parser.add_argument("--skip-sb3", action="store_true")
    args = parser.parse_args()
    times: dict[str, list[float]] = {"a2c": [], "sb3": []}
    for seed in args.seeds:
        for name in ("a2c", "sb3"):
            if name == "sb3" and args.skip_sb3:
                continue
            r = run_a2c(seed, shlex.split(args.a2c_args)) if name == "a2c" else run_sb3(seed)
            # An unsolved run counts as infinitely slow for the median.
            times[name].append(r["wall_s"] if r["solved"] else float("inf"))
            print(f"{name} seed {seed}: {r['wall_s']:.1f} s, {r['env_steps']:,} env steps, "
                  f"mean return {r['mean_return']:.1f}, {'solved' if r['solved'] else 'NOT solved'}", flush=True)
    med = {k: statistics.median(v) for k, v in times.items() if v}
    for k, v in med.items():
        print(f"median time-to-solve {k}: {v:.1f} s")
    if "sb3" in med:
        print(f"ratio a2c/sb3 median time-to-solve: {med['a2c'] / med['sb3']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
