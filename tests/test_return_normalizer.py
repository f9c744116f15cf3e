"""return_normalizer: rewards scaled by the running std of the discounted return, as SB3's VecNormalize."""

from __future__ import annotations

import numpy as np
import pytest

from a2c import moments
from a2c.envs import return_normalizer


def test_matches_the_vecnormalize_recurrence_by_hand() -> None:
    rn = return_normalizer.ReturnNormalizer(num_envs=2, gamma=0.5)
    valid = np.ones(2, bool)
    r1, r2 = np.array([1.0, 3.0]), np.array([2.0, -1.0])
    s1 = rn.scale(r1, valid, np.zeros(2, bool))
    # R = [1, 3]: batch mean 2, variance 1, merged into (0, 1, 1e-4)
    _, var1, _ = moments.merge(0.0, 1.0, moments.INITIAL_COUNT, 2.0, 1.0, 2.0)
    np.testing.assert_allclose(s1, r1 / np.sqrt(var1 + 1e-8), rtol=1e-6)
    s2 = rn.scale(r2, valid, np.array([True, False]))
    # R = 0.5 * [1, 3] + [2, -1] = [2.5, 0.5]: batch mean 1.5, variance 1
    mean1 = moments.merge(0.0, 1.0, moments.INITIAL_COUNT, 2.0, 1.0, 2.0)[0]
    _, var2, _ = moments.merge(mean1, var1, moments.INITIAL_COUNT + 2, 1.5, 1.0, 2.0)
    np.testing.assert_allclose(s2, r2 / np.sqrt(var2 + 1e-8), rtol=1e-6)
    assert rn.returns.tolist() == [0.0, 0.5], "an ended episode's discounted return restarts at 0"
    assert s1.dtype == np.float32


def test_scaled_rewards_have_about_unit_return_scale() -> None:
    """Rewards of size 100 per step: the scaled discounted return has a std of about 1 (not 100 / (1 - gamma))."""
    rng = np.random.default_rng(0)
    rn = return_normalizer.ReturnNormalizer(num_envs=16, gamma=0.9)
    valid, never = np.ones(16, bool), np.zeros(16, bool)
    scaled_returns = np.zeros(16)
    seen = []
    for t in range(3000):
        s = rn.scale(100.0 + 50.0 * rng.standard_normal(16), valid, never).astype(np.float64)
        scaled_returns = 0.9 * scaled_returns + s
        if t > 500:
            seen.append(scaled_returns.copy())
    assert np.std(seen) == pytest.approx(1.0, rel=0.1)


def test_invalid_steps_neither_feed_the_statistics_nor_move_the_return() -> None:
    a = return_normalizer.ReturnNormalizer(num_envs=2, gamma=0.99)
    never = np.zeros(2, bool)
    a.scale(np.array([1.0, 2.0]), np.ones(2, bool), never)
    # env 1's step only reset it (next-step autoreset): its reward of 0 is no transition
    out = a.scale(np.array([5.0, 0.0]), np.array([True, False]), np.array([False, True]))
    assert out[1] == 0.0
    assert a.returns[1] == 2.0, "the invalid step neither discounted nor reset the running return"
    assert a.stats.count == pytest.approx(moments.INITIAL_COUNT + 3), "two valid samples, then one"


def test_rewards_are_clipped() -> None:
    rn = return_normalizer.ReturnNormalizer(num_envs=1, gamma=0.99, clip=10.0)
    valid, never = np.ones(1, bool), np.zeros(1, bool)
    for _ in range(100):
        rn.scale(np.array([0.01]), valid, never)
    assert rn.scale(np.array([1e6]), valid, never)[0] == 10.0
