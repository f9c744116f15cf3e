"""obs_normalizer: the statistics inside the model, used by act and evaluate, carried by snapshots."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from a2c import config, moments
from a2c.model import agent, obs_normalizer, weights

OBS = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
BOX = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)


def fitted(data: np.ndarray) -> obs_normalizer.ObsNormalizer:
    norm = obs_normalizer.ObsNormalizer((3,))
    norm.update(torch.as_tensor(data))
    return norm


def test_update_merges_batches_into_the_moments_of_all_data() -> None:
    data = np.random.default_rng(0).normal([10.0, -5.0, 0.0], [2.0, 0.1, 30.0], (64, 3)).astype(np.float32)
    whole = fitted(data)
    parts = obs_normalizer.ObsNormalizer((3,))
    for chunk in (data[:5], data[5:5], data[5:40], data[40:]):
        parts.update(torch.as_tensor(chunk))
    x = data.astype(np.float64)
    # the data's own moments, merged into the starting point (count 1e-4, mean 0, variance 1)
    mean, var, _ = moments.merge(np.zeros(3), np.ones(3), moments.INITIAL_COUNT, x.mean(0), x.var(0), 64.0)
    for norm in (whole, parts):
        np.testing.assert_allclose(norm.mean.numpy(), mean, rtol=1e-10)
        np.testing.assert_allclose(norm.var.numpy(), var, rtol=1e-8)
    assert float(parts.count) == pytest.approx(64 + 1e-4)


def test_forward_standardises_and_clips() -> None:
    data = np.random.default_rng(1).normal(4.0, 2.0, (1000, 3)).astype(np.float32)
    norm = fitted(data)
    z = norm(torch.as_tensor(data))
    assert z.dtype == torch.float32
    torch.testing.assert_close(z.mean(0), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(z.std(0, unbiased=False), torch.ones(3), atol=1e-4, rtol=0)
    assert norm(torch.full((1, 3), 1e6)).tolist() == [[10.0, 10.0, 10.0]]


def make(seed: int = 0, **algo: object) -> agent.Agent:
    torch.manual_seed(seed)
    return agent.Agent(OBS, BOX, config.AlgoConfig(**algo))  # type: ignore[arg-type]


def test_act_and_evaluate_see_normalised_observations() -> None:
    """An agent with statistics (mean m, var v) on raw x acts exactly as the same network without a
    normaliser on (x - m) / sqrt(v + 1e-8)."""
    normed, plain = make(normalize_obs=True), make()
    plain.load_state_dict({k: v for k, v in normed.state_dict().items() if not k.startswith("obs_norm.")})
    assert normed.obs_norm is not None and plain.obs_norm is None
    data = np.random.default_rng(2).normal(50.0, 5.0, (32, 3)).astype(np.float32)
    normed.obs_norm.update(torch.as_tensor(data))
    x = data[:4]
    z = ((x - normed.obs_norm.mean.numpy()) / np.sqrt(normed.obs_norm.var.numpy() + 1e-8)).astype(np.float32)
    a1, lp1, v1 = normed.act(x, deterministic=True)
    a2, lp2, v2 = plain.act(z, deterministic=True)
    np.testing.assert_allclose(a1, a2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(v1, v2, rtol=1e-5, atol=1e-6)
    actions = torch.as_tensor(a1)
    for got, want in zip(normed.evaluate(torch.as_tensor(x), actions), plain.evaluate(torch.as_tensor(z), actions),
                         strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(normed.value(torch.as_tensor(x)), torch.as_tensor(v2), rtol=1e-5, atol=1e-6)


def test_statistics_travel_in_snapshots_but_are_not_parameters() -> None:
    src, dst = make(normalize_obs=True), make(seed=1, normalize_obs=True)
    assert src.obs_norm is not None and dst.obs_norm is not None
    src.obs_norm.update(torch.randn(10, 3) * 7 + 3)
    assert not any(name.startswith("obs_norm") for name, _ in src.named_parameters()), "the optimizer never sees them"
    snap = agent.snapshot(src, version=4)
    assert snap.tensors["obs_norm.mean"].dtype == np.float64
    agent.load_snapshot(dst, weights.WeightSnapshot(version=4, tensors=snap.tensors))
    assert torch.equal(dst.obs_norm.mean, src.obs_norm.mean) and torch.equal(dst.obs_norm.var, src.obs_norm.var)
    assert torch.equal(dst.obs_norm.count, src.obs_norm.count)


def test_never_for_uint8_images() -> None:
    frames = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    model = agent.Agent(frames, gym.spaces.Discrete(4), config.AlgoConfig(normalize_obs=True))
    assert model.obs_norm is None
    assert not any(k.startswith("obs_norm") for k in model.state_dict())


def test_log_std_init() -> None:
    assert make(log_std_init=-2.0).log_std.tolist() == [-2.0, -2.0]
    assert make().log_std.tolist() == [0.0, 0.0]
