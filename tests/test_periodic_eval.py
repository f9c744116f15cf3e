"""periodic_eval.py (with newest_wins, failures, protocol, evaluator_process and a2c/processes.py): trainer
0's evaluator process. Real child processes throughout: the real `python -m a2c.evaluation.evaluator_process`
for results, and tests/fake_evaluator.py (same pipe protocol) for one that
holds an evaluation until the test lets it go, or dies. No sleeps: the tests wait on what the evaluator says
it does (`in_flight`, `process`, its callbacks)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from a2c import config
from a2c.envs import vector as env
from a2c.evaluation import evaluate, periodic_eval
from a2c.model import agent, checkpoint
from tests.support.evaluator import Recorder
from tests.support.procs import wait_for

FAKE = [sys.executable, "-m", "tests.fake_evaluator"]
ROOT = Path(__file__).resolve().parents[1]


def _tensors(version: int) -> dict[str, np.ndarray]:
    return {"w": np.full((2,), version, dtype=np.float32)}


def _make(rec: Recorder, command: list[str] | None = None, episodes: int = 3, max_failures: int = 3,
          env_cfg: config.EnvConfig | None = None) -> periodic_eval.Evaluator:
    return periodic_eval.Evaluator(env_cfg or config.EnvConfig(), config.AlgoConfig(), episodes, 7, rec.result,
                               rec.failure, command=command, max_failures=max_failures)


@pytest.fixture(autouse=True)
def _importable_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake evaluator is `tests.fake_evaluator`: the child must find the repository root."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))


def test_the_side_process_plays_exactly_what_evaluate_plays_and_survives_a_bad_snapshot() -> None:
    """Greedy and seeded: the child's returns equal an in-process `evaluate` of the same weights and seed.
    A snapshot it cannot load is reported as a failure, records nothing, and the same child goes on."""
    env_cfg = config.EnvConfig()
    obs_space, action_space = env.spaces(env_cfg)
    torch.manual_seed(5)
    model = agent.Agent(obs_space, action_space, config.AlgoConfig())
    good = agent.snapshot(model, 3).tensors
    bad = {k: v[..., :1] for k, v in good.items()}  # wrong shapes: load_state_dict raises
    rec = Recorder()
    ev = _make(rec, episodes=4)
    try:
        ev.submit(2, 200, 1.5, bad)
        wait_for(lambda: rec.failures, 90, "the bad snapshot to be reported")
        assert "evaluation of version 2 failed" in rec.failures[0] and "size mismatch" in rec.failures[0]
        assert ev.alive and not rec.outcomes
        ev.submit(3, 300, 2.5, good)
        wait_for(lambda: rec.outcomes, 60, "the evaluation of version 3")
    finally:
        ev.close()
    (out,) = rec.outcomes
    torch.set_num_threads(1)  # as in the child
    expected = evaluate.evaluate(model, env_cfg, episodes=4, seed=7)
    assert (out.version, out.env_steps, out.time_s, out.seed) == (3, 300, 2.5, 7)
    assert out.result.returns == expected.returns and out.result.lengths == expected.lengths
    assert out.seconds > 0 and ev.failures == 1 and ev.evaluated == 1


def test_a_busy_evaluator_never_blocks_submit_and_only_the_newest_snapshot_waits(tmp_path: Path) -> None:
    """Version 1 is held in the evaluator until the test opens the gate: nine submits made meanwhile all
    return (so none waited for the evaluation), and only the last of them is evaluated after it."""
    rec = Recorder()
    gate = tmp_path / "gate"
    ev = _make(rec, command=[*FAKE, "gate", str(gate)])
    try:
        ev.submit(1, 10, 0.1, _tensors(1))
        wait_for(lambda: ev.in_flight == 1, 30, "version 1 to be in flight")
        replaced: list[bool] = []
        submitting = threading.Thread(target=lambda: replaced.extend(
            ev.submit(v, v * 10, v / 10, _tensors(v)) for v in range(2, 11)))
        submitting.start()
        submitting.join(30)
        assert not submitting.is_alive(), "submit waited for the busy evaluator"
        assert ev.in_flight == 1 and not rec.outcomes, "version 1 was still being evaluated all along"
        assert replaced == [False] + [True] * 8
        gate.touch()
        wait_for(lambda: len(rec.outcomes) == 2, 30, "versions 1 and 10 to be evaluated")
        wait_for(lambda: ev.in_flight is None, 30, "the evaluator to be idle")
    finally:
        ev.close()
    assert [o.version for o in rec.outcomes] == [1, 10], "the eight in between were skipped, not queued"
    assert [o.result.returns for o in rec.outcomes] == [[1.0], [10.0]]
    assert (ev.submitted, ev.skipped, ev.evaluated, ev.failures) == (10, 8, 2, 0), "nothing else is waiting"


def test_a_dying_evaluator_is_restarted_and_records_nothing_false(tmp_path: Path) -> None:
    rec = Recorder()
    ev = _make(rec, command=[*FAKE, "crash-once", str(tmp_path / "crashed")])
    try:
        ev.submit(1, 10, 0.1, _tensors(1))
        wait_for(lambda: rec.failures, 30, "the crash to be noticed")
        assert "evaluator process died (exit code 3" in rec.failures[0], rec.failures
        assert not rec.outcomes and ev.alive
        ev.submit(2, 20, 0.2, _tensors(2))
        wait_for(lambda: rec.outcomes, 30, "the restarted evaluator's result")
    finally:
        ev.close()
    assert [o.version for o in rec.outcomes] == [2]


def test_an_evaluator_that_keeps_dying_is_given_up_and_training_is_never_disturbed() -> None:
    rec = Recorder()
    ev = _make(rec, command=[*FAKE, "crash"], max_failures=2)
    try:
        for version in range(1, 4):
            ev.submit(version, version, 0.0, _tensors(version))
            wait_for(lambda v=version: len(rec.failures) >= v, 30, f"crash {version}")  # type: ignore[misc]
        wait_for(lambda: not ev.alive, 10, "the evaluator to give up")
        assert ev.submit(4, 4, 0.0, _tensors(4)) is False  # ignored, at once
    finally:
        ev.close()
    assert not rec.outcomes and ev.failures == 3


def test_drain_waits_for_the_evaluation_in_flight_and_the_one_waiting(tmp_path: Path) -> None:
    """A finished run keeps its last evaluations: drain() returns once both have been recorded."""
    rec = Recorder()
    gate = tmp_path / "gate"
    ev = _make(rec, command=[*FAKE, "gate", str(gate)])
    try:
        ev.submit(1, 10, 0.1, _tensors(1))
        wait_for(lambda: ev.in_flight == 1, 30, "version 1 to be in flight")
        ev.submit(2, 20, 0.2, _tensors(2))
        assert ev.drain(0.2) is False and not rec.outcomes, "the gate is shut: nothing can have been evaluated"
        opener = threading.Timer(0.3, gate.touch)
        opener.start()
        assert ev.drain(60.0) is True
        opener.join()
        assert [o.version for o in rec.outcomes] == [1, 2]
    finally:
        ev.close()


def test_warm_up_starts_the_side_process_before_the_first_snapshot(tmp_path: Path) -> None:
    """The trainer warms the evaluator up when training starts: its start-up overlaps training, so neither
    the first evaluation nor the end of a short run (drain) waits for the side process to import torch."""
    rec = Recorder()
    gate = tmp_path / "gate"
    gate.touch()
    ev = _make(rec, command=[*FAKE, "gate", str(gate)])
    try:
        ev.warm_up()
        proc = wait_for(lambda: ev.process, 30, "the side process to start without a snapshot")
        assert proc is not None and proc.poll() is None and ev.submitted == 0 and not rec.outcomes
        ev.submit(1, 10, 0.1, _tensors(1))
        assert ev.drain(30.0) and [o.version for o in rec.outcomes] == [1]
        assert ev.process is proc, "the warm process served the first snapshot"
    finally:
        ev.close()
    assert proc.poll() is not None


# A process with no other thread (as a trainer before it starts gRPC): forks its evaluator, has it evaluate, kills
# it, has the replacement evaluate, and prints what it saw as JSON (a test process may run threads of its own).
FORKING = r"""
import json, os, sys, time
import torch
from a2c import config
from a2c.envs import vector as env
from a2c.evaluation import evaluate, periodic_eval
from a2c.model import agent, checkpoint
from tests.support.evaluator import Recorder

