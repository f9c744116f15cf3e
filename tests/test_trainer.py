"""`a2c trainer` and `a2c player` as a pod runs them: configured by environment variables, stopped by SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from a2c import checkpoint, curve
from tests.helpers_procs import free_port, wait_for


def _spawn(role: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = log.open("wb")
    return subprocess.Popen([sys.executable, "-m", "a2c", role], env={**os.environ, **env}, stdout=out,
                            stderr=subprocess.STDOUT)




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
        wait_for(lambda: len(curve.read_journal(tmp_path / "metrics.jsonl")) >= 20, 120, "training to start")
        trainer.send_signal(signal.SIGTERM)
        player.send_signal(signal.SIGTERM)
        assert trainer.wait(20) == 0, (tmp_path / "trainer.log").read_text()
        assert player.wait(20) == 0, (tmp_path / "player.log").read_text()
    finally:
        for p in (trainer, player):
            if p.poll() is None:
                p.kill()
    last = curve.read_journal(tmp_path / "metrics.jsonl")[-1]["iteration"]
    state = checkpoint.load_latest(tmp_path)
    assert state is not None and state["version"] == last, "the final checkpoint holds the last iteration"
    assert "STOPPING" in (tmp_path / "trainer.log").read_text()


@pytest.mark.slow
def test_a_lost_peer_ends_the_other_trainer_with_an_error_not_a_hang(tmp_path: Path) -> None:
    master = free_port()
    envs = [_trainer_env(tmp_path / f"r{r}", r, 2, master, free_port()) for r in range(2)]
    for e in envs:  # no players: zero-sample rounds, collectives every round
        e.update(A2C_START_TIMEOUT_S="1", A2C_ROUND_TIMEOUT_S="0.2", A2C_DIST_TIMEOUT_S="30")
    procs = [_spawn("trainer", e, tmp_path / f"trainer-{r}.log") for r, e in enumerate(envs)]
    try:
        wait_for(lambda: "ready" in (tmp_path / "trainer-0.log").read_text(), 60, "trainer 0 to be ready")
        time.sleep(2)  # a few empty rounds
        procs[1].kill()
        start = time.monotonic()
        code = procs[0].wait(45)
        took = time.monotonic() - start
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    log = (tmp_path / "trainer-0.log").read_text()
    assert code != 0, log
    assert took < 45
    assert "Traceback" in log or "Error" in log, log
