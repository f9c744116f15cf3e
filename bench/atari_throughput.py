"""Atari env steps/s of `a2c local` against SB3's A2C, and where each one's CPU per sample goes, in one run.

- a2c: `a2c local` with the zoo's Atari flags (2 trainers x 1 player x --num-envs 8 copies, 5 steps, RMSprop
  TF-style), no early stop, evaluation off; after --warmup-steps, --seconds of steady state. Env steps/s from
  trainer 0's metrics.jsonl. Its processes run with thread-CPU meters (`time.thread_time`) wrapped around
  `Env.step` (environment), `Agent.act` (acting forward), the client's upload/exchange/fetch (wire, player
  side), `Learner.batch` and `Learner.update` (training); /proc gives each thread's CPU for the
  rest: the trainers' other threads (gRPC server decoding rollouts, gloo), the players' other threads
  (EnvPool's workers with --vectorization envpool, gRPC's), and what no meter covers (other).
- sb3: Stable-Baselines3's A2C at the zoo's Atari settings (16 envs, VecFrameStack 4, RMSpropTFLike eps 1e-5,
  ent 0.01, vf 0.25), one process, one torch thread; the same meters around the vec env's step, the policy's
  forward and `train`.
- floor: one process pinned to one core, one torch thread: an ALE step with our preprocessing (`atari.make`;
  with envpool also EnvPool's step), NatureCNN acting on the player's batch, `Learner.update` on a trainer's
  batch (forward + backward + RMSprop); both at a2c's `--precision` (bf16, as auto is on a CPU with native
  bf16: the player's copy in bf16, the trainer's under autocast). SB3 is fp32 either way. Acting is also
  measured with a 64 MB sweep before each call, as a player acts after other work has evicted its weights
  (then the extractor's fully connected layer, 3.2 MB in bf16, comes from memory): not the floor, a
  second reference beside it.

Idle is (cores x wall - the run's CPU) / samples. Last line: `ratio a2c/sb3 env steps/s: X`.

    python bench/atari_throughput.py [--seconds 60] [--precision auto|fp32|bf16] [--vectorization sync|async|envpool]
                                     [--a2c-args "..."]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from a2c import config

FLAGS = ["--n-steps", "5", "--lr", "7e-4", "--ent-coef", "0.01", "--vf-coef", "0.25", "--optimizer", "rmsprop_tf",
         "--optim-eps", "1e-5", "--target-return", "1e9", "--eval-interval", "0", "--max-env-steps", "1000000000",
         "--plot", "false", "--progress", "false"]

METERED = r"""
import json, os, sys, time
from a2c import cli
from a2c.envs import vector as env
from a2c.learning import learner
from a2c.model import agent
from a2c.service import client
DIR, acc, count, last = os.environ["A2C_BENCH_CPU_DIR"], {}, {"steps": 0, "samples": 0}, [0.0]

def dump():
    now = time.monotonic()
    if now - last[0] >= 0.25:
        last[0] = now
        path = f"{DIR}/{os.getpid()}.json"
        with open(path + ".tmp", "w") as f:
            json.dump({"wall": now, "parts": acc, **count}, f)
        os.replace(path + ".tmp", path)

def meter(part, fn, counter=None):
    def metered(*a, **k):
        t = time.thread_time()
        try:
            return fn(*a, **k)
        finally:
            acc[part] = acc.get(part, 0.0) + time.thread_time() - t
            if counter is not None:
                counter(a)
            dump()
    return metered

def steps(a): count["steps"] += a[0].num_envs
def samples(a): count["samples"] += a[1].samples
env.Env.step = meter("environment", env.Env.step, steps)
agent.Agent.act = meter("acting forward", agent.Agent.act)
for name in ("upload", "exchange", "fetch"):
    setattr(client.TrainerClient, name, meter("wire (player calls)", getattr(client.TrainerClient, name)))
