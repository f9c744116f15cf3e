"""A trainer: a gRPC server for its players and one rank of the DDP group that trains the model.

Data flow, each round k: inbox waits for this trainer's players' rollouts (up to a deadline) ->
`distributed.exchange` (job-wide samples, episodes, stop) -> `learner.Learner.update` (DDP step,
gradients summed by sample count) -> weights version k+1 published on the board -> players fetch.
Trainer 0 also writes checkpoints and metrics.jsonl (`journal`, + TensorBoard), and every --eval-interval
iterations hands the new weights to its evaluator process (`evaluator`), whose results come back as eval
rows and a2c_eval_* metrics. Every trainer resumes from rank 0's newest checkpoint. SIGTERM/SIGINT: the
group agrees to stop at the next round, writes a final checkpoint, exits 0.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from a2c import agent as agent_mod
from a2c import (
    checkpoint,
    config,
    distributed,
    env,
    evaluator,
    inbox,
    journal,
    learner,
    metrics,
    rollout,
    schedule,
    termination,
    weights,
)
from a2c.service import server, servicers, tls
from a2c.v1 import trainer_pb2

log = logging.getLogger(__name__)
Phase = trainer_pb2.TrainerStatus.Phase


class Progress:
    """The job-wide numbers every rank agrees on (restored from checkpoints)."""

    def __init__(self, window: int) -> None:
        self.version = 0
        self.env_steps = 0
        self.episodes = 0
        self.returns: collections.deque[float] = collections.deque(maxlen=window)
        self.lengths: collections.deque[int] = collections.deque(maxlen=window)
        self.elapsed_before = 0.0

    def mean_return(self) -> float:
        return float(np.mean(self.returns)) if self.returns else float("nan")

    def state(self) -> dict[str, Any]:
        return {"version": self.version, "env_steps": self.env_steps, "episodes": self.episodes,
                "returns": list(self.returns), "lengths": list(self.lengths), "elapsed_s": self.elapsed_before}

    def load(self, s: dict[str, Any]) -> None:
        self.version, self.env_steps, self.episodes = int(s["version"]), int(s["env_steps"]), int(s["episodes"])
        self.returns.extend(s["returns"])
        self.lengths.extend(s["lengths"])
        self.elapsed_before = float(s.get("elapsed_s", 0.0))


class Trainer:
    def __init__(self, cfg: config.TrainerConfig, rank: int) -> None:
        cfg.check()
        self.cfg, self.rank = cfg, rank
        self.run_dir = Path(cfg.run_dir)
        self.stop_requested = threading.Event()
        self.serving = threading.Event()  # the gRPC health service says SERVING
        self.phase: int = Phase.STARTING
        self.message = ""
        self.started = time.monotonic()
        self.progress = Progress(cfg.stop.return_window)
        self.board = weights.WeightBoard()
        obs_space, act_space = env.spaces(cfg.env)
        self.spec = rollout.Spec(
            obs_shape=tuple(obs_space.shape or ()), obs_dtype=np.dtype(obs_space.dtype),
            action_shape=tuple(act_space.shape or ()),
            action_dtype=np.dtype(np.int64) if act_space.shape == () else np.dtype(np.float32),
            num_steps=cfg.algo.n_steps, num_actions=int(getattr(act_space, "n", 0)),
        )
        torch.manual_seed(cfg.env.seed)  # the same initial weights for a seed (DDP copies rank 0's anyway)
        self.model = agent_mod.Agent(obs_space, act_space, cfg.algo)
        max_queue = cfg.max_queue or 4 * max(1, cfg.players_per_trainer) * (1 + cfg.algo.max_policy_lag)
        self.inbox = inbox.Inbox(self.spec, rank, cfg.world_size, cfg.players_per_trainer, cfg.algo.max_policy_lag,
                                 max_queue, lambda: self.progress.version)
        self.steps_per_s = 0.0
        self.active_players = 0
        self.journal: journal.Journal | None = None  # trainer 0's metrics.jsonl (+ TensorBoard)
        self.evaluator: evaluator.Evaluator | None = None  # trainer 0's, with --eval-interval > 0

    # --- status (TrainerService.Status) -----------------------------------------------------------------
    def status(self) -> trainer_pb2.TrainerStatus:
        p = self.progress
        return trainer_pb2.TrainerStatus(
            iteration=p.version, env_steps=p.env_steps, mean_return=p.mean_return(), episodes=p.episodes,
            world_size=self.cfg.world_size, rank=self.rank, phase=Phase.Name(self.phase),
            target_return=self.cfg.stop.target_return,
            elapsed_s=p.elapsed_before + time.monotonic() - self.started, steps_per_second=self.steps_per_s,
            active_players=self.active_players, message=self.message,
        )

    def readiness(self) -> str:
        """"" once the group has formed and the first weights are published (health: SERVING); else why not."""
        return "" if self.serving.is_set() else f"not serving yet ({Phase.Name(self.phase)})"

    def request_stop(self, *_: object) -> None:
        self.stop_requested.set()
        self.inbox.close()

    # --- the loop ---------------------------------------------------------------------------------------
    def run(self) -> int:
        cfg = self.cfg
        max_bytes = cfg.max_message_mb << 20
        credentials = tls.server_credentials(cfg.tls_cert, cfg.tls_key, cfg.tls_ca)  # None: plaintext
        running = server.start(
            servicers.RolloutServicer(self.inbox, self.board, max_bytes * 64), servicers.WeightServicer(self.board),
            servicers.TrainerServicer(self.status), cfg.host, cfg.port, max_bytes,
            workers=16 + 4 * cfg.players_per_trainer, tls=credentials,
        )
        mode = "plaintext" if credentials is None else "mutual TLS" if cfg.tls_ca else "TLS"
        log.info("trainer %d: gRPC on port %d (%s)", self.rank, running.port, mode)
        group = distributed.setup(self.rank, cfg.world_size, cfg.master_addr, cfg.master_port, cfg.backend,
                                  cfg.device, cfg.dist_timeout_s)
        try:
            if self.rank == 0:
                self._open_records()
            self.learner = learner.Learner(self.model, cfg.algo, group.device)
            self._resume(group)
            self.board.publish(agent_mod.snapshot(self.model, self.progress.version))
            running.set_serving(True)
            self.serving.set()
            log.info("trainer %d ready: weights version %d published", self.rank, self.progress.version)
            metrics.labels(metrics.TRAINER_ITERATION).set(self.progress.version)
            for reason in inbox.REFUSAL_REASONS:  # a healthy run shows 0, not "no data"
                metrics.labels(metrics.TRAINER_ROLLOUTS_REFUSED, reason=reason).inc(0)
            ended = self._ended()
            if ended is not None:  # resumed from the checkpoint of a run that had already ended
                self.phase, self.message = ended[0], f"{ended[1]} (before this start)"
                return 0
            self.phase = Phase.TRAINING
            self._train(group)
            if self.rank == 0:
                self._checkpoint()
            return 0
        except Exception as exc:
            self.phase, self.message = Phase.FAILED, str(exc)
            raise
        finally:
            if self.phase in (Phase.SUCCEEDED, Phase.FINISHED):
                # Only a finished run tells players "done" (a failed or stopped trainer comes back and
                # they must still be there); keep serving until they all heard it, or linger_s; under the
                # controller until SIGTERM, so trainer 0's final status stays readable and no pod restarts.
                self.board.finish()
                if cfg.hold_when_done:
                    log.info("trainer %d: %s; serving the final status until SIGTERM", self.rank, self.message)
                    self.stop_requested.wait()
                else:
                    self.board.wait_told(set(self.inbox.active), cfg.linger_s)
            running.stop(grace_s=1.0)
            distributed.teardown()
            if self.evaluator is not None:  # after the linger: an evaluation in flight may have come back
                self.evaluator.close()
            if self.journal is not None:
                self.journal.close()

    def _open_records(self) -> None:
        cfg = self.cfg
        self.journal = journal.Journal(self.run_dir / "metrics.jsonl", cfg.tensorboard)
        if cfg.eval_interval > 0:
            self.evaluator = evaluator.Evaluator(cfg.env, cfg.algo, cfg.eval_episodes, cfg.env.seed,
                                                 self._record_eval, self._eval_failed)
            for counter in (metrics.EVALUATIONS, metrics.EVAL_SKIPPED, metrics.EVAL_FAILURES):
                metrics.labels(counter).inc(0)  # a healthy run shows 0, not "no data"

    def _resume(self, group: distributed.Group) -> None:
        state = checkpoint.load_latest(self.run_dir) if self.rank == 0 else None
        state = distributed.broadcast_object(state, group.device)  # type: ignore[assignment]
        if state is not None:
            assert isinstance(state, dict)
            self.learner.load_state(state)
            self.progress.load(state["progress"])
            log.info("trainer %d resumed at version %d, %d env steps", self.rank, self.progress.version,
                     self.progress.env_steps)

    def _elapsed(self) -> float:
        return self.progress.elapsed_before + time.monotonic() - self.started

    def _checkpoint(self) -> None:
        state = {**self.learner.state(), "progress": self.progress.state(),
                 # what `a2c eval` needs to rebuild the environment and the network
                 "config": {"env": dataclasses.asdict(self.cfg.env), "algo": dataclasses.asdict(self.cfg.algo)}}
        state["progress"]["elapsed_s"] = self._elapsed()
        path = checkpoint.save(self.run_dir, self.progress.version, state, self.cfg.keep_checkpoints)
        metrics.labels(metrics.TRAINER_CHECKPOINTS).inc()
        log.info("checkpoint %s", path)

    def _train(self, group: distributed.Group) -> None:
        cfg, p = self.cfg, self.progress
        phase_hist = {name: metrics.labels(metrics.TRAINER_PHASE_SECONDS, phase=name) for name in
                      ("wait_rollouts", "sync", "forward_backward", "allreduce", "optimizer", "publish")}
        first = True
        last_time, last_steps = time.monotonic(), p.env_steps
        try:
            while True:
                timeout = cfg.start_timeout_s if first else cfg.round_timeout_s
                if not self.inbox.active and not first:
                    timeout = 0.0  # no live players: contribute zero now rather than hold up the group
                rnd = self.inbox.take_round(p.version, 0.0 if self.stop_requested.is_set() else timeout)
                first = False
                t_sync = time.perf_counter()
                batch = (self.learner.batch(rnd.rollouts) if rnd.rollouts else
                         self.learner.empty_batch(self.spec.obs_shape, self.spec.obs_dtype, self.spec.action_shape,
                                                  self.spec.action_dtype))
                local_samples = int(batch["adv"].numel())
                eps_r = [x for r in rnd.rollouts for x in r.episode_returns]
                eps_l = [x for r in rnd.rollouts for x in r.episode_lengths]
                totals = distributed.exchange(local_samples, local_samples, eps_r, eps_l,
                                              self.stop_requested.is_set(), group.device)
                sync_s = time.perf_counter() - t_sync
                p.env_steps += totals.env_steps
                p.episodes += len(totals.episode_returns)
                p.returns.extend(totals.episode_returns)
                p.lengths.extend(totals.episode_lengths)
                if totals.stop_requested:
                    self.phase = Phase.STOPPING
                    return
                if totals.samples == 0:
                    time.sleep(0.2)  # nobody has data: poll, do not spin
                    continue
                self.learner.set_lr(schedule.learning_rate(cfg.algo.lr, cfg.algo.lr_schedule, p.env_steps,
                                                           cfg.stop.max_env_steps))
                stats = self.learner.update(batch, totals.samples)
                t_pub = time.perf_counter()
                p.version += 1
                snap = agent_mod.snapshot(self.model, p.version)
                self.board.publish(snap)
                publish_s = time.perf_counter() - t_pub
                self.active_players = len(self.inbox.active)
                now = time.monotonic()
                if now - last_time >= 1.0:
                    self.steps_per_s = (p.env_steps - last_steps) / (now - last_time)
                    last_time, last_steps = now, p.env_steps
                self._observe(phase_hist, rnd.waited_s, sync_s, stats, publish_s, local_samples)
                if self.journal is not None:
                    self.journal.write(self._journal_row(stats))
                if self.evaluator is not None and p.version % cfg.eval_interval == 0:
                    self._submit_eval(snap)
                if self.rank == 0 and p.version % cfg.checkpoint_interval == 0:
                    self._checkpoint()
                ended = self._ended()
                if ended is not None:
                    self.phase, self.message = ended
                    return
        finally:
            if self.evaluator is not None:
                ev = self.evaluator
                log.info("periodic evaluation: %d snapshots submitted, %d evaluated, %d skipped (evaluator busy), "
                         "%d failed", ev.submitted, ev.evaluated, ev.skipped, ev.failures)

    def _ended(self) -> tuple[int, str] | None:
        """(phase, why) once the target return is reached or the step budget spent; else None."""
        p, stop = self.progress, self.cfg.stop
        if len(p.returns) == stop.return_window and p.mean_return() >= stop.target_return:
            return Phase.SUCCEEDED, f"mean return {p.mean_return():.1f} reached the target {stop.target_return:g}"
        if p.env_steps >= stop.max_env_steps:
            return Phase.FINISHED, f"step budget of {stop.max_env_steps:,} env steps spent"
        return None

    def _observe(self, hist: dict[str, Any], wait_s: float, sync_s: float, stats: learner.UpdateStats,
                 publish_s: float, samples: int) -> None:
        p = self.progress
        hist["wait_rollouts"].observe(wait_s)
        hist["sync"].observe(sync_s)
        hist["publish"].observe(publish_s)
        for name, secs in stats.seconds.items():
            hist[name].observe(secs)
        metrics.labels(metrics.TRAINER_ITERATION).set(p.version)
        metrics.labels(metrics.TRAINER_SAMPLES).inc(samples)
        metrics.labels(metrics.TRAINER_ENV_STEPS).set(p.env_steps)
        metrics.labels(metrics.TRAINER_EPISODES).set(p.episodes)
        if p.returns:
            metrics.labels(metrics.TRAINER_MEAN_RETURN).set(p.mean_return())
        metrics.labels(metrics.TRAINER_LOSS, term="policy").set(stats.policy_loss)
        metrics.labels(metrics.TRAINER_LOSS, term="value").set(stats.value_loss)
        metrics.labels(metrics.TRAINER_LOSS, term="entropy").set(stats.entropy)
        metrics.labels(metrics.TRAINER_GRAD_NORM).set(stats.grad_norm)
        metrics.labels(metrics.TRAINER_LEARNING_RATE).set(self.learner.optimizer.param_groups[0]["lr"])

    def _journal_row(self, stats: learner.UpdateStats) -> dict[str, Any]:
        p = self.progress
        mean = p.mean_return()
        return {
            "iteration": p.version, "env_steps": p.env_steps,
            "mean_return": None if mean != mean else round(mean, 3), "episodes": p.episodes,
            "time_s": round(self._elapsed(), 3),
            "steps_per_s": round(self.steps_per_s, 1), "policy_loss": stats.policy_loss,
            "value_loss": stats.value_loss, "entropy": stats.entropy, "grad_norm": stats.grad_norm,
        }

    def _submit_eval(self, snap: weights.WeightSnapshot) -> None:
        # the tensors the players get, as they are: no copy, and never a wait on the evaluator
        assert self.evaluator is not None
        if self.evaluator.submit(snap.version, self.progress.env_steps, self._elapsed(), snap.tensors):
            metrics.labels(metrics.EVAL_SKIPPED).inc()

    def _record_eval(self, out: evaluator.Outcome) -> None:
        """An evaluation came back (on the evaluator's thread): an eval row and the a2c_eval_* metrics."""
        r = out.result
        row = {"iteration": out.version, "env_steps": out.env_steps, "time_s": round(out.time_s, 3),
               "eval_mean_return": r.mean_return, "eval_std_return": r.std_return,
               "eval_mean_length": r.mean_length, "eval_episodes": len(r.returns), "eval_seed": out.seed,
               "eval_seconds": round(out.seconds, 3)}
        if self.journal is not None:
            self.journal.write(row)
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

    def _eval_failed(self, why: str) -> None:
        metrics.labels(metrics.EVAL_FAILURES).inc()


def run(cfg: config.TrainerConfig) -> int:
    rank = cfg.resolved_rank()
    if cfg.tensorboard and rank == 0:
        try:
            journal.require_tensorboard()
        except journal.TensorBoardMissing as exc:
            log.error("%s", exc)
            return 2
    metrics.bind(cfg.job, "trainer", rank)
    torch.set_num_threads(cfg.torch_threads)
    Path(cfg.run_dir).mkdir(parents=True, exist_ok=True)
    try:
        trainer = Trainer(cfg, rank)  # makes the environment and the model: fails the same way on every restart
    except Exception as exc:
        return termination.cannot_start("trainer", exc)
    # /readyz says what the grpc health service says: a TLS port is out of the kubelet's grpc probe's reach
    port = metrics.serve(cfg.metrics_port, checks={"/readyz": trainer.readiness})
    signal.signal(signal.SIGTERM, trainer.request_stop)
    signal.signal(signal.SIGINT, trainer.request_stop)
    log.info("trainer %d/%d: %s, metrics port %d", rank, cfg.world_size, env.describe(cfg.env), port)
    code = trainer.run()
    log.info("trainer %d done: %s (%s)", rank, Phase.Name(trainer.phase), trainer.message)
    return code
