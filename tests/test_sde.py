"""gSDE (a2c/model/sde.py): hand arithmetic, Stable-Baselines3's `StateDependentNoiseDistribution` and SB3's whole
`ActorCriticPolicy(use_sde=True)` on fixed inputs, the statistics of sampled actions, and the resampling
schedule of a player's matrices."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.distributions import StateDependentNoiseDistribution
from stable_baselines3.common.policies import ActorCriticPolicy

from a2c import config
from a2c.model import agent, sde

M, N = 5, 2  # latent features, action dimensions


def fixed_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """mean [6, N], latent [6, M] (tanh-like, one row of zeros: the epsilon matters there), log_std [M, N], actions."""
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(6, N, generator=g)
    latent = torch.tanh(torch.randn(6, M, generator=g))
    latent[3] = 0.0
    log_std = -2.0 + 0.5 * torch.randn(M, N, generator=g)
    actions = mean + 0.3 * torch.randn(6, N, generator=g)
    return mean, latent, log_std, actions


def sb3_distribution(mean: torch.Tensor, latent: torch.Tensor,
                     log_std: torch.Tensor) -> StateDependentNoiseDistribution:
    """SB3's gSDE distribution as A2C's policy builds it (full_std, exp, learn_features off, no squashing)."""
    dist = StateDependentNoiseDistribution(N, full_std=True, use_expln=False, squash_output=False,
                                           learn_features=False)
    dist.proba_distribution_net(latent_dim=M, log_std_init=-2.0)
    return dist.proba_distribution(mean, log_std, latent)


def test_hand_computed_variance_logprob_and_entropy() -> None:
    # phi = (1, 2), sigma = (0.5, 0.25) for the one action dimension:
    # variance = 1 * 0.25 + 4 * 0.0625 = 0.5 (+ 1e-6), so the std is about 0.7071
    latent = torch.tensor([[1.0, 2.0]])
    log_std = torch.log(torch.tensor([[0.5], [0.25]]))
    var = 0.5 + 1e-6
    assert sde.action_std(latent, log_std).item() == pytest.approx(math.sqrt(var), rel=1e-6)
    # an action one unit above the mean: -1 / (2 var) - 0.5 ln var - 0.5 ln 2pi
    logp, ent = sde.logprob_entropy(torch.tensor([[0.3]]), latent, log_std, torch.tensor([[1.3]]))
    assert logp.item() == pytest.approx(-1 / (2 * var) - 0.5 * math.log(var) - 0.5 * math.log(2 * math.pi), rel=1e-6)
    assert ent.item() == pytest.approx(0.5 + 0.5 * math.log(2 * math.pi) + 0.5 * math.log(var), rel=1e-6)


def test_logprob_and_entropy_equal_sb3s_distribution() -> None:
    mean, latent, log_std, actions = fixed_inputs()
    logp, ent = sde.logprob_entropy(mean, latent, log_std, actions)
    dist = sb3_distribution(mean, latent, log_std)
    assert torch.allclose(logp, dist.log_prob(actions), atol=1e-6)
    assert torch.allclose(ent, dist.entropy(), atol=1e-6)  # type: ignore[arg-type]
    assert torch.allclose(sde.action_std(latent, log_std), dist.distribution.stddev, atol=1e-7)


def test_gradients_reach_the_mean_and_sigma_but_not_the_features_through_the_variance() -> None:
    mean, latent, log_std, actions = fixed_inputs()
    mean, latent, log_std = mean.requires_grad_(), latent.requires_grad_(), log_std.requires_grad_()
    logp, ent = sde.logprob_entropy(mean, latent, log_std, actions)
    (logp.sum() + ent.sum()).backward()
    ref_mean, ref_log_std = mean.detach().clone().requires_grad_(), log_std.detach().clone().requires_grad_()
    dist = sb3_distribution(ref_mean, latent.detach(), ref_log_std)
    (dist.log_prob(actions).sum() + dist.entropy().sum()).backward()  # type: ignore[union-attr]
    assert latent.grad is None, "SB3's learn_features=False: phi enters the variance detached"
    assert mean.grad is not None and ref_mean.grad is not None and torch.allclose(mean.grad, ref_mean.grad, atol=1e-5)
    assert log_std.grad is not None and ref_log_std.grad is not None
    assert torch.allclose(log_std.grad, ref_log_std.grad, atol=1e-5)


def test_sampled_actions_have_the_mean_and_variance_of_the_distribution_and_of_sb3s_samples() -> None:
    """Many matrices for one state: a = mu + phi W has mean mu, per-dimension variance phi^2 sigma^2, and
    uncorrelated dimensions; SB3's own sampler (`sample_weights` + `get_noise`) gives the same statistics."""
    mean, latent, log_std, _ = fixed_inputs()
    mu, phi = mean[:1], latent[:1]
    count = 200_000
    ours = mu + sde.noise(phi.expand(count, M), sde.sample_matrices(log_std, count, torch.Generator().manual_seed(1)))
    dist = sb3_distribution(mu.expand(count, N), phi.expand(count, M), log_std)
    torch.manual_seed(2)
    dist.sample_weights(log_std, batch_size=count)
    theirs = dist.sample()
    std = sde.action_std(phi, log_std)[0]
    # the standard error of a mean of 200k draws is std / 447; of a variance, var * sqrt(2 / 200k) = var / 316
    for sample in (ours, theirs):
        assert torch.allclose(sample.mean(0), mu[0], atol=5 * float(std.max()) / 447)
        assert torch.allclose(sample.var(0), std**2, rtol=5 / 316)
        corr = torch.corrcoef(sample.T)[0, 1]
        assert abs(float(corr)) < 5 / 447
    assert torch.allclose(ours.var(0), theirs.var(0), rtol=10 / 316)