learner.Learner.batch = meter("training: batch", learner.Learner.batch)
if hasattr(learner.Learner, "backward"):  # before 0bcd232 the update was backward, then step
    learner.Learner.backward = meter("training: update", learner.Learner.backward, samples)
    learner.Learner.step = meter("training: update", learner.Learner.step)
else:
    learner.Learner.update = meter("training: update", learner.Learner.update, samples)
sys.exit(cli.main(sys.argv[1:]))
"""

SB3 = r"""
import json, sys, time, torch
torch.set_num_threads(1)
import ale_py, gymnasium
gymnasium.register_envs(ale_py)
from stable_baselines3 import A2C
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_atari_env
from stable_baselines3.common.sb2_compat.rmsprop_tf_like import RMSpropTFLike
from stable_baselines3.common.vec_env import VecFrameStack
env_id, n_envs, warmup, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
env = VecFrameStack(make_atari_env(env_id, n_envs=n_envs, seed=0), 4)
model = A2C("CnnPolicy", env, seed=0, verbose=0, ent_coef=0.01, vf_coef=0.25,
            policy_kwargs=dict(optimizer_class=RMSpropTFLike, optimizer_kwargs=dict(eps=1e-5)))
acc = {"environment": 0.0, "acting forward": 0.0, "training": 0.0}
def meter(part, fn):
    def metered(*a, **k):
        t = time.thread_time()
        try:
            return fn(*a, **k)
        finally:
            acc[part] += time.thread_time() - t
    return metered
env.step_wait = meter("environment", env.step_wait)
model.policy.forward = meter("acting forward", model.policy.forward)  # rollouts only: train() evaluates actions
model.train = meter("training", model.train)
def snap():
    return {"wall": time.monotonic(), "cpu": time.process_time(), "steps": model.num_timesteps, "parts": dict(acc)}
class Window(BaseCallback):
    a = b = None
    def _on_step(self):
        if self.a is None and self.num_timesteps >= warmup:
            self.a = snap()
        if self.a is not None and time.monotonic() - self.a["wall"] >= seconds:
            self.b = snap()
            return False
        return True
w = Window()
model.learn(total_timesteps=10**9, callback=w)
print(json.dumps({"a": w.a, "b": w.b}))
"""

FLOOR = r"""
import json, os, sys, time
os.sched_setaffinity(0, {int(sys.argv[1])})
import numpy as np, torch
torch.set_num_threads(1)
from a2c import config
from a2c.acting import player
from a2c.envs import atari, vector as env
from a2c.learning import learner
from a2c.model import agent
env_id, num_envs, vectorization, precision = sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
algo = config.AlgoConfig(n_steps=5, lr=7e-4, ent_coef=0.01, vf_coef=0.25, optimizer="rmsprop_tf", optim_eps=1e-5,
                         precision=precision)
out, rng = {}, np.random.default_rng(0)
one = atari.make(env_id)
one.reset(seed=0)
for k in range(2):  # warm-up, then the measured pass
    t, n = time.process_time(), 2000
    for _ in range(n):
        _, _, term, trunc, _ = one.step(int(rng.integers(one.action_space.n)))
        if term or trunc:
            one.reset()
out["environment"] = (time.process_time() - t) / n
if vectorization == "envpool":
    pool = env.Env(config.EnvConfig(env_id=env_id, num_envs=num_envs, vectorization="envpool"))
    pool.reset(seed=0)
    for k in range(2):
        t, n = time.process_time(), 300
        for _ in range(n):
            pool.step(rng.integers(pool.action_space.n, size=num_envs))
    out["environment (envpool)"] = (time.process_time() - t) / (n * num_envs)
    pool.close()
e = env.Env(config.EnvConfig(env_id=env_id, num_envs=num_envs))
model = agent.Agent(e.observation_space, e.action_space, algo)
model.eval()
model.hold_bf16()  # as a player holds it
c = player.Collector(e, model, 0, algo.n_steps, 0)
r = c.collect(0)
for k in range(2):
    t, n = time.process_time(), 200
    for _ in range(n):
        model.act(c.obs)
