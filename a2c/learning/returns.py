"""Advantages and returns: n-step and GAE (Schulman et al. 2016, "High-Dimensional Continuous Control
Using Generalized Advantage Estimation"), with terminated and truncated episodes told apart.

Data flow: the trainer calls `gae` on each rollout acted with its current weights, and `vtrace` on each
rollout acted with older ones (--max-policy-lag > 0), before the loss. Pure numpy-free torch math on
[T, E] tensors, so tests check exact numbers by hand.

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


def vtrace(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    log_rhos: torch.Tensor,
    gamma: float,
    lam: float,
    rho_bar: float = 1.0,
    c_bar: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (advantages, value targets), both [T, E], for a rollout acted by an older policy mu: V-trace
    (Espeholt et al. 2018, "IMPALA"), with log_rhos = log pi(a|s) - log mu(a|s) under the current weights.

    With truncated ratios rho_t = min(rho_bar, e^log_rho), c_t = lam * min(c_bar, e^log_rho):
        delta_t = rho_t (r_t + gamma V(x_t+1) - V(x_t))
        vs_t    = V(x_t) + delta_t + gamma c_t (vs_t+1 - V(x_t+1))        value target
        A_t     = rho_t (r_t + gamma vs_t+1 - V(x_t))                      policy-gradient advantage
    Episode ends as in `gae`: nothing flows back across them, and the next state's target there is its
    bootstrap value (0 when terminated). With every ratio 1 and lam = 1 this is exactly `gae` with lam = 1
    (the n-step returns the on-policy path uses)."""
    not_terminal = 1.0 - terminated.to(rewards.dtype)
    continues = 1.0 - torch.logical_or(terminated, truncated).to(rewards.dtype)
    ratios = torch.exp(torch.clamp(log_rhos.to(rewards.dtype), max=30.0))  # no inf: min(1, e^30) is 1 anyway
    rhos, cs = torch.clamp(ratios, max=rho_bar), lam * torch.clamp(ratios, max=c_bar)
    deltas = rhos * (rewards + gamma * next_values * not_terminal - values)
    corrections = torch.zeros_like(rewards)  # vs_t - V(x_t)
    running = torch.zeros_like(rewards[0])
    for t in range(rewards.shape[0] - 1, -1, -1):
        next_correction = continues[t] * running  # vs_t+1 - V(x_t+1), 0 across an episode end
        running = deltas[t] + gamma * cs[t] * next_correction
        corrections[t] = running
    next_targets = next_values + continues * torch.cat([corrections[1:], torch.zeros_like(corrections[:1])])
    advantages = rhos * (rewards + gamma * not_terminal * next_targets - values)
    return advantages, values + corrections


def next_values_from(values_all: torch.Tensor, final_values: torch.Tensor, final_index: torch.Tensor) -> torch.Tensor:
    """next_values[t] = V(obs[t+1]) from values of obs[0..T] ([T+1, E]), with V(final_obs) at final_index."""
    nxt = values_all[1:].clone()
    if final_index.numel():
        nxt.view(-1)[final_index] = final_values
    return nxt
