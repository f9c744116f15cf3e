"""The periodic evaluator's failure policy: a lost evaluation never disturbs training.

An evaluator process that dies, or an evaluation that raises, records nothing: the failure is logged,
counted, and told to `on_failure` (trainer 0's recorder: the a2c_eval_failures metric), and evaluation goes
on with the next snapshot (a dead process is started afresh for it), up to `max_failures` times; after
that evaluation stops for the run (`on_give_up`) and training goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


class Failures:
    """Counts the evaluator's failures and decides when to give up (see the module docstring)."""

    def __init__(self, max_failures: int, on_give_up: Callable[[], object],
                 on_failure: Callable[[str], object] | None = None) -> None:
        self.max_failures = max_failures
        self.count = 0
        self.on_give_up, self.on_failure = on_give_up, on_failure

    def record(self, why: str, restart: bool) -> None:
        """One failure, `why`; restart: the process died and is started afresh for the next snapshot."""
        self.count += 1
        if self.count > self.max_failures:
            self.on_give_up()
            log.error("%s; %d failures, no more periodic evaluation in this run (training goes on)",
                      why, self.count)
        else:
            log.warning("%s; %s (failure %d of %d allowed)", why,
                        "restarting it for the next snapshot" if restart else "evaluating the next snapshot",
                        self.count, self.max_failures)
        if self.on_failure is not None:
            try:
                self.on_failure(why)
            except Exception:
                log.exception("recording an evaluator failure failed")
