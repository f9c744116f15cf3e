"""Callbacks for a `periodic_eval.Evaluator` under test that remember what they were told (thread-safe: the
evaluator's thread calls them)."""

from __future__ import annotations

import threading

from a2c.evaluation import periodic_eval


class Recorder:
    """on_result / on_failure that remember what they were told."""

    def __init__(self) -> None:
        self.outcomes: list[periodic_eval.Outcome] = []
        self.failures: list[str] = []
        self.lock = threading.Lock()

    def result(self, outcome: periodic_eval.Outcome) -> None:
        with self.lock:
            self.outcomes.append(outcome)

    def failure(self, why: str) -> None:
        with self.lock:
            self.failures.append(why)
