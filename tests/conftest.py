"""Shared fixtures (their code lives in tests/support/): a real trainer gRPC server on port 0 (`trainer`), the
rollout factory (`rollout_factory`), and a PKI for TLS (`pki`)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from a2c import rollout
from tests.certs import PKI
from tests.support.rollouts import cartpole_rollout
from tests.support.server import trainer

__all__ = ["pki", "rollout_factory", "trainer"]

torch.set_num_threads(1)  # the build machines' cores are shared; these tests use tiny tensors


@pytest.fixture
def rollout_factory() -> Callable[..., rollout.Rollout]:
    """`cartpole_rollout` as a fixture: rollout_factory(seed=0, t=5, e=3, player_id=0, version=0)."""
    return cartpole_rollout


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    """A CA with a trainer (server) and a player (client) certificate, and a stranger CA (tests/certs.py)."""
    return PKI.make(tmp_path_factory.mktemp("pki"))
