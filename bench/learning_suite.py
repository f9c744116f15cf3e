"""Learning quality at a fixed step budget: `a2c local` on a set of tasks, beside rl-baselines3-zoo's A2C.

For each task: train with `a2c local` for exactly the budget (no early stop), then score the final
checkpoint with `a2c eval` (greedy policy, `--episodes` episodes, as the zoo's benchmark scores its
agents deterministically), and the best-evaluated one (`checkpoints/best.pt`, `a2c eval --best`) on the same
episodes. Optionally (`--sb3`) train Stable-Baselines3's A2C with the zoo's
hyperparameters for the same budget on the same machine and score it the same way, so both columns
are measured at the same budget. The zoo column is what rl-baselines3-zoo's `benchmark.md` publishes
(one run each, at the zoo's own budget, which the table names).

    pip install -e '.[bench,atari,mujoco,box2d]'
    python bench/learning_suite.py                      # every task whose packages are installed
    python bench/learning_suite.py --tasks CartPole-v1 Acrobot-v1 --sb3
    python bench/learning_suite.py --budget-scale 0.1   # a quick pass (scores will be lower)

With a GPU, the trainers run on it, the Atari budgets grow (`Task.gpu_budget`: Pong at 10M steps) and GPU-only
tasks run (`Task.gpu_only`). On CPU a task with `Task.cpu_seconds` (Pong: an hour) trains for that wall time, then
is stopped with SIGTERM, as Ctrl-C does (a final checkpoint), and `--sb3` gets the env steps a2c took. Prints one line
per run and a Markdown table at the end; `--json PATH` also writes every figure.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from a2c.observe import journal


@dataclass
class Task:
    env_id: str
    budget: int                     # env steps on a CPU machine
    zoo: tuple[float, float, str]   # rl-baselines3-zoo benchmark.md: A2C mean, std, at its budget
    zoo_env: str                    # the id the zoo measured (older gymnasium / MuJoCo versions)
    a2c: list[str]                  # flags of `a2c local` (our translation of the zoo's hyperparameters)
    sb3: dict[str, Any]             # the zoo's hyperparameters for SB3's A2C
    needs: str = ""                 # a module that must import (ale_py, mujoco, Box2D)
    gpu_budget: int = 0             # budget where a GPU is present (0: the CPU budget)
    gpu_only: bool = False          # too long for a CPU run: only where a GPU is present
    cpu_seconds: float = 0.0        # on a CPU machine: train this wall time (then SIGTERM: a final checkpoint)
    extra: dict[str, Any] = field(default_factory=dict)


# the zoo's Atari A2C: a constant rate and raw (clipped) rewards, where a2c local's defaults are linear and scaled
ZOO_ATARI = ["--lr-schedule", "constant", "--normalize-reward", "false"]

TASKS: dict[str, Task] = {t.env_id: t for t in [
    Task("CartPole-v1", 500_000, (500.0, 0.0, "500k"), "CartPole-v1", [],
         {"n_envs": 8, "ent_coef": 0.0}),
    # the settings of its rows before issue 27 (a constant rate, raw rewards): with the new defaults seeds 1-3
    # scored lower (docs/benchmarks.md#stability)
    Task("Acrobot-v1", 500_000, (-83.353, 17.213, "500k"), "Acrobot-v1",
         ["--ent-coef", "0.01", "--lr-schedule", "constant", "--normalize-reward", "false"],
         {"n_envs": 16, "ent_coef": 0.0, "normalize": True}),
    # 2 trainers x 1 player x 4 copies: the zoo's 8 environments, 64 samples per update
    Task("Pendulum-v1", 1_000_000, (-162.965, 103.210, "1M, gSDE"), "Pendulum-v1",
         ["--normalize-obs", "true", "--normalize-reward", "true", "--n-steps", "8", "--gae-lambda", "0.9",
          "--vf-coef", "0.4", "--gamma", "0.9", "--lr", "7e-4", "--lr-schedule", "linear",
          "--log-std-init", "-2", "--use-sde", "true", "--num-envs", "4"],
         {"n_envs": 8, "normalize": True, "ent_coef": 0.0, "max_grad_norm": 0.5, "n_steps": 8, "gae_lambda": 0.9,
          "vf_coef": 0.4, "gamma": 0.9, "use_rms_prop": True, "normalize_advantage": False,
          "learning_rate": "lin_7e-4", "use_sde": True, "policy_kwargs": {"log_std_init": -2, "ortho_init": False}}),
    # zoo: n_envs 8 x n_steps 5, lin_0.00083, gamma 0.995, ent_coef 1e-5, raw rewards, SB3's other defaults
    Task("LunarLander-v3", 200_000, (155.751, 80.419, "200k"), "LunarLander-v2",
         ["--num-envs", "4", "--n-steps", "5", "--gamma", "0.995", "--lr", "0.00083", "--lr-schedule", "linear",
          "--ent-coef", "0.00001", "--normalize-reward", "false"],
         {"n_envs": 8, "n_steps": 5, "gamma": 0.995, "learning_rate": "lin_0.00083", "ent_coef": 0.00001},
         needs="Box2D"),
    # zoo: 4 environments (2 trainers x 1 player x 2 copies: 32 samples per update), gSDE resampled once per rollout
    Task("LunarLanderContinuous-v3", 5_000_000, (84.225, 145.906, "5M, gSDE"), "LunarLanderContinuous-v2",
         ["--normalize-obs", "true", "--normalize-reward", "true", "--n-steps", "8", "--gae-lambda", "0.9",
          "--vf-coef", "0.4", "--gamma", "0.99", "--lr", "7e-4", "--lr-schedule", "linear",
          "--log-std-init", "-2", "--use-sde", "true", "--num-envs", "2"],
         {"n_envs": 4, "normalize": True, "ent_coef": 0.0, "max_grad_norm": 0.5, "n_steps": 8, "gae_lambda": 0.9,
          "vf_coef": 0.4, "gamma": 0.99, "use_rms_prop": True, "normalize_advantage": False,
          "learning_rate": "lin_7e-4", "use_sde": True, "policy_kwargs": {"log_std_init": -2, "ortho_init": False}},
         needs="Box2D"),
    Task("HalfCheetah-v5", 1_000_000, (3041.174, 157.265, "1M"), "HalfCheetah-v3",
         # zoo's HalfCheetah entry is SB3's defaults + normalize (1 env x 5 steps, lr 7e-4); these are its
         # continuous-control settings of other tasks, without gSDE (docs/continuous.md)
         ["--normalize-obs", "true", "--normalize-reward", "true", "--num-envs", "4", "--n-steps", "8",
          "--gae-lambda", "0.9", "--vf-coef", "0.4", "--lr", "0.00096", "--lr-schedule", "linear",
          "--log-std-init", "-2"],
         {"n_envs": 1, "normalize": True}, needs="mujoco"),
    Task("BreakoutNoFrameskip-v4", 200_000, (279.793, 122.177, "10M"), "BreakoutNoFrameskip-v4",
         ["--num-envs", "8", "--n-steps", "5", "--lr", "7e-4", "--ent-coef", "0.01", "--vf-coef", "0.25",
          "--optimizer", "rmsprop_tf", "--vectorization", "async", *ZOO_ATARI],
         {"atari": True, "n_envs": 16, "ent_coef": 0.01, "vf_coef": 0.25, "rmsprop_tf": True},
         needs="ale_py", gpu_budget=10_000_000),
    # on CPU: an hour of wall time (issue 24), the zoo's flags, the environments stepped in the player's process
    # (--vectorization async, a process per copy, only costs CPU where the player has no core to spare)
    Task("PongNoFrameskip-v4", 10_000_000, (17.292, 3.214, "10M"), "PongNoFrameskip-v4",
         ["--num-envs", "8", "--n-steps", "5", "--lr", "7e-4", "--ent-coef", "0.01", "--vf-coef", "0.25",
          "--optimizer", "rmsprop_tf", *ZOO_ATARI],
         {"atari": True, "n_envs": 16, "ent_coef": 0.01, "vf_coef": 0.25, "rmsprop_tf": True},
         needs="ale_py", cpu_seconds=3600.0),
]}

SB3_SCRIPT = r"""
import json, sys, torch
torch.set_num_threads(1)
from stable_baselines3 import A2C
from stable_baselines3.common.env_util import make_atari_env, make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecFrameStack, VecNormalize

