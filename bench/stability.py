"""Does a run stay learned? `a2c local` at its defaults with no early stop, beside Stable-Baselines3's A2C.

The solve benchmark (bench/solve_cartpole.py) stops each run at its first solve; this one trains every
run to a fixed budget and watches what happens after it solved. For each seed and side it prints:

- `first solve`: env steps when the mean return of the last 100 episodes first reached 475;
- `final`: that mean at the end of the budget;
- `below 400`: the share of the iterations (updates) after the first solve whose mean was below 400;
- `entropy`: the policy's entropy at the end (nats; a2c: the last update's; SB3: over its last rollout).

a2c: `a2c local --target-return 1e9 --max-env-steps N` (its defaults otherwise, `--a2c-args` adds flags),
read from its metrics.jsonl training rows, and with --eval-interval (default on) its greedy evaluations:
`best eval` is the best of them, which `--keep-best` checkpoints keep. SB3: A2C with the rl-baselines3-zoo
CartPole-v1 settings (8 envs, ent_coef 0.0, SB3's other defaults, one torch thread), the same budget and
seeds, the 100-episode mean read after every update.

    pip install -e '.[bench]'
    python bench/stability.py --seeds 1 2 3 4 5 --max-env-steps 3000000 [--skip-sb3] [--json out.json]

SB3 runs at ~8k env steps/s on one core: 3M steps take ~6 min a seed. `--sb3-parallel K` runs K seeds at
once (their figures do not depend on the load; only wall time does).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from a2c.observe import journal

SOLVED, LOW = 475.0, 400.0

SB3_SCRIPT = r"""
import json, sys
import torch
torch.set_num_threads(1)
from stable_baselines3 import A2C
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.callbacks import BaseCallback

class Means(BaseCallback):
    # the 100-episode mean after every rollout (one update follows each), as a2c's training rows have it
    def __init__(self):
        super().__init__()
        self.rows = []
    def _on_step(self):
        return True
    def _on_rollout_end(self):
        buf = self.model.ep_info_buffer
        mean = sum(e["r"] for e in buf) / len(buf) if len(buf) == 100 else None
        self.rows.append((self.model.num_timesteps, mean))

seed, budget = int(sys.argv[1]), int(sys.argv[2])
env = make_vec_env("CartPole-v1", n_envs=8, seed=seed)
model = A2C("MlpPolicy", env, ent_coef=0.0, seed=seed, verbose=0)
cb = Means()
model.learn(total_timesteps=budget, callback=cb)
buf = model.rollout_buffer
with torch.no_grad():
    obs = torch.as_tensor(buf.observations.reshape(-1, buf.observations.shape[-1]))
    entropy = float(model.policy.get_distribution(obs).entropy().mean())
print(json.dumps({"env_steps": model.num_timesteps, "rows": cb.rows, "entropy": entropy}))
"""


def summarise(rows: Sequence[tuple[int, float | None]], entropy: float | None) -> dict[str, Any]:
    """The figures of one run from its (env_steps, mean of the last 100 episodes or None) per iteration."""
    first = next((i for i, (_, m) in enumerate(rows) if m is not None and m >= SOLVED), None)
    after = [m for _, m in rows[first + 1:]] if first is not None else []
    low = sum(1 for m in after if m is None or m < LOW)
    final = next((m for _, m in reversed(rows) if m is not None), None)
    return {"first_solve": rows[first][0] if first is not None else None, "final": final,
            "below_400": low / len(after) if after else None, "after_iterations": len(after),
            "entropy": entropy, "env_steps": rows[-1][0] if rows else 0,
            "min_after": min((m for m in after if m is not None), default=None)}


def run_a2c(seed: int, budget: int, extra: list[str], keep: Path | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = keep / f"a2c-seed{seed}" if keep else Path(tmp)
        cmd = [sys.executable, "-m", "a2c", "local", "--run-dir", str(run_dir), "--seed", str(seed),
               "--target-return", "1e9", "--max-env-steps", str(budget), "--progress", "false", "--plot", "false",
               *extra]
        start = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if out.returncode != 0:
            raise RuntimeError(f"a2c local failed (exit {out.returncode}): {shlex.join(cmd)}\n{out.stderr[-3000:]}")
        all_rows = journal.read(run_dir / journal.FILE)
    train = journal.training(all_rows)
    evals = journal.evaluations(all_rows)
    result = summarise([(r["env_steps"], r["mean_return"]) for r in train], train[-1]["entropy"] if train else None)
    result["best_eval"] = max((r["eval_mean_return"] for r in evals), default=None)
    result["last_eval"] = evals[-1]["eval_mean_return"] if evals else None
    return {"wall_s": wall, **result}


def run_sb3(seed: int, budget: int) -> dict[str, Any]:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", SB3_SCRIPT, str(seed), str(budget)], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"SB3 failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return {"wall_s": wall, **summarise([tuple(r) for r in data["rows"]], data["entropy"])}


def _num(x: float | None, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def line(side: str, seed: int, r: dict[str, Any]) -> str:
    text = (f"{side} seed {seed}: first solve {_num(r['first_solve'], ',')} env steps, "
            f"final {_num(r['final'], '.1f')}, "
            f"below 400 after solving {_num(r['below_400'] and 100 * r['below_400'], '.1f')}% "
            f"of {r['after_iterations']:,} iterations (min {_num(r['min_after'], '.1f')}), "
            f"entropy {_num(r['entropy'], '.3f')}, {r['wall_s']:.0f} s")
    if "best_eval" in r:
        text += f", evals best {_num(r['best_eval'], '.1f')} last {_num(r['last_eval'], '.1f')}"
    return text


def verdict(results: list[dict[str, Any]]) -> str:
    ok = [r["final"] is not None and r["final"] >= SOLVED and r["below_400"] is not None and r["below_400"] <= 0.05
          for r in results]
    return f"{sum(ok)}/{len(ok)} seeds final >= 475 and <= 5% below 400 after the first solve"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--max-env-steps", type=int, default=3_000_000)
    parser.add_argument("--a2c-args", default="", help="extra flags for `a2c local`")
    parser.add_argument("--skip-sb3", action="store_true")
    parser.add_argument("--skip-a2c", action="store_true")
    parser.add_argument("--sb3-parallel", type=int, default=1, help="SB3 seeds run at once")
    parser.add_argument("--keep-runs", type=Path, default=None, help="keep a2c's run directories here")
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    args = parser.parse_args(argv)
    out: dict[str, dict[int, dict[str, Any]]] = {"a2c": {}, "sb3": {}}
    pool = ThreadPoolExecutor(max(1, args.sb3_parallel)) if not args.skip_sb3 else None
    sb3 = {s: pool.submit(run_sb3, s, args.max_env_steps) for s in args.seeds} if pool else {}
    if not args.skip_a2c:
        for seed in args.seeds:
            out["a2c"][seed] = run_a2c(seed, args.max_env_steps, shlex.split(args.a2c_args), args.keep_runs)
            print(line("a2c", seed, out["a2c"][seed]), flush=True)
    for seed, fut in sb3.items():
        out["sb3"][seed] = fut.result()
        print(line("sb3", seed, out["sb3"][seed]), flush=True)
    for side, rs in out.items():
        if rs:
            print(f"{side}: {verdict(list(rs.values()))}")
    if args.json is not None:
        args.json.write_text(json.dumps({"budget": args.max_env_steps, "a2c_args": args.a2c_args, **out}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
