"""Vectorized gymnasium environments with one step contract for both autoreset modes.

Data flow: the player steps an `Env` and records what it returns into a `rollout.Rollout`.

gymnasium has two autoreset modes. Same-step (SyncVectorEnv/AsyncVectorEnv here): an environment that
ends in step t is reset in that step; its final observation comes in `info["final_obs"]`. Next-step
(the default of native vector environments such as CartPole's `vector_entry_point`): the step after the
end resets it, ignoring the action; that reset step is no real transition, so it is marked invalid.

Each copy is built by `single.make` (which also builds evaluation's one) and stepped same-step, unless the
id has a native vector environment (next-step) or `--vectorization envpool` runs an Atari id in EnvPool
(`envpool_env`, next-step). Atari ids (`atari.is_atari`) train on episodes that end at every lost life, with
clipped rewards, so the return players report comes from the game's own unclipped score
(`info["game_score"]` at game over), not from the rewards in the rollout.

With `normalize_reward_gamma` (the player's --normalize-reward, with the algorithm's gamma) the rewards
a step returns are scaled by `return_normalizer`; the episode returns it reports are always the raw ones.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

from a2c import config
from a2c.envs import atari, envpool_env, return_normalizer, single


@dataclass
class Step:
    obs: np.ndarray
    rewards: np.ndarray       # float32 [E]
    terminated: np.ndarray    # bool [E]
    truncated: np.ndarray     # bool [E]
    valid: np.ndarray         # bool [E]: False where this step only reset the environment
    final_obs: dict[int, np.ndarray]  # env index -> final observation (same-step mode only)
    episodes: dict[int, tuple[float, int]]  # env index -> (return, length) of an episode ended here: what to report


class Env:
    def __init__(self, cfg: config.EnvConfig, num_envs: int | None = None,
                 normalize_reward_gamma: float | None = None) -> None:
        kwargs = cfg.kwargs()
        n = num_envs or cfg.num_envs
        self.vec: gym.vector.VectorEnv
        if cfg.vectorization == "envpool":  # EnvPool's C++ pool of Atari copies, next-step autoreset
            self.vec = envpool_env.EnvPoolVec(cfg.env_id, n, **kwargs)
        elif (cfg.vectorization == "auto" and not atari.is_atari(cfg.env_id) and not kwargs
              and gym.spec(cfg.env_id).vector_entry_point is not None):
            self.vec = gym.make_vec(cfg.env_id, num_envs=n, vectorization_mode="vector_entry_point")
        else:
            # n copies of `single.make`, same-step autoreset; async: one subprocess per copy, for environments
            # whose step is expensive (physics, emulators)
            vec_cls = gym.vector.AsyncVectorEnv if cfg.vectorization == "async" else gym.vector.SyncVectorEnv
            self.vec = vec_cls([functools.partial(single.make, cfg)] * n, autoreset_mode=AutoresetMode.SAME_STEP)
        self.mode = self.vec.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        self.num_envs = n
        self.game_scores = atari.is_atari(cfg.env_id)  # returns come from info["game_score"]
        self.observation_space = self.vec.single_observation_space
        self.action_space = self.vec.single_action_space
        self._pending_reset = np.zeros(n, dtype=bool)
        self._return = np.zeros(n, dtype=np.float64)  # of the running episode, for reporting
        self._length = np.zeros(n, dtype=np.int64)
        self.reward_scaler = (None if normalize_reward_gamma is None
                              else return_normalizer.ReturnNormalizer(n, normalize_reward_gamma))

    def reset(self, seed: int) -> np.ndarray:
        """Reset every copy (copy i with seed + i, as gymnasium's vector environments do)."""
        obs, _ = self.vec.reset(seed=seed)
        self._pending_reset[:] = False
        self._return[:] = 0.0
        self._length[:] = 0
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
        term, trunc = term & valid, trunc & valid
        rewards = np.asarray(rew, dtype=np.float32)
        episodes = self._episodes(rewards, term | trunc, valid, info)
        if self.reward_scaler is not None:
            rewards = self.reward_scaler.scale(rewards, valid, term | trunc)
        return Step(np.asarray(obs), rewards, term, trunc, valid, final, episodes)

    def _episodes(self, rewards: np.ndarray, ended: np.ndarray, valid: np.ndarray,
                  info: dict) -> dict[int, tuple[float, int]]:
        """Episodes that ended in this step, with their return and length (in agent steps)."""
        self._length += valid
        if self.game_scores:  # Atari: an episode is a whole game, its return the unclipped score of all its lives
            final_info = info.get("final_info", {})
            ended = np.asarray(final_info.get("_game_score", np.zeros(self.num_envs, dtype=bool)), dtype=bool)
            returns = np.asarray(final_info.get("game_score", self._return), dtype=np.float64)
        else:
            self._return += np.where(valid, rewards, 0.0)
            returns = self._return
        out = {int(i): (float(returns[i]), int(self._length[i])) for i in np.flatnonzero(ended)}
        self._return[ended] = 0.0
        self._length[ended] = 0
        return out

    def close(self) -> None:
        self.vec.close()


SEED_STRIDE = 1000  # players' base seeds lie at least this far apart (the stride of every run before any width)


def player_seed(seed: int, player: int, num_envs: int) -> int:
    """Player `player`'s base seed: its copy i is reset with base + i (`Env.reset`), so the bases lie at least
    num_envs apart and no two players' copies share a seed, whatever the width. Up to 1000 copies a player this
    is seed + 1000 * player, the seeds of every run before (the published results reproduce)."""
    return seed + max(SEED_STRIDE, num_envs) * player


def spaces(cfg: config.EnvConfig) -> tuple[gym.Space, gym.Space]:
    """(observation space, action space) of one copy, for building the model."""
    env = Env(cfg, num_envs=1)
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()


def describe(cfg: config.EnvConfig) -> str:
    return f"{cfg.env_id} {json.dumps(cfg.kwargs())}" if cfg.kwargs() else cfg.env_id
