"""Evaluation: play a trained agent greedily and report its returns; record one episode as a GIF.

Data flow: trainer 0 -> `checkpoint.save` -> (this module) `load` -> `agent.Agent` rebuilt from the
checkpoint's config -> `evaluate` / `record_video` on single gymnasium environments -> `a2c eval` prints.
The functions take an `Agent` and an `EnvConfig`, not a file, so training can call them too:
`periodic_eval` runs `evaluate` every --eval-interval iterations, in trainer 0's evaluator process.

Determinism: the policy acts greedily (argmax / Gaussian mean) and episode i is reset with seed + i,
so a fixed seed gives identical episodes, and `record_video(seed=s)` films exactly episode 0 of
`evaluate(seed=s)`. The environment is one `single.make` copy of the players' (the same id and keyword
arguments; Atari as whole games, unclipped), with the registered time limit unless `max_episode_steps`.

Video: GIF through Pillow (already installed with matplotlib): one frame after reset and one after
every step, so an episode of L steps renders L + 1 frames and the clip lasts (L + 1) frame durations.
GIF cannot hold two identical frames in a row (Pillow merges them), and a slow CartPole cart moves
less than a pixel per step, so a repeated picture is written once, shown for the sum of its durations;
`record_video` returns the frames actually in the file (at most L + 1). Rendering classic-control environments with
`render_mode="rgb_array"` needs pygame (`pip install "gymnasium[classic-control]"`), but no display.
MP4 is not offered: it needs an encoder binary (ffmpeg, or PyAV / OpenCV wheels) that is not a
dependency.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

from a2c import config, flags
from a2c.envs import single
from a2c.envs import vector as env

if TYPE_CHECKING:
    from a2c.model import agent


class EvalError(Exception):
    """Bad input for `a2c eval` (missing or unusable checkpoint, video that cannot be made): exit code 2."""


@dataclass
class Result:
    """Undiscounted returns and lengths of the evaluated episodes, in episode order, and their means and
    population standard deviations (ddof 0, as Stable-Baselines3's evaluate_policy reports)."""

    returns: list[float]
    lengths: list[int]
    mean_return: float = field(init=False)
    std_return: float = field(init=False)
    mean_length: float = field(init=False)
    std_length: float = field(init=False)

    def __post_init__(self) -> None:
        self.mean_return, self.std_return = float(np.mean(self.returns)), float(np.std(self.returns))
        self.mean_length, self.std_length = float(np.mean(self.lengths)), float(np.std(self.lengths))

    def summary(self) -> dict[str, Any]:
        return {"episodes": len(self.returns), "mean_return": self.mean_return, "std_return": self.std_return,
                "mean_length": self.mean_length, "std_length": self.std_length,
                "returns": self.returns, "lengths": self.lengths}


@dataclass
class Loaded:
    """A checkpoint made playable: the agent with its weights, and the environment it was trained on."""

    agent: agent.Agent
    env_cfg: config.EnvConfig
    path: Path
    version: int
    env_steps: int | None


# --- the evaluation itself ----------------------------------------------------------------------------


def make_env(env_cfg: config.EnvConfig, render: bool = False, max_episode_steps: int | None = None) -> gym.Env:
    """The environment an evaluation plays: one copy of the training environment (`single.make`), Atari as
    whole games scored unclipped; render: rgb_array frames."""
    return single.make(env_cfg, evaluation=True, render=render, max_episode_steps=max_episode_steps)


def _greedy(model: agent.Agent, obs: Any, action_space: gym.Space) -> Any:
    action = model.greedy(np.asarray(obs)[None])[0]
    if isinstance(action_space, gym.spaces.Box):
        return np.clip(action, action_space.low, action_space.high)  # as the player does before env.step
    return action.item()


def _play(model: agent.Agent, e: gym.Env, seed: int, on_frame: Any = None) -> tuple[float, int]:
    """One greedy episode from reset(seed); calls on_frame(frame) after reset and after every step."""
    obs, _ = e.reset(seed=seed)
    if on_frame is not None:
        on_frame(e.render())
    total, steps, done = 0.0, 0, False
    while not done:
        obs, reward, terminated, truncated, _ = e.step(_greedy(model, obs, e.action_space))
        total += float(reward)
        steps += 1
        done = bool(terminated or truncated)
        if on_frame is not None:
            on_frame(e.render())
    return total, steps


def evaluate(model: agent.Agent, env_cfg: config.EnvConfig, episodes: int = 10, seed: int = 0,
             max_episode_steps: int | None = None) -> Result:
    """Play `episodes` greedy episodes, episode i reset with seed + i; deterministic for a fixed seed."""
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    e = make_env(env_cfg, max_episode_steps=max_episode_steps)
    try:
        played = [_play(model, e, seed + i) for i in range(episodes)]
    finally:
        e.close()
    return Result(returns=[r for r, _ in played], lengths=[n for _, n in played])


def frame_ms(fps: float) -> int:
    """GIF frame duration: whole centiseconds, at least 2 (viewers slow anything shorter down to 10)."""
    return 10 * max(2, round(100 / fps))


def record_video(model: agent.Agent, env_cfg: config.EnvConfig, path: Path, seed: int = 0,
                 fps: float | None = None, max_episode_steps: int | None = None) -> int:
    """Film one greedy episode (episode 0 of `evaluate` with this seed) as a GIF; the frames written."""
    from PIL import Image  # only when filming: keeps `a2c eval` without --video light

    path = Path(path)
    if path.suffix.lower() != ".gif":
        raise EvalError(f"--video {path}: only .gif is supported (MP4 would need an encoder binary)")
    # SDL (pygame renders classic control) probes for a display even for rgb_array frames, and on a terminal
    # without one prints "XDG_RUNTIME_DIR is invalid or not set": frames need no display
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    try:
        e = make_env(env_cfg, render=True, max_episode_steps=max_episode_steps)
    except gym.error.DependencyNotInstalled as exc:
        raise EvalError(f"cannot render {env_cfg.env_id}: {exc}") from exc
    ms = frame_ms(fps or float(e.metadata.get("render_fps") or 30))
    images: list[Image.Image] = []
    durations: list[int] = []
    previous: list[np.ndarray] = []

    def on_frame(frame: np.ndarray | None) -> None:
        if frame is None:
            raise EvalError(f"{env_cfg.env_id} returned no rgb_array frame")
        # palette images at once: a 500-step episode of RGB frames would hold hundreds of MB
        image = Image.fromarray(np.ascontiguousarray(frame)).convert("P", palette=Image.Palette.ADAPTIVE)
        pixels = np.asarray(image.convert("RGB"))  # what Pillow compares: two frames can quantize alike
        if previous and np.array_equal(previous[0], pixels):
            durations[-1] += ms  # Pillow would merge it anyway; merging here keeps the count we return exact
            return
        previous[:] = [pixels]
        images.append(image)
        durations.append(ms)

    try:
        _play(model, e, seed, on_frame)
    except gym.error.DependencyNotInstalled as exc:
        raise EvalError(f"cannot render {env_cfg.env_id}: {exc}") from exc
    finally:
        e.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, save_all=True, append_images=images[1:], duration=durations, loop=0, disposal=1)
    return len(images)


