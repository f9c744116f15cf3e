"""The actor-critic: a feature extractor, an actor (policy head) and a critic (value head).

Data flow: players run `Agent.act` on observations with weights of version k; a trainer's
`learner.Learner.update` runs `Agent.evaluate` (through DDP) on its batch. `snapshot` / `load_snapshot` move
weights in and out as a `weights.WeightSnapshot` (numpy), which is what travels to players.

Policies: categorical for Discrete actions; diagonal Gaussian with a state-independent log-std for Box
actions (actions are sampled unbounded and clipped to the space's bounds by the player before
`env.step`; the log-prob is that of the unclipped sample, as in Stable-Baselines3). With `use_sde`
the Gaussian explores with gSDE (`a2c/model/sde.py`): its std depends on the state through the actor's latent
features, which `forward` returns beside the mean so the trainer's log-prob needs nothing the player
kept (the player's exploration matrices stay in the player). Orthogonal initialisation with the gains
of the reference implementations (sqrt(2) hidden, 0.01 policy, 1 value).

With `normalize_obs`, an `obs_normalizer.ObsNormalizer` (buffers, no parameters) comes first in
`forward` and `value`, so acting, training, checkpoints and evaluation all see the same statistics;
uint8 images are never normalised (NatureCNN scales them by 1/255).
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from a2c import config
from a2c.model import obs_normalizer, rmsprop_tf, sde, weights

log = logging.getLogger(__name__)


def _init(layer: nn.Module, gain: float) -> nn.Module:
    if isinstance(layer, nn.Linear | nn.Conv2d):
        nn.init.orthogonal_(layer.weight, gain)
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)
    return layer


class MLP(nn.Module):
    """Feature extractor for vector observations."""

    def __init__(self, in_dim: int, hidden: tuple[int, ...], activation: str) -> None:
        super().__init__()
        act = {"tanh": nn.Tanh, "relu": nn.ReLU}[activation]
        layers: list[nn.Module] = [nn.Flatten()]
        for size in hidden:
            layers += [_init(nn.Linear(in_dim, size), math.sqrt(2)), act()]
            in_dim = size
        self.net = nn.Sequential(*layers)
        self.out_dim = in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Each layer's forward itself, not through nn.Module.__call__: the same computation without the call
        # machinery, ~4% of a player's step at 64 environments (collect 2,705 -> 2,591 us for 512 samples).
        # Hooks on the layers inside are therefore not run (none are used; hooks on the MLP itself are).
        x = x.float()
        for layer in self.net:
            x = layer.forward(x)
        return x


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX), where oneDNN runs NatureCNN in bf16 at
    about half its fp32 cost; elsewhere bf16 is emulated, and slower than fp32."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return torch.backends.mkldnn.is_available() and any(check is not None and check() for check in checks)


def bf16_on(precision: str, device_type: str) -> bool:
    """Whether --precision `precision` computes the pixel extractor in bf16 on a device of this type: always at
    bf16, never at fp32; at auto on a CPU with native bf16 only (on GPUs auto is fp32: not measured there)."""
    if precision == "auto":
        return device_type == "cpu" and cpu_has_bf16()
    return precision == "bf16"


class NatureCNN(nn.Module):
    """Feature extractor for stacked uint8 frames [C, 84, 84] (Mnih et al. 2015).

    Where `precision` (`--precision`) means bf16 on the device it runs on (`bf16_on`), its arithmetic is
    bfloat16: weights held in bf16 (a player's copy, `Agent.hold_bf16`) are used as they are; fp32 weights (a
    trainer's, whose optimizer steps them in fp32) run under autocast. Its output, the features the heads take,
    is fp32 either way."""

    def __init__(self, shape: tuple[int, ...], precision: str = "fp32") -> None:
        super().__init__()
        self.precision = precision
        c = shape[0]
        self.net = nn.Sequential(
            _init(nn.Conv2d(c, 32, 8, stride=4), math.sqrt(2)), nn.ReLU(),
            _init(nn.Conv2d(32, 64, 4, stride=2), math.sqrt(2)), nn.ReLU(),
            _init(nn.Conv2d(64, 64, 3, stride=1), math.sqrt(2)), nn.ReLU(), nn.Flatten(),
        )
        with torch.no_grad():
            n = int(self.net(torch.zeros(1, *shape)).shape[1])
        self.fc = nn.Sequential(_init(nn.Linear(n, 512), math.sqrt(2)), nn.ReLU())
        self.out_dim = 512

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fc[0].weight.dtype == torch.bfloat16:
            return self.fc(self.net(x.to(torch.bfloat16) / 255.0)).float()
        if not bf16_on(self.precision, x.device.type):
            return self.fc(self.net(x.float() / 255.0))
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            return self.fc(self.net(x.float() / 255.0)).float()


def make_extractor(obs_space: gym.Space, algo: config.AlgoConfig) -> nn.Module:
    shape = tuple(obs_space.shape or ())
    if len(shape) == 3 and obs_space.dtype == np.uint8:
        return NatureCNN(shape, algo.precision)
    return MLP(int(np.prod(shape)), algo.hidden(), algo.activation)


class Agent(nn.Module):
    def __init__(self, obs_space: gym.Space, action_space: gym.Space, algo: config.AlgoConfig) -> None:
        super().__init__()
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        if algo.precision not in config.PRECISIONS:
            raise ValueError(f"unknown precision {algo.precision!r}: one of {', '.join(config.PRECISIONS)}")
        if not self.discrete and not isinstance(action_space, gym.spaces.Box):
            raise ValueError(f"unsupported action space {action_space}: Discrete or Box only")
        self.actor_features = make_extractor(obs_space, algo)
        self.obs_norm: obs_normalizer.ObsNormalizer | None = None
        if algo.normalize_obs:
            if isinstance(self.actor_features, NatureCNN):
                log.warning("--normalize-obs ignored: uint8 image observations are scaled by 1/255 instead")
            else:
                self.obs_norm = obs_normalizer.ObsNormalizer(tuple(obs_space.shape or ()))
        shared = algo.shared_extractor or isinstance(self.actor_features, NatureCNN)
        self.critic_features = self.actor_features if shared else make_extractor(obs_space, algo)
        dim = int(self.actor_features.out_dim)  # type: ignore[arg-type]
        self.sde = bool(algo.use_sde)
        if self.discrete:
            if self.sde:
                raise ValueError(f"--use-sde needs Box actions; {action_space} is discrete")
            self.actor = _init(nn.Linear(dim, int(action_space.n)), 0.01)  # type: ignore[attr-defined]
        else:
            n = int(np.prod(action_space.shape or ()))
            self.actor = _init(nn.Linear(dim, n), 0.01)
            # gSDE: one log-std per (latent feature, action dimension), SB3's full_std
            self.log_std = nn.Parameter(torch.full((dim, n) if self.sde else (n,), float(algo.log_std_init)))
        self.critic = _init(nn.Linear(dim, 1), 1.0)
        self.action_shape = tuple(action_space.shape or ())

    def hold_bf16(self) -> None:
        """A player's copy (on the CPU) where --precision means bf16 there (`bf16_on`): the pixel extractor's
        weights are kept in bf16, so acting uses them without a cast per forward (`load_snapshot` copies the
        trainer's fp32 weights in, rounding them). Nothing changes for an MLP extractor or at fp32. (A NatureCNN
        is always the one extractor of both heads.)"""
        features = self.actor_features
        if isinstance(features, NatureCNN) and bf16_on(features.precision, next(features.parameters()).device.type):
            features.to(torch.bfloat16)

    def describe_precision(self, device_type: str) -> str:
        """The pixel extractor's arithmetic on this device, for the log ("" without one)."""
        features = self.actor_features
        if not isinstance(features, NatureCNN):
            return ""
        return f"NatureCNN in {'bf16' if bf16_on(features.precision, device_type) else 'fp32'} " \
               f"(--precision {features.precision})"

    def normalize(self, obs: torch.Tensor) -> torch.Tensor:
        """Raw observations as the extractors see them (unchanged without --normalize-obs)."""
        return obs if self.obs_norm is None else self.obs_norm(obs)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self._value(self.normalize(obs))

    def _value(self, x: torch.Tensor) -> torch.Tensor:
        return self.critic(self.critic_features(x)).squeeze(-1)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(policy parameters, value) of raw observations: logits for Discrete, mean for Box; with gSDE
        the mean and the actor's latent features (detached: they set the variance), concatenated."""
        x = self.normalize(obs)
        latent = self.actor_features(x)
        params = self.actor(latent)
        if self.sde:
            params = torch.cat([params, latent.detach()], dim=-1)
        if self.critic_features is self.actor_features:  # shared (NatureCNN always): computed once for both heads
            return params, self.critic(latent).squeeze(-1)
        return params, self._value(x)

    def split_sde(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, latent features) of gSDE policy parameters."""
        n = self.log_std.shape[-1]
        return params[..., :n], params[..., n:]

    def evaluate(self, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log-prob of actions, entropy, value) for a flat batch: the inputs of the A2C loss (SB3's
        `evaluate_actions`, in another order)."""
        params, value = self(obs)
        logp, entropy = self.logprob_entropy(params, actions)
        return logp, entropy, value

    def logprob_entropy(self, params: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-prob of actions and entropy of the policy given the actor's output."""
        if self.discrete:
            logp_all = torch.log_softmax(params, dim=-1)
            logp = logp_all.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
            return logp, -(logp_all.exp() * logp_all).sum(-1)
        if self.sde:
            return sde.logprob_entropy(*self.split_sde(params), self.log_std, actions.float())
        return gaussian_logprob_entropy(params, self.log_std, actions.float())

    @torch.no_grad()
    def greedy(self, obs: np.ndarray) -> np.ndarray:
        """The actions `act(obs, deterministic=True)` takes (the most likely action; the mean for Box actions,
        unclipped), from the actor alone: no critic, no log-probabilities. What evaluation plays with."""
        params = self.actor(self.actor_features(self.normalize(torch.as_tensor(obs))))
        if self.discrete:
            return params.argmax(-1).numpy().astype(np.int64)
        return params.numpy().astype(np.float32)

    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool = False,
            sde_matrices: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(actions, log-probs, values) for a batch of observations, as numpy.

        With gSDE, `sde_matrices` [batch, latent, n] are the player's exploration matrices
        (`sde.Exploration`); without them each action draws from the marginal Gaussian, as if with a
        fresh matrix of its own. The log-prob is the same either way."""
        params, value = self(torch.as_tensor(obs))
        if self.discrete:
            logp_all = torch.log_softmax(params, dim=-1)
            if deterministic:
                actions = params.argmax(-1)
            else:
                actions = torch.multinomial(logp_all.exp(), 1).squeeze(-1)
            logp = logp_all.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
            return actions.numpy().astype(np.int64), logp.numpy(), value.numpy()
        if self.sde:
            mean, latent = self.split_sde(params)
            if deterministic:
                sample = mean
            elif sde_matrices is not None:
                sample = mean + sde.noise(latent, sde_matrices)
            else:
                sample = mean + sde.action_std(latent, self.log_std) * torch.randn_like(mean)
            logp, _ = sde.logprob_entropy(mean, latent, self.log_std, sample)
            return sample.numpy().astype(np.float32), logp.numpy(), value.numpy()
        std = self.log_std.exp()
        sample = params if deterministic else params + std * torch.randn_like(params)
        logp, _ = gaussian_logprob_entropy(params, self.log_std, sample)
        return sample.numpy().astype(np.float32), logp.numpy(), value.numpy()


def gaussian_logprob_entropy(
    mean: torch.Tensor, log_std: torch.Tensor, actions: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob and entropy of a diagonal Gaussian, summed over action dimensions."""
    log_std = log_std.expand_as(mean)
    var = torch.exp(2 * log_std)
    logp = -((actions - mean) ** 2) / (2 * var) - log_std - 0.5 * math.log(2 * math.pi)
    entropy = 0.5 + 0.5 * math.log(2 * math.pi) + log_std
    return logp.sum(-1), entropy.sum(-1)


def snapshot(model: nn.Module, version: int) -> weights.WeightSnapshot:
    """The model's weights as numpy arrays (what players download). A tensor the state dict lists under two
    names (the NatureCNN that actor and critic share: `actor_features.*` and `critic_features.*`) is copied
    once and the same array stands under both, so the codec sends it once (Breakout: 6.7 MB, not 13.5)."""
    copies: dict[tuple[Any, ...], np.ndarray] = {}
    tensors = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        key = (v.untyped_storage().data_ptr(), v.storage_offset(), v.dtype, tuple(v.shape), v.stride())
        if key not in copies:
            copies[key] = v.numpy().copy()
        tensors[k] = copies[key]
    return weights.WeightSnapshot(version=version, tensors=tensors)


def load_snapshot(model: nn.Module, snap: weights.WeightSnapshot) -> None:
    """Load a snapshot's weights (copied into the model's own tensors; a read-only array is copied first,
    since torch wants writable memory)."""
    model.load_state_dict({k: torch.from_numpy(v if v.flags.writeable else np.array(v))
                           for k, v in snap.tensors.items()})


def make_optimizer(model: nn.Module, algo: config.AlgoConfig) -> torch.optim.Optimizer:
    """RMSprop as in the A2C paper (Mnih et al. 2016): torch's or TensorFlow's formula; or Adam."""
    if algo.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=algo.lr, eps=algo.optim_eps)
    if algo.optimizer == "rmsprop_tf":
        return rmsprop_tf.RMSpropTF(model.parameters(), lr=algo.lr, alpha=algo.rms_alpha, eps=algo.optim_eps)
    return torch.optim.RMSprop(model.parameters(), lr=algo.lr, alpha=algo.rms_alpha, eps=algo.optim_eps)
