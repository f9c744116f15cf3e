"""Vectorized gymnasium environments with one step contract for both autoreset modes.

Data flow: the player steps an `Env` and records what it returns into a `rollout.Rollout`.

gymnasium has two autoreset modes. Same-step (SyncVectorEnv/AsyncVectorEnv here): an environment that
ends in step t is reset in that step; its final observation comes in `info["final_obs"]`. Next-step
(the default of native vector environments such as CartPole's `vector_entry_point`): the step after the
end resets it, ignoring the action; that reset step is no real transition, so it is marked invalid.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

from a2c import config


@dataclass
class Step:
    obs: np.ndarray
    rewards: np.ndarray       # float32 [E]
    terminated: np.ndarray    # bool [E]
    truncated: np.ndarray     # bool [E]
    valid: np.ndarray         # bool [E]: False where this step only reset the environment
    final_obs: dict[int, np.ndarray]  # env index -> final observation (same-step mode only)


class Env:
    def __init__(self, cfg: config.EnvConfig, num_envs: int | None = None) -> None:
        kwargs = cfg.kwargs()
        n = num_envs or cfg.num_envs
        spec = gym.spec(cfg.env_id)
        if cfg.vectorization == "auto" and spec.vector_entry_point is not None and not kwargs:
            self.vec = gym.make_vec(cfg.env_id, num_envs=n, vectorization_mode="vector_entry_point")
        else:
            # async: one subprocess per copy, for environments whose step is expensive (physics, emulators)
            mode = "async" if cfg.vectorization == "async" else "sync"
            self.vec = gym.make_vec(cfg.env_id, num_envs=n, vectorization_mode=mode,
                                    vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP}, **kwargs)
        self.mode = self.vec.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        self.num_envs = n
        self.observation_space = self.vec.single_observation_space
        self.action_space = self.vec.single_action_space
        self._pending_reset = np.zeros(n, dtype=bool)

    def reset(self, seed: int) -> np.ndarray:
        obs, _ = self.vec.reset(seed=seed)
        self._pending_reset[:] = False
        return np.asarray(obs)

    def step(self, actions: np.ndarray) -> Step:
        if isinstance(self.action_space, gym.spaces.Box):
            actions = np.clip(actions, self.action_space.low, self.action_space.high)
        obs, rew, term, trunc, info = self.vec.step(actions)
        term, trunc = np.asarray(term, dtype=bool), np.asarray(trunc, dtype=bool)
        final: dict[int, np.ndarray] = {}
        if self.mode == AutoresetMode.NEXT_STEP:
            valid = ~self._pending_reset
            self._pending_reset = (term | trunc) & valid
        else:
            valid = np.ones(self.num_envs, dtype=bool)
            if "final_obs" in info:
                for i in np.flatnonzero(info.get("_final_obs", term | trunc)):
                    final[int(i)] = np.asarray(info["final_obs"][i])
        return Step(np.asarray(obs), np.asarray(rew, dtype=np.float32), term & valid, trunc & valid, valid, final)

    def close(self) -> None:
        self.vec.close()


def spaces(cfg: config.EnvConfig) -> tuple[gym.Space, gym.Space]:
    """(observation space, action space) of one copy, for building the model."""
    env = Env(cfg, num_envs=1)
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()


def describe(cfg: config.EnvConfig) -> str:
    return f"{cfg.env_id} {json.dumps(cfg.kwargs())}" if cfg.kwargs() else cfg.env_id
