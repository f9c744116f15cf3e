"""gSDE: generalized state-dependent exploration for the Gaussian policy (`--use-sde`).

Raffin, Kober and Stulp 2021, "Smooth Exploration for Robotic Reinforcement Learning" (arXiv:2005.05719);
Stable-Baselines3's `StateDependentNoiseDistribution` with its defaults (full_std, exp, learn_features
off, no squashing), which is what rl-baselines3-zoo's `use_sde: True` runs.

Data flow: each player's `Exploration` draws its own matrices (one per environment copy, from its own
generator) and `agent.Agent.act` adds `noise(latent, matrices)` to the policy mean; the trainer computes
`logprob_entropy` from the mean, the latent features and the `log_std` parameter. The matrices never
travel: nothing the trainer computes needs them.

The math. phi(s) is the actor's latent feature vector (the last hidden layer, dimension m) and
sigma = exp(log_std) an m x n matrix of parameters. The player draws W with W_ji ~ N(0, sigma_ji^2) and
acts a = mu(s) + phi(s) W, keeping W for `--sde-sample-freq` steps, so consecutive actions in one
state region explore alike (smooth, not white, noise). For one fresh W, a_i is a sum of independent
Gaussians: a_i ~ N(mu_i(s), sum_j phi_j(s)^2 sigma_ji^2), and the columns of W are independent, so the
dimensions are too. That diagonal Gaussian is the policy whose log-probability and entropy the loss
uses (plus SB3's 1e-6 inside the square root). phi enters the variance detached, as in SB3: the
variance's gradient trains sigma, not the features.
"""

from __future__ import annotations

import math

import torch

EPSILON = 1e-6  # SB3's: keeps the std above 0 where phi(s) is (nearly) zero


def action_std(latent: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """Per-dimension std of the action, [B, n]: sqrt(phi^2 @ sigma^2 + eps), phi detached."""
    variance = (latent.detach() ** 2) @ torch.exp(2 * log_std)
    return torch.sqrt(variance + EPSILON)


def logprob_entropy(
    mean: torch.Tensor, latent: torch.Tensor, log_std: torch.Tensor, actions: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of actions and entropy of N(mean, action_std^2), summed over action dimensions."""
    std = action_std(latent, log_std)
    log_s = torch.log(std)
    logp = -((actions - mean) ** 2) / (2 * std**2) - log_s - 0.5 * math.log(2 * math.pi)
    entropy = 0.5 + 0.5 * math.log(2 * math.pi) + log_s
    return logp.sum(-1), entropy.sum(-1)


def sample_matrices(log_std: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """`count` exploration matrices [count, m, n], entries W_ji ~ N(0, exp(log_std_ji)^2)."""
    sigma = torch.exp(log_std.detach())
    eps = torch.randn((count, *sigma.shape), generator=generator, dtype=sigma.dtype, device=sigma.device)
    return eps * sigma


def noise(latent: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """phi(s_e) W_e for each environment copy e: [E, m] x [E, m, n] -> [E, n]."""
    return torch.bmm(latent.detach().unsqueeze(1), matrices).squeeze(1)


class Exploration:
    """One player's exploration matrices: one per environment copy, drawn from the player's own generator at
    the first step of every rollout and then every `sample_freq` steps of it (-1 or 0: once per rollout),
    as SB3's `collect_rollouts` resamples (its step counter, too, starts again with each rollout)."""

    def __init__(self, num_envs: int, sample_freq: int, seed: int) -> None:
        self.num_envs, self.sample_freq = num_envs, sample_freq
        self.generator = torch.Generator().manual_seed(seed)
        self.matrices: torch.Tensor | None = None

    def at(self, step: int, log_std: torch.Tensor) -> torch.Tensor:
        """The matrices to act with at `step` of the rollout (0-based), resampled with the current sigma when due."""
        if self.matrices is None or step == 0 or (self.sample_freq > 0 and step % self.sample_freq == 0):
            self.matrices = sample_matrices(log_std, self.num_envs, self.generator)
        return self.matrices
