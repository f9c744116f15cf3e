"""The A2C loss (Mnih et al. 2016, "Asynchronous Methods for Deep Reinforcement Learning"), term by term.

Data flow: the trainer's DDP step calls `a2c_loss` on its own samples. Every term is a SUM over this
trainer's samples divided by the sample count of the WHOLE job (`normalizer`); the gradients are then
summed across trainers (not averaged), so each sample weighs the same wherever it was trained, and a
trainer with no samples contributes exactly zero.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class LossTerms(NamedTuple):
    total: torch.Tensor
    policy: torch.Tensor
    value: torch.Tensor
    entropy: torch.Tensor


def a2c_loss(
    logprobs: torch.Tensor,
    entropy: torch.Tensor,
    values: torch.Tensor,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    normalizer: float,
    vf_coef: float,
    ent_coef: float,
) -> LossTerms:
    """Policy-gradient + value + entropy loss over a flat batch of samples."""
    scale = 1.0 / max(normalizer, 1.0)
    # Policy gradient: raise the log-probability of actions in proportion to their advantage.
    policy = -(advantages.detach() * logprobs).sum() * scale
    # Critic: regress the value towards the (n-step / GAE) return; the squared error as in SB3.
    value = ((returns.detach() - values) ** 2).sum() * scale
    # Entropy bonus: keeps the policy from collapsing early; minimised as a negative term.
    entropy_loss = -entropy.sum() * scale
    total = policy + vf_coef * value + ent_coef * entropy_loss
    return LossTerms(total, policy, value, entropy_loss)