env_id, budget, seed, episodes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
hp = json.loads(sys.argv[5])
atari, normalize, n_envs = hp.pop("atari", False), hp.pop("normalize", False), hp.pop("n_envs", 1)
if hp.pop("rmsprop_tf", False):
    from stable_baselines3.common.sb2_compat.rmsprop_tf_like import RMSpropTFLike
    hp["policy_kwargs"] = dict(optimizer_class=RMSpropTFLike, optimizer_kwargs=dict(eps=1e-5))
lr = hp.pop("learning_rate", None)
if isinstance(lr, str) and lr.startswith("lin_"):
    start = float(lr[4:])
    hp["learning_rate"] = lambda remaining: remaining * start
elif lr is not None:
    hp["learning_rate"] = float(lr)

def make(n, s):
    if atari:
        import ale_py, gymnasium
        gymnasium.register_envs(ale_py)
        return VecFrameStack(make_atari_env(env_id, n_envs=n, seed=s), 4)
    return make_vec_env(env_id, n_envs=n, seed=s)

env = make(n_envs, seed)
if normalize:  # as the zoo: the reward normaliser's return is discounted by the algorithm's gamma
    env = VecNormalize(env, gamma=hp.get("gamma", 0.99))
model = A2C("CnnPolicy" if atari else "MlpPolicy", env, seed=seed, verbose=0, **hp)
model.learn(total_timesteps=budget)
train = [e["r"] for e in model.ep_info_buffer]
eval_env = make(1, seed + 10_000)
if normalize:
    eval_env = VecNormalize(eval_env, training=False, norm_reward=False)
    eval_env.obs_rms = env.obs_rms
