"""Atari games as pixel environments: the preprocessing of the reference implementations.

Data flow: `single.make` builds one of these for each copy in a player's `vector.Env`, and for an
evaluation, when the id is an ALE id (`ALE/Breakout-v5`, `BreakoutNoFrameskip-v4`); the player steps them
and uploads their uint8 [4, 84, 84] observations as they are (the NatureCNN in `agent.py` scales them to
[0, 1] on the trainer, so floats never travel).

The wrapper stack, innermost first, follows Mnih et al. 2015 as the OpenAI Baselines and
Stable-Baselines3 `AtariWrapper` apply it for training:

1. the ALE game with `frameskip=1` (the skipping is done, with max-pooling, by the next wrapper);
2. gymnasium's `AtariPreprocessing` (as `Preprocessing`, whose step drives the emulator directly): up to
   30 random no-ops at reset, repeat each action for 4 frames and max-pool the last two, 84x84 greyscale,
   uint8;
3. `GameScore`: adds up the unclipped reward of the whole game and reports it in
   `info["game_score"]` on the step that ends the game — this is what players report as the return;
4. `EpisodicLife` (`episodic_life`): a lost life ends the training episode (the value target does not
   bootstrap across it), but reset only continues the game; a real reset happens at game over;
5. `FireReset`: presses FIRE after every reset for games that wait for it (Breakout); without episodic
   life (whole games, as evaluation plays them) also after every lost life, as training's resets did;
6. reward clipping to its sign (`clip_rewards`), for training only;
7. `FrameStackObservation(4)`: the last 4 frames, [4, 84, 84] uint8, channel first.

Options 4 and 6 and the no-op / skip / size / stack parameters can be changed through `--env-kwargs`
(see `OPTIONS`); every other key goes to `gymnasium.make` (e.g. `repeat_action_probability`).
"""

from __future__ import annotations

import functools
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

# --env-kwargs keys consumed here rather than passed to gymnasium.make, with their defaults
OPTIONS: dict[str, Any] = {
    "episodic_life": True, "clip_rewards": True, "noop_max": 30, "frame_skip": 4, "screen_size": 84,
    "frame_stack": 4,
}


def is_atari(env_id: str) -> bool:
    """An Arcade Learning Environment id: `ALE/<Game>-v5` or the older `<Game>NoFrameskip-v4`."""
    return env_id.startswith("ALE/") or env_id.endswith("NoFrameskip-v4")


@functools.cache
def register() -> None:
    """Make the ALE ids known to gymnasium (once per process; ale-py ships the ROMs in its wheel)."""
    try:
        import ale_py
    except ImportError as e:
        raise gym.error.DependencyNotInstalled("Atari games need ale-py: pip install 'a2c[atari]'") from e
    gym.register_envs(ale_py)


class Preprocessing(gym.wrappers.AtariPreprocessing):
    """gymnasium's `AtariPreprocessing` with a step that acts on the emulator itself, frame by frame.

    The wrapper's own step takes each of its 4 frames through the wrappers `gym.make` adds and ale-py's
    `AtariEnv.step`, which also fetches the RGB screen and builds an info dict on every frame, for the
    wrapper to discard: about a fifth of an environment step's CPU (docs/atari.md, "Speed on CPU"). This
    step runs the same per-frame code as `AtariEnv.step` (`ale.act`, then game over and truncation) and
    fetches only the two greyscale screens it pools; its outputs are the wrapper's, bit for bit
    (`tests/test_atari.py` steps both side by side). Where that code is not what runs (another ale-py's
    `AtariEnv.step`, continuous actions, life loss as terminal), the wrapper's own step runs.
    """

    def __init__(self, env: gym.Env, **kwargs: Any) -> None:
        super().__init__(env, **kwargs)
        from ale_py.env import AtariEnv
        atari_env = env.unwrapped
        self.direct = (type(atari_env).step is AtariEnv.step and not getattr(atari_env, "continuous", True)
                       and not self.terminal_on_life_loss and self.grayscale_obs
                       and hasattr(self.ale, "game_truncated"))

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        if not self.direct:
            return super().step(action)
        atari_env: Any = self.env.unwrapped
        ale, skip = self.ale, self.frame_skip
        ale_action = atari_env._action_set[action]
        total, terminated, truncated = 0.0, False, False
        for t in range(skip):
            total += ale.act(ale_action, 1.0)
            terminated, truncated = ale.game_over(with_truncation=False), ale.game_truncated()
            self.game_over = terminated
            if terminated or truncated:
                break
            if t == skip - 2:
                ale.getScreenGrayscale(self.obs_buffer[1])
            elif t == skip - 1:
                ale.getScreenGrayscale(self.obs_buffer[0])
        return self._get_obs(), total, terminated, truncated, atari_env._get_info()


