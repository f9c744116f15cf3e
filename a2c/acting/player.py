"""A player: steps E environments with policy version k, uploads T-step rollouts to its trainer
(player j -> trainer j mod N), and pulls newer weights.

Data flow: `WeightService.Fetch` (the first weights) -> agent -> `env.Env.step` x T -> `rollout.Rollout`
-> `RolloutService.Exchange`: the rollout up and, in the same call, version k+1 down once the trainers
have stepped -> ...  (one round trip per round; a rollout too large for one message goes as Upload then
Fetch, `client.TrainerClient.exchange`).

With max_policy_lag L = 0 the player waits for version k+1 after each upload (strict on-policy A2C).
With L > 0 it may upload up to L+1 rollouts acted with the same version, so it keeps stepping while
the trainers train (the lag is bounded by the trainer, which refuses anything older than k - L; the
trainer corrects for it with V-trace).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time

import numpy as np
import torch

from a2c import config, ports, termination
from a2c.envs import vector as env
from a2c.model import agent as agent_mod
from a2c.model import sde
from a2c.observe import metrics
from a2c.service import client as client_mod
from a2c.service import rollout, tls

log = logging.getLogger(__name__)
WAIT_S = 2.0  # longest long-poll for new weights per call (a call is repeated until they come)
FIRST_CONTACT_S = 10.0  # how long a starting player waits for its trainer's port before its first call


class Collector:
    """Steps the environments and packs rollouts with the returns and lengths of the episodes that ended.

    With gSDE it holds this player's exploration matrices, seeded with the player's seed."""

    def __init__(self, environment: env.Env, model: agent_mod.Agent, player_id: int, num_steps: int, seed: int,
                 sde_sample_freq: int = -1) -> None:
        self.env, self.model, self.player_id, self.t = environment, model, player_id, num_steps
        self.obs = environment.reset(seed)
        self.exploration = sde.Exploration(environment.num_envs, sde_sample_freq, seed) if model.sde else None

    def collect(self, version: int, generation: int = 0) -> rollout.Rollout:
        t, n = self.t, self.env.num_envs
        obs = np.empty((t + 1, n, *self.obs.shape[1:]), dtype=self.obs.dtype)
        act_shape = self.model.action_shape
        actions = np.empty((t, n, *act_shape), dtype=np.int64 if self.model.discrete else np.float32)
        rewards = np.empty((t, n), dtype=np.float32)
        terminated = np.empty((t, n), dtype=bool)
        truncated = np.empty((t, n), dtype=bool)
        valid = np.empty((t, n), dtype=bool)
        logprobs = np.empty((t, n), dtype=np.float32)
        values = np.empty((t, n), dtype=np.float32)
        final_obs: list[np.ndarray] = []
        final_index: list[int] = []
        returns: list[float] = []
        lengths: list[int] = []
        for step in range(t):
            obs[step] = self.obs
            matrices = None if self.exploration is None else self.exploration.at(step, self.model.log_std)
            a, lp, v = self.model.act(self.obs, sde_matrices=matrices)
            actions[step], logprobs[step], values[step] = a, lp, v
            out = self.env.step(a)
            rewards[step], terminated[step], truncated[step], valid[step] = (
                out.rewards, out.terminated, out.truncated, out.valid)
            for i, fo in out.final_obs.items():
                final_obs.append(fo)
                final_index.append(step * n + i)
            for ret, length in out.episodes.values():  # Atari: whole games, unclipped, not lives
                returns.append(ret)
                lengths.append(length)
            self.obs = out.obs
        obs[t] = self.obs
        shape = self.obs.shape[1:]
        return rollout.Rollout(
            player_id=self.player_id, policy_version=version, obs=obs, actions=actions, rewards=rewards,
            terminated=terminated, truncated=truncated, valid=valid, logprobs=logprobs, values=values,
            final_obs=(np.stack(final_obs).astype(self.obs.dtype) if final_obs
                       else np.zeros((0, *shape), self.obs.dtype)),
            final_index=np.asarray(final_index, dtype=np.int64),
            episode_returns=returns, episode_lengths=lengths, generation=generation,
        )


def run(cfg: config.PlayerConfig) -> int:
    index = cfg.resolved_index()
    credentials = tls.channel_credentials(cfg.tls_ca, cfg.tls_cert, cfg.tls_key)  # None: plaintext
    address = cfg.resolved_trainer_address()
    metrics.bind(cfg.job, "player", index)
    port = metrics.serve(cfg.metrics_port)
    torch.set_num_threads(cfg.torch_threads)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    seed = env.player_seed(cfg.env.seed, index, cfg.env.num_envs)
    torch.manual_seed(seed)
    try:  # the environment and the model fail the same way on every restart
        environment = env.Env(cfg.env, normalize_reward_gamma=cfg.algo.gamma if cfg.algo.normalize_reward else None)
        model = agent_mod.Agent(environment.observation_space, environment.action_space, cfg.algo)
    except Exception as exc:
        return termination.cannot_start("player", exc)
    model.eval()
    model.hold_bf16()  # bf16 (auto on this CPU): the pixel extractor's weights in bf16 (acting 145 against 273 us)
    client = client_mod.TrainerClient(address, retry_for_s=cfg.connect_timeout_s, tls=credentials, stop=stop,
                                      weights_dir=cfg.weights_dir)
    arithmetic = model.describe_precision("cpu")
    log.info("player %d: %d x %s, trainer %s, metrics port %d%s", index, environment.num_envs, cfg.env.env_id,
             address, port, f", {arithmetic}" if arithmetic else "")
    with contextlib.suppress(ValueError):  # a gRPC target URI is left to gRPC
        # the first call finds the trainer's port open (a2c/ports.py); a trainer not listening by then is left
        # to the client's retries
        ports.await_listening(*ports.split(address), min(FIRST_CONTACT_S, cfg.connect_timeout_s), stop)
    try:
        done = _loop(cfg, index, environment, model, client, seed, stop)
        log.info("player %d stops: %s", index, "training finished" if done else "signal")
        if done and cfg.hold_when_done:
            log.info("player %d: waiting for SIGTERM (--hold-when-done)", index)
            stop.wait()
        return 0
    except client_mod.Stopped as exc:
        log.info("player %d stops: signal (%s)", index, exc)
        return 0
    finally:
        client.close()
        environment.close()


def _loop(cfg: config.PlayerConfig, index: int, environment: env.Env, model: agent_mod.Agent,
          client: client_mod.TrainerClient, seed: int, stop: threading.Event) -> bool:
    """Act, upload and fetch until training ends (True) or a signal stops us (False)."""
    snap, done = _wait_weights(client, -1, stop, index)
    if snap is None:
        return done
    agent_mod.load_snapshot(model, snap)
    # (generation, version) names the weights: a trainer group restarted from a checkpoint reuses versions
    version, generation, uploads_at_version = snap.version, snap.generation, 0
    joined = 0  # the generation of the trainer group this player has completed a round with
    collector = Collector(environment, model, index, cfg.algo.n_steps, seed, cfg.algo.sde_sample_freq)
    m_steps = metrics.labels(metrics.PLAYER_ENV_STEPS)
    for code in ("INVALID_ARGUMENT", "FAILED_PRECONDITION"):  # a healthy run shows 0, not "no data"
        metrics.labels(metrics.PLAYER_UPLOAD_ERRORS, code=code).inc(0)
    while not stop.is_set() and not done:
        start = time.perf_counter()
        r = collector.collect(version, generation)
        elapsed = time.perf_counter() - start
        m_steps.inc(r.num_samples)
        metrics.labels(metrics.PLAYER_STEPS_PER_SECOND).set(r.num_samples / max(elapsed, 1e-9))
        metrics.labels(metrics.PLAYER_POLICY_VERSION).set(version)
        for ret, length in zip(r.episode_returns, r.episode_lengths, strict=True):
            metrics.labels(metrics.PLAYER_EPISODES).inc()
            metrics.labels(metrics.PLAYER_EPISODE_RETURN).observe(ret)
            metrics.labels(metrics.PLAYER_EPISODE_LENGTH).observe(length)
        trainer_version, snap = version, None
        # the last rollout this version may act (always, on-policy): the same call waits for the next weights
        last = uploads_at_version + 1 > cfg.algo.max_policy_lag
        t0 = time.perf_counter()
        try:
            reply, sent = client.exchange(r, wait_s=WAIT_S if last else 0.0)
            # the trainer says how long it held the call waiting for weights: the rest was the upload
            metrics.labels(metrics.PLAYER_UPLOAD_SECONDS).observe(max(0.0, time.perf_counter() - t0 - reply.waited_s))
            if last:
                metrics.labels(metrics.PLAYER_FETCH_SECONDS).observe(reply.waited_s)
            metrics.labels(metrics.PLAYER_UPLOAD_BYTES).inc(sent)
            trainer_version, done, snap = reply.version, reply.done, reply.snapshot
            uploads_at_version += 1
            if r.generation != joined:  # once per start of the trainer group: when this player caught up with it
                joined = r.generation
                log.info("player %d: first round with the trainers' generation %x done (version %d)", index,
                         joined, r.policy_version)
        except client_mod.Refused as ref:
            metrics.labels(metrics.PLAYER_UPLOAD_ERRORS, code=ref.code.name).inc()
            log.warning("rollout refused: %s", ref)
            uploads_at_version = cfg.algo.max_policy_lag + 1  # fetch newer weights before going on
        metrics.labels(metrics.PLAYER_POLICY_LAG).set(max(0, trainer_version - version))
        if done:
            break
        if snap is None and (trainer_version != version or uploads_at_version > cfg.algo.max_policy_lag):
            snap, done = _wait_weights(client, version, stop, index, generation)
        if snap is not None:
            agent_mod.load_snapshot(model, snap)
            version, generation, uploads_at_version = snap.version, snap.generation, 0
    return done


def _wait_weights(client: client_mod.TrainerClient, since: int, stop: threading.Event, player_id: int,
                  since_generation: int = 0) -> tuple[agent_mod.weights.WeightSnapshot | None, bool]:
    """Long-poll for weights other than version `since` of `since_generation` until they arrive, training ends
    or we are stopped."""
    while not stop.is_set():
        t0 = time.perf_counter()
        snap, done = client.fetch(since, wait_s=WAIT_S, player_id=player_id, since_generation=since_generation)
        metrics.labels(metrics.PLAYER_FETCH_SECONDS).observe(time.perf_counter() - t0)
        if snap is not None or done:
            return snap, done
    return None, False
