"""probe.py: trainer 0's Status over a real gRPC socket, and silence when nobody answers."""

from __future__ import annotations

import socket
import time
from typing import Any

from a2c.controller import probe
from a2c.v1 import trainer_pb2


def test_status_of_a_training_trainer(trainer: Any) -> None:
    fake, address = trainer
    fake.set(phase=trainer_pb2.TrainerStatus.TRAINING, iteration=3, env_steps=384, mean_return=21.5, episodes=9,
             world_size=2, message="ok")
    assert probe.trainer_status(address) == {"phase": "TRAINING", "iteration": 3, "env_steps": 384,
                                             "mean_return": 21.5, "episodes": 9, "world_size": 2, "message": "ok"}


def test_unreachable_trainer_is_none_within_the_timeout() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    assert probe.trainer_status(f"127.0.0.1:{port}", timeout_s=0.5) is None
    assert time.monotonic() - start < 5


def test_address_is_trainer_0_behind_the_headless_service() -> None:
    assert probe.address("cp", "ml", 50051) == "cp-trainer-0.cp-trainer.ml.svc:50051"