# --- checkpoints -> agents ----------------------------------------------------------------------------


def _known(cls: type, values: Any, where: str) -> Any:
    if not isinstance(values, dict):
        raise EvalError(f"{where}: expected a mapping, got {type(values).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


def load(path: Path) -> Loaded:
    """A checkpoint file, or a run directory (its newest loadable checkpoint), rebuilt into an Agent."""
    # torch only once a checkpoint is read: `a2c.cli` imports this module for every command (the
    # controller's included, which must never import torch)
    from a2c.model import agent, checkpoint

    path = Path(path)
    if path.is_dir():
        candidates = list(reversed(checkpoint.list_checkpoints(path)))
        if not candidates:
            raise EvalError(f"{path}: a run directory without checkpoints (no {path / 'checkpoints' / 'ckpt-*.pt'})")
    elif path.is_file():
        candidates = [path]
    else:
        raise EvalError(f"{path}: no such checkpoint file or run directory")
    try:
        source, state = checkpoint.load_first(candidates)
    except checkpoint.Unreadable as exc:
        raise EvalError(str(exc)) from None
    if not isinstance(state.get("config"), dict):
        raise EvalError(f"{source} has no 'config' (written before checkpoints carried it); cannot rebuild the agent")
    env_cfg = _known(config.EnvConfig, state["config"].get("env", {}), f"{source} config.env")
    algo = _known(config.AlgoConfig, state["config"].get("algo", {}), f"{source} config.algo")
    algo = dataclasses.replace(algo, precision="fp32")  # the fp32 weights as they are (evaluation, export)
    try:
        obs_space, action_space = env.spaces(env_cfg)
        model = agent.Agent(obs_space, action_space, algo)
        model.load_state_dict(state["model"])
    except Exception as exc:  # noqa: BLE001 - unknown env id, bad kwargs, weights of another shape
        raise EvalError(f"{source}: cannot rebuild the agent for {env_cfg.env_id}: {exc}") from exc
    model.eval()
    env_steps = (state.get("progress") or {}).get("env_steps")
    return Loaded(model, env_cfg, source, int(state["version"]), None if env_steps is None else int(env_steps))


# --- `a2c eval` ---------------------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `a2c eval` to the CLI (called by `cli._register_optional`)."""
    help_text = "play a checkpoint greedily: mean ± std return and length; --video films one episode"
    p = sub.add_parser("eval", help=help_text, description=help_text)
    flags.add_arguments(p, config.EvalConfig)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    try:
        return _main(flags.from_namespace(config.EvalConfig, args))
    except EvalError as exc:
        print(f"a2c eval: {exc}", file=sys.stderr)
        return 2


def best_of(run_dir: Path) -> Path:
    """The best-evaluated checkpoint of a run directory (written by trainer 0 with --keep-best)."""
    from a2c.model import checkpoint

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise EvalError(f"--best takes a run directory, got {run_dir}")
    path = checkpoint.best_path(run_dir)
    if not path.is_file():
        raise EvalError(f"{run_dir}: no {path.relative_to(run_dir)} (it is written by trainer 0's periodic "
                        "evaluations: a run with --eval-interval 0 or --keep-best false, or none evaluated yet)")
    return path


def _main(args: config.EvalConfig) -> int:
    if args.episodes < 1:
        raise EvalError(f"--episodes must be at least 1, got {args.episodes}")
    if args.fps < 0 or not math.isfinite(args.fps):
        raise EvalError(f"--fps must be positive, got {args.fps}")
    if args.video is not None and Path(args.video).suffix.lower() != ".gif":
        raise EvalError(f"--video {args.video}: only .gif is supported (MP4 would need an encoder binary)")
    loaded = load(best_of(args.checkpoint) if args.best else args.checkpoint)
    max_steps = args.max_episode_steps or None
    result = evaluate(loaded.agent, loaded.env_cfg, args.episodes, args.seed, max_steps)
    out: dict[str, Any] = {"checkpoint": str(loaded.path), "version": loaded.version, "env_steps": loaded.env_steps,
                           "env_id": loaded.env_cfg.env_id, "seed": args.seed, **result.summary()}
    line = (f"{env.describe(loaded.env_cfg)} {loaded.path.name} (version {loaded.version}): "
            f"return {result.mean_return:.2f} ± {result.std_return:.2f}, "
            f"length {result.mean_length:.1f} ± {result.std_length:.1f} "
            f"over {args.episodes} episodes (seed {args.seed})")
    if args.video is not None:
        frames = record_video(loaded.agent, loaded.env_cfg, args.video, args.seed, args.fps or None, max_steps)
        out.update(video=str(args.video), video_frames=frames)
        line += f"; video {args.video} ({frames} frames)"
    print(line, file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(out))
    return 0