def wait(predicate):
    deadline = time.monotonic() + 90
    while not predicate():
        assert time.monotonic() < deadline, "nothing within 90 s"
        time.sleep(0.05)

env_cfg = config.EnvConfig()
obs_space, action_space = env.spaces(env_cfg)
torch.manual_seed(5)
model = agent.Agent(obs_space, action_space, config.AlgoConfig())
tensors = agent.snapshot(model, 3).tensors
rec = Recorder()
ev = periodic_eval.Evaluator(env_cfg, config.AlgoConfig(), 4, 7, rec.result, rec.failure)
seen = {"forked": ev.fork(), "again": ev.fork()}
proc = ev.process
def cmdline(pid):
    return open(f"/proc/{pid}/cmdline", "rb").read().decode().replace("\0", " ").strip()
seen.update(pid=proc.pid, cmdline=cmdline(proc.pid), own=cmdline(os.getpid()))
ev.warm_up()
ev.submit(3, 300, 2.5, tensors)
wait(lambda: rec.outcomes)  # it has set its priority before it read the first message
seen.update(idle=os.sched_getscheduler(proc.pid) == os.SCHED_IDLE, nice=os.getpriority(os.PRIO_PROCESS, proc.pid))
os.kill(proc.pid, 9)
seen["killed"] = proc.wait(30)
ev.submit(4, 400, 3.5, tensors)  # finds it dead: reported, and this snapshot is lost
wait(lambda: rec.failures)
ev.submit(5, 500, 4.5, tensors)
wait(lambda: len(rec.outcomes) == 2)
seen["replacement"] = cmdline(ev.process.pid)
ev.close()
torch.set_num_threads(1)
expected = evaluate.evaluate(model, env_cfg, episodes=4, seed=7)
seen.update(returns=[o.result.returns for o in rec.outcomes], expected=expected.returns, failures=rec.failures,
            versions=[o.version for o in rec.outcomes])