out["acting forward"] = (time.process_time() - t) / (n * num_envs)
sweep = np.ones(64 << 20, dtype=np.uint8)  # 64 MB, twice the last-level cache of the machines measured
for k in range(2):  # the same, with the caches swept before each call (the sweep is not counted)
    spent, n = 0.0, 100
    for _ in range(n):
        sweep += 1
        t = time.thread_time()
        model.act(c.obs)
        spent += time.thread_time() - t
out["acting forward, caches swept"] = spent / (n * num_envs)
lrn = learner.Learner(agent.Agent(e.observation_space, e.action_space, algo), algo, torch.device("cpu"))
b = lrn.batch([r], 0)
for k in range(2):
    t, n = time.process_time(), 50
    for _ in range(n):
        lrn.update(b, b.samples)
out["training"] = (time.process_time() - t) / (n * b.samples)
print(model.describe_precision("cpu"))
print(json.dumps(out))
"""


def thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """(name, CPU seconds (user + system)) of each thread of `pid`, from /proc; {} when it is gone."""
    tick, out = os.sysconf("SC_CLK_TCK"), {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return {}
    for tid in tids:
        try:
            comm, rest = Path(f"/proc/{pid}/task/{tid}/stat").read_text().split("(", 1)[1].rsplit(")", 1)
        except (FileNotFoundError, ProcessLookupError):
            continue
        fields = rest.split()
        out[int(tid)] = (comm, (int(fields[11]) + int(fields[12])) / tick)  # utime, stime (fields 14, 15)
    return out


def snapshot(run: Path, pids: dict[str, int]) -> dict[str, Any]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "steps_per_s" in r]
    meters = {}
    for name, pid in pids.items():
        path = run / "cpu" / f"{pid}.json"
        if path.exists():
            meters[name] = json.loads(path.read_text())
    return {"wall": time.monotonic(), "row": rows[-1] if rows else None, "meters": meters,
            "threads": {name: thread_cpu(pid) for name, pid in pids.items()}}


def run_a2c(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp)
        (run / "cpu").mkdir()
        cmd = [sys.executable, "-c", METERED, "local", "--run-dir", tmp, "--env-id", args.env_id,
               "--num-envs", str(args.num_envs), "--vectorization", args.vectorization, "--precision", args.precision,
               *FLAGS,
               *shlex.split(args.a2c_args)]
        log = (run / "launcher.log").open("w")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "A2C_BENCH_CPU_DIR": str(run / "cpu")})
        try:
            deadline = time.monotonic() + args.warmup_limit_s
            while True:  # warm-up: poll trainer 0's rows until --warmup-steps, failing fast if the run dies
                if proc.poll() is not None:
                    raise SystemExit(f"a2c local exited ({proc.returncode}):\n{(run / 'launcher.log').read_text()}")
                if time.monotonic() > deadline:
                    raise SystemExit(f"a2c local did not reach {args.warmup_steps} env steps in "
                                     f"{args.warmup_limit_s:.0f} s")
                jsonl = run / "metrics.jsonl"
                rows = [json.loads(x) for x in jsonl.read_text().splitlines() if x.strip()] if jsonl.exists() else []
                if rows and rows[-1].get("env_steps", 0) >= args.warmup_steps:
                    break
                time.sleep(0.5)
            pids = {"launcher": proc.pid, **json.loads((run / "processes.json").read_text())}
            a = snapshot(run, pids)
            time.sleep(args.seconds)  # the measured window
            b = snapshot(run, pids)
            if proc.poll() is not None:
                raise SystemExit(f"a2c local exited during the window ({proc.returncode})")
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            log.close()
    return breakdown(a, b, pids, args.vectorization)


def breakdown(a: dict[str, Any], b: dict[str, Any], pids: dict[str, int], vectorization: str) -> dict[str, Any]:
    """Steps/s from trainer 0's rows; CPU seconds per env step of each part (metered, then /proc's rest)."""
    ra, rb = a["row"], b["row"]
    rate = (rb["env_steps"] - ra["env_steps"]) / (rb["time_s"] - ra["time_s"])
    wall = b["wall"] - a["wall"]
    samples = rate * wall
    parts: dict[str, float] = {}
    steps = sum(b["meters"][n]["steps"] - a["meters"][n]["steps"] for n in pids if n.startswith("player"))
    trained = sum(b["meters"][n]["samples"] - a["meters"][n]["samples"] for n in pids if n.startswith("trainer"))
    metered = 0.0
    for name in pids:
        if name not in b["meters"]:
            continue
        per = steps if name.startswith("player") else trained
        for part, sec in b["meters"][name]["parts"].items():
            d = sec - a["meters"][name]["parts"].get(part, 0.0)
            parts[part] = parts.get(part, 0.0) + d / max(per, 1)
            metered += d
    total = 0.0
    main_threads = 0.0
    for name, pid in pids.items():
        ta, tb = a["threads"][name], b["threads"][name]
        for tid, (comm, sec) in tb.items():
            cpu = sec - ta.get(tid, (comm, 0.0))[1]
            total += cpu
            if tid == pid:
                main_threads += cpu
                continue
            label = thread_part(name, comm, vectorization)
            parts[label] = parts.get(label, 0.0) + cpu / samples
    parts["other (main threads outside the meters, launcher)"] = (main_threads - metered) / samples
    cores = len(os.sched_getaffinity(0))
    return {"steps_per_s": rate, "wall_s": wall, "parts": parts, "cpu_per_sample": total / samples,
            "idle": (cores * wall - total) / samples}


def thread_part(process: str, comm: str, vectorization: str) -> str:
    """The part a thread other than a process's main thread works for, from its name."""
    if process.startswith("trainer"):
        if "gloo" in comm or "tcpstore" in comm:
            return "training: all-reduce (gloo threads; they poll at SCHED_IDLE)"
        return "wire (trainers' other threads: gRPC serving, decoding)"
    if process.startswith("player"):
        if comm.startswith(("grpc", "event_engine", "lifeguard")):
            return "wire (players' gRPC threads)"
        return ("environment (players' other threads: EnvPool's workers)" if vectorization == "envpool"
                else "players' other threads")
    return "launcher's other threads"


