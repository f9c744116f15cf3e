"""--precision bf16: the pixel extractor computes in bfloat16 (a player's copy holds bf16 weights, a trainer's
fp32 weights run under autocast); weights, gradients and the optimizer stay fp32; MLPs and heads are untouched."""

from __future__ import annotations

import dataclasses
import platform
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from a2c import config
from a2c.learning import learner
from a2c.model import agent
from tests.support.rollouts import pixel_rollout

FRAMES = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
ACTIONS = gym.spaces.Discrete(4)
ALGO = config.AlgoConfig(optimizer="rmsprop_tf", optim_eps=1e-5, precision="bf16")


def make(algo: config.AlgoConfig, obs_space: gym.Space = FRAMES, seed: int = 0) -> agent.Agent:
    torch.manual_seed(seed)
    return agent.Agent(obs_space, ACTIONS, algo)


def frames(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 4, 84, 84), dtype=np.uint8)


def conv_output_dtypes(model: agent.Agent, obs: torch.Tensor) -> set[torch.dtype]:
    """The dtypes the extractor's convolutions compute in, seen by forward hooks."""
    seen: set[torch.dtype] = set()
    hooks = [m.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
             for m in model.actor_features.modules() if isinstance(m, torch.nn.Conv2d)]
    try:
        with torch.no_grad():
            model(obs)
    finally:
        for h in hooks:
            h.remove()
    return seen


def test_a_player_holds_the_extractor_in_bf16_loads_fp32_weights_and_acts_as_the_trainer_computes() -> None:
    trainer = make(ALGO)
    assert all(p.dtype == torch.float32 for p in trainer.parameters())
    snap = agent.snapshot(trainer, 1)
    assert all(v.dtype == np.float32 for v in snap.tensors.values())  # what travels is fp32

    player = make(ALGO, seed=1)
    player.eval()
    player.hold_bf16()
    agent.load_snapshot(player, snap)
    extractor = {n: p.dtype for n, p in player.actor_features.named_parameters()}
    assert set(extractor.values()) == {torch.bfloat16}
    assert player.actor.weight.dtype == player.critic.weight.dtype == torch.float32  # the heads stay fp32
    for name, p in player.actor_features.named_parameters():  # the trainer's weights, rounded to bf16
        assert torch.equal(p, dict(trainer.actor_features.named_parameters())[name].to(torch.bfloat16))

    obs = torch.as_tensor(frames(8))
    assert conv_output_dtypes(player, obs) == {torch.bfloat16}
    assert conv_output_dtypes(trainer, obs) == {torch.bfloat16}  # fp32 weights under autocast
    with torch.no_grad():
        p_logits, p_value = player(obs)
        t_logits, t_value = trainer(obs)
        fp32 = make(dataclasses.replace(ALGO, precision="fp32"))
        f_logits, f_value = fp32(obs)
    assert p_logits.dtype == p_value.dtype == torch.float32
    torch.testing.assert_close(p_logits, t_logits, rtol=0, atol=1e-5)  # the same bf16 arithmetic
    torch.testing.assert_close(p_value, t_value, rtol=0, atol=1e-4)
    # bf16 is not fp32 (the test sees the difference) but close to it
    assert not torch.equal(t_value, f_value)
    torch.testing.assert_close(t_value, f_value, rtol=0, atol=1e-2)  # values ~1.2
    torch.testing.assert_close(t_logits, f_logits, rtol=0, atol=5e-4)  # logits ~0.01 (the head's gain)

    actions, logp, values = player.act(frames(8, seed=1))
    assert actions.dtype == np.int64 and logp.dtype == values.dtype == np.float32
    assert np.all(logp <= 0) and np.all(np.isfinite(values))


