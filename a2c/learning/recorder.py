"""What a trainer records, beside the journal: Prometheus metrics every round, and on trainer 0 the journal's
rows (metrics.jsonl, TensorBoard): one training row per update and one eval row per periodic evaluation.

Data flow: the trainer's round -> `Recorder.round` (the update's loss terms and phase timings, the job-wide
`progress`) -> a2c_trainer_* metrics + a training row; trainer 0's `periodic_eval.Evaluator` -> `evaluation`
/ `evaluation_failed` on its reader thread -> a2c_eval_* metrics + an eval row. The trainer's loop only
says what happened; the names, labels and row keys live here.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path

from a2c.evaluation import periodic_eval
from a2c.learning import learner, progress
from a2c.observe import journal, metrics
from a2c.service import inbox

log = logging.getLogger(__name__)

PHASES = ("wait_rollouts", "batch", "forward_backward", "allreduce", "optimizer", "publish")


class Laps:
    """Seconds spent in the phases of one round, by name (`Recorder.round` observes them)."""

    def __init__(self, **seconds: float) -> None:
        self.seconds = dict(seconds)

    @contextlib.contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start


class Recorder:
    """Every rank's metrics; trainer 0's journal once `open` (thread-safe: the evaluator's thread writes too)."""

    def __init__(self, p: progress.Progress) -> None:
        self.progress = p
        self.journal: journal.Journal | None = None
        self.steps_per_s = 0.0  # env steps per second, over the last second or more
        self.active_players = 0  # this trainer's players that delivered in the last round
        self._rate_from = (time.monotonic(), 0)
        self._phases = {name: metrics.labels(metrics.TRAINER_PHASE_SECONDS, phase=name) for name in PHASES}

    def open(self, run_dir: Path, tensorboard: str = "") -> None:
        """Trainer 0: append to <run_dir>/metrics.jsonl (and TensorBoard event files in `tensorboard`)."""
        self.journal = journal.Journal(run_dir / journal.FILE, tensorboard)

    def start(self, evaluating: bool) -> None:
        """Before the first round: the iteration resumed from, and a 0 (not "no data") for every counter a
        dashboard or alert divides by."""
        metrics.labels(metrics.TRAINER_ITERATION).set(self.progress.version)
        for reason in inbox.REFUSAL_REASONS:
            metrics.labels(metrics.TRAINER_ROLLOUTS_REFUSED, reason=reason).inc(0)
        if evaluating:
            for counter in (metrics.EVALUATIONS, metrics.EVAL_SKIPPED, metrics.EVAL_FAILURES):
                metrics.labels(counter).inc(0)
        self._rate_from = (time.monotonic(), self.progress.env_steps)

    def round(self, stats: learner.UpdateStats, laps: Laps, active_players: int) -> None:
        """One update: where its time went, the job-wide numbers, the loss terms; trainer 0 writes its row."""
        p = self.progress
        self.active_players = active_players
        now, (since, steps) = time.monotonic(), self._rate_from
        if now - since >= 1.0:
            self.steps_per_s = (p.env_steps - steps) / (now - since)
            self._rate_from = (now, p.env_steps)
        for name, secs in {**laps.seconds, **stats.seconds}.items():
            self._phases[name].observe(secs)
        metrics.labels(metrics.TRAINER_ITERATION).set(p.version)
        metrics.labels(metrics.TRAINER_SAMPLES).inc(stats.samples)
        metrics.labels(metrics.TRAINER_ENV_STEPS).set(p.env_steps)
        metrics.labels(metrics.TRAINER_EPISODES).set(p.episodes)
        if p.returns:
            metrics.labels(metrics.TRAINER_MEAN_RETURN).set(p.mean_return())
        metrics.labels(metrics.TRAINER_LOSS, term="policy").set(stats.policy_loss)
        metrics.labels(metrics.TRAINER_LOSS, term="value").set(stats.value_loss)
        metrics.labels(metrics.TRAINER_LOSS, term="entropy").set(stats.entropy)
        metrics.labels(metrics.TRAINER_GRAD_NORM).set(stats.grad_norm)
        metrics.labels(metrics.TRAINER_LEARNING_RATE).set(stats.learning_rate)
        if self.journal is not None:
            mean = p.mean_return()
            self.journal.write({
                "iteration": p.version, "env_steps": p.env_steps,
                "mean_return": None if mean != mean else round(mean, 3), "episodes": p.episodes,
                "time_s": round(p.elapsed(), 3), "steps_per_s": round(self.steps_per_s, 1),
                "policy_loss": stats.policy_loss, "value_loss": stats.value_loss, "entropy": stats.entropy,
                "grad_norm": stats.grad_norm,
            })

    def checkpoint(self, path: Path) -> None:
        metrics.labels(metrics.TRAINER_CHECKPOINTS).inc()
        log.info("checkpoint %s", path)

    def evaluation_skipped(self) -> None:
        """A snapshot replaced one still waiting for the busy evaluator."""
        metrics.labels(metrics.EVAL_SKIPPED).inc()

    def evaluation(self, out: periodic_eval.Outcome) -> None:
        """An evaluation came back (on the evaluator's thread): an eval row and the a2c_eval_* metrics."""
        r = out.result
        if self.journal is not None:
            self.journal.write({
                "iteration": out.version, "env_steps": out.env_steps, "time_s": round(out.time_s, 3),
                "eval_mean_return": r.mean_return, "eval_std_return": r.std_return, "eval_mean_length": r.mean_length,
                "eval_episodes": len(r.returns), "eval_seed": out.seed, "eval_seconds": round(out.seconds, 3),
            })
        metrics.labels(metrics.EVAL_MEAN_RETURN).set(r.mean_return)
        metrics.labels(metrics.EVAL_STD_RETURN).set(r.std_return)
        metrics.labels(metrics.EVAL_MEAN_LENGTH).set(r.mean_length)
        metrics.labels(metrics.EVAL_ITERATION).set(out.version)
        metrics.labels(metrics.EVAL_ENV_STEPS).set(out.env_steps)
        metrics.labels(metrics.EVAL_SECONDS).set(out.seconds)
        metrics.labels(metrics.EVALUATIONS).inc()
        log.info("evaluation of version %d (%d env steps): return %.2f ± %.2f, length %.1f over %d greedy episodes "
                 "(%.1f s)", out.version, out.env_steps, r.mean_return, r.std_return, r.mean_length, len(r.returns),
                 out.seconds)

    def evaluation_failed(self, why: str) -> None:
        """An evaluation was lost (the evaluator logged why)."""
        metrics.labels(metrics.EVAL_FAILURES).inc()

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()