class GameScore(gym.Wrapper):
    """Reports the unclipped score of the whole game in `info["game_score"]` on the step that ends it.

    Sits below the episodic-life and clipping wrappers, so it sees every real reward, also those of the
    steps that those wrappers take inside `reset`, and only the real reset at game over.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.score = 0.0

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        self.score = 0.0
        return self.env.reset(**kwargs)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.score += float(reward)
        if terminated or truncated:
            info = {**info, "game_score": self.score}
        return obs, reward, terminated, truncated, info


class EpisodicLife(gym.Wrapper):
    """A lost life ends the episode; reset then continues the same game with one no-op step.

    As `EpisodicLifeEnv` in OpenAI Baselines and Stable-Baselines3: the value target stops at a lost life,
    which helps early learning, while the game (and its score) goes on until the last life.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.lives = 0
        self.game_over = True

    def _ale_lives(self) -> int:
        return int(self.env.unwrapped.ale.lives())  # type: ignore[attr-defined]

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.game_over = bool(terminated or truncated)
        lives = self._ale_lives()
        if 0 < lives < self.lives:
            terminated = True
        self.lives = lives
        return obs, reward, terminated, truncated, info

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        if self.game_over:
            obs, info = self.env.reset(**kwargs)
        else:
            obs, _, terminated, truncated, info = self.env.step(0)  # no-op: the game goes on
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
        self.game_over = False
        self.lives = self._ale_lives()
        return obs, info


class FireReset(gym.Wrapper):
    """Presses FIRE (then action 2) after reset, for games that stand still until FIRE is pressed.

    With `after_life_loss` also after every lost life. Training (episodic life: a lost life is a reset)
    always had the wrapper press FIRE there, so an agent never learns to; a whole game played without
    episodic life (evaluation) would otherwise stand still after the first lost life until the time limit.
    """

    def __init__(self, env: gym.Env, after_life_loss: bool = False) -> None:
        super().__init__(env)
        self.after_life_loss = after_life_loss
        self.lives = 0

    def _ale_lives(self) -> int:
        return int(self.env.unwrapped.ale.lives())  # type: ignore[attr-defined]

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        for action in (1, 2):
            obs, _, terminated, truncated, _ = self.env.step(action)
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
        self.lives = self._ale_lives()
        return obs, info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        total = float(reward)
        if self.after_life_loss and not (terminated or truncated) and self._ale_lives() < self.lives:
            for fire in (1, 2):
                obs, reward, terminated, truncated, info = self.env.step(fire)
                total += float(reward)
                if terminated or truncated:
                    break
        self.lives = self._ale_lives()
        return obs, total, terminated, truncated, info


def needs_fire(env: gym.Env) -> bool:
    meanings = env.unwrapped.get_action_meanings()  # type: ignore[attr-defined]
    return len(meanings) >= 3 and meanings[1] == "FIRE"


def _sign(reward: SupportsFloat) -> float:
    return float(np.sign(float(reward)))


def make(env_id: str, **kwargs: Any) -> gym.Env:
    """One preprocessed copy of an Atari game: uint8 [frame_stack, screen_size, screen_size] observations."""
    register()
    opts = {k: kwargs.pop(k, default) for k, default in OPTIONS.items()}
    env: gym.Env = gym.make(env_id, frameskip=1, **kwargs)
    env = Preprocessing(env, noop_max=opts["noop_max"], frame_skip=opts["frame_skip"],
                        screen_size=opts["screen_size"], terminal_on_life_loss=False, grayscale_obs=True,
                        scale_obs=False)
    env = GameScore(env)
    if opts["episodic_life"]:
        env = EpisodicLife(env)
    if needs_fire(env):
        env = FireReset(env, after_life_loss=not opts["episodic_life"])
    if opts["clip_rewards"]:
        env = gym.wrappers.TransformReward(env, _sign)
    return gym.wrappers.FrameStackObservation(env, opts["frame_stack"])
