"""rmsprop_tf: TensorFlow-style RMSprop against its formula, step by step by hand."""

from __future__ import annotations

import math

import pytest
import torch

from a2c import config
from a2c.model import agent, rmsprop_tf


def test_steps_follow_the_formula_computed_by_hand() -> None:
    # v_0 = 1; v_t = alpha v_{t-1} + (1 - alpha) g_t^2; p_t = p_{t-1} - lr g_t / sqrt(v_t + eps)
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = rmsprop_tf.RMSpropTF([p], lr=0.1, alpha=0.9, eps=0.01)
    grads = [[0.5, -3.0], [2.0, 0.0]]
    # step 1, coordinate 0: v = 0.9 + 0.1 * 0.25 = 0.925; p = 1 - 0.1 * 0.5 / sqrt(0.935)
    # step 1, coordinate 1: v = 0.9 + 0.1 * 9 = 1.8;      p = -2 + 0.1 * 3 / sqrt(1.81)
    # step 2, coordinate 0: v = 0.9 * 0.925 + 0.1 * 4 = 1.2325; p -= 0.1 * 2 / sqrt(1.2425)
    # step 2, coordinate 1: v = 0.9 * 1.8 = 1.62; the gradient is 0, p stays
    expected = [
        [1 - 0.05 / math.sqrt(0.935), -2 + 0.3 / math.sqrt(1.81)],
        [1 - 0.05 / math.sqrt(0.935) - 0.2 / math.sqrt(1.2425), -2 + 0.3 / math.sqrt(1.81)],
    ]
    for g, want in zip(grads, expected, strict=True):
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        assert p.tolist() == pytest.approx(want, rel=1e-12)
    assert opt.state[p]["square_avg"].tolist() == pytest.approx([1.2325, 1.62], rel=1e-12)


def test_first_step_is_small_where_torch_rmsprop_jumps() -> None:
    """torch's RMSprop starts its average at 0: the first step is about lr / sqrt(1 - alpha) = 10 lr
    per coordinate, whatever the gradient's size (eps aside);
    the TF form starts at 1, so a small gradient makes a small step."""
    ours, theirs = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    for p in (ours, theirs):
        p.grad = torch.tensor([1e-3])
    rmsprop_tf.RMSpropTF([ours], lr=1e-2, alpha=0.99, eps=1e-5).step()
    torch.optim.RMSprop([theirs], lr=1e-2, alpha=0.99, eps=1e-5).step()
    assert abs(ours.item()) == pytest.approx(1e-2 * 1e-3 / math.sqrt(0.99 + 0.01 * 1e-6 + 1e-5), rel=1e-6)
    assert abs(theirs.item()) == pytest.approx(1e-2 * 1e-3 / (math.sqrt(0.01 * 1e-6) + 1e-5), rel=1e-5)  # ~9 lr


def test_state_round_trips_and_parameters_without_gradient_are_left_alone() -> None:
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    opt = rmsprop_tf.RMSpropTF([a, b], lr=0.1)
    a.grad = torch.ones(2)
    opt.step()
    assert torch.equal(b, torch.ones(2)) and b not in opt.state
    again = rmsprop_tf.RMSpropTF([a, b], lr=0.1)
    again.load_state_dict(opt.state_dict())
    assert torch.equal(again.state[a]["square_avg"], opt.state[a]["square_avg"])


def test_made_by_the_optimizer_flag() -> None:
    import gymnasium as gym
    import numpy as np

    model = agent.Agent(gym.spaces.Box(-1, 1, (3,), np.float32), gym.spaces.Discrete(2), config.AlgoConfig())
    opt = agent.make_optimizer(model, config.AlgoConfig(optimizer="rmsprop_tf", lr=7e-4, optim_eps=1e-5))
    assert isinstance(opt, rmsprop_tf.RMSpropTF)
    assert opt.param_groups[0]["lr"] == 7e-4 and opt.param_groups[0]["eps"] == 1e-5


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        rmsprop_tf.RMSpropTF([torch.nn.Parameter(torch.zeros(1))], lr=0.0)
