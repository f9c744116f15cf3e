"""The queue between trainer 0's loop and its evaluator's thread: the newest snapshot wins.

One snapshot is in flight (being evaluated) at a time, and while it is, only the newest one submitted
waits: a newer one replaces an older waiting one (counted in `skipped`), so that `put` never blocks the
trainer and the evaluator never works through a backlog of stale weights.
"""

from __future__ import annotations

import threading
import time
from typing import Generic, Protocol, TypeVar


class Versioned(Protocol):
    @property
    def version(self) -> int: ...


T = TypeVar("T", bound=Versioned)


class NewestWins(Generic[T]):
    """At most one item waiting and one in flight; `put` from the producer, `take` from the consumer."""

    def __init__(self) -> None:
        self.submitted = 0  # items put while open
        self.skipped = 0  # of those, replaced while waiting: never taken
        self.in_flight: int | None = None  # the version of the item taken last, until the next `take`
        self._cond = threading.Condition()
        self._pending: T | None = None
        self._stopped = False

    @property
    def stopped(self) -> bool:
        return self._stopped

    def put(self, item: T) -> bool:
        """Let `item` wait, in place of one still waiting, and return at once: True if it replaced one;
        False, and nothing done, once stopped."""
        with self._cond:
            if self._stopped:
                return False
            self.submitted += 1
            replaced = self._pending is not None
            self.skipped += replaced
            self._pending = item
            self._cond.notify_all()
            return replaced

    def take(self) -> T | None:
        """The consumer is done with the item in flight: wait for the next and put it in flight; None once
        stopped."""
        with self._cond:
            self.in_flight = None
            self._cond.notify_all()  # a drain() may wait for this
            while self._pending is None and not self._stopped:
                self._cond.wait()
            item, self._pending = self._pending, None
            if self._stopped or item is None:
                return None
            self.in_flight = item.version
            return item

    def drain(self, timeout_s: float) -> bool:
        """Wait, up to timeout_s, until the item in flight and one still waiting have been taken and done
        with; True when nothing is left."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not self._stopped and (self._pending is not None or self.in_flight is not None):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return self._pending is None and self.in_flight is None

    def stop(self, discard: bool) -> None:
        """Take no more items; `take` returns None from now on. discard: drop one still waiting."""
        with self._cond:
            self._stopped = True
            if discard:
                self._pending = None
            self._cond.notify_all()
