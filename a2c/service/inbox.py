"""The trainer's inbox: validated rollouts waiting for the next round, and who the round waits for.

Data flow: RolloutService.Upload -> `Inbox.submit` (validate, refuse or queue) ... trainer loop ->
`Inbox.take_round(version)`: waits until every active player of this trainer delivered a rollout the
round may use, or the deadline passes; players that missed a deadline stop being waited for until
they deliver again (so a lost player costs one deadline, then its trainer contributes what it has).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from a2c.observe import metrics
from a2c.service import rollout

REFUSAL_REASONS = ("malformed", "unknown_player", "other_generation", "future_version", "stale_version",
                   "invalid_rollout", "queue_full", "stale_in_queue")


class Refusal(Exception):
    """A rollout the trainer will not use. `code` names a gRPC status code, `reason` is the metric label."""

    def __init__(self, code: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


@dataclass
class Round:
    rollouts: list[rollout.Rollout]
    waited_s: float
    missing: set[int]

    def episodes(self) -> tuple[list[float], list[int]]:
        """Returns and lengths of the episodes that ended in this round's rollouts."""
        return ([x for r in self.rollouts for x in r.episode_returns],
                [x for r in self.rollouts for x in r.episode_lengths])


class Inbox:
    def __init__(self, spec: rollout.Spec, rank: int, world_size: int, expected_players: int,
                 max_policy_lag: int, max_queue: int, version: Callable[[], int]) -> None:
        self.spec, self.rank, self.world_size = spec, rank, world_size
        self.lag, self.max_queue, self._version = max_policy_lag, max_queue, version
        self._cond = threading.Condition()
        self._queue: list[rollout.Rollout] = []
        self.active: set[int] = {rank + world_size * i for i in range(expected_players)}
        self.last_seen: dict[int, float] = {}
        self.closed = False
        # the trainer group's run (`weights.WeightSnapshot.generation`), set when the group has formed; 0 until then
        self.generation = 0

    def submit(self, r: rollout.Rollout) -> int:
        """Queue a rollout or raise Refusal; returns the trainer's current version."""
        try:
            self._check(r)
        except Refusal as ref:
            metrics.labels(metrics.TRAINER_ROLLOUTS_REFUSED, reason=ref.reason).inc()
            raise
        with self._cond:
            if len(self._queue) >= self.max_queue:
                metrics.labels(metrics.TRAINER_ROLLOUTS_REFUSED, reason="queue_full").inc()
                raise Refusal("RESOURCE_EXHAUSTED", "queue_full",
                              f"rollout queue is full ({self.max_queue}); back off and retry")
            self._queue.append(r)
            self.active.add(r.player_id)
            self.last_seen[r.player_id] = time.monotonic()
            metrics.labels(metrics.TRAINER_ROLLOUTS_ACCEPTED).inc()
            metrics.labels(metrics.TRAINER_QUEUE_DEPTH).set(len(self._queue))
            self._cond.notify_all()
        return self._version()

    def _check(self, r: rollout.Rollout) -> None:
        if r.player_id < 0 or r.player_id % self.world_size != self.rank:
            raise Refusal("INVALID_ARGUMENT", "unknown_player",
                          f"player {r.player_id} does not belong to trainer {self.rank} "
                          f"(player j uploads to trainer j mod {self.world_size})")
        if r.generation and r.generation != self.generation:  # 0: a client that does not say (versions only)
            now = f"this run's is {self.generation:x}" if self.generation else "this run's group has not formed yet"
            raise Refusal("FAILED_PRECONDITION", "other_generation",
                          f"rollout acted with weights of another run of the trainers (generation {r.generation:x}, "
                          f"{now}: they restarted from a checkpoint, and its versions name other weights); "
                          "fetch the current weights")
        current = self._version()
        if r.policy_version > current:
            raise Refusal("INVALID_ARGUMENT", "future_version",
                          f"policy_version {r.policy_version} is newer than the trainer's {current}")
        if r.policy_version < current - self.lag:
            raise Refusal("FAILED_PRECONDITION", "stale_version",
                          f"policy_version {r.policy_version} is older than {current} - max_policy_lag {self.lag}; "
                          "fetch newer weights")
        try:
            rollout.validate(r, self.spec)
        except rollout.RolloutError as exc:
            raise Refusal("INVALID_ARGUMENT", "invalid_rollout", f"invalid rollout: {exc}") from None

    def take_round(self, version: int, timeout_s: float) -> Round:
        """Every usable rollout for `version` once each active player delivered one, or at the deadline."""
        start = time.monotonic()
        deadline = start + timeout_s
        with self._cond:
            while True:
                stale = [r for r in self._queue if r.policy_version < version - self.lag]
                if stale:
                    metrics.labels(metrics.TRAINER_ROLLOUTS_REFUSED, reason="stale_in_queue").inc(len(stale))
                    self._queue = [r for r in self._queue if r.policy_version >= version - self.lag]
                missing = self.active - {r.player_id for r in self._queue}
                if self.closed or (not missing and self._queue):
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.active -= missing
                    break
                self._cond.wait(remaining)
            taken, self._queue = self._queue, []
            metrics.labels(metrics.TRAINER_QUEUE_DEPTH).set(0)
            metrics.labels(metrics.TRAINER_ACTIVE_PLAYERS).set(len(self.active))
        return Round(taken, time.monotonic() - start, missing)

    def close(self) -> None:
        """Wake a waiting round (shutdown)."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()
