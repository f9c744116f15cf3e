"""What a player sends its trainer: T steps of E environments, as numpy arrays (no torch, no gRPC).

Data flow: player collects a `Rollout` -> service.codec turns it into chunks -> trainer rebuilds it and
calls `validate` before queueing it for the next DDP step.

Layout (T steps, E environments):
    obs         [T+1, E, *obs_shape]   obs[T] is the bootstrap observation after the last step
    actions     [T, E, *action_shape]
    rewards     [T, E] float32
    terminated  [T, E] bool            the episode ended in a terminal state (no bootstrap)
    truncated   [T, E] bool            the episode was cut by a time limit (bootstrap from final obs)
    valid       [T, E] bool            False for the reset step of next-step autoreset environments
    logprobs    [T, E] float32         behaviour log-probabilities
    values      [T, E] float32         behaviour values
    final_obs   [K, *obs_shape]        final observations of steps that ended an episode when obs[t+1]
    final_index [K] int64              is already the next episode's first one (flat index t * E + e)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

ARRAY_FIELDS = (
    "obs", "actions", "rewards", "terminated", "truncated", "valid", "logprobs", "values", "final_obs", "final_index",
)


class RolloutError(ValueError):
    """A rollout that must be refused; the message says why."""


@dataclass
class Rollout:
    player_id: int
    policy_version: int
    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    valid: np.ndarray
    logprobs: np.ndarray
    values: np.ndarray
    final_obs: np.ndarray
    final_index: np.ndarray
    episode_returns: list[float] = field(default_factory=list)
    episode_lengths: list[int] = field(default_factory=list)
    generation: int = 0  # of the weights it was acted with (`weights.WeightSnapshot.generation`; 0: not stated)

    @property
    def num_steps(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def num_envs(self) -> int:
        return int(self.rewards.shape[1])

    @property
    def num_samples(self) -> int:
        """Transitions that count for training (reset steps excluded)."""
        return int(self.valid.sum())

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in ARRAY_FIELDS}

    def nbytes(self) -> int:
        return sum(int(a.nbytes) for a in self.arrays().values())


@dataclass(frozen=True)
class Spec:
    """What a trainer accepts: the environment's spaces and the run's rollout size."""

    obs_shape: tuple[int, ...]
    obs_dtype: np.dtype
    action_shape: tuple[int, ...]
    action_dtype: np.dtype
    num_steps: int
    max_envs: int = 4096
    num_actions: int = 0  # Discrete(n): actions must lie in [0, n); 0 for continuous actions

    @classmethod
    def of(cls, observation_space: Any, action_space: Any, num_steps: int) -> Spec:
        """The spec of an environment's (gymnasium) spaces: discrete actions travel as int64, others as float32."""
        discrete = action_space.shape == ()
        return cls(obs_shape=tuple(observation_space.shape or ()), obs_dtype=np.dtype(observation_space.dtype),
                   action_shape=tuple(action_space.shape or ()),
                   action_dtype=np.dtype(np.int64) if discrete else np.dtype(np.float32),
                   num_steps=num_steps, num_actions=int(getattr(action_space, "n", 0)))


def validate(r: Rollout, spec: Spec) -> None:
    """Raise RolloutError unless every array has the right shape, dtype and finite values."""
    t, e = r.rewards.shape if r.rewards.ndim == 2 else (-1, -1)
    if r.rewards.ndim != 2:
        raise RolloutError(f"rewards must be [T, E], got shape {r.rewards.shape}")
    if t != spec.num_steps:
        raise RolloutError(f"rollout has {t} steps, the trainer expects {spec.num_steps}")
    if not 1 <= e <= spec.max_envs:
        raise RolloutError(f"rollout has {e} environments, expected 1..{spec.max_envs}")
    if r.final_index.ndim != 1:
        raise RolloutError(f"final_index has shape {tuple(r.final_index.shape)}, expected one dimension (K,)")
    k = int(r.final_index.shape[0])
    expected: dict[str, tuple[tuple[int, ...], tuple[np.dtype, ...]]] = {
        "obs": ((t + 1, e, *spec.obs_shape), (spec.obs_dtype,)),
        "actions": ((t, e, *spec.action_shape), (spec.action_dtype,)),
        "rewards": ((t, e), (np.dtype(np.float32),)),
        "terminated": ((t, e), (np.dtype(np.bool_),)),
        "truncated": ((t, e), (np.dtype(np.bool_),)),
        "valid": ((t, e), (np.dtype(np.bool_),)),
        "logprobs": ((t, e), (np.dtype(np.float32),)),
        "values": ((t, e), (np.dtype(np.float32),)),
        "final_obs": ((k, *spec.obs_shape), (spec.obs_dtype,)),
        "final_index": ((k,), (np.dtype(np.int64),)),
    }
    for name, (shape, dtypes) in expected.items():
        arr = getattr(r, name)
        if tuple(arr.shape) != shape:
            raise RolloutError(f"{name} has shape {tuple(arr.shape)}, expected {shape}")
        if arr.dtype not in dtypes:
            raise RolloutError(f"{name} has dtype {arr.dtype}, expected {dtypes[0]}")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise RolloutError(f"{name} holds NaN or infinite values")
    if r.actions.dtype.kind in "iu" and r.actions.size:
        low, high = int(r.actions.min()), int(r.actions.max())
        if low < 0 or (spec.num_actions and high >= spec.num_actions):
            raise RolloutError(f"actions must lie in [0, {spec.num_actions or 'n'}), got values in [{low}, {high}]")
    if k and (r.final_index.min() < 0 or r.final_index.max() >= t * e):
        raise RolloutError(f"final_index out of range [0, {t * e})")
    if len(r.episode_returns) != len(r.episode_lengths):
        raise RolloutError("episode_returns and episode_lengths differ in length")
    if not np.isfinite(np.asarray(r.episode_returns, dtype=np.float64)).all():
        raise RolloutError("episode_returns hold NaN or infinite values")
    if any(n < 0 for n in r.episode_lengths):
        raise RolloutError("episode_lengths must be >= 0")
