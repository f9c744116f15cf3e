"""The A2C loss (Mnih et al. 2016, "Asynchronous Methods for Deep Reinforcement Learning"), term by term.

Data flow: `learner.Learner.update` calls `a2c_loss` on its trainer's samples. Every term is a SUM over
those samples; the learner divides the summed gradients by the sample count of the WHOLE job after the
all-reduce has summed them across trainers (not averaged), so each sample weighs the same wherever it was
trained, and a trainer with no samples contributes exactly zero.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class LossTerms(NamedTuple):
    total: torch.Tensor    # what is minimised: policy + vf_coef * value - ent_coef * entropy
    policy: torch.Tensor
    value: torch.Tensor
    entropy: torch.Tensor  # the policy's entropy (a bonus: the total subtracts it)


def a2c_loss(
    logprobs: torch.Tensor,
    entropy: torch.Tensor,
    values: torch.Tensor,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    vf_coef: float,
    ent_coef: float,
) -> LossTerms:
    """Policy-gradient + value loss - entropy bonus, each a sum over a flat batch of samples."""
    # Policy gradient: raise the log-probability of actions in proportion to their advantage.
    policy = -(advantages.detach() * logprobs).sum()
    # Critic: regress the value towards the (n-step / GAE) return; the squared error as in SB3.
    value = ((returns.detach() - values) ** 2).sum()
    # Entropy bonus: keeps the policy from collapsing early (SB3 adds ent_coef times its negative).
    entropy_sum = entropy.sum()
    total = policy + vf_coef * value - ent_coef * entropy_sum
    return LossTerms(total, policy, value, entropy_sum)
