"""Where a run stands, job-wide, and the rule that ends it.

Data flow: each round the gradient all-reduce (`distributed.GradientSum`) gives every trainer the same totals
-> `Progress.add` -> `ended` (target return reached, or step budget spent) and what the trainer reports: its
status, trainer 0's journal rows and checkpoints (`state` / `load`, so a restarted group resumes the same
count). Every rank holds an identical `Progress`: the rule needs no further agreement.
"""

from __future__ import annotations

import collections
import time
from typing import Any

import numpy as np

from a2c import config
from a2c.service.status import Phase


class Progress:
    """The job-wide numbers every rank agrees on (restored from checkpoints)."""

    def __init__(self, window: int) -> None:
        self.version = 0
        self.env_steps = 0
        self.episodes = 0
        self.returns: collections.deque[float] = collections.deque(maxlen=window)
        self.lengths: collections.deque[int] = collections.deque(maxlen=window)
        self.elapsed_before = 0.0  # wall time of the runs this one resumed
        self.started = time.monotonic()

    def add(self, env_steps: int, returns: list[float], lengths: list[int]) -> None:
        """One round's job-wide env steps and finished episodes."""
        self.env_steps += env_steps
        self.episodes += len(returns)
        self.returns.extend(returns)
        self.lengths.extend(lengths)

    def mean_return(self) -> float:
        """Mean return of the last `window` episodes (NaN before the first one)."""
        return float(np.mean(self.returns)) if self.returns else float("nan")

    def elapsed(self) -> float:
        """Wall time of the whole run, resumed runs included."""
        return self.elapsed_before + time.monotonic() - self.started

    def state(self) -> dict[str, Any]:
        return {"version": self.version, "env_steps": self.env_steps, "episodes": self.episodes,
                "returns": list(self.returns), "lengths": list(self.lengths), "elapsed_s": self.elapsed()}

    def load(self, s: dict[str, Any]) -> None:
        self.version, self.env_steps, self.episodes = int(s["version"]), int(s["env_steps"]), int(s["episodes"])
        self.returns.extend(s["returns"])
        self.lengths.extend(s["lengths"])
        self.elapsed_before = float(s.get("elapsed_s", 0.0))


def ended(p: Progress, stop: config.StopConfig) -> tuple[Phase, str] | None:
    """(phase, why) once the mean return of a full window reaches the target (SUCCEEDED) or the step budget
    is spent (FINISHED); else None."""
    if len(p.returns) == stop.return_window and p.mean_return() >= stop.target_return:
        return Phase.SUCCEEDED, f"mean return {p.mean_return():.1f} reached the target {stop.target_return:g}"
    if p.env_steps >= stop.max_env_steps:
        return Phase.FINISHED, f"step budget of {stop.max_env_steps:,} env steps spent"
    return None