def run_sb3(args: argparse.Namespace) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", SB3, args.env_id, str(args.sb3_envs), str(args.warmup_steps),
                          str(args.seconds)], capture_output=True, text=True, timeout=args.warmup_limit_s + 600)
    if out.returncode != 0:
        raise SystemExit(f"SB3 failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    w = json.loads(out.stdout.strip().splitlines()[-1])
    a, b = w["a"], w["b"]
    steps, wall = b["steps"] - a["steps"], b["wall"] - a["wall"]
    parts = {k: (b["parts"][k] - a["parts"][k]) / steps for k in b["parts"]}
    cpu = b["cpu"] - a["cpu"]
    parts["other"] = cpu / steps - sum(parts.values())
    cores = len(os.sched_getaffinity(0))
    return {"steps_per_s": steps / wall, "wall_s": wall, "parts": parts, "cpu_per_sample": cpu / steps,
            "idle": (cores * wall - cpu) / steps}


def floor(args: argparse.Namespace) -> tuple[dict[str, float], str]:
    """The floor's CPU per sample of each part, and the arithmetic it (and so a2c) acted and trained in."""
    out = subprocess.run([sys.executable, "-c", FLOOR, str(args.core), args.env_id, str(args.num_envs),
                          args.vectorization, args.precision], capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"floor failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    arithmetic, figures = out.stdout.strip().splitlines()[-2:]
    return {k: float(v) for k, v in json.loads(figures).items()}, arithmetic


def cell(seconds: float | None) -> str:
    return f"{seconds * 1e6:8.0f}" if seconds is not None else f"{'-':>8s}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-id", default="BreakoutNoFrameskip-v4")
    parser.add_argument("--num-envs", type=int, default=8, help="copies per player (2 players: 16 a round)")
    parser.add_argument("--sb3-envs", type=int, default=16)
    parser.add_argument("--vectorization", default="auto", choices=("auto", "sync", "async", "envpool"))
    parser.add_argument("--precision", default="auto", choices=config.PRECISIONS,
                        help="a2c's --precision, also the floor's (SB3 stays fp32); auto, a2c's default, is bf16 on "
                             "a CPU with native bf16")
    parser.add_argument("--seconds", type=float, default=60.0, help="the measured window of each side")
    parser.add_argument("--warmup-steps", type=int, default=10_000, help="env steps before the window")
    parser.add_argument("--warmup-limit-s", type=float, default=600.0, help="give up if the warm-up takes longer")
    parser.add_argument("--core", type=int, default=0, help="the core the floor's process is pinned to")
    parser.add_argument("--a2c-args", default="", help="extra flags for `a2c local`")
    args = parser.parse_args(argv)
    cores = len(os.sched_getaffinity(0))
    print(f"machine: {cores} cores, load average {os.getloadavg()[0]:.1f} at start; {args.env_id}", flush=True)
    f, arithmetic = floor(args)
    print(f"a2c and floor: {arithmetic}; SB3: fp32", flush=True)
    print("floor (one core, us/sample): " + ", ".join(f"{k} {v * 1e6:.0f}" for k, v in f.items()), flush=True)
    a2c = run_a2c(args)
    print(f"a2c local ({args.vectorization}): {a2c['steps_per_s']:,.0f} env steps/s over {a2c['wall_s']:.0f} s",
          flush=True)
    sb3 = run_sb3(args)
    print(f"sb3 a2c ({args.sb3_envs} envs, 1 thread): {sb3['steps_per_s']:,.0f} env steps/s over "
          f"{sb3['wall_s']:.0f} s", flush=True)
    print(f"\nCPU per env step, us ({cores} cores; idle = cores x wall - the run's CPU)")
    print(f"{'part':62s} {'a2c':>8s} {'sb3':>8s} {'floor':>8s}")
    rows = [  # (part, a2c's value, sb3's, the floor's)
        *[(k, v, sb3["parts"].get(k), f.get(k)) for k, v in a2c["parts"].items() if k.startswith("environment")],
        ("environment, EnvPool alone on one core", None, None, f.get("environment (envpool)")),
        ("acting forward", a2c["parts"].get("acting forward"), sb3["parts"]["acting forward"], f["acting forward"]),
        ("acting forward, one core, caches swept before each call", None, None, f["acting forward, caches swept"]),
        *[(k, v, None, None) for k, v in a2c["parts"].items() if k.startswith(("wire", "players'", "launcher"))],
        ("training: batch", a2c["parts"].get("training: batch"), None, None),
        *[(k, v, None, None) for k, v in a2c["parts"].items() if k.startswith("training: all-reduce")],
        ("training: update (forward, backward, all-reduce, RMSprop)", a2c["parts"].get("training: update"), None,
         f["training"]),
        ("training (a2c: batch, update, all-reduce; sb3: train())",
         sum(v for k, v in a2c["parts"].items() if k.startswith("training")), sb3["parts"]["training"], f["training"]),
        ("other (a2c: main threads outside the meters, launcher)",
         a2c["parts"].get("other (main threads outside the meters, launcher)"), sb3["parts"]["other"], None),
        ("all CPU", a2c["cpu_per_sample"], sb3["cpu_per_sample"],
         f["environment"] + f["acting forward"] + f["training"]),
        ("idle", a2c["idle"], sb3["idle"], None),
    ]
    for part, mine, theirs, fl in rows:
        if mine is not None or fl is not None:
            print(f"{part:62s} {cell(mine)} {cell(theirs)} {cell(fl)}")
    print(f"load average at end: {os.getloadavg()[0]:.1f}")
    print(f"ratio a2c/sb3 env steps/s: {a2c['steps_per_s'] / sb3['steps_per_s']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
