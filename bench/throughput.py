"""Env steps per second of `a2c local` against the acting limit, in one run.

- pipeline: `a2c local`, 2 trainers x 1 player each, --num-envs per player (256), --max-env-steps (1M), no
  early stop (target return out of reach), evaluation and plot off; steps/s from trainer 0's metrics.jsonl,
  counted from the first row one second or more after the first row (start-up and warm-up excluded).
- acting-only: one player's own `env.Env` + `agent.Agent` + `player.Collector` (env step, policy, rollout
  packing), the same width, one torch thread, one process pinned to one core, no wire and no learning.
- start-up: seconds from launching `a2c local` to trainer 0's first metrics row (its first update).

    python bench/throughput.py [--num-envs 256] [--max-env-steps 1000000] [--repeats 1] [--a2c-args "..."]

Last line: `ratio pipeline/acting-only: X.XX`. On a shared machine run both sides in the same command
(this script does): the ratio is what compares across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ACTING = r"""
import os, sys, time, json
os.sched_setaffinity(0, {int(sys.argv[3])})
import torch
torch.set_num_threads(1)
from a2c import config
from a2c.acting import player
from a2c.envs import vector as env
from a2c.model import agent
num_envs, seconds = int(sys.argv[1]), float(sys.argv[2])
algo = config.AlgoConfig()
e = env.Env(config.EnvConfig(num_envs=num_envs))
model = agent.Agent(e.observation_space, e.action_space, algo)
model.eval()
c = player.Collector(e, model, 0, algo.n_steps, 0)
c.collect(0)  # warm-up
steps, start = 0, time.perf_counter()
while time.perf_counter() - start < seconds:
    steps += c.collect(0).num_samples
print(json.dumps({"steps_per_s": steps / (time.perf_counter() - start)}))
"""


def acting_only(num_envs: int, seconds: float, core: int) -> float:
    out = subprocess.run([sys.executable, "-c", ACTING, str(num_envs), str(seconds), str(core)],
                         capture_output=True, text=True, check=True)
    return float(json.loads(out.stdout.strip().splitlines()[-1])["steps_per_s"])


def pipeline(num_envs: int, max_env_steps: int, extra: list[str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        jsonl = Path(tmp) / "metrics.jsonl"
        cmd = [sys.executable, "-m", "a2c", "local", "--run-dir", tmp, "--trainers", "2", "--players-per-trainer", "1",
               "--num-envs", str(num_envs), "--max-env-steps", str(max_env_steps), "--target-return", "1e9",
               "--eval-interval", "0", "--plot", "false", "--progress", "false", *extra]
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        first_row_at = None
        while proc.poll() is None and first_row_at is None:
            if jsonl.exists() and jsonl.stat().st_size > 0:
                first_row_at = time.perf_counter() - start
            else:
                time.sleep(0.01)
        _, err = proc.communicate()
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"a2c local failed (exit {proc.returncode}):\n{err}")
        rows = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
        rows = [r for r in rows if "steps_per_s" in r]  # training rows
    t0 = rows[0]["time_s"]
    after = [r for r in rows if r["time_s"] >= t0 + 1.0]
    a, b = after[0], rows[-1]
    rate = (b["env_steps"] - a["env_steps"]) / max(1e-9, b["time_s"] - a["time_s"])
    return {"steps_per_s": rate, "startup_s": first_row_at if first_row_at is not None else float("nan"),
            "wall_s": wall, "env_steps": b["env_steps"], "rounds": b["iteration"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-envs", type=int, default=256)
    parser.add_argument("--max-env-steps", type=int, default=1_000_000)
    parser.add_argument("--acting-seconds", type=float, default=10.0)
    parser.add_argument("--core", type=int, default=0, help="the core the acting-only process is pinned to")
    parser.add_argument("--repeats", type=int, default=1, help="pipeline and acting-only runs, alternated")
    parser.add_argument("--a2c-args", default="", help="extra flags for `a2c local`")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start", flush=True)
    pipes, acts = [], []
    for i in range(args.repeats):
        p = pipeline(args.num_envs, args.max_env_steps, shlex.split(args.a2c_args))
        print(f"pipeline run {i + 1}: {p['steps_per_s']:,.0f} env steps/s, start-up {p['startup_s']:.2f} s, "
              f"wall {p['wall_s']:.1f} s, {p['env_steps']:,} env steps in {p['rounds']} rounds", flush=True)
        a = acting_only(args.num_envs, args.acting_seconds, args.core)
        print(f"acting-only run {i + 1}: {a:,.0f} env steps/s ({args.num_envs} envs, 1 thread, core {args.core})",
              flush=True)
        pipes.append(p["steps_per_s"])
        acts.append(a)
    pipe, act = statistics.median(pipes), statistics.median(acts)
    print(f"pipeline env steps/s (median): {pipe:,.0f}")
    print(f"acting-only env steps/s (median): {act:,.0f}")
    print(f"load average at end: {os.getloadavg()[0]:.1f}")
    print(f"ratio pipeline/acting-only: {pipe / act:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