def test_one_matrix_acts_deterministically_per_state() -> None:
    """The noise of a matrix is a linear function of the features: the same state, the same noise (smooth
    exploration), and the noise of a sum of features is the sum of the noises."""
    _, latent, log_std, _ = fixed_inputs()
    w = sde.sample_matrices(log_std, 1, torch.Generator().manual_seed(3))
    a, b = latent[:1], latent[1:2]
    assert torch.equal(sde.noise(a, w), sde.noise(a, w))
    assert torch.allclose(sde.noise(a + b, w), sde.noise(a, w) + sde.noise(b, w), atol=1e-6)
    assert torch.allclose(sde.noise(a, w), a @ w[0])


def test_matrices_are_resampled_at_each_rollout_start_and_every_sample_freq_steps() -> None:
    log_std = torch.full((M, N), -1.0)
    per_rollout = sde.Exploration(num_envs=3, sample_freq=-1, seed=0)
    every4 = sde.Exploration(num_envs=3, sample_freq=4, seed=0)
    seen: dict[int, list[torch.Tensor]] = {-1: [], 4: []}
    for _ in range(2):  # two rollouts of 8 steps
        for step in range(8):
            seen[-1].append(per_rollout.at(step, log_std))
            seen[4].append(every4.at(step, log_std))
    changes = {k: [i for i in range(1, 16) if not torch.equal(v[i], v[i - 1])] for k, v in seen.items()}
    assert changes == {-1: [8], 4: [4, 8, 12]}
    first = seen[-1][0]
    assert first.shape == (3, M, N)
    assert not torch.equal(first[0], first[1]), "each environment copy has its own matrix"


def test_each_player_draws_its_own_matrices_from_its_seed() -> None:
    log_std = torch.zeros(M, N)
    a, b, c = (sde.Exploration(2, -1, seed).at(0, log_std) for seed in (0, 0, 1000))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_matrices_follow_the_current_sigma() -> None:
    e = sde.Exploration(num_envs=1, sample_freq=-1, seed=0)
    small = e.at(0, torch.full((M, N), -3.0))
    big = e.at(0, torch.full((M, N), 1.0))
    assert float(small.abs().max()) < 4 * math.exp(-3.0) < float(big.abs().max())


def linears(module: torch.nn.Module) -> list[torch.nn.Linear]:
    return [m for m in module.modules() if isinstance(m, torch.nn.Linear)]


def test_the_agents_logprob_entropy_and_value_equal_sb3s_policy_with_the_same_weights() -> None:
    """The trainer's terms for a batch, end to end: our gSDE Agent and SB3's ActorCriticPolicy(use_sde=True)
    (separate 64-64 tanh networks, as A2C's MlpPolicy), weights copied across, on fixed observations."""
    obs_space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
    act_space = gym.spaces.Box(-2.0, 2.0, (N,), np.float32)
    torch.manual_seed(0)
    ours = agent.Agent(obs_space, act_space, config.AlgoConfig(use_sde=True, log_std_init=-2.0))
    theirs = ActorCriticPolicy(obs_space, act_space, lambda _: 7e-4, net_arch=dict(pi=[64, 64], vf=[64, 64]),
                               activation_fn=torch.nn.Tanh, use_sde=True, log_std_init=-2.0, ortho_init=False)
    with torch.no_grad():
        ours.log_std.add_(0.3 * torch.randn_like(ours.log_std))  # not all equal: the layout must match too
        pairs = [(ours.actor_features, theirs.mlp_extractor.policy_net), (ours.critic_features,
                  theirs.mlp_extractor.value_net), (ours.actor, theirs.action_net), (ours.critic, theirs.value_net)]
        for a, b in pairs:
            for src, dst in zip(linears(a), linears(b), strict=True):
                dst.weight.copy_(src.weight)
                dst.bias.copy_(src.bias)
        theirs.log_std.copy_(ours.log_std)
    obs = torch.randn(16, 3)
    actions = torch.randn(16, N)
    logp, ent, value = ours.evaluate(obs, actions)
    ref_value, ref_logp, ref_ent = theirs.evaluate_actions(obs, actions)
    assert ref_ent is not None
    assert torch.allclose(logp, ref_logp, atol=1e-5)
    assert torch.allclose(ent, ref_ent, atol=1e-5)
    assert torch.allclose(value, ref_value.squeeze(-1), atol=1e-5)
    # greedy actions: the mean, as SB3's deterministic predict
    greedy, _, _ = ours.act(obs.numpy(), deterministic=True)
    assert np.allclose(greedy, theirs._predict(obs, deterministic=True).detach().numpy(), atol=1e-6)
