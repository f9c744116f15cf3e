"""A live trainer server on 127.0.0.1:<free port>, started by `a2c.service.server.start` as a trainer starts
it, over an inbox, a weight board and a status the test controls; and the `trainer` fixture."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest

from a2c.model import weights
from a2c.service import client, inbox, server, shared_weights
from a2c.v1 import trainer_pb2
from tests.support.rollouts import SPEC

MAX_MESSAGE = 4 << 20


class WatchedBoard(weights.WeightBoard):
    """A WeightBoard that signals when a fetcher starts waiting on it (to publish "during" a long-poll)."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = threading.Event()

    def wait_newer(self, since_version: int, timeout_s: float,
                   since_generation: int = 0) -> weights.WeightSnapshot | None:
        self.waiting.set()
        return super().wait_newer(since_version, timeout_s, since_generation)


@dataclass
class Served:
    """A live server, a plaintext client of it, and the objects behind its servicers."""

    client: client.TrainerClient
    address: str
    running: server.Running
    box: inbox.Inbox
    board: WatchedBoard
    version: list[int]  # the inbox's (and the status's) current version, settable by the test
    status_calls: threading.Event
    owns: bool = True  # the inbox and board are this server's (not another's, see `start(over=...)`)

    def stop(self) -> None:
        self.client.close()
        if self.owns:
            self.box.close()
            self.board.finish()
        self.running.stop(0)


def start(world_size: int = 2, expected_players: int = 2, max_policy_lag: int = 1, max_queue: int = 4,
          workers: int = 8, tls: grpc.ServerCredentials | None = None, port: int = 0,
          over: Served | None = None, shared: shared_weights.Writer | None = None) -> Served:
    """Rank 0 of `world_size` (status TRAINING) on `port` (0: a free one), with `tls` only over TLS.
    `over`: another server over that one's inbox, board and version. `shared`: its --weights-dir's writer."""
    version = over.version if over is not None else [0]
    box = over.box if over is not None else inbox.Inbox(
        SPEC, rank=0, world_size=world_size, expected_players=expected_players, max_policy_lag=max_policy_lag,
        max_queue=max_queue, version=lambda: version[0])
    board = over.board if over is not None else WatchedBoard()
    called = threading.Event()

    def status() -> trainer_pb2.TrainerStatus:
        called.set()
        return trainer_pb2.TrainerStatus(iteration=version[0], world_size=world_size, rank=0,
                                         phase=trainer_pb2.TrainerStatus.TRAINING)

    running = server.start(box, board, status, "127.0.0.1", port, MAX_MESSAGE, workers=workers, tls=tls,
                           shared=shared)
    address = f"127.0.0.1:{running.port}"
    plaintext = client.TrainerClient(address, max_message_bytes=MAX_MESSAGE, retry_for_s=2.0)
    return Served(plaintext, address, running, box, board, version, called, owns=over is None)


@pytest.fixture
def trainer() -> Iterator[Served]:
    """A real gRPC server on 127.0.0.1:<free port>, rank 0 of 2, two expected players, lag 1."""
    served = start()
    try:
        yield served
    finally:
        served.stop()
