"""Atari copies stepped by EnvPool (C++, a thread pool, one batched call), under our vector-env contract.

Data flow: `env.Env` builds an `EnvPoolVec` instead of gymnasium's Sync/AsyncVectorEnv of `atari.make`
copies when `--vectorization envpool`; the player steps it like any vector env and uploads its uint8
[4, 84, 84] observations unchanged.

EnvPool does our preprocessing (`atari.py`) in C++; `options` maps our `--env-kwargs` onto its options
(the table is in docs/atari.md): frame_skip, frame_stack -> stack_num, screen_size -> img_height/width
(max-pool of the last two frames, grey, INTER_AREA as gymnasium's), noop_max, episodic_life, clip_rewards ->
reward_clip (the unclipped reward still comes in `info["reward"]`, for the game score); our FireReset is its
use_fire_reset; `repeat_action_probability`, `full_action_space`, `mode`, `difficulty` keep their names and
the id's defaults (sticky actions 0.25 for -v5 ids, none for -v4); `max_num_frames_per_episode` becomes
`max_episode_steps`, counted in agent steps.

What differs, and why observations cannot all match bit for bit, is in docs/atari.md: the no-op counts
come from another random generator, FIRE is one frame rather than two agent steps, a lost life resets
with no-ops and FIRE rather than one no-op step.

EnvPool resets next-step: the step after an episode's end resets that copy, ignoring its action. Its obs
is the final observation (the truncation bootstrap reads it from the next row of the rollout) and the reset
step is marked invalid by `env.Env`. Whole games' unclipped scores are reported in `final_info` as the
wrappers' `GameScore` does, so `env.Env` reports games, not lives.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

from a2c.envs import atari

# our option -> EnvPool's; gymnasium.make keywords with the same name in both pass as they are
_RENAMED = {"episodic_life": "episodic_life", "clip_rewards": "reward_clip", "noop_max": "noop_max",
            "frame_skip": "frame_skip", "frame_stack": "stack_num"}
_SAME = ("repeat_action_probability", "full_action_space", "mode", "difficulty")


def task(env_id: str) -> str:
    """EnvPool's task for an ALE id: `ALE/Breakout-v5` and `BreakoutNoFrameskip-v4` are both `Breakout-v5`."""
    if not atari.is_atari(env_id):
        raise ValueError(f"--vectorization envpool steps Atari games (ALE/<Game>-v5, <Game>NoFrameskip-v4); "
                         f"{env_id!r} is not one")
    game = env_id.removeprefix("ALE/").removesuffix("-v5").removesuffix("NoFrameskip-v4")
    return f"{game}-v5"


def options(env_id: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """EnvPool options equal to our preprocessing of `env_id` with `--env-kwargs` `kwargs`; unknown keys refused."""
    atari.register()
    spec_kwargs = gym.spec(env_id).kwargs  # the id's ALE settings: sticky actions for -v5, none for -v4
    ours = {**atari.OPTIONS, **{k: v for k, v in kwargs.items() if k in atari.OPTIONS}}
    ale = {k: spec_kwargs[k] for k in (*_SAME, "max_num_frames_per_episode") if k in spec_kwargs}
    ale.update({k: v for k, v in kwargs.items() if k not in atari.OPTIONS})
    unknown = set(ale) - {*_SAME, "max_num_frames_per_episode"}
    if unknown:
        raise ValueError(f"--vectorization envpool cannot map --env-kwargs {sorted(unknown)}; it maps "
                         f"{sorted([*atari.OPTIONS, *_SAME, 'max_num_frames_per_episode'])}")
    if int(ours["noop_max"]) < 1:
        raise ValueError("--vectorization envpool takes 1 to noop_max frames of no-ops (or FIRE) at every reset; "
                         "noop_max must be >= 1")
    out = {_RENAMED[k]: v for k, v in ours.items() if k in _RENAMED}
    out["img_height"] = out["img_width"] = int(ours["screen_size"])
    out.update({k: ale[k] for k in _SAME if k in ale})
    if "mode" in out and out["mode"] is None:
        del out["mode"]
    if "difficulty" in out and out["difficulty"] is None:
        del out["difficulty"]
    frames = ale.get("max_num_frames_per_episode")
    if frames:  # ALE counts emulator frames, EnvPool agent steps
        out["max_episode_steps"] = int(frames) // int(ours["frame_skip"])
    return out


class EnvPoolVec(gym.vector.VectorEnv):
    """`num_envs` copies of an Atari game in one EnvPool; the pool is built at `reset`, which carries the seed.

    Copy i is seeded with seed + i, as gymnasium's vector environments seed theirs. `fire_reset=False`
    leaves out EnvPool's FIRE frame at reset (the observation-equality test needs it; training keeps it).
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, env_id: str, num_envs: int, fire_reset: bool = True, **kwargs: Any) -> None:
        try:
            import envpool
        except ImportError as e:
            raise gym.error.DependencyNotInstalled("--vectorization envpool needs EnvPool: "
                                                   "pip install 'a2c[envpool]'") from e
        self._make = envpool.make_gymnasium
        self.task = task(env_id)
        if self.task not in envpool.list_all_envs():
            raise ValueError(f"EnvPool {envpool.__version__} has no task {self.task!r} (for {env_id!r})")
        self.options = {**options(env_id, kwargs), "use_fire_reset": fire_reset}
        spec = envpool.make_spec(self.task, num_envs=num_envs, **self.options)
        self.num_envs = num_envs
        self.single_observation_space = spec.gymnasium_observation_space
        self.single_action_space = spec.gymnasium_action_space
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self._pool: Any = None
        self._score = np.zeros(num_envs, dtype=np.float64)  # unclipped score of each running game

    def reset(self, *, seed: int | list[int] | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        if isinstance(seed, list):
            raise ValueError("EnvPool seeds copy i with seed + i; pass one int")
        if self._pool is not None:
            self._pool.close()
        self._pool = self._make(self.task, num_envs=self.num_envs, seed=int(seed or 0), **self.options)
        self._score[:] = 0.0
        obs, info = self._pool.reset()
        return obs, info

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if self._pool is None:
            raise RuntimeError("EnvPoolVec.step before reset")
        obs, rewards, terminated, truncated, info = self._pool.step(np.asarray(actions, dtype=np.int32))
        self._score += info["reward"]  # unclipped; 0 on the reset steps
        game_over = np.asarray(info["terminated"], dtype=bool) | truncated  # a lost life is not a game over
        if game_over.any():
            info = {**info, "final_info": {"game_score": self._score.copy(), "_game_score": game_over}}
            self._score[game_over] = 0.0
        return obs, rewards, terminated, truncated, info

    def close_extras(self, **kwargs: Any) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
