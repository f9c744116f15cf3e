"""A trainer: a gRPC server for its players and one rank of the DDP group that trains the model.

Data flow, each round k (`Trainer._train`): take round (`inbox`: this trainer's players' rollouts, up to a
deadline) -> batch (`learner`: advantages, returns) -> update (`learner`: the loss, its gradients summed
across trainers in one all-reduce that carries every trainer's `distributed.share` with them; `_agree` reads
the job-wide samples, episodes and stop flag from it; then the step) -> publish weights k+1 (players
fetch them) -> record (`recorder`: metrics; trainer 0's metrics.jsonl). Trainer 0 also checkpoints and hands
every --eval-interval-th snapshot to its evaluator process (`periodic_eval`). Every trainer resumes from
rank 0's newest checkpoint; `progress.ended` ends the run. SIGTERM/SIGINT: the group agrees to stop at the
next round, writes a final checkpoint, exits 0.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import secrets
import signal
import threading
from pathlib import Path

import torch

from a2c import config, termination
from a2c.envs import vector as env
from a2c.evaluation import periodic_eval
from a2c.learning import distributed, learner, progress, recorder
from a2c.model import agent as agent_mod
from a2c.model import checkpoint, weights
from a2c.observe import journal, metrics
from a2c.service import codec, inbox, rollout, server, shared_weights, tls
from a2c.service import status as status_mod

log = logging.getLogger(__name__)
# A finished run waits this long for the periodic evaluation in flight, so its last result is recorded.
EVAL_DRAIN_S = 60.0


class Trainer:
    def __init__(self, cfg: config.TrainerConfig, rank: int) -> None:
        cfg.check()
        self.cfg, self.rank = cfg, rank
        self.run_dir = Path(cfg.run_dir)
        self.stop_requested = threading.Event()
        self.serving = threading.Event()  # the gRPC health service says SERVING
        self.phase = status_mod.Phase.STARTING
        self.message = ""
        self.progress = progress.Progress(cfg.stop.return_window)
        self.recorder = recorder.Recorder(self.progress)
        self.board = weights.WeightBoard()
        self.totals = distributed.Totals()  # the last round's, job-wide (`_agree`)
        self.generation = 0  # drawn by rank 0 when the group forms (`_resume`)
        obs_space, act_space = env.spaces(cfg.env)
        self.spec = rollout.Spec.of(obs_space, act_space, cfg.algo.n_steps)
        torch.manual_seed(cfg.env.seed)  # the same initial weights for a seed (DDP copies rank 0's anyway)
        self.model = agent_mod.Agent(obs_space, act_space, cfg.algo)
        max_queue = cfg.max_queue or 4 * max(1, cfg.players_per_trainer) * (1 + cfg.algo.max_policy_lag)
        self.inbox = inbox.Inbox(self.spec, rank, cfg.world_size, cfg.players_per_trainer, cfg.algo.max_policy_lag,
                                 max_queue, lambda: self.progress.version)
        self.evaluator: periodic_eval.Evaluator | None = None  # trainer 0's, with --eval-interval > 0
        if rank == 0 and cfg.eval_interval > 0:
            # --keep-best: best.pt carries the config every checkpoint carries (`_checkpoint`)
            best = checkpoint.Best(self.run_dir, {"env": dataclasses.asdict(cfg.env),
                                                  "algo": dataclasses.asdict(cfg.algo)}) if cfg.keep_best else None
            self.evaluator = periodic_eval.Evaluator(cfg.env, cfg.algo, cfg.eval_episodes, cfg.env.seed,
                                                     self.recorder.evaluation, self.recorder.evaluation_failed,
                                                     best=best)

    def status(self) -> status_mod.TrainerStatus:
        """What TrainerService.Status answers (`codec.status_message` is its wire form)."""
        p = self.progress
        return status_mod.TrainerStatus(
            phase=self.phase, rank=self.rank, world_size=self.cfg.world_size, iteration=p.version,
            env_steps=p.env_steps, episodes=p.episodes, mean_return=p.mean_return(),
            target_return=self.cfg.stop.target_return, elapsed_s=p.elapsed(),
            steps_per_second=self.recorder.steps_per_s, active_players=self.recorder.active_players,
            message=self.message)

    def readiness(self) -> str:
        """"" once the group has formed and the first weights are published (health: SERVING); else why not."""
        return "" if self.serving.is_set() else f"not serving yet ({self.phase.value})"

    def request_stop(self, *_: object) -> None:
        self.stop_requested.set()
        self.inbox.close()

    def run(self) -> int:
        cfg = self.cfg
        credentials = tls.server_credentials(cfg.tls_cert, cfg.tls_key, cfg.tls_ca)  # None: plaintext
        shared = shared_weights.Writer(cfg.weights_dir) if cfg.weights_dir else None
        running = server.start(self.inbox, self.board, lambda: codec.status_message(self.status()), cfg.host,
                               cfg.port, cfg.max_message_mb << 20, workers=16 + 4 * cfg.players_per_trainer,
                               tls=credentials, shared=shared)
        mode = "plaintext" if credentials is None else "mutual TLS" if cfg.tls_ca else "TLS"
        log.info("trainer %d: gRPC on port %d (%s)", self.rank, running.port, mode)
        try:
            group = distributed.setup(self.rank, cfg.world_size, cfg.master_addr, cfg.master_port, cfg.backend,
                                      cfg.device, cfg.dist_timeout_s, self.stop_requested)
            if self.rank == 0:
                self.recorder.open(self.run_dir, cfg.tensorboard)
            if self.evaluator is not None:
                self.evaluator.warm_up()  # starts its process unless `run` forked it
            self.learner = learner.Learner(self.model, cfg.algo, group.device, distributed.GradientSum())
            if arithmetic := self.model.describe_precision(group.device.type):
                log.info("trainer %d: %s", self.rank, arithmetic)
            self._resume(group)
            self.board.publish(self._snapshot())
            running.set_serving(True)
            self.serving.set()
            log.info("trainer %d ready: weights version %d (generation %x) published", self.rank,
                     self.progress.version, self.generation)
            self.recorder.start(evaluating=self.evaluator is not None)
            ended = progress.ended(self.progress, cfg.stop)
            if ended is not None:  # resumed from the checkpoint of a run that had already ended
                self.phase, self.message = ended[0], f"{ended[1]} (before this start)"
                return 0
            self.phase = status_mod.Phase.TRAINING
            self._train(group)
            if self.rank == 0:
                self._checkpoint()
            return 0
        except distributed.Stopped as exc:  # nothing trained yet, nothing to save
            self.phase, self.message = status_mod.Phase.STOPPING, str(exc)
            log.info("trainer %d stops: %s", self.rank, exc)
            return 0
        except Exception as exc:
            self.phase, self.message = status_mod.Phase.FAILED, str(exc)
            raise
        finally:
            if self.phase.final:
                # Only a finished run tells players "done" (a failed or stopped trainer comes back and
                # they must still be there); keep serving until they all heard it, or linger_s; under the
                # controller until SIGTERM, so trainer 0's final status stays readable and no pod restarts.
                self.board.finish()
                if cfg.hold_when_done:
                    log.info("trainer %d: %s; serving the final status until SIGTERM", self.rank, self.message)
                    self.stop_requested.wait()
                else:
                    self.board.wait_told(set(self.inbox.active), cfg.linger_s)
                if self.evaluator is not None and not self.evaluator.drain(EVAL_DRAIN_S):
                    log.warning("trainer 0: the last periodic evaluation did not end within %.0f s: abandoned",
                                EVAL_DRAIN_S)
            running.stop(grace_s=1.0)
            if shared is not None:
                shared.close()
            made = getattr(self, "learner", None)  # made once the group has formed
            if made is not None:
                made.release()  # DDP before its process group
            distributed.teardown()
            if self.evaluator is not None:  # a failed or stopped run abandons an evaluation in flight
                self.evaluator.close()
            self.recorder.close()

    def _train(self, group: distributed.Group) -> None:
        """Rounds until the run ends or the group agrees to stop."""
        cfg, p = self.cfg, self.progress
        first = True
        while True:
            rnd = self._take_round(first)
            first = False
            laps = recorder.Laps(wait_rollouts=rnd.waited_s)
            with laps.timed("batch"):
                batch = (self.learner.batch(rnd.rollouts, p.version) if rnd.rollouts
                         else self.learner.empty_batch(self.spec))
            # one collective: the gradients, and every trainer's counts, episodes and stop flag with them
            share = distributed.share(batch.samples, batch.samples, *rnd.episodes(), self.stop_requested.is_set(),
                                      group.rank, group.world_size)
            stats = self.learner.update(batch, self._agree, share)
            if self.totals.stop_requested:  # no step: the checkpoint holds the weights every trainer has
                self.phase = status_mod.Phase.STOPPING
                return
            if stats is None:
                self.stop_requested.wait(0.2)  # nobody has data: poll, do not spin
                continue
            with laps.timed("publish"):
                p.version += 1
                snap = self._snapshot()
                self.board.publish(snap)
            self.recorder.round(stats, laps, len(self.inbox.active))
            # the evaluator gets the tensors the players get, as they are: no copy, and never a wait on it
            if self.evaluator and p.version % cfg.eval_interval == 0 and self.evaluator.submit(
                    snap.version, p.env_steps, p.elapsed(), snap.tensors):
                self.recorder.evaluation_skipped()  # it replaced a snapshot still waiting for the busy evaluator
            if self.rank == 0 and p.version % cfg.checkpoint_interval == 0:
                self._checkpoint()
            ended = progress.ended(p, cfg.stop)
            if ended is not None:
                self.phase, self.message = ended[0], ended[1]
                return

    def _agree(self, shares: torch.Tensor) -> int:
        """Between the update's all-reduce and its step: the job's round from every trainer's summed share
        (the same on each), counted; the samples the step divides by, or 0 for no step (a stop, no data)."""
        totals = self.totals = distributed.totals(shares)
        p = self.progress
        p.add(totals.env_steps, totals.episode_returns, totals.episode_lengths)
        if totals.stop_requested or totals.samples == 0:
            return 0
        self.learner.follow_schedule(p.env_steps, self.cfg.stop.max_env_steps)
        return totals.samples

    def _take_round(self, first: bool) -> inbox.Round:
        """This trainer's rollouts for the current version. The first round waits for players to connect; a
        trainer without live players contributes zero at once rather than hold up the group; a stop does not wait."""
        waits = not self.stop_requested.is_set() and (first or bool(self.inbox.active))
        timeout = (self.cfg.start_timeout_s if first else self.cfg.round_timeout_s) if waits else 0.0
        return self.inbox.take_round(self.progress.version, timeout)

    def _snapshot(self) -> weights.WeightSnapshot:
        snap = agent_mod.snapshot(self.model, self.progress.version)
        snap.generation = self.generation
        return snap

    def _resume(self, group: distributed.Group) -> None:
        """Rank 0's newest checkpoint on every rank, and this run's generation: a group restarted from an older
        checkpoint numbers versions again from there, so its weights are named (generation, version), and the
        inbox refuses rollouts acted with the weights of another run under the same version."""
        state = checkpoint.load_latest(self.run_dir) if self.rank == 0 else None
        drawn = secrets.randbits(63) | 1 if self.rank == 0 else 0  # never 0: that means "not stated"
        state, self.generation = distributed.broadcast_object((state, drawn), group.device)  # type: ignore[misc]
        self.inbox.generation = self.generation
        if state is not None:
            assert isinstance(state, dict)
            self.learner.load_state(state)
            self.progress.load(state["progress"])
            log.info("trainer %d resumed at version %d, %d env steps", self.rank, self.progress.version,
                     self.progress.env_steps)

    def _checkpoint(self) -> None:
        state = {**self.learner.state(), "progress": self.progress.state(),
                 # what `a2c eval` needs to rebuild the environment and the network
                 "config": {"env": dataclasses.asdict(self.cfg.env), "algo": dataclasses.asdict(self.cfg.algo)}}
        self.recorder.checkpoint(checkpoint.save(self.run_dir, self.progress.version, state,
                                                 self.cfg.keep_checkpoints))


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
    # What exists now (imports, the model) lives as long as the process: the cyclic collector skips it from
    # here on (a full collection of torch's objects took 0.15 s: `learner.release` runs one at the end).
    gc.freeze()
    if trainer.evaluator is not None:  # before this process starts a thread (a2c/evaluation/periodic_eval.py)
        trainer.evaluator.fork()
    # /readyz says what the grpc health service says: a TLS port is out of the kubelet's grpc probe's reach
    port = metrics.serve(cfg.metrics_port, checks={"/readyz": trainer.readiness})
    signal.signal(signal.SIGTERM, trainer.request_stop)
    signal.signal(signal.SIGINT, trainer.request_stop)
    log.info("trainer %d/%d: %s, metrics port %d", rank, cfg.world_size, env.describe(cfg.env), port)
    code = trainer.run()
    log.info("trainer %d done: %s (%s)", rank, trainer.phase.value, trainer.message)
    return code
