"""`a2c local` as a user runs it: real trainer and player processes, gRPC on loopback, DDP over gloo."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from a2c import config
from a2c.launch import local, supervisor
from a2c.learning import distributed
from a2c.model import checkpoint
from a2c.observe import journal
from tests.support.procs import spawn, wait_for

BUDGET = 200_000  # env steps of the kill tests' runs: they must outlast the poll that picks the moment to kill


def _launch(run_dir: Path, *flags: str) -> subprocess.Popen[str]:
    return spawn("local", "--run-dir", str(run_dir), "--progress", "false", *flags, new_session=True)


def _iteration(run_dir: Path) -> int:
    rows = journal.training(journal.read(run_dir / "metrics.jsonl"))
    return int(rows[-1]["iteration"]) if rows else 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purpose
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _finish(proc: subprocess.Popen[str], timeout_s: float) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError(f"a2c local did not finish in {timeout_s} s:\n{out}") from None
    return out


@pytest.mark.slow
@pytest.mark.timeout(480)  # a learning run: up to 400k env steps on a shared machine (_finish gives it 420 s)
def test_local_defaults_learn_cartpole(tmp_path: Path) -> None:
    """The embedded default learns: CartPole's mean return over the last 100 episodes goes from ~20
    (random) to the 475 target within 400k env steps (seed 3: 173k). The budget is the default one: the
    default learning rate decays linearly over it, so a short budget would lower the rate early on."""
    proc = _launch(tmp_path, "--seed", "3")
    out = _finish(proc, 420)
    assert proc.returncode == 0, out
    rows = journal.training(journal.read(tmp_path / "metrics.jsonl"))
    assert {"iteration", "env_steps", "mean_return", "time_s"} <= set(rows[-1])
    first = next(r["mean_return"] for r in rows if r["mean_return"] is not None)
    assert first < 100, "an untrained policy should not balance the pole"
    assert rows[-1]["mean_return"] >= 475 and rows[-1]["env_steps"] <= 400_000, out
    assert [r["iteration"] for r in rows] == list(range(1, len(rows) + 1))
    assert (tmp_path / "checkpoints").is_dir() and list((tmp_path / "checkpoints").glob("ckpt-*.pt"))
    evaluations = journal.evaluations(journal.read(tmp_path / "metrics.jsonl"))
    assert evaluations, "evaluation is on by default (every 100 iterations)"
    assert all(r["iteration"] % 100 == 0 and r["eval_episodes"] == 10 for r in evaluations)
    assert "last evaluation: greedy return" in out
    best = checkpoint.load(checkpoint.best_path(tmp_path))  # --keep-best is on by default
    top = max(r["eval_mean_return"] for r in evaluations)
    assert best["eval"]["mean_return"] == top, "best.pt holds the best evaluation"
    assert best["version"] == next(r["iteration"] for r in evaluations if r["eval_mean_return"] == top)
    assert f"best checkpoint: {checkpoint.best_path(tmp_path)} (greedy return {top:.1f}" in out
    png = tmp_path / "learning_curve.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    targets = json.loads((tmp_path / "prometheus_targets.json").read_text())
    assert sorted(t["labels"]["role"] for t in targets) == ["player", "player", "trainer", "trainer"]
    assert "solved" in out


@pytest.mark.slow
def test_killed_player_is_restarted_and_trainers_keep_going(tmp_path: Path) -> None:
    # ~195 rounds: room for 30 after the kill however late the poll sees round 20 (at ~100 rounds/s a 60k budget
    # ran out first: the kill landed after round 31 and the run ended at 60, failing in CI)
    proc = _launch(tmp_path, "--max-env-steps", str(BUDGET), "--target-return", "10000", "--round-timeout-s", "1")
    try:
        wait_for(lambda: _iteration(tmp_path) >= 20, 120, "training to start")
        pids = json.loads((tmp_path / "processes.json").read_text())
        os.kill(pids["player-1"], signal.SIGKILL)
        at_kill = _iteration(tmp_path)
        wait_for(lambda: _iteration(tmp_path) >= at_kill + 30, 60, "rounds to continue after the kill")
        wait_for(lambda: json.loads((tmp_path / "processes.json").read_text())["player-1"] != pids["player-1"], 30,
                  "the player to be restarted")
    finally:
        out = _finish(proc, 180)
    assert proc.returncode == 0, out
    assert "player-1 exited with code -9; restarting it" in out
    rows = journal.training(journal.read(tmp_path / "metrics.jsonl"))
    assert rows[-1]["env_steps"] >= BUDGET


@pytest.mark.slow
@pytest.mark.timeout(400)  # its own waits: up to 120 s for two checkpoints, then 240 s for the run to finish
def test_killed_trainer_group_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    """The gang rule: one trainer lost -> every trainer restarts from rank 0's newest checkpoint; the run
    completes and redoes at most the iterations since that checkpoint; no checkpoint is left torn."""
    proc = _launch(tmp_path, "--max-env-steps", str(BUDGET), "--target-return", "10000", "--checkpoint-interval", "20")
    try:
        wait_for(lambda: _iteration(tmp_path) >= 45, 120, "training to pass two checkpoints")
        pids = json.loads((tmp_path / "processes.json").read_text())
        os.kill(pids["trainer-1"], signal.SIGKILL)
    finally:
        out = _finish(proc, 240)
    assert proc.returncode == 0, out
    assert "restarting every trainer from the newest checkpoint (1/2)" in out
    rows = journal.training(journal.read(tmp_path / "metrics.jsonl"))
    its = [r["iteration"] for r in rows]
    back = [(a, b) for a, b in zip(its, its[1:], strict=False) if b != a + 1]
    assert len(back) == 1, back
    before, after = back[0]
    assert after - 1 == (before // 20) * 20, "resumed from the newest checkpoint"
    assert rows[-1]["env_steps"] >= BUDGET
    for ckpt in (tmp_path / "checkpoints").glob("*"):  # no temporary file left behind; best.pt is --keep-best's
        assert ckpt.name == checkpoint.BEST or (ckpt.name.startswith("ckpt-") and ckpt.suffix == ".pt"), \
            f"left behind: {ckpt.name}"
        checkpoint.load(ckpt)


@pytest.mark.slow
def test_failed_trainer_ends_the_run_with_its_error_and_no_orphans(tmp_path: Path) -> None:
    proc = _launch(tmp_path, "--max-env-steps", "10000000", "--target-return", "10000", "--max-trainer-restarts", "0")
    wait_for(lambda: _iteration(tmp_path) >= 10, 120, "training to start")
    pids = json.loads((tmp_path / "processes.json").read_text())
    os.kill(pids["trainer-1"], signal.SIGKILL)
    out = _finish(proc, 60)
    assert proc.returncode == 1
    # trainer-0 may go down too (it lost its peer) before the launcher looks: both are named, the killed one always
    assert "trainer-1 failed (exit code -9)" in out, out
    wait_for(lambda: not any(_alive(pid) for pid in pids.values()), 20, "every child to exit")


def _children_running(parent: int, module: str) -> list[int]:
    """Processes whose parent is `parent` and whose command line names `module` (`python -m module`)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == parent and \
                    module.encode() in (stat.parent / "cmdline").read_bytes().split(b"\0"):
                found.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


