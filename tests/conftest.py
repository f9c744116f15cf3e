"""Shared fixtures: a factory of valid CartPole-shaped rollouts, and a real trainer gRPC server on port 0."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from a2c import inbox, rollout, weights
from a2c.service import client, server, servicers
from a2c.v1 import trainer_pb2
from tests.certs import PKI

torch.set_num_threads(1)  # the build machines' cores are shared; these tests use tiny tensors

T, E = 5, 3
OBS_SHAPE = (4,)
SPEC = rollout.Spec(obs_shape=OBS_SHAPE, obs_dtype=np.dtype(np.float32), action_shape=(),
                    action_dtype=np.dtype(np.int64), num_steps=T)


def cartpole_rollout(seed: int = 0, t: int = T, e: int = E, player_id: int = 0, version: int = 0) -> rollout.Rollout:
    """A valid rollout shaped like CartPole's: float32 [4] observations, int64 scalar actions.

    Env 0 terminates at step 1, env 1 is truncated at step 2 (same-step reset: its final obs travels in
    final_obs), env 2 runs through; returns/lengths describe the two finished episodes.
    """
    rng = np.random.default_rng(seed)
    terminated = np.zeros((t, e), bool)
    truncated = np.zeros((t, e), bool)
    terminated[1, 0] = True
    truncated[2, 1 % e] = True
    done = np.flatnonzero((terminated | truncated).reshape(-1)).astype(np.int64)
    return rollout.Rollout(
        player_id=player_id, policy_version=version,
        obs=rng.normal(size=(t + 1, e, *OBS_SHAPE)).astype(np.float32),
        actions=rng.integers(0, 2, size=(t, e)).astype(np.int64),
        rewards=np.ones((t, e), np.float32),
        terminated=terminated, truncated=truncated, valid=np.ones((t, e), bool),
        logprobs=np.full((t, e), -0.69, np.float32), values=rng.normal(size=(t, e)).astype(np.float32),
        final_obs=rng.normal(size=(len(done), *OBS_SHAPE)).astype(np.float32), final_index=done,
        episode_returns=[2.0, 3.0], episode_lengths=[2, 3],
    )


@pytest.fixture
def rollout_factory() -> Callable[..., rollout.Rollout]:
    """`cartpole_rollout` as a fixture: rollout_factory(seed=0, t=5, e=3, player_id=0, version=0)."""
    return cartpole_rollout


class WatchedBoard(weights.WeightBoard):
    """A WeightBoard that signals when a fetcher starts waiting on it (to publish "during" a long-poll)."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = threading.Event()

    def wait_newer(self, since_version: int, timeout_s: float) -> weights.WeightSnapshot | None:
        self.waiting.set()
        return super().wait_newer(since_version, timeout_s)


@dataclass
class Trainer:
    """What a test needs of a live server: the client, the address, and the objects behind the servicers."""

    client: client.TrainerClient
    address: str
    running: server.Running
    box: inbox.Inbox
    board: WatchedBoard
    version: list[int]  # the inbox's idea of the current version, settable by the test
    status_calls: threading.Event


@pytest.fixture
def trainer() -> Iterator[Trainer]:
    """A real gRPC server on 127.0.0.1:<free port>, rank 0 of 2, two expected players, lag 1."""
    version = [0]
    box = inbox.Inbox(SPEC, rank=0, world_size=2, expected_players=2, max_policy_lag=1, max_queue=4,
                      version=lambda: version[0])
    board = WatchedBoard()
    called = threading.Event()

    def status() -> trainer_pb2.TrainerStatus:
        called.set()
        return trainer_pb2.TrainerStatus(iteration=version[0], world_size=2, rank=0,
                                         phase=trainer_pb2.TrainerStatus.TRAINING)

    max_bytes = 4 << 20
    running = server.start(servicers.RolloutServicer(box, board, max_bytes * 8), servicers.WeightServicer(board),
                           servicers.TrainerServicer(status), "127.0.0.1", 0, max_bytes, workers=8)
    address = f"127.0.0.1:{running.port}"
    c = client.TrainerClient(address, max_message_bytes=max_bytes, retry_for_s=2.0)
    try:
        yield Trainer(c, address, running, box, board, version, called)
    finally:
        c.close()
        box.close()
        board.finish()
        running.stop(0)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    """A CA with a trainer (server) and a player (client) certificate, and a stranger CA (tests/certs.py)."""
    return PKI.make(tmp_path_factory.mktemp("pki"))