rets, _ = evaluate_policy(model, eval_env, n_eval_episodes=episodes, deterministic=not atari,
                          return_episode_rewards=True)
print(json.dumps({"env_steps": model.num_timesteps, "train_return": sum(train) / max(1, len(train)),
                  "eval_mean": sum(rets) / len(rets),
                  "eval_std": (sum((r - sum(rets) / len(rets)) ** 2 for r in rets) / len(rets)) ** 0.5}))
"""


def _score(run_dir: str, seed: int, episodes: int, best: bool = False) -> dict[str, Any]:
    """`a2c eval` of the run's final checkpoint (or, best, of checkpoints/best.pt) as JSON."""
    ev = subprocess.run([sys.executable, "-m", "a2c", "eval", run_dir, "--episodes", str(episodes),
                         "--seed", str(seed + 10_000), "--json", *(["--best"] if best else [])],
                        capture_output=True, text=True)
    if ev.returncode != 0:
        raise RuntimeError(f"a2c eval failed (exit {ev.returncode}):\n{ev.stderr[-3000:]}")
    return json.loads(ev.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _train(cmd: list[str], seconds: float) -> tuple[int, str]:
    """Run `a2c local` to its end, or (seconds > 0) stop it after that wall time with SIGTERM, which it takes as
    Ctrl-C (its trainers write a final checkpoint) and which, unlike SIGINT, a shell's background job does not
    ignore; its exit status (0 for that stop: `a2c local` says 143) and the end of its stderr."""
    stopped = False
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, text=True)
        try:
            proc.wait(timeout=seconds or None)
        except subprocess.TimeoutExpired:
            proc.terminate()
            stopped = True
            try:
                proc.wait(timeout=300)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        err.seek(0)
        return 0 if stopped and proc.returncode == 143 else proc.returncode, err.read()[-3000:]