@pytest.mark.slow
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm", "timeout"])
def test_ctrl_c_stops_every_child_after_a_final_checkpoint(tmp_path: Path, how: str) -> None:
    """Every child ends: the trainers and players, and the learning curve's process (in a session of its own,
    out of Ctrl-C's reach: the launcher ends it). SIGTERM to the launcher alone (`timeout`, a service manager)
    does the same, and the run's summary is still printed."""
    proc = _launch(tmp_path, "--max-env-steps", "10000000", "--target-return", "10000")
    wait_for(lambda: _iteration(tmp_path) >= 10, 120, "training to start")
    pids = json.loads((tmp_path / "processes.json").read_text())
    (painter,) = _children_running(proc.pid, "a2c.observe.curve")
    if how == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)  # what the terminal sends on Ctrl-C: the whole process group
    else:
        os.kill(proc.pid, signal.SIGTERM)
        if how == "timeout":  # coreutils' timeout: the command, then its whole process group
            os.killpg(proc.pid, signal.SIGTERM)
    out = _finish(proc, 60)
    assert proc.returncode == (130 if how == "ctrl-c" else 143), out
    assert "Traceback" not in out, out
    assert "stopped: CartPole-v1 mean return" in out
    wait_for(lambda: not any(_alive(pid) for pid in [*pids.values(), painter]), 20, "every child to exit")
    final = max(int(p.name[5:14]) for p in (tmp_path / "checkpoints").glob("ckpt-*.pt"))
    assert final == _iteration(tmp_path), "the final checkpoint holds the last iteration"


def _thread_policies(pid: int) -> dict[str, set[int]]:
    """The scheduling policies of a process's threads, by the threads' kernel names."""
    out: dict[str, set[int]] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # a thread that ended meanwhile
            name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            out.setdefault(name, set()).add(os.sched_getscheduler(int(tid)))
    return out


