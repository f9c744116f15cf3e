"""`a2c trainer` and `a2c player` as a pod runs them: configured by environment variables, stopped by SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from a2c import ports
from a2c.controller import probe
from a2c.evaluation import evaluate
from a2c.model import checkpoint
from a2c.observe import curve, journal
from a2c.service import client
from tests.support.procs import free_port, kill, spawn, wait_for
from tests.support.rollouts import cartpole_rollout


def _spawn(role: str, env: dict[str, str], log: Path) -> subprocess.Popen[str]:
    return spawn(role, env=env, log=log)


def _trainer_env(tmp: Path, rank: int, world: int, master_port: int, grpc_port: int) -> dict[str, str]:
    return {
        "RANK": str(rank), "WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(master_port),
        "A2C_HOST": "127.0.0.1", "A2C_PORT": str(grpc_port), "A2C_METRICS_PORT": "0", "A2C_RUN_DIR": str(tmp),
        "A2C_PLAYERS_PER_TRAINER": "1", "A2C_TARGET_RETURN": "100000", "A2C_MAX_ENV_STEPS": "100000000",
        "A2C_CHECKPOINT_INTERVAL": "1000", "A2C_LINGER_S": "1",
    }


@pytest.mark.slow
def test_sigterm_writes_a_final_checkpoint_and_exits_zero(tmp_path: Path) -> None:
    """What Kubernetes does on pod deletion: SIGTERM, then SIGKILL after the grace period."""
    grpc_port = free_port()
    trainer = _spawn("trainer", _trainer_env(tmp_path, 0, 1, free_port(), grpc_port), tmp_path / "trainer.log")
    player = _spawn("player", {"A2C_PLAYER_INDEX": "0", "A2C_NUM_TRAINERS": "1", "A2C_METRICS_PORT": "0",
                               "A2C_TRAINER_ADDRESS": f"127.0.0.1:{grpc_port}"}, tmp_path / "player.log")
    try:
        wait_for(lambda: len(journal.read(tmp_path / "metrics.jsonl")) >= 20, 120, "training to start")
        trainer.send_signal(signal.SIGTERM)
        player.send_signal(signal.SIGTERM)
        assert trainer.wait(20) == 0, (tmp_path / "trainer.log").read_text()
        assert player.wait(20) == 0, (tmp_path / "player.log").read_text()
    finally:
        kill(trainer, player)
    last = journal.training(journal.read(tmp_path / "metrics.jsonl"))[-1]["iteration"]
    state = checkpoint.load_latest(tmp_path)
    assert state is not None and state["version"] == last, "the final checkpoint holds the last iteration"
    assert "STOPPING" in (tmp_path / "trainer.log").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("rank", [0, 1])
def test_sigterm_while_the_group_forms_stops_the_trainer_at_once(tmp_path: Path, rank: int) -> None:
    """A trainer whose peer never comes (rank 0 in the rendezvous, rank 1 before rank 0 listens), deleted as a gang
    restart deletes its pods: it exits 0 at once, not after --dist-timeout-s (it used to wait in C++, where the
    signal handler cannot run, past a pod's grace period: 100 s here, then exit 1)."""
    env = _trainer_env(tmp_path, rank, 2, free_port(), free_port())
    env.update(A2C_EVAL_INTERVAL="0", A2C_DIST_TIMEOUT_S="100")
    log = tmp_path / "trainer.log"
    trainer = _spawn("trainer", env, log)
    try:
        wait_for(lambda: "joining process group" in log.read_text(), 60, "the trainer to join its group",
                 watch={"the trainer": trainer})
        waiting = "in the rendezvous" if rank == 0 else "waiting for rank 0's rendezvous"
        if rank == 0:  # in init_process_group: its store listens, waiting for rank 1
            port = int(env["MASTER_PORT"])
            wait_for(lambda: ports.await_listening("127.0.0.1", port, 0.5), 30, waiting, watch={"the trainer": trainer})
        trainer.send_signal(signal.SIGTERM)
        try:
            code = trainer.wait(10)
        except subprocess.TimeoutExpired:
            pytest.fail(f"SIGTERM {waiting} did not stop the trainer within 10 s:\n{log.read_text()}")
    finally:
        kill(trainer)
    assert code == 0, log.read_text()
    assert f"trainer {rank} done: STOPPING (asked to stop while" in log.read_text()


@pytest.mark.slow
def test_a_lost_peer_ends_the_other_trainer_with_an_error_not_a_hang(tmp_path: Path) -> None:
    master = free_port()
    envs = [_trainer_env(tmp_path / f"r{r}", r, 2, master, free_port()) for r in range(2)]
    for e in envs:  # no players: zero-sample rounds, collectives every round
        e.update(A2C_START_TIMEOUT_S="1", A2C_ROUND_TIMEOUT_S="0.2", A2C_DIST_TIMEOUT_S="30")
    procs = [_spawn("trainer", e, tmp_path / f"trainer-{r}.log") for r, e in enumerate(envs)]
    address = f"127.0.0.1:{envs[0]['A2C_PORT']}"
    try:
        wait_for(lambda: (probe.trainer_status(address, timeout_s=2) or {}).get("phase") == "TRAINING", 60,
                 "trainer 0 to be in its rounds", watch={"trainer 0": procs[0], "trainer 1": procs[1]})
        procs[1].kill()
        try:
            code = procs[0].wait(60)  # well before --dist-timeout-s runs out twice
        except subprocess.TimeoutExpired:
            pytest.fail("trainer 0 hung after its peer was lost:\n" + (tmp_path / "trainer-0.log").read_text())
    finally:
        kill(*procs)
    log = (tmp_path / "trainer-0.log").read_text()
    assert code == 1, log
    assert "Traceback" in log and LOST_PEER.search(log), log


# How the process group (gloo) says a peer is gone, in the collective the round was in
LOST_PEER = re.compile(r"Connection (closed|reset) by peer|Broken pipe|DistBackendError|DistNetworkError")


def _scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples
            if s.name.startswith("a2c_eval")}


