"""One copy of an environment: the one place an `EnvConfig` becomes a gymnasium environment.

Data flow: `vector.Env` holds n of these in a Sync/AsyncVectorEnv (same-step autoreset) unless the id has a
native vector environment or EnvPool runs it; `evaluate` plays one greedily (`a2c eval`, trainer 0's
evaluator process) and films one (`record_video`).

Every copy is `gymnasium.make(env_id, **env_kwargs)` with the id's registered time limit, or for Atari ids
(`atari.is_atari`) `atari.make`, the preprocessing of the reference implementations. Evaluation
(`evaluation=True`) plays Atari as whole games scored unclipped (all lives, the game's own score: what
people compare), where training ends an episode at every lost life and clips rewards to their sign.
"""

from __future__ import annotations

import gymnasium as gym

from a2c import config
from a2c.envs import atari


def make(cfg: config.EnvConfig, *, evaluation: bool = False, render: bool = False,
         max_episode_steps: int | None = None) -> gym.Env:
    """One copy of `cfg`'s environment. evaluation: Atari as whole games, unclipped; render: rgb_array
    frames from `render()`; max_episode_steps: cut episodes there instead of the registered time limit."""
    kwargs = cfg.kwargs()
    if render:
        kwargs["render_mode"] = "rgb_array"
    if max_episode_steps:
        kwargs["max_episode_steps"] = max_episode_steps
    if atari.is_atari(cfg.env_id):
        if evaluation:
            kwargs.update(episodic_life=False, clip_rewards=False)
        return atari.make(cfg.env_id, **kwargs)
    return gym.make(cfg.env_id, **kwargs)
