"""player.Collector: rollouts that pass validation and record exactly what the environments did."""

from __future__ import annotations

import signal
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from a2c import config
from a2c.acting import player
from a2c.envs import vector as env
from a2c.model import agent
from a2c.service import rollout
from tests.support.collectors import collector, spec_for
from tests.support.procs import free_port, kill, spawn, wait_for


def test_same_step_rollouts_replay_exactly_on_reference_envs() -> None:
    """Replays the recorded actions on plain gymnasium envs (seeded like the sync vector env's copies) and
    checks every observation, reward, flag, final obs and finished episode, over two consecutive rollouts."""
    cfg = config.EnvConfig(num_envs=2, env_kwargs='{"max_episode_steps": 7}')
    t, seed = 12, 4
    c = collector(cfg, t, seed)
    refs = [gym.make("CartPole-v1", max_episode_steps=7) for _ in range(2)]
    ref_obs = [ref.reset(seed=seed + i)[0] for i, ref in enumerate(refs)]
    ep_ret, ep_len = [0.0, 0.0], [0, 0]
    try:
        for version in (5, 6):
            r = c.collect(version)
            rollout.validate(r, spec_for(c.env, t))
            assert (r.player_id, r.policy_version) == (3, version)
            assert r.valid.all()
            finals = dict(zip(r.final_index.tolist(), r.final_obs, strict=True))
            exp_returns, exp_lengths = [], []
            for step in range(t):
                for i, ref in enumerate(refs):
                    assert np.array_equal(r.obs[step, i], ref_obs[i])
                    obs, rew, term, trunc, _ = ref.step(int(r.actions[step, i]))
                    assert r.rewards[step, i] == rew
                    assert (r.terminated[step, i], r.truncated[step, i]) == (term, trunc)
                    ep_ret[i] += float(rew)
                    ep_len[i] += 1
                    if term or trunc:
                        assert np.array_equal(finals.pop(step * 2 + i), obs)
                        exp_returns.append(ep_ret[i])
                        exp_lengths.append(ep_len[i])
                        ep_ret[i], ep_len[i] = 0.0, 0
                        obs, _ = ref.reset()
                    ref_obs[i] = obs
            assert finals == {}, "a final obs for a step that did not end an episode"
            assert np.array_equal(r.obs[t], np.stack(ref_obs)), "obs[T] is the bootstrap observation"
            assert r.episode_returns == exp_returns and r.episode_lengths == exp_lengths
            assert len(exp_returns) >= 2
        # the agent's own bookkeeping: log-probs and values are those of the acting policy
        lp, _, v = c.model.evaluate(torch.as_tensor(r.obs[:t].reshape(-1, 4)), torch.as_tensor(r.actions.reshape(-1)))
        assert np.allclose(r.logprobs.reshape(-1), lp.detach().numpy(), atol=1e-5)
        assert np.allclose(r.values.reshape(-1), v.detach().numpy(), atol=1e-5)
    finally:
        c.env.close()
        for ref in refs:
            ref.close()


def test_next_step_rollouts_count_only_valid_steps() -> None:
    """CartPole's native vector env: the reset step is invalid, earns nothing and is not part of an episode."""
    t, n = 40, 4
    c = collector(config.EnvConfig(num_envs=n), t, seed=1)
    running_ret = np.zeros(n)
    running_len = np.zeros(n, np.int64)
    try:
        for version in range(3):
            r = c.collect(version)
            rollout.validate(r, spec_for(c.env, t))
            assert r.final_obs.shape == (0, 4) and r.final_index.shape == (0,)
            assert not r.valid.all(), "40 steps of 4 random CartPoles see a reset step"
            assert not (r.terminated & ~r.valid).any() and not (r.truncated & ~r.valid).any()
            exp_returns, exp_lengths = [], []
            for step in range(t):
                for i in range(n):
                    if r.valid[step, i]:
                        running_ret[i] += r.rewards[step, i]
                        running_len[i] += 1
                    if r.terminated[step, i] or r.truncated[step, i]:
                        exp_returns.append(float(running_ret[i]))
                        exp_lengths.append(int(running_len[i]))
                        running_ret[i], running_len[i] = 0.0, 0
                        if step + 1 < t:
                            assert not r.valid[step + 1, i], "the step after an end is the reset step"
                        # next-step mode: obs[t+1] IS the terminal observation
                        x, theta = r.obs[step + 1, i, 0], r.obs[step + 1, i, 2]
                        assert abs(theta) > 0.2095 or abs(x) > 2.4
            assert r.episode_returns == exp_returns and r.episode_lengths == exp_lengths
            assert r.episode_returns == [float(n) for n in r.episode_lengths], "CartPole pays 1 per step"
            assert r.num_samples == int(r.valid.sum())
    finally:
        c.env.close()