@pytest.mark.slow
def test_periodic_evaluation_records_true_numbers_and_survives_a_killed_evaluator(tmp_path: Path) -> None:
    """A real trainer and player with --eval-interval 10: eval rows in metrics.jsonl whose returns are exactly
    those of `a2c eval` on the checkpoint of the same iteration (greedy, same seed); the training loop never
    waits (iterations go on, busy-time snapshots are skipped); a SIGKILLed evaluator process is reported and
    replaced; Prometheus, TensorBoard and the learning curve show the same evaluations."""
    grpc_port, metrics_port = free_port(), free_port()
    env = _trainer_env(tmp_path, 0, 1, free_port(), grpc_port)
    env.update(A2C_METRICS_PORT=str(metrics_port), A2C_EVAL_INTERVAL="10", A2C_EVAL_EPISODES="3",
               A2C_CHECKPOINT_INTERVAL="10", A2C_KEEP_CHECKPOINTS="100000", A2C_TENSORBOARD=str(tmp_path / "tb"))
    log = tmp_path / "trainer.log"
    trainer = _spawn("trainer", env, log)
    player = _spawn("player", {"A2C_PLAYER_INDEX": "0", "A2C_NUM_TRAINERS": "1", "A2C_METRICS_PORT": "0",
                               "A2C_TRAINER_ADDRESS": f"127.0.0.1:{grpc_port}"}, tmp_path / "player.log")

    def evals() -> list[dict[str, object]]:
        return journal.evaluations(journal.read(tmp_path / "metrics.jsonl"))

    try:
        wait_for(lambda: evals(), 120, "a first evaluation", watch={"trainer": trainer, "player": player},
                 explain=lambda: log.read_text())
        found = re.search(r"evaluator process (\d+) started \(forked\)", log.read_text())
        assert found, "the trainer forks its first evaluator (no interpreter start-up): " + log.read_text()
        os.kill(int(found.group(1)), signal.SIGKILL)
        wait_for(lambda: "evaluator process died (killed by signal 9" in log.read_text(), 60, "the death to be noticed")
        done = len(evals())
        wait_for(lambda: len(evals()) > done, 120, "an evaluation by the restarted evaluator")
        assert "started (a fresh interpreter)" in log.read_text(), "a replacement is exec'd: the trainer has threads"
        scraped = _scrape(metrics_port)
        # the player first: one whose trainer is gone retries it (up to --connect-timeout-s) before it stops
        player.send_signal(signal.SIGTERM)
        player.wait(30)
        trainer.send_signal(signal.SIGTERM)
        assert trainer.wait(30) == 0, log.read_text()
    finally:
        kill(trainer, player)
    rows = journal.read(tmp_path / "metrics.jsonl")
    training, evaluations = journal.training(rows), journal.evaluations(rows)
    assert [r["iteration"] for r in training] == list(range(1, len(training) + 1)), "training rows as before"
    versions = [int(r["iteration"]) for r in evaluations]
    assert all(v % 10 == 0 for v in versions) and len(versions) == len(set(versions)) >= 2
    assert scraped["a2c_eval_failures_total"] == 1 and scraped["a2c_evaluations_total"] >= 2
    assert scraped["a2c_eval_skipped_total"] >= 1, "snapshots that came while the evaluator was busy were skipped"
    assert scraped["a2c_eval_mean_return"] in [r["eval_mean_return"] for r in evaluations]
    assert scraped["a2c_eval_iteration"] in versions
    for row in evaluations[:2]:
        loaded = evaluate.load(checkpoint.path_for(tmp_path, int(row["iteration"])))
        assert loaded.env_steps == row["env_steps"]
        again = evaluate.evaluate(loaded.agent, loaded.env_cfg, int(row["eval_episodes"]), int(row["eval_seed"]))
        assert (again.mean_return, again.std_return, again.mean_length) == (
            row["eval_mean_return"], row["eval_std_return"], row["eval_mean_length"])
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    shown = acc.Scalars("eval/mean_return")
    assert [e.step for e in shown] == [r["env_steps"] for r in evaluations]
    assert [e.value for e in shown] == pytest.approx([r["eval_mean_return"] for r in evaluations])
    assert len(acc.Scalars("train/mean_return")) == sum(r["mean_return"] is not None for r in training)
    png = curve.plot(tmp_path / "metrics.jsonl", tmp_path / "curve.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_hold_when_done_keeps_serving_the_final_status_until_sigterm(tmp_path: Path) -> None:
    """Under the controller (a StatefulSet restarts any process that exits) a finished trainer stays up,
    answering FINISHED, until SIGTERM; a player that heard "done" leaves without it."""
    grpc_port = free_port()
    env = _trainer_env(tmp_path, 0, 1, free_port(), grpc_port)
    env.update(A2C_MAX_ENV_STEPS="640", A2C_HOLD_WHEN_DONE="true", A2C_EVAL_INTERVAL="0",
               A2C_METRICS_PORT=str(free_port()))
    trainer = _spawn("trainer", env, tmp_path / "trainer.log")
    player = _spawn("player", {"A2C_PLAYER_INDEX": "0", "A2C_NUM_TRAINERS": "1", "A2C_METRICS_PORT": "0",
                               "A2C_TRAINER_ADDRESS": f"127.0.0.1:{grpc_port}"}, tmp_path / "player.log")
    log = tmp_path / "trainer.log"
    try:
        assert player.wait(100) == 0, (tmp_path / "player.log").read_text()
        # without --hold-when-done it would exit once its player heard "done"; with it, it says it holds
        wait_for(lambda: "serving the final status until SIGTERM" in log.read_text(), 30, "the trainer to hold",
                 watch={"the trainer": trainer})
        assert trainer.poll() is None, log.read_text()
        report = probe.trainer_status(f"127.0.0.1:{grpc_port}", timeout_s=5)
        assert report is not None and report["phase"] == "FINISHED" and report["env_steps"] >= 640
        with urllib.request.urlopen(f"http://127.0.0.1:{env['A2C_METRICS_PORT']}/readyz", timeout=5) as resp:
            assert resp.status == 200  # still Ready: the controller's next poll reads the final status
        trainer.send_signal(signal.SIGTERM)
        assert trainer.wait(20) == 0, log.read_text()
    finally:
        kill(trainer, player)
    assert "trainer 0 done: FINISHED" in log.read_text()


def test_readyz_fails_until_the_group_has_formed(tmp_path: Path) -> None:
    """The readiness a TLS trainer's pod uses: 503 while rank 0 waits for a peer that never comes."""
    metrics_port = free_port()
    env = _trainer_env(tmp_path, 0, 2, free_port(), free_port())
    env.update(A2C_METRICS_PORT=str(metrics_port), A2C_EVAL_INTERVAL="0")
    trainer = _spawn("trainer", env, tmp_path / "trainer.log")

    def readyz() -> tuple[int, str] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/readyz", timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()
        except OSError:
            return None  # not listening yet

    try:
        wait_for(readyz, 60, "the metrics port", watch={"the trainer": trainer})
        assert readyz() == (503, "not serving yet (STARTING)\n")
    finally:
        kill(trainer)


@pytest.mark.parametrize("role", ["trainer", "player"])
def test_a_role_that_cannot_start_exits_3_with_a_termination_message(tmp_path: Path, role: str) -> None:
    """The same error on every restart: exit code 3 and the reason where the kubelet reads it."""
    message = tmp_path / "termination-log"
    message.write_text("")  # the kubelet creates the file; the process only writes it
    env = {**os.environ, "A2C_ENV_ID": "NoSuchEnvironment-v0", "A2C_METRICS_PORT": "-1",
           "A2C_TERMINATION_MESSAGE_PATH": str(message), "RANK": "0", "A2C_PLAYER_INDEX": "0",
           "A2C_RUN_DIR": str(tmp_path / "run")}
    done = subprocess.run([sys.executable, "-m", "a2c", role], env=env, capture_output=True, timeout=120)
    assert done.returncode == 3, done.stderr.decode()[-2000:]
    text = message.read_text()
    assert text.startswith(f"{role} cannot start:") and "NoSuchEnvironment" in text
    assert "cannot start" in done.stderr.decode()


@pytest.mark.slow
def test_each_start_of_the_group_names_its_weights_with_a_new_generation(tmp_path: Path) -> None:
    """A restarted group numbers versions again from its checkpoint: its weights carry a generation drawn at
    each start, and a rollout acted with the weights of the start before is refused (FAILED_PRECONDITION)."""
    generations = []
    for start in range(2):
        grpc_port = free_port()
        trainer = _spawn("trainer", _trainer_env(tmp_path, 0, 1, free_port(), grpc_port),
                         tmp_path / f"trainer{start}.log")
        c = client.TrainerClient(f"127.0.0.1:{grpc_port}", retry_for_s=60.0)
        try:
            # retried until the trainer listens, then waits for its first weights (its server answers before the
            # group has formed and published them: with no wait, a loaded machine saw no weights yet)
            snap, _ = c.fetch(-1, wait_s=30.0)
            assert snap is not None and snap.generation != 0
            generations.append(snap.generation)
            if start:
                late = cartpole_rollout(player_id=0, version=snap.version, t=8, e=2)
                late.generation = generations[0]
                with pytest.raises(client.Refused) as info:
                    c.exchange(late, wait_s=0.0)
                assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION, info.value
                assert f"generation {generations[0]:x}" in info.value.details
                late.generation = snap.generation
                assert c.exchange(late, wait_s=0.0)[0].version == snap.version  # this start's: accepted
            trainer.send_signal(signal.SIGTERM)
            assert trainer.wait(30) == 0, (tmp_path / f"trainer{start}.log").read_text()
        finally:
            c.close()
            kill(trainer)
    assert generations[0] != generations[1]
    assert f"(generation {generations[1]:x}) published" in (tmp_path / "trainer1.log").read_text()
