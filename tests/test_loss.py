"""The A2C loss terms with exact numbers: sums over a trainer's samples (the learner divides by the job's count)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from a2c import config
from a2c.learning import loss
from a2c.model import agent


def batch(requires_grad: bool = False) -> dict[str, torch.Tensor]:
    b = {
        "logprobs": torch.tensor([-0.5, -1.0]),
        "entropy": torch.tensor([0.7, 0.6]),
        "values": torch.tensor([1.0, 2.0]),
        "advantages": torch.tensor([2.0, -3.0]),
        "returns": torch.tensor([3.0, 1.0]),
    }
    return {k: v.clone().requires_grad_(requires_grad) for k, v in b.items()}


def test_terms_by_hand() -> None:
    b = batch()
    terms = loss.a2c_loss(b["logprobs"], b["entropy"], b["values"], b["advantages"], b["returns"],
                          vf_coef=0.5, ent_coef=0.01)
    # policy  = -(2 * -0.5 + -3 * -1.0) = -(-1 + 3) = -2
    # value   = (3 - 1)^2 + (1 - 2)^2 = 4 + 1 = 5
    # entropy = 0.7 + 0.6 = 1.3: the entropy itself, a bonus
    # total   = -2 + 0.5 * 5 - 0.01 * 1.3 = 0.487
    assert terms.policy.item() == pytest.approx(-2.0)
    assert terms.value.item() == pytest.approx(5.0)
    assert terms.entropy.item() == pytest.approx(1.3)
    assert terms.total.item() == pytest.approx(0.487)


def test_gradients_by_hand_and_targets_are_detached() -> None:
    b = batch(requires_grad=True)
    terms = loss.a2c_loss(b["logprobs"], b["entropy"], b["values"], b["advantages"], b["returns"],
                          vf_coef=0.5, ent_coef=0.01)
    terms.total.backward()
    grad = {k: v.grad for k, v in b.items()}
    # d total / d logprob_i = -adv_i
    assert grad["logprobs"] is not None and torch.allclose(grad["logprobs"], torch.tensor([-2.0, 3.0]))
    # d total / d value_i = 0.5 * -2 (ret_i - v_i) = -(ret_i - v_i)
    assert grad["values"] is not None and torch.allclose(grad["values"], torch.tensor([-2.0, 1.0]))
    # d total / d entropy_i = -0.01: more entropy, less loss
    assert grad["entropy"] is not None and torch.allclose(grad["entropy"], torch.full((2,), -0.01))
    # advantages and returns are targets: no gradient flows into them
    assert b["advantages"].grad is None and b["returns"].grad is None


def test_terms_are_sums_so_shards_sum_to_the_whole() -> None:
    # Two trainers with 1 and 3 samples: their terms (and gradients) summed equal one trainer's with all 4.
    rng = np.random.default_rng(0)
    parts = {k: torch.tensor(rng.normal(size=4), dtype=torch.float64) for k in
             ("logprobs", "entropy", "values", "advantages", "returns")}
    def terms(rows: slice) -> loss.LossTerms:
        p = {k: v[rows] for k, v in parts.items()}
        return loss.a2c_loss(p["logprobs"], p["entropy"], p["values"], p["advantages"], p["returns"],
                             vf_coef=0.5, ent_coef=0.01)

    whole, a, b = terms(slice(None)), terms(slice(0, 1)), terms(slice(1, None))
    for w, x, y in zip(whole, a, b, strict=True):
        assert torch.allclose(w, x + y)
    # divided by the job's count (as the learner does), the squared error is SB3's mean
    assert torch.allclose(whole.value / 4, ((parts["returns"] - parts["values"]) ** 2).mean())


def test_zero_samples_give_zero_loss_and_zero_gradient() -> None:
    torch.manual_seed(0)
    model = agent.Agent(gym.spaces.Box(-1, 1, (4,), np.float32), gym.spaces.Discrete(2), config.AlgoConfig())
    obs = torch.zeros((0, 4))
    logp, ent, values = model.evaluate(obs, torch.zeros(0, dtype=torch.int64))
    terms = loss.a2c_loss(logp, ent, values, torch.zeros(0), torch.zeros(0), vf_coef=0.5, ent_coef=0.01)
    for term in terms:
        assert term.item() == 0.0
    terms.total.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads), "every parameter must join the (all-reduced) gradient"
    assert all(torch.count_nonzero(g) == 0 for g in grads if g is not None)


def test_divided_by_the_count_the_total_is_sb3s_loss() -> None:
    """SB3's A2C.train: policy_loss + ent_coef * entropy_loss + vf_coef * value_loss, of means, with
    entropy_loss = -mean(entropy)."""
    b = batch()
    terms = loss.a2c_loss(b["logprobs"], b["entropy"], b["values"], b["advantages"], b["returns"],
                          vf_coef=0.5, ent_coef=0.01)
    policy_loss = -(b["advantages"] * b["logprobs"]).mean()
    value_loss = torch.nn.functional.mse_loss(b["returns"], b["values"])
    entropy_loss = -torch.mean(b["entropy"])
    assert torch.allclose(terms.total / 2, policy_loss + 0.01 * entropy_loss + 0.5 * value_loss)
    assert torch.allclose(terms.entropy / 2, -entropy_loss)