def test_consecutive_rollouts_continue_from_the_bootstrap_obs() -> None:
    c = collector(config.EnvConfig(num_envs=2), 6, seed=2)
    try:
        first, second = c.collect(0), c.collect(1)
        assert np.array_equal(first.obs[-1], second.obs[0])
    finally:
        c.env.close()


def test_box_actions_rollout_validates() -> None:
    t = 8
    c = collector(config.EnvConfig(env_id="Pendulum-v1", num_envs=2), t, seed=0)
    try:
        r = c.collect(0)
        rollout.validate(r, spec_for(c.env, t))
        assert r.actions.dtype == np.float32 and r.actions.shape == (t, 2, 1)
        # the unclipped sample is what is recorded (its log-prob is the behaviour log-prob)
        lp, _, _ = c.model.evaluate(torch.as_tensor(r.obs[:t].reshape(-1, 3)),
                                    torch.as_tensor(r.actions.reshape(-1, 1)))
        assert np.allclose(r.logprobs.reshape(-1), lp.detach().numpy(), atol=1e-5)
    finally:
        c.env.close()


@pytest.mark.slow
def test_sigterm_ends_a_player_retrying_an_absent_trainer(tmp_path: Path) -> None:
    """A player whose trainer is gone retries for --connect-timeout-s (300 s here); SIGTERM must not wait that out."""
    port = free_port()  # nothing listens here
    log = tmp_path / "player.log"
    proc = spawn("--log-level", "DEBUG", "player", "--player-index", "0", "--trainer-address", f"127.0.0.1:{port}",
                 "--connect-timeout-s", "300", "--metrics-port", "-1", log=log)
    try:  # the client logs each retry (DEBUG): the player is retrying its first fetch
        wait_for(lambda: f"fetch to 127.0.0.1:{port}: UNAVAILABLE; retrying in" in log.read_text(), 60,
                 "the player to retry its trainer", watch={"the player": proc})
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=15)
    finally:
        kill(proc)
    assert code == 0, log.read_text()
    assert "stopped while retrying (UNAVAILABLE)" in log.read_text()


def test_sde_rollouts_act_with_each_copys_own_matrix_and_record_the_trainers_logprobs() -> None:
    """gSDE (--use-sde): within a rollout each copy's noise is phi(s) W with one W per copy (-1: one per
    rollout), the next rollout draws new ones, and the recorded log-probs are what the trainer recomputes
    from observations and actions alone."""
    t, n = 6, 2
    torch.manual_seed(0)
    e = env.Env(config.EnvConfig(env_id="Pendulum-v1", num_envs=n))
    model = agent.Agent(e.observation_space, e.action_space, config.AlgoConfig(use_sde=True, log_std_init=-1.0))
    c = player.Collector(e, model, player_id=0, num_steps=t, seed=5, sde_sample_freq=-1)
    try:
        r = c.collect(0)
        rollout.validate(r, spec_for(e, t))
        assert c.exploration is not None and c.exploration.matrices is not None
        w = c.exploration.matrices
        obs = torch.as_tensor(r.obs[:t].reshape(t * n, -1))
        with torch.no_grad():
            mean, latent = model.split_sde(model(obs)[0])
        noise = torch.as_tensor(r.actions.reshape(t * n, -1)) - mean
        assert torch.allclose(noise, torch.bmm(latent.unsqueeze(1), w.repeat(t, 1, 1)).squeeze(1), atol=1e-5)
        lp, _, _ = model.evaluate(obs, torch.as_tensor(r.actions.reshape(t * n, -1)))
        assert np.allclose(r.logprobs.reshape(-1), lp.detach().numpy(), atol=1e-5)
        c.collect(1)
        assert not torch.equal(c.exploration.matrices, w), "a new rollout acts with new matrices"
    finally:
        e.close()
