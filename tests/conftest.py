"""Shared fixtures (their code lives in tests/support/): a real trainer gRPC server on port 0 (`trainer`), the
rollout factory (`rollout_factory`), and a PKI for TLS (`pki`); and the test tiers, as markers set by folder and
name so that no test file has to remember them:

    cluster   tests/cluster, and every test with the stand-in API server (the `apiserver` fixture of
              tests/controller): the stand-in and the node agent (root, network namespaces, kubectl)
    deploy    tests/deploy: Helm's rendering and linting of the chart, the Dockerfile, the scripts
    learning  tests/test_learning_*.py: an agent trained to a score
    slow      multi-process and learning tests (marked in their files), and everything of `cluster`

The fast tier a developer runs is `python -m pytest -m "not slow and not cluster and not deploy"`."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from a2c.service import rollout
from tests.certs import PKI
from tests.support.rollouts import cartpole_rollout
from tests.support.server import trainer

__all__ = ["pki", "rollout_factory", "trainer"]

TIERS = {"cluster": "the stand-in API server and the node agent (tests/cluster, the `apiserver` fixture)",
         "deploy": "the Helm chart, the Dockerfile and the scripts (tests/deploy)",
         "learning": "an agent trained to a score (tests/test_learning_*.py)",
         "slow": "learning and multi-process tests (still run in CI)"}


def pytest_configure(config: pytest.Config) -> None:
    for name, what in TIERS.items():
        config.addinivalue_line("markers", f"{name}: {what}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks by where a test lives: its folder names its tier, and a test file's name says it learns."""
    for item in items:
        parts = item.path.relative_to(item.config.rootpath).parts  # the folders inside the repository only
        if "cluster" in parts or "apiserver" in getattr(item, "fixturenames", ()):  # the stand-in, wherever used
            item.add_marker(pytest.mark.cluster)
            item.add_marker(pytest.mark.slow)
        if "deploy" in parts:
            item.add_marker(pytest.mark.deploy)
        if item.path.name.startswith("test_learning"):
            item.add_marker(pytest.mark.learning)
            item.add_marker(pytest.mark.slow)


torch.set_num_threads(1)  # the build machines' cores are shared; these tests use tiny tensors


@pytest.fixture
def rollout_factory() -> Callable[..., rollout.Rollout]:
    """`cartpole_rollout` as a fixture: rollout_factory(seed=0, t=5, e=3, player_id=0, version=0)."""
    return cartpole_rollout


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    """A CA with a trainer (server) and a player (client) certificate, and a stranger CA (tests/certs.py)."""
    return PKI.make(tmp_path_factory.mktemp("pki"))