print(json.dumps(seen))
"""


def test_the_trainer_forks_its_evaluator_and_a_replacement_is_a_fresh_interpreter() -> None:
    """`Evaluator.fork` (what a trainer calls before its threads start): the side process is a fork of this
    one (same command line: no interpreter start-up, no imports), at the lowest priority, and plays exactly
    what `evaluate` plays; killed, it is reported, and the next snapshot is played by `python -m
    a2c.evaluation.evaluator_process`. A second fork is refused: one side process."""
    out = subprocess.run([sys.executable, "-c", FORKING], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["forked"] is True and seen["again"] is False
    assert seen["cmdline"] == seen["own"] and "a2c.evaluation.evaluator_process" not in seen["cmdline"]
    assert seen["idle"] and seen["nice"] == periodic_eval.NICE
    assert seen["killed"] == -signal.SIGKILL
    assert seen["versions"] == [3, 5] and seen["returns"] == [seen["expected"]] * 2
    assert len(seen["failures"]) == 1 and "evaluator process died (killed by signal 9" in seen["failures"][0]
    assert "-m a2c.evaluation.evaluator_process --nice 19" in seen["replacement"]


def test_fork_is_refused_while_another_thread_runs() -> None:
    """A fork copies every thread's memory but only the calling thread: a lock another thread held would stay
    held in the child forever. With a second thread running, `fork` does nothing; warm_up starts afresh."""
    rec, release = Recorder(), threading.Event()
    other = threading.Thread(target=release.wait, daemon=True)
    other.start()
    ev = _make(rec, command=[*FAKE, "gate", "unused"])
    try:
        assert ev.fork() is False and ev.process is None
    finally:
        release.set()
        other.join(10)
        ev.close()


def test_close_ends_an_evaluation_in_flight_and_its_process(tmp_path: Path) -> None:
    rec = Recorder()
    ev = _make(rec, command=[*FAKE, "gate", str(tmp_path / "never")])
    ev.submit(1, 10, 0.1, _tensors(1))
    proc = wait_for(lambda: ev.process if ev.in_flight == 1 else None, 30, "version 1 to be in flight")
    assert proc is not None
    ev.close()
    code = proc.poll()
    assert code is not None, "the side process outlived close()"
    assert code == -signal.SIGTERM, "ended by close()'s SIGTERM at once, not killed after a timeout"
    assert ev.process is None and not ev.alive
    assert not rec.outcomes and not rec.failures, "closing is not a failure"


def test_bad_episode_count_is_refused() -> None:
    with pytest.raises(ValueError, match="--eval-episodes"):
        _make(Recorder(), episodes=0)


class FailingBest(checkpoint.Best):
    def offer(self, *args: object) -> bool:
        raise OSError(28, "No space left on device")


def test_the_best_evaluated_snapshot_is_kept_and_a_failing_keeper_loses_no_evaluation(tmp_path: Path) -> None:
    """--keep-best: each result is offered to checkpoint.Best with the weights that were evaluated (the fake
    scores version v as return v): 5, then a worse 3, then 7 -> best.pt holds 5, then 7. A keeper that cannot
    write is logged; the evaluation is still recorded and the evaluator goes on."""
    gate = tmp_path / "gate"
    gate.touch()
    rec = Recorder()
    ev = periodic_eval.Evaluator(config.EnvConfig(), config.AlgoConfig(), 1, 7, rec.result, rec.failure,
                                 command=[*FAKE, "gate", str(gate)], best=checkpoint.Best(tmp_path, {"env": {}}))
    kept = []
    try:
        for version in (5, 3, 7):
            ev.submit(version, version * 10, 0.0, _tensors(version))
            assert ev.drain(30.0)
            state = checkpoint.load(checkpoint.best_path(tmp_path))
            kept.append((state["version"], state["progress"]["env_steps"], state["eval"]["mean_return"],
                         state["model"]["w"].tolist()))
    finally:
        ev.close()
    assert kept == [(5, 50, 5.0, [5.0, 5.0]), (5, 50, 5.0, [5.0, 5.0]), (7, 70, 7.0, [7.0, 7.0])]
    assert [o.version for o in rec.outcomes] == [5, 3, 7]
    rec = Recorder()
    ev = periodic_eval.Evaluator(config.EnvConfig(), config.AlgoConfig(), 1, 7, rec.result, rec.failure,
                                 command=[*FAKE, "gate", str(gate)], best=FailingBest(tmp_path / "other", {}))
    try:
        for version in (1, 2):
            ev.submit(version, version, 0.0, _tensors(version))
            assert ev.drain(30.0)
        assert ev.alive and ev.failures == 0
    finally:
        ev.close()
    assert [o.version for o in rec.outcomes] == [1, 2] and not rec.failures
