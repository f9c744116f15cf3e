"""Advantages and returns: n-step and GAE (Schulman et al. 2016, "High-Dimensional Continuous Control
Using Generalized Advantage Estimation"), with terminated and truncated episodes told apart.

Data flow: the trainer calls `gae` on each rollout's values (recomputed with the current weights) before
the loss. Pure numpy-free torch math on [T, E] tensors, so tests check exact numbers by hand.

Conventions for step t:
    next_values[t]  value of the observation that followed step t: V(obs[t+1]) normally, V(final_obs)
                    where the environment reset in the same step (the caller fills those in).
    terminated[t]   terminal state: the next value is not bootstrapped (it is 0).
    truncated[t]    time limit: the next value IS bootstrapped, but the advantage does not flow back
                    from the next episode.
"""

from __future__ import annotations

import torch


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (advantages, returns), both [T, E]; lam = 1 gives n-step returns (the A2C paper's)."""
    not_terminal = 1.0 - terminated.to(rewards.dtype)
    carries = (1.0 - torch.logical_or(terminated, truncated).to(rewards.dtype)) * gamma * lam
    deltas = rewards + gamma * next_values * not_terminal - values
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = deltas[t] + carries[t] * running
        advantages[t] = running
    return advantages, advantages + values


def next_values_from(values_all: torch.Tensor, final_values: torch.Tensor, final_index: torch.Tensor) -> torch.Tensor:
    """next_values[t] = V(obs[t+1]) from values of obs[0..T] ([T+1, E]), with V(final_obs) at final_index."""
    nxt = values_all[1:].clone()
    if final_index.numel():
        nxt.view(-1)[final_index] = final_values
    return nxt