def _evaluator_of(run_dir: Path) -> int | None:
    """The periodic evaluator trainer 0 forked (or started), as its log names it, while it runs."""
    found = re.findall(r"evaluator process (\d+) started", (run_dir / "logs" / "trainer-0.log").read_text())
    return int(found[-1]) if found and Path(f"/proc/{found[-1]}").exists() else None


@pytest.mark.slow
@pytest.mark.parametrize("pin", [True, False], ids=["pinned", "--pin-cores-false"])
def test_two_cores_pair_each_trainer_with_its_player(tmp_path: Path, pin: bool) -> None:
    """On 2 cores (4 processes), trainer r and player r run on core r; the evaluator trainer 0 starts may use
    both. With --pin-cores false nothing is pinned."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        pytest.skip("needs 2 cores to pin 2 trainers to")
    two = allowed[:2]
    mine = os.sched_getaffinity(0)
    os.sched_setaffinity(0, two)  # the launcher inherits it: a 2-core machine, whatever this one has
    try:
        proc = _launch(tmp_path, "--max-env-steps", "10000000", "--target-return", "10000", "--eval-interval", "5",
                       "--pin-cores", str(pin).lower())
    finally:
        os.sched_setaffinity(0, mine)
    try:
        wait_for(lambda: _iteration(tmp_path) >= 10, 120, "training to start", watch={"a2c local": proc})
        pids = json.loads((tmp_path / "processes.json").read_text())
        evaluator = wait_for(lambda: _evaluator_of(tmp_path), 60, "the evaluator process")
        got = {name: sorted(os.sched_getaffinity(pid)) for name, pid in pids.items()}
        if pin:
            assert got == {"trainer-0": [two[0]], "player-0": [two[0]], "trainer-1": [two[1]], "player-1": [two[1]]}
        else:
            assert got == dict.fromkeys(pids, two)
        for name in ("trainer-0", "trainer-1"):  # a pinned trainer's gloo event loop spins at SCHED_IDLE only
            policies = _thread_policies(pids[name])
            assert policies[distributed.GLOO_LOOP_THREAD] == {os.SCHED_IDLE if pin else os.SCHED_OTHER}, policies
            assert {p for thread, ps in policies.items() if thread != distributed.GLOO_LOOP_THREAD
                    for p in ps} == {os.SCHED_OTHER}, policies
        assert sorted(os.sched_getaffinity(evaluator)) == two, "the evaluator is not held to trainer 0's core"
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        out = _finish(proc, 60)
    assert proc.returncode == 130, out


def test_bad_evaluation_flags_are_refused_before_anything_starts(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    for flags in ({"eval_interval": -1}, {"eval_episodes": 0}):
        cfg = config.LocalConfig(run_dir=str(tmp_path / "run"), progress=False, **flags)  # type: ignore[arg-type]
        assert local.run(cfg) == 2
        assert "a2c local: --eval-interval must be >= 0 and --eval-episodes >= 1" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    assert local.check(config.LocalConfig(eval_interval=0)) is None, "0 turns evaluation off"


def test_every_trainer_gets_the_training_group_as_given(tmp_path: Path) -> None:
    """No field of `config.TrainingConfig` is copied by hand: each one reaches every trainer, and the
    players get the same environment, algorithm and job name."""
    cfg = config.LocalConfig(
        trainers=2, players_per_trainer=2, checkpoint_interval=7, round_timeout_s=0.5, backend="gloo", device="cpu",
        eval_interval=3, eval_episodes=4, tensorboard=str(tmp_path / "tb"), torch_threads=2, job="laptop",
        env=config.EnvConfig(num_envs=3), algo=config.AlgoConfig(lr=1e-3), stop=config.StopConfig(max_env_steps=99))
    children = local.plan(cfg, tmp_path)
    trainers = [c.cfg for c in children if c.role == "trainer"]
    players = [c.cfg for c in children if c.role == "player"]
    assert [t.rank for t in trainers] == [0, 1] and len(players) == 4
    for f in dataclasses.fields(config.TrainingConfig):
        assert all(getattr(t, f.name) == getattr(cfg, f.name) for t in trainers), f.name
    assert all((p.env, p.algo, p.job) == (cfg.env, cfg.algo, cfg.job) for p in players)
    assert {t.run_dir for t in trainers} == {str(tmp_path)}


def test_the_launchers_sigterm_handler_ignores_the_next_sigterm_until_the_children_are_stopped() -> None:
    """`timeout` sends SIGTERM twice (the launcher, then its process group): the second must not interrupt the
    stopping the first began (it raised Terminated again inside the handler's own `except`)."""
    before = signal.signal(signal.SIGTERM, supervisor._terminated)
    try:
        with pytest.raises(supervisor.Terminated):
            supervisor._terminated()
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, before)
