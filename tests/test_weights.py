"""weights.WeightBoard: the long-poll behind WeightService.Fetch."""

from __future__ import annotations

import threading

import numpy as np

from a2c.model import weights


def snap(version: int) -> weights.WeightSnapshot:
    return weights.WeightSnapshot(version=version, tensors={"w": np.full(3, version, np.float32)})


class Waiter:
    """Runs wait_newer on another thread and collects its result."""

    def __init__(self, board: weights.WeightBoard, since: int, timeout_s: float) -> None:
        self.result: list[weights.WeightSnapshot | None] = []
        self.thread = threading.Thread(target=lambda: self.result.append(board.wait_newer(since, timeout_s)))
        self.thread.start()

    def join(self) -> weights.WeightSnapshot | None:
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "wait_newer did not wake"
        return self.result[0]


class CountingCondition(threading.Condition):
    """Signals each time a waiter goes to sleep on it (so a test publishes while it waits, not before)."""

    def __init__(self) -> None:
        super().__init__()
        self.sleeping = threading.Semaphore(0)

    def wait(self, timeout: float | None = None) -> bool:
        self.sleeping.release()
        return super().wait(timeout)


class CountingBoard(weights.WeightBoard):
    """A board over a CountingCondition: `sleeping` is released each time a waiter goes to sleep."""

    def __init__(self) -> None:
        condition = CountingCondition()
        super().__init__(condition)
        self.sleeping = condition.sleeping


def test_empty_board() -> None:
    board = weights.WeightBoard()
    assert board.version == -1 and not board.done
    assert board.wait_newer(-1, 0.0) is None


def test_returns_at_once_when_newer_exists() -> None:
    board = weights.WeightBoard()
    s = snap(3)
    board.publish(s)
    assert board.version == 3
    assert board.wait_newer(2, 60.0) is s
    assert board.wait_newer(-1, 60.0) is s


def test_times_out_with_none() -> None:
    board = weights.WeightBoard()
    board.publish(snap(3))
    assert board.wait_newer(3, 0.05) is None
    assert board.wait_newer(3, -1.0) is None, "a negative timeout does not wait"


def test_wakes_on_publish_from_another_thread() -> None:
    board = CountingBoard()
    board.publish(snap(0))
    waiter = Waiter(board, since=0, timeout_s=60.0)
    assert board.sleeping.acquire(timeout=30), "the waiter never went to sleep"
    assert waiter.thread.is_alive()
    s = snap(1)
    board.publish(s)
    assert waiter.join() is s


def test_publishing_the_same_version_does_not_wake_with_a_result() -> None:
    board = CountingBoard()
    board.publish(snap(1))
    waiter = Waiter(board, since=1, timeout_s=60.0)
    assert board.sleeping.acquire(timeout=30)
    board.publish(snap(1))  # not newer: the waiter goes back to sleep
    assert board.sleeping.acquire(timeout=30)
    board.publish(snap(2))
    result = waiter.join()
    assert result is not None and result.version == 2


def test_finish_wakes_every_waiter() -> None:
    board = CountingBoard()
    waiters = [Waiter(board, since=0, timeout_s=60.0) for _ in range(3)]
    for _ in waiters:
        assert board.sleeping.acquire(timeout=30)
    board.finish()
    assert board.done
    assert [w.join() for w in waiters] == [None, None, None]


def test_after_finish_a_newer_snapshot_is_still_returned() -> None:
    board = weights.WeightBoard()
    board.publish(snap(5))
    board.finish()
    s = board.wait_newer(4, 60.0)
    assert s is not None and s.version == 5
    assert board.wait_newer(5, 60.0) is None


def test_snapshot_nbytes() -> None:
    s = weights.WeightSnapshot(version=0, tensors={"a": np.zeros((2, 3), np.float32), "b": np.zeros(5, np.int64)})
    assert s.nbytes() == 24 + 40


def test_a_board_behind_the_caller_answers_at_once() -> None:
    """A trainer group resumed from an older checkpoint: players ahead of it take its weights at once."""
    board = weights.WeightBoard()
    board.publish(weights.WeightSnapshot(version=3))
    snap = board.wait_newer(7, timeout_s=60.0)
    assert snap is not None and snap.version == 3


def test_weights_of_another_generation_under_the_callers_version_answer_at_once() -> None:
    """A group restarted from an older checkpoint reached the caller's version again, with other weights."""
    board = weights.WeightBoard()
    board.publish(weights.WeightSnapshot(version=7, generation=0xB))
    snap = board.wait_newer(7, timeout_s=60.0, since_generation=0xA)
    assert snap is not None and (snap.version, snap.generation) == (7, 0xB)
    assert board.wait_newer(7, timeout_s=0.0, since_generation=0xB) is None  # the same weights: wait
    assert board.wait_newer(7, timeout_s=0.0) is None  # generation not stated: versions only


def test_tell_done_counts_a_player_as_told_only_once_training_is_done() -> None:
    board = weights.WeightBoard()
    assert board.tell_done(1) is False
    assert not board.wait_told({1}, timeout_s=0.0), "a player answered before the end is not told"
    board.finish()
    assert board.tell_done(1) is True
    assert board.wait_told({1}, timeout_s=0.0)
    assert not board.wait_told({1, 2}, timeout_s=0.0)


def test_tell_done_wakes_the_trainer_waiting_for_its_players() -> None:
    board = CountingBoard()
    board.finish()
    told: list[bool] = []
    th = threading.Thread(target=lambda: told.append(board.wait_told({3}, timeout_s=60.0)))
    th.start()
    assert board.sleeping.acquire(timeout=30)
    assert board.tell_done(3)
    th.join(timeout=30)
    assert told == [True]