def run_a2c(task: Task, budget: int, seed: int, episodes: int, device: str, extra: list[str],
            keep: Path | None = None, seconds: float = 0.0) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as scratch:
        tmp = str(keep / f"{task.env_id}-seed{seed}") if keep else scratch
        cmd = [sys.executable, "-m", "a2c", "local", "--env-id", task.env_id, "--run-dir", tmp, "--seed", str(seed),
               "--max-env-steps", str(budget), "--target-return", "inf", "--progress", "false", "--plot", "false",
               "--device", device, *task.a2c, *extra]
        start = time.perf_counter()
        code, stderr = _train(cmd, seconds)
        wall = time.perf_counter() - start
        if code != 0:
            raise RuntimeError(f"a2c local failed (exit {code}): {shlex.join(cmd)}\n{stderr}")
        rows = journal.read(Path(tmp) / "metrics.jsonl")
        train = [r for r in journal.training(rows) if r.get("mean_return") is not None]
        score = _score(tmp, seed, episodes)
        # the best-evaluated weights (--keep-best), scored on the same held-out episodes as the final ones
        best = _score(tmp, seed, episodes, best=True) if (Path(tmp) / "checkpoints" / "best.pt").exists() else None
    steps = train[-1]["env_steps"] if train else 0
    means = [r["mean_return"] for r in train]
    return {"wall_s": wall, "env_steps": steps, "train_return": means[-1] if means else None,
            "eval_mean": score["mean_return"], "eval_std": score["std_return"],
            "best_eval_mean": best["mean_return"] if best else None,
            "best_eval_std": best["std_return"] if best else None,
            "best_version": best["version"] if best else None,
            # long-budget behaviour: the best and the worst training mean after the best one, and the
            # periodic evaluations (greedy, the run's seed) as (env steps, mean) pairs
            "train_best": max(means, default=None),
            "train_min_after_best": min(means[means.index(max(means)):], default=None) if means else None,
            "evals": [(r["env_steps"], r["eval_mean_return"]) for r in journal.evaluations(rows)],
            # the curve against wall time: (seconds since the start, env steps, training mean) every ~5 %
            "curve": [(round(r["time_s"]), r["env_steps"], r["mean_return"])
                      for r in train[::max(1, len(train) // 20)]]}


def run_sb3(task: Task, budget: int, seed: int, episodes: int) -> dict[str, Any]:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", SB3_SCRIPT, task.env_id, str(budget), str(seed), str(episodes),
                          json.dumps(task.sb3)], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"SB3 failed on {task.env_id} (exit {out.returncode}):\n{out.stderr[-3000:]}")
    return {"wall_s": wall, **json.loads(out.stdout.strip().splitlines()[-1])}


def available(task: Task) -> bool:
    return not task.needs or importlib.util.find_spec(task.needs) is not None


def fmt(mean: float | None, std: float | None = None) -> str:
    if mean is None:
        return "n/a"
    return f"{mean:.1f}" if std is None else f"{mean:.1f} ± {std:.1f}"


def table(results: list[dict[str, Any]], sb3: bool) -> str:
    head = ["task", "budget", "a2c eval", "a2c eval, best.pt", "a2c train (last 100)", "a2c wall", "a2c steps/s"]
    if sb3:
        head += ["SB3 A2C eval (zoo hparams, same budget)", "SB3 wall"]
    head += ["zoo A2C (published)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        a, z = r["a2c"], r["zoo"]
        budget = r["budget"] if isinstance(r["budget"], str) else f"{r['budget']:,}"  # a wall-time budget says so
        cells = [r["task"], budget, fmt(a["eval_mean"], a["eval_std"]),
                 fmt(a.get("best_eval_mean"), a.get("best_eval_std")), fmt(a["train_return"]),
                 f"{a['wall_s']:.0f} s", f"{a['env_steps'] / a['wall_s']:,.0f}"]
        if sb3:
            s = r.get("sb3")
            cells += [fmt(s["eval_mean"], s["eval_std"]), f"{s['wall_s']:.0f} s"] if s else ["n/a", "n/a"]
        cells += [f"{z[0]:.1f} ± {z[1]:.1f} ({r['zoo_env']}, {z[2]})"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine() -> str:
    import os

    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=None, help=f"tasks to run (default: all): {', '.join(TASKS)}")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--episodes", type=int, default=10, help="evaluation episodes per trained agent")
    parser.add_argument("--budget-scale", type=float, default=1.0, help="multiply every budget (quick passes)")
    parser.add_argument("--sb3", action="store_true", help="also train SB3's A2C (zoo hyperparameters), same budget")
    parser.add_argument("--a2c-args", default="", help="extra flags for every `a2c local` run")
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    parser.add_argument("--keep-runs", type=Path, default=None, help="keep a2c's run directories here")
    args = parser.parse_args(argv)
    import torch

    gpu = torch.cuda.is_available()
    names = args.tasks or list(TASKS)
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        parser.error(f"unknown task(s) {unknown}; known: {list(TASKS)}")
    print(f"machine: {machine()}", flush=True)
    results: list[dict[str, Any]] = []
    for name in names:
        task = TASKS[name]
        if not available(task):
            print(f"{name}: skipped ({task.needs} is not installed)", flush=True)
            continue
        if task.gpu_only and not gpu:
            print(f"{name}: skipped (a GPU-only task: {task.budget:,} env steps)", flush=True)
            continue
        budget = max(1, int((task.gpu_budget if gpu and task.gpu_budget else task.budget) * args.budget_scale))
        seconds = 0.0 if gpu else task.cpu_seconds * args.budget_scale  # a wall-time budget on CPU
        row: dict[str, Any] = {"task": name, "budget": budget, "zoo": task.zoo, "zoo_env": task.zoo_env}
        # one GPU: one trainer (NCCL wants a GPU per rank) fed by two players
        topology = ["--trainers", "1", "--players-per-trainer", "2"] if gpu else []
        row["a2c"] = run_a2c(task, budget, args.seed, args.episodes, "cuda" if gpu else "cpu",
                             topology + shlex.split(args.a2c_args), args.keep_runs, seconds)
        if seconds:
            row["budget"] = f"{seconds / 60:g} min ({row['a2c']['env_steps']:,} steps)"
        if args.sb3 and seconds:
            budget = row["a2c"]["env_steps"]  # SB3 gets the env steps a2c took in that time
        print(f"{name} a2c: {json.dumps(row['a2c'])}", flush=True)
        if args.sb3:
            row["sb3"] = run_sb3(task, budget, args.seed, args.episodes)
            print(f"{name} sb3: {json.dumps(row['sb3'])}", flush=True)
        results.append(row)
    print()
    print(table(results, args.sb3))
    if args.json is not None:
        args.json.write_text(json.dumps({"machine": machine(), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