def test_an_update_in_bf16_keeps_fp32_weights_and_optimizer_and_steps_as_fp32_does() -> None:
    r = pixel_rollout(0, t=5, e=4)
    steps = {}
    for precision in ("fp32", "bf16"):
        algo = dataclasses.replace(ALGO, precision=precision)
        lrn = learner.Learner(make(algo), algo, torch.device("cpu"))
        before = [p.detach().clone() for p in lrn.model.parameters()]
        batch = lrn.batch([r], None)
        assert lrn.update(batch, batch.samples) is not None
        assert all(p.dtype == torch.float32 and p.grad is not None and p.grad.dtype == torch.float32
                   for p in lrn.model.parameters())
        assert all(v.dtype == torch.float32 for s in lrn.optimizer.state.values() for v in s.values()
                   if isinstance(v, torch.Tensor))
        steps[precision] = torch.cat([(p.detach() - b).flatten() for p, b in zip(lrn.model.parameters(), before,
                                                                                  strict=True)])
    fp32, bf16 = steps["fp32"], steps["bf16"]
    assert not torch.equal(fp32, bf16)
    cosine = float(torch.nn.functional.cosine_similarity(fp32, bf16, dim=0))
    assert cosine > 0.995, cosine  # 0.9991 here
    assert float(bf16.norm() / fp32.norm()) == pytest.approx(1.0, abs=0.01)


def test_an_mlp_and_an_fp32_extractor_are_untouched() -> None:
    """bf16 is for the convolutional extractor only: an MLP agent computes exactly as at fp32, and hold_bf16
    changes nothing there or at fp32."""
    obs_space = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
    bf16 = make(ALGO, obs_space)
    bf16.hold_bf16()
    fp32 = make(dataclasses.replace(ALGO, precision="fp32"), obs_space)
    x = torch.randn(16, 4)
    with torch.no_grad():
        for a, b in zip(bf16(x), fp32(x), strict=True):
            assert torch.equal(a, b)
    assert all(p.dtype == torch.float32 for p in bf16.parameters())
    pixels = make(dataclasses.replace(ALGO, precision="fp32"))
    pixels.hold_bf16()
    assert all(p.dtype == torch.float32 for p in pixels.parameters())
    assert conv_output_dtypes(pixels, torch.as_tensor(frames(2))) == {torch.float32}


def test_the_flag_takes_auto_fp32_or_bf16_only() -> None:
    with pytest.raises(ValueError, match="precision"):
        make(dataclasses.replace(ALGO, precision="fp16"))
    assert config.AlgoConfig().precision == "auto"


def cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.machine() != "x86_64",
                    reason="the kernel's CPU flags are read from /proc/cpuinfo on Linux x86-64")
def test_native_bf16_is_what_the_kernel_says_the_cpu_has() -> None:
    """auto's test: AVX512-BF16 or AMX-BF16 in the kernel's CPU flags (the machine this suite runs on has them or
    not; either way the detection must agree)."""
    assert agent.cpu_has_bf16() == bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


@pytest.mark.parametrize("native", [True, False])
def test_auto_is_bf16_on_a_cpu_with_native_bf16_and_fp32_elsewhere(monkeypatch: pytest.MonkeyPatch,
                                                                   native: bool) -> None:
    monkeypatch.setattr(agent, "cpu_has_bf16", lambda: native)
    assert agent.bf16_on("auto", "cpu") is native
    assert agent.bf16_on("auto", "cuda") is False  # not measured on GPUs: fp32 there
    assert agent.bf16_on("bf16", "cpu") and agent.bf16_on("bf16", "cuda")
    assert not agent.bf16_on("fp32", "cpu") and not agent.bf16_on("fp32", "cuda")

    auto = dataclasses.replace(ALGO, precision="auto")
    obs = torch.as_tensor(frames(4))
    trainer = make(auto)  # fp32 weights: autocast where auto means bf16
    expected = torch.bfloat16 if native else torch.float32
    assert conv_output_dtypes(trainer, obs) == {expected}
    assert trainer.describe_precision("cpu") == f"NatureCNN in {'bf16' if native else 'fp32'} (--precision auto)"
    player = make(auto)
    player.hold_bf16()
    assert {p.dtype for p in player.actor_features.parameters()} == {expected}
    assert conv_output_dtypes(player, obs) == {expected}
    with torch.no_grad():  # either way the same function as fp32's, to bf16's rounding
        torch.testing.assert_close(player(obs)[1], make(dataclasses.replace(ALGO, precision="fp32"))(obs)[1],
                                   rtol=0, atol=1e-2)
    assert make(auto, gym.spaces.Box(-1, 1, (3,), np.float32)).describe_precision("cpu") == ""
