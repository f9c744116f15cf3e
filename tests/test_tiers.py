"""The test tiers: tests/conftest.py marks a test by the folder it lives in and by its file's name."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests import conftest

ROOT = Path(__file__).resolve().parents[1]


class Item:
    """What the hook reads of a collected test (its path, the run's root) and what it writes (markers)."""

    def __init__(self, relative: str, fixtures: tuple[str, ...] = ()) -> None:
        self.path = ROOT / relative
        self.fixturenames = fixtures
        self.config = SimpleNamespace(rootpath=ROOT)
        self.marks: set[str] = set()

    def add_marker(self, mark: Any) -> None:
        self.marks.add(mark.name)


@pytest.mark.parametrize(("relative", "marks"), [
    ("tests/cluster/test_e2e.py", {"cluster", "slow"}),
    ("tests/cluster/test_apiserver.py", {"cluster", "slow"}),
    ("tests/deploy/test_chart.py", {"deploy"}),
    ("tests/test_learning_acrobot.py", {"learning", "slow"}),
    ("tests/test_returns.py", set()),
    ("tests/controller/test_status.py", set()),
])
def test_a_test_is_marked_by_its_folder_and_name(relative: str, marks: set[str]) -> None:
    item = Item(relative)
    conftest.pytest_collection_modifyitems([item])  # type: ignore[list-item]
    assert item.marks == marks


def test_a_checkout_whose_own_path_names_a_tier_marks_nothing_more(tmp_path: Path) -> None:
    """Only the folders inside the repository count: a clone under /srv/cluster/ is not all `cluster`."""
    item = Item("tests/test_returns.py")
    item.path = tmp_path / "cluster" / "deploy" / "tests" / "test_returns.py"
    item.config = SimpleNamespace(rootpath=tmp_path / "cluster" / "deploy")
    conftest.pytest_collection_modifyitems([item])  # type: ignore[list-item]
    assert item.marks == set()


def test_a_test_that_starts_the_stand_in_api_server_is_of_the_cluster_tier() -> None:
    item = Item("tests/controller/test_lifecycle.py", fixtures=("reconciler", "apiserver", "tmp_path"))
    conftest.pytest_collection_modifyitems([item])  # type: ignore[list-item]
    assert item.marks == {"cluster", "slow"}
