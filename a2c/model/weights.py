"""What a trainer serves its players: one versioned snapshot of the model's weights (numpy, no torch).

Data flow: trainer step -> `agent.snapshot` -> `WeightBoard.publish` -> WeightService.Fetch (long-poll)
-> player `agent.load_snapshot`. At the end, `finish` -> every answer says `done` (`tell_done`) -> the trainer
waits (`wait_told`) until its players have heard it. Every weight snapshot and every rollout carries an integer
`policy_version`, so stale data can be measured and dropped (`max_policy_lag`). A trainer group restarted
from an older checkpoint numbers its versions again from there: the `generation` it drew when it started
tells its weights from those a player got before the restart under the same version.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class WeightSnapshot:
    version: int
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    done: bool = False
    generation: int = 0  # the trainer group's run that made them (drawn at its start; 0: not stated)
    encoded: Any = None  # cached wire form (set by service.codec), shared by every fetcher

    def nbytes(self) -> int:
        return sum(int(a.nbytes) for a in self.tensors.values())


class WeightBoard:
    """The newest snapshot, with a condition variable for long-polling fetchers."""

    def __init__(self, condition: threading.Condition | None = None) -> None:
        self._cond = condition or threading.Condition()  # a test may pass one that signals its waits
        self._snap: WeightSnapshot | None = None
        self._done = False
        self._told: set[int] = set()

    def publish(self, snap: WeightSnapshot) -> None:
        with self._cond:
            self._snap = snap
            self._cond.notify_all()

    def finish(self) -> None:
        """Training has ended: wake every waiter and tell it so."""
        with self._cond:
            self._done = True
            self._cond.notify_all()

    def tell_done(self, player_id: int) -> bool:
        """Whether an answer to `player_id` says training is done: once it is (`finish`), the player counts as
        told (`wait_told`). Every answer a player gets asks this, so a player cannot hear `done` untold."""
        with self._cond:
            if self._done:
                self._told.add(player_id)
                self._cond.notify_all()
            return self._done

    def wait_told(self, players: set[int], timeout_s: float) -> bool:
        """Wait until every one of `players` has been answered `done` (True), or timeout_s (False)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not players <= self._told:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    @property
    def done(self) -> bool:
        return self._done

    @property
    def version(self) -> int:
        snap = self._snap
        return -1 if snap is None else snap.version

    def wait_newer(self, since_version: int, timeout_s: float, since_generation: int = 0) -> WeightSnapshot | None:
        """The newest snapshot once it differs from since_version (of since_generation, unless 0), waiting up to
        timeout_s; else None.

        "Differs", not "is greater": a trainer group restarted from a checkpoint can be behind its players,
        who must then take its weights at once rather than wait for it to catch up; and its version k is not
        the k a player had before the restart (another generation), which the player must replace at once.
        """
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._cond:
            while True:
                snap = self._snap
                if snap is not None and (snap.version != since_version
                                         or since_generation not in (0, snap.generation)):
                    return snap
                remaining = deadline - time.monotonic()
                if self._done or remaining <= 0:
                    return None
                self._cond.wait(remaining)
