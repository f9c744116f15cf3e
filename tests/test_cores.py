"""a2c/cores.py: which core each process of `a2c local` is pinned to, and side processes given back the
cores a pinned process had (the integration: tests/test_local.py::test_two_cores_pair_each_trainer_with_its_player)."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import threading

import pytest

from a2c import cores


def test_two_trainers_on_two_cores_share_each_core_with_their_own_player() -> None:
    assert [cores.assign("trainer", r, 2, 1, [0, 1]) for r in range(2)] == [0, 1]
    assert [cores.assign("player", j, 2, 1, [0, 1]) for j in range(2)] == [0, 1]


def test_players_go_to_their_own_trainers_core() -> None:
    # player j belongs to trainer j % 2 (local.plan)
    assert [cores.assign("player", j, 2, 4, [0, 1]) for j in range(8)] == [0, 1] * 4
    # 4 trainers on 2 cores: two trainers and their players per core
    assert [cores.assign("trainer", r, 4, 1, [0, 1]) for r in range(4)] == [0, 1, 0, 1]
    assert [cores.assign("player", j, 4, 2, [0, 1]) for j in range(8)] == [0, 1, 0, 1] * 2


def test_the_cores_are_the_ones_allowed_not_the_first_ones() -> None:
    assert [cores.assign("trainer", r, 2, 1, [3, 7]) for r in range(2)] == [3, 7]
    assert [cores.assign("player", j, 2, 1, [3, 7]) for j in range(2)] == [3, 7]


@pytest.mark.parametrize(("trainers", "players", "n_cores"), [
    (2, 1, 4),   # a core for every process
    (2, 1, 16),
    (1, 1, 2),
    (2, 2, 4),   # 6 processes on 4 cores, but 2 trainers do not divide 4 cores: pairing would idle 2
    (2, 1, 3),   # the same on 3 cores
])
def test_nothing_is_pinned_with_enough_cores_or_an_uneven_split(trainers: int, players: int, n_cores: int) -> None:
    allowed = list(range(n_cores))
    assert all(cores.assign(role, i, trainers, players, allowed) is None
               for role, count in (("trainer", trainers), ("player", trainers * players)) for i in range(count))


def test_one_core_takes_everything() -> None:
    assert {cores.assign(role, i, 2, 1, [5]) for role in ("trainer", "player") for i in range(2)} == {5}


@pytest.mark.parametrize(("role", "index", "trainers", "players", "allowed"), [
    ("evaluator", 0, 2, 1, [0, 1]), ("trainer", 0, 2, 1, []), ("trainer", 0, 0, 1, [0, 1]),
    ("player", -1, 2, 1, [0, 1]),
])
def test_bad_arguments_are_refused(role: str, index: int, trainers: int, players: int, allowed: list[int]) -> None:
    with pytest.raises(ValueError):
        cores.assign(role, index, trainers, players, allowed)


PIN_THEN_START = r"""
import json, os, subprocess, sys
from a2c import cores
before = sorted(os.sched_getaffinity(0))
side_unpinned = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
cores.release(side_unpinned.pid)  # not pinned yet: nothing changes
cores.pin(before[-1])
me = sorted(os.sched_getaffinity(0))
side = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
inherited = sorted(os.sched_getaffinity(side.pid))
cores.release(side.pid)
released = sorted(os.sched_getaffinity(side.pid))
for p in (side, side_unpinned):
    p.stdin.close(); p.wait()
cores.release(side.pid)  # gone: no error
print(json.dumps({"before": before, "me": me, "inherited": inherited, "released": released}))
"""


def test_a_pinned_process_gives_its_side_processes_the_cores_it_had() -> None:
    out = subprocess.run([sys.executable, "-c", PIN_THEN_START], capture_output=True, text=True, timeout=60, check=True)
    got = json.loads(out.stdout)
    assert got["me"] == [got["before"][-1]]
    assert got["inherited"] == got["me"], "a child starts on its parent's core"
    assert got["released"] == got["before"]
    assert sorted(os.sched_getaffinity(0)) == sorted(got["before"]), "the test process itself was never pinned"


def _named_thread(name: bytes, ready: threading.Event, stop: threading.Event, tids: list[int]) -> None:
    ctypes.CDLL(None).prctl(15, ctypes.c_char_p(name), 0, 0, 0)  # PR_SET_NAME: the kernel's thread name
    tids.append(threading.get_native_id())
    ready.set()
    stop.wait(30)


def test_idle_threads_puts_the_named_threads_and_only_them_under_sched_idle() -> None:
    stop, started, tids = threading.Event(), [], []  # type: ignore[var-annotated]
    try:
        for name in (b"a2c-idle-me", b"a2c-idle-me", b"a2c-keep-me"):
            ready = threading.Event()
            threading.Thread(target=_named_thread, args=(name, ready, stop, tids), daemon=True).start()
            assert ready.wait(10)
            started.append(ready)
        assert cores.idle_threads("a2c-idle-me") == sorted(tids[:2])
        assert [os.sched_getscheduler(t) for t in tids] == [os.SCHED_IDLE, os.SCHED_IDLE, os.SCHED_OTHER]
        assert os.sched_getscheduler(threading.get_native_id()) == os.SCHED_OTHER, "the caller keeps its policy"
        assert cores.idle_threads("no-such-thread") == []
    finally:
        stop.set()
