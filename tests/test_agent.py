"""The actor-critic: distributions against torch.distributions, act, snapshots, init, the Atari CNN."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.distributions import Categorical, Normal

from a2c import config
from a2c.model import agent, sde, weights

OBS = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
DISCRETE = gym.spaces.Discrete(3)
BOX = gym.spaces.Box(-2.0, 2.0, (2,), np.float32)


def head(m: torch.nn.Module) -> torch.nn.Linear:
    assert isinstance(m, torch.nn.Linear)
    return m


def make(action_space: gym.Space, seed: int = 0, **algo: object) -> agent.Agent:
    torch.manual_seed(seed)
    return agent.Agent(OBS, action_space, config.AlgoConfig(**algo))  # type: ignore[arg-type]


def test_gaussian_matches_torch_normal_on_hand_picked_values() -> None:
    mean = torch.tensor([[0.0, 1.0], [-0.5, 2.0]])
    log_std = torch.tensor([0.0, math.log(0.5)])
    actions = torch.tensor([[0.3, 1.0], [1.5, -1.0]])
    logp, ent = agent.gaussian_logprob_entropy(mean, log_std, actions)
    ref = Normal(mean, log_std.exp())
    assert torch.allclose(logp, ref.log_prob(actions).sum(-1))
    assert torch.allclose(ent, ref.entropy().sum(-1))
    # by hand, first row: N(0.3; 0, 1) + N(1.0; 1, 0.5)
    #   = (-0.045 - 0.5 ln 2pi) + (0 - ln 0.5 - 0.5 ln 2pi)
    by_hand = -0.045 - math.log(0.5) - math.log(2 * math.pi)
    assert logp[0].item() == pytest.approx(by_hand, rel=1e-6)
    # entropy of N(., sigma) = 0.5 + 0.5 ln(2 pi) + ln sigma, summed over the two dimensions
    assert ent[0].item() == pytest.approx(1.0 + math.log(2 * math.pi) + math.log(0.5), rel=1e-6)


def test_categorical_matches_torch_categorical() -> None:
    model = make(DISCRETE)
    logits = torch.tensor([[0.0, 1.0, 2.0], [3.0, -1.0, 0.5], [0.0, 0.0, 0.0]])
    actions = torch.tensor([2, 0, 1])
    logp, ent = model.logprob_entropy(logits, actions)
    ref = Categorical(logits=logits)
    assert torch.allclose(logp, ref.log_prob(actions))
    assert torch.allclose(ent, ref.entropy())
    assert ent[2].item() == pytest.approx(math.log(3))  # uniform over 3 actions


def test_box_agent_logprob_entropy_matches_normal() -> None:
    model = make(BOX)
    with torch.no_grad():
        model.log_std.copy_(torch.tensor([0.2, -0.3]))
    obs = torch.randn(5, 4)
    actions = torch.randn(5, 2)
    logp, ent, value = model.evaluate(obs, actions)
    mean, _ = model(obs)
    ref = Normal(mean, model.log_std.exp())
    assert torch.allclose(logp, ref.log_prob(actions).sum(-1))
    assert torch.allclose(ent, ref.entropy().sum(-1))
    assert value.shape == (5,)


def test_act_deterministic_is_argmax_for_discrete() -> None:
    model = make(DISCRETE)
    with torch.no_grad():  # make the preferred action depend on the observation
        head(model.actor).weight.normal_()
    obs = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    actions, logp, values = model.act(obs, deterministic=True)
    logits, v = model(torch.as_tensor(obs))
    assert actions.dtype == np.int64 and actions.shape == (16,)
    assert np.array_equal(actions, logits.argmax(-1).numpy())
    assert len(set(actions.tolist())) > 1, "the test needs observations that prefer different actions"
    assert np.allclose(logp, Categorical(logits=logits).log_prob(torch.as_tensor(actions)).detach().numpy())
    assert np.allclose(values, v.detach().numpy())


def test_act_deterministic_is_mean_for_box() -> None:
    model = make(BOX)
    obs = np.random.default_rng(1).normal(size=(6, 4)).astype(np.float32)
    actions, logp, _ = model.act(obs, deterministic=True)
    mean, _ = model(torch.as_tensor(obs))
    assert actions.dtype == np.float32 and actions.shape == (6, 2)
    assert np.allclose(actions, mean.detach().numpy())
    assert np.allclose(logp, Normal(mean, model.log_std.exp()).log_prob(mean).sum(-1).detach().numpy())


@pytest.mark.parametrize(("space", "algo"), [
    (DISCRETE, {}), (BOX, {}), (BOX, {"use_sde": True}), (DISCRETE, {"normalize_obs": True}),
    (DISCRETE, {"shared_extractor": True}),
], ids=["discrete", "box", "gsde", "normalised-obs", "shared"])
def test_greedy_takes_exactly_the_actions_of_deterministic_act(space: gym.Space, algo: dict[str, object]) -> None:
    """Evaluation plays `greedy` (the actor alone): bit for bit what `act(deterministic=True)` takes."""
    model = make(space, **algo)
    with torch.no_grad():  # make the preferred action depend on the observation
        head(model.actor).weight.normal_()
        if model.obs_norm is not None:
            model.obs_norm.update(torch.randn(100, 4) * 3 + 1)
    obs = np.random.default_rng(2).normal(size=(64, 4)).astype(np.float32)
    expected, _, _ = model.act(obs, deterministic=True)
    got = model.greedy(obs)
    assert got.dtype == expected.dtype and np.array_equal(got, expected)
    if space is DISCRETE:
        assert len(set(got.tolist())) > 1, "the test needs observations that prefer different actions"


def test_act_stochastic_logprob_is_that_of_the_sampled_action() -> None:
    for space in (DISCRETE, BOX):
        model = make(space)
        obs = np.random.default_rng(2).normal(size=(32, 4)).astype(np.float32)
        actions, logp, _ = model.act(obs)
        ref, _, _ = model.evaluate(torch.as_tensor(obs), torch.as_tensor(actions))
        assert np.allclose(logp, ref.detach().numpy(), atol=1e-5)


def test_stochastic_discrete_actions_follow_the_policy() -> None:
    model = make(gym.spaces.Discrete(2))
    with torch.no_grad():
        head(model.actor).weight.zero_()
        head(model.actor).bias.copy_(torch.tensor([0.0, math.log(3.0)]))  # p(1) = 0.75
    torch.manual_seed(3)
    actions, _, _ = model.act(np.zeros((4000, 4), np.float32))
    assert 0.72 < actions.mean() < 0.78


def test_snapshot_round_trip_gives_identical_outputs() -> None:
    for space in (DISCRETE, BOX):
        a, b = make(space, seed=0), make(space, seed=1)
        obs = torch.randn(8, 4)
        assert not torch.allclose(a(obs)[1], b(obs)[1])
        snap = agent.snapshot(a, version=7)
        assert isinstance(snap, weights.WeightSnapshot) and snap.version == 7
        assert all(isinstance(v, np.ndarray) for v in snap.tensors.values())
        agent.load_snapshot(b, snap)
        for x, y in zip(a(obs), b(obs), strict=True):
            assert torch.equal(x, y)
        if space is BOX:
            assert torch.equal(a.log_std, b.log_std)


def test_snapshot_is_a_copy() -> None:
    model = make(DISCRETE)
    snap = agent.snapshot(model, 0)
    before = {k: v.copy() for k, v in snap.tensors.items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    assert all(np.array_equal(before[k], snap.tensors[k]) for k in before)


def _orthogonal_with_gain(w: torch.Tensor, gain: float) -> bool:
    w = w.detach().double()
    gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    return torch.allclose(gram, gain ** 2 * torch.eye(gram.shape[0], dtype=torch.float64), atol=1e-5)


def test_orthogonal_init_with_reference_gains() -> None:
    model = make(DISCRETE)
    hidden = [m for m in model.actor_features.modules() if isinstance(m, torch.nn.Linear)]
    assert [tuple(m.weight.shape) for m in hidden] == [(64, 4), (64, 64)]
    for m in hidden:
        assert _orthogonal_with_gain(m.weight, math.sqrt(2))
        assert torch.count_nonzero(m.bias) == 0
    assert _orthogonal_with_gain(head(model.actor).weight, 0.01)  # small policy head: near-uniform first policy
    assert _orthogonal_with_gain(head(model.critic).weight, 1.0)
    assert torch.count_nonzero(head(model.actor).bias) == 0 and torch.count_nonzero(head(model.critic).bias) == 0
    # the near-uniform policy that gain buys
    _, ent, _ = model.evaluate(torch.randn(10, 4), torch.zeros(10, dtype=torch.int64))
    assert torch.allclose(ent, torch.full((10,), math.log(3)), atol=1e-3)


def test_separate_and_shared_extractors() -> None:
    separate = make(DISCRETE)
    assert separate.critic_features is not separate.actor_features
    shared = make(DISCRETE, shared_extractor=True)
    assert shared.critic_features is shared.actor_features
    relu = make(DISCRETE, hidden_sizes="32", activation="relu")
    assert any(isinstance(m, torch.nn.ReLU) for m in relu.modules())
    assert head(relu.actor).weight.shape == (3, 32)


def test_nature_cnn_for_uint8_frames() -> None:
    torch.manual_seed(0)
    frames = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    # fp32: the scaling is compared exactly below (the default, auto, is bf16 on a CPU with native bf16)
    model = agent.Agent(frames, gym.spaces.Discrete(6), config.AlgoConfig(precision="fp32"))
    assert isinstance(model.actor_features, agent.NatureCNN)
    assert model.critic_features is model.actor_features  # the CNN is always shared
    obs = np.random.default_rng(0).integers(0, 256, size=(2, 4, 84, 84), dtype=np.uint8)
    actions, logp, values = model.act(obs)
    assert actions.shape == logp.shape == values.shape == (2,)
    assert np.isfinite(logp).all() and np.isfinite(values).all()
    logits, _ = model(torch.as_tensor(obs))
    assert logits.shape == (2, 6)
    # pixels are scaled to [0, 1]: all-255 frames give the same features as 1.0 floats
    full = torch.full((1, 4, 84, 84), 255, dtype=torch.uint8)
    assert torch.allclose(model.actor_features(full), model.actor_features.fc(model.actor_features.net(
        torch.ones(1, 4, 84, 84))))


def test_a_shared_extractor_runs_once_per_forward() -> None:
    """Actor and critic heads read one pass of a shared extractor (the NatureCNN's cost, halved); the value
    is the one `value` computes alone."""
    torch.manual_seed(0)
    frames = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    model = agent.Agent(frames, gym.spaces.Discrete(6), config.AlgoConfig())
    calls: list[int] = []
    model.actor_features.register_forward_hook(lambda *_: calls.append(1))
    obs = torch.as_tensor(np.random.default_rng(0).integers(0, 256, size=(2, 4, 84, 84), dtype=np.uint8))
    _, values = model(obs)
    assert len(calls) == 1
    torch.testing.assert_close(values, model.value(obs))


def test_a_shared_extractor_is_one_array_in_the_snapshot() -> None:
    """The NatureCNN the state dict lists twice (actor_features.*, critic_features.*) is copied once: the same
    array stands under both names (the codec sends it once), and the round trip still gives the same model."""
    torch.manual_seed(0)
    frames = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    model = agent.Agent(frames, gym.spaces.Discrete(6), config.AlgoConfig())
    snap = agent.snapshot(model, 3)
    shared = [k for k in snap.tensors if k.startswith("actor_features.")]
    assert shared
    for k in shared:
        assert snap.tensors[k] is snap.tensors["critic_features." + k.removeprefix("actor_features.")]
    distinct = {id(v) for v in snap.tensors.values()}
    assert sum(v.nbytes for v in snap.tensors.values()) > 1.9 * sum(
        v.nbytes for v in {id(v): v for v in snap.tensors.values()}.values())
    assert len(distinct) == len(snap.tensors) - len(shared)
    heads = [k for k in snap.tensors if not k.startswith(("actor_features.", "critic_features."))]
    assert all(sum(snap.tensors[h] is v for v in snap.tensors.values()) == 1 for h in heads)  # nothing else merged
    other = agent.Agent(frames, gym.spaces.Discrete(6), config.AlgoConfig())
    agent.load_snapshot(other, snap)
    obs = torch.as_tensor(np.random.default_rng(1).integers(0, 256, size=(2, 4, 84, 84), dtype=np.uint8))
    for got, want in zip(other(obs), model(obs), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_unsupported_action_space_is_refused() -> None:
    with pytest.raises(ValueError, match="Discrete or Box"):
        agent.Agent(OBS, gym.spaces.MultiDiscrete([2, 3]), config.AlgoConfig())


def test_optimizers() -> None:
    model = make(DISCRETE)
    assert isinstance(agent.make_optimizer(model, config.AlgoConfig()), torch.optim.RMSprop)
    adam = agent.make_optimizer(model, config.AlgoConfig(optimizer="adam", lr=0.1))
    assert isinstance(adam, torch.optim.Adam) and adam.param_groups[0]["lr"] == 0.1


def test_sde_head_shapes_and_parameters() -> None:
    model = make(BOX, use_sde=True, log_std_init=-2.0)
    assert model.sde and tuple(model.log_std.shape) == (64, 2)  # one per (latent feature, action dimension)
    assert torch.equal(model.log_std, torch.full((64, 2), -2.0))
    obs = torch.randn(5, 4)
    params, value = model(obs)
    assert params.shape == (5, 2 + 64) and value.shape == (5,)
    mean, latent = model.split_sde(params)
    assert torch.allclose(latent, model.actor_features(obs))
    assert torch.allclose(mean, head(model.actor)(model.actor_features(obs)))
    latent.sum().backward()  # detached: the variance trains sigma, not the features (SB3's learn_features=False)
    assert all(p.grad is None or not p.grad.any() for p in model.actor_features.parameters())
    assert not make(BOX).sde and tuple(make(BOX).log_std.shape) == (2,)


def test_sde_needs_box_actions() -> None:
    with pytest.raises(ValueError, match="use-sde needs Box actions"):
        make(DISCRETE, use_sde=True)


def test_sde_act_logprob_is_the_trainers_with_or_without_matrices() -> None:
    """What the player records is what the trainer recomputes from observations and actions alone."""
    model = make(BOX, use_sde=True, log_std_init=-1.0)
    obs = np.random.default_rng(4).normal(size=(3, 4)).astype(np.float32)
    matrices = sde.sample_matrices(model.log_std, 3, torch.Generator().manual_seed(0))
    for kwargs in ({"sde_matrices": matrices}, {}):
        actions, logp, values = model.act(obs, **kwargs)  # type: ignore[arg-type]
        ref_logp, _, ref_values = model.evaluate(torch.as_tensor(obs), torch.as_tensor(actions))
        assert np.allclose(logp, ref_logp.detach().numpy(), atol=1e-5)
        assert np.allclose(values, ref_values.detach().numpy())
    # with matrices: a = mu + phi W for each copy's own W
    with torch.no_grad():
        mean, latent = model.split_sde(model(torch.as_tensor(obs))[0])
    actions, _, _ = model.act(obs, sde_matrices=matrices)
    for e in range(3):
        assert np.allclose(actions[e], (mean[e] + latent[e] @ matrices[e]).numpy(), atol=1e-6)
    greedy, _, _ = model.act(obs, deterministic=True, sde_matrices=matrices)
    assert np.allclose(greedy, mean.numpy())


def test_sde_snapshot_round_trip() -> None:
    a, b = make(BOX, seed=0, use_sde=True), make(BOX, seed=1, use_sde=True)
    with torch.no_grad():
        a.log_std.normal_()
    agent.load_snapshot(b, agent.snapshot(a, version=1))
    assert torch.equal(a.log_std, b.log_std)
    obs = torch.randn(4, 4)
    assert torch.equal(a.evaluate(obs, torch.zeros(4, 2))[0], b.evaluate(obs, torch.zeros(4, 2))[0])


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_the_mlp_computes_exactly_what_its_layers_compute_through_their_calls(activation: str) -> None:
    """MLP.forward runs each layer's forward directly (no module-call machinery): bit for bit the result of
    calling the Sequential, for a batch and for one observation, with gradients to every parameter."""
    torch.manual_seed(0)
    mlp = agent.MLP(4, (64, 32), activation)
    for x in (torch.randn(256, 4), torch.randn(1, 4), torch.randn(3, 2, 2)):
        assert torch.equal(mlp(x), mlp.net(x.float()))
    mlp(torch.randn(8, 4)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in mlp.parameters())
