"""evaluate: greedy evaluation of checkpoints, GIF videos, and `a2c eval`'s output and exit codes."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from PIL import Image

from a2c import cli, config
from a2c.envs import vector as env
from a2c.evaluation import evaluate
from a2c.model import agent, checkpoint


def save_untrained(run_dir: Path, env_cfg: config.EnvConfig | None = None, version: int = 7,
                   algo: config.AlgoConfig | None = None, seed: int = 0) -> Path:
    """An untrained Agent in exactly the format trainer._checkpoint writes."""
    env_cfg = env_cfg or config.EnvConfig()
    algo = algo or config.AlgoConfig()
    torch.manual_seed(seed)
    model = agent.Agent(*env.spaces(env_cfg), algo)
    state = {"model": model.state_dict(), "optimizer": agent.make_optimizer(model, algo).state_dict(),
             "progress": {"env_steps": 1234},
             "config": {"env": dataclasses.asdict(env_cfg), "algo": dataclasses.asdict(algo)}}
    return checkpoint.save(run_dir, version, state)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["eval", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def gif_durations(path: Path) -> list[int]:
    """Each frame's display time in ms, in file order."""
    gif = Image.open(path)
    out = []
    for i in range(gif.n_frames):
        gif.seek(i)
        out.append(int(gif.info["duration"]))
    return out


@pytest.fixture
def cartpole(tmp_path: Path) -> Path:
    save_untrained(tmp_path)
    return tmp_path


# --- evaluate() -----------------------------------------------------------------------------------------


def test_load_rebuilds_the_saved_weights(cartpole: Path) -> None:
    loaded = evaluate.load(cartpole)
    saved = checkpoint.load(checkpoint.path_for(cartpole, 7))["model"]
    assert loaded.version == 7 and loaded.env_steps == 1234 and loaded.env_cfg == config.EnvConfig()
    assert loaded.path == checkpoint.path_for(cartpole, 7)
    assert all(torch.equal(loaded.agent.state_dict()[k], v) for k, v in saved.items())


def test_evaluation_is_deterministic_for_a_fixed_seed(cartpole: Path) -> None:
    loaded = evaluate.load(cartpole)
    a = evaluate.evaluate(loaded.agent, loaded.env_cfg, episodes=5, seed=3)
    b = evaluate.evaluate(evaluate.load(cartpole).agent, loaded.env_cfg, episodes=5, seed=3)
    assert a == b and len(a.returns) == len(a.lengths) == 5
    assert a.returns == [float(n) for n in a.lengths], "CartPole pays 1 per step"


def test_different_seeds_give_different_episodes(cartpole: Path) -> None:
    """CartPole's start state is random, so another seed starts (and ends) the episodes elsewhere."""
    loaded = evaluate.load(cartpole)
    a = evaluate.evaluate(loaded.agent, loaded.env_cfg, episodes=5, seed=0)
    b = evaluate.evaluate(loaded.agent, loaded.env_cfg, episodes=5, seed=100)
    assert a.lengths != b.lengths


def test_episode_i_is_reset_with_seed_plus_i(cartpole: Path) -> None:
    loaded = evaluate.load(cartpole)
    three = evaluate.evaluate(loaded.agent, loaded.env_cfg, episodes=3, seed=10)
    last_two = evaluate.evaluate(loaded.agent, loaded.env_cfg, episodes=2, seed=11)
    assert three.lengths[1:] == last_two.lengths


def test_result_statistics_are_population_mean_and_std() -> None:
    r = evaluate.Result(returns=[1.0, 3.0], lengths=[10, 20])
    assert (r.mean_return, r.std_return, r.mean_length, r.std_length) == (2.0, 1.0, 15.0, 5.0)
    assert r.summary()["episodes"] == 2


def test_continuous_actions_act_with_the_mean_within_bounds(tmp_path: Path) -> None:
    """Pendulum (Box actions, bounds ±2): the greedy mean is clipped and the episodes run to the time limit."""
    save_untrained(tmp_path, config.EnvConfig(env_id="Pendulum-v1"))
    loaded = evaluate.load(tmp_path)
    a = evaluate.evaluate(loaded.agent, loaded.env_cfg, episodes=2, seed=0, max_episode_steps=50)
    assert a == evaluate.evaluate(loaded.agent, loaded.env_cfg, episodes=2, seed=0, max_episode_steps=50)
    assert a.lengths == [50, 50] and all(r < 0 for r in a.returns) and a.returns[0] != a.returns[1]


def test_max_episode_steps_cuts_episodes(cartpole: Path) -> None:
    loaded = evaluate.load(cartpole)
    assert evaluate.evaluate(loaded.agent, loaded.env_cfg, episodes=3, seed=0, max_episode_steps=4).lengths == [4] * 3


# --- record_video() with an environment that draws the step number, no pygame needed ---------------------


class Counter(gym.Env[np.ndarray, np.int64]):
    """Six steps, then terminated; its frame shows step // 2, so frames come in identical pairs."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, render_mode: str | None = None) -> None:
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.render_mode = render_mode
        self.t = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(4, np.float32), {}

    def step(self, action: np.int64) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.t += 1
        return np.full(4, self.t / 10, np.float32), 1.0, self.t == 6, False, {}

    def render(self) -> np.ndarray:
        return np.full((8, 12, 3), 40 * (self.t // 2), np.uint8)


gym.register(id="A2CTestCounter-v0", entry_point=Counter)


def test_record_video_writes_one_frame_per_distinct_picture(tmp_path: Path) -> None:
    env_cfg = config.EnvConfig(env_id="A2CTestCounter-v0")
    model = agent.Agent(*env.spaces(env_cfg), config.AlgoConfig())
    path = tmp_path / "sub" / "counter.gif"
    # 6 steps render 7 frames showing 0 0 1 1 2 2 3: four pictures, the first three shown twice as long
    assert evaluate.record_video(model, env_cfg, path, seed=0, fps=10) == 4
    gif = Image.open(path)
    assert gif.n_frames == 4 and gif.size == (12, 8)
    colours = []
    for i in range(gif.n_frames):
        gif.seek(i)
        colours.append(int(np.asarray(gif.convert("RGB"))[0, 0, 0]))
    assert colours == [0, 40, 80, 120] and gif_durations(path) == [200, 200, 200, 100]


def test_frame_durations_are_whole_centiseconds_of_at_least_two() -> None:
    assert [evaluate.frame_ms(f) for f in (10, 15, 30, 50, 1000)] == [100, 70, 30, 20, 20]


def test_record_video_refuses_formats_other_than_gif(tmp_path: Path) -> None:
    env_cfg = config.EnvConfig(env_id="A2CTestCounter-v0")
    model = agent.Agent(*env.spaces(env_cfg), config.AlgoConfig())
    with pytest.raises(evaluate.EvalError, match="only .gif"):
        evaluate.record_video(model, env_cfg, tmp_path / "clip.mp4")
    assert not (tmp_path / "clip.mp4").exists()


def test_cartpole_video_films_episode_zero(cartpole: Path, tmp_path: Path) -> None:
    """The real renderer (pygame): one frame after reset and one per step, 600x400 at CartPole's 50 fps. A slow
    cart moves less than a pixel per step, so some pictures repeat and are shown longer instead."""
    pytest.importorskip("pygame")
    loaded = evaluate.load(cartpole)
    length = evaluate.evaluate(loaded.agent, loaded.env_cfg, episodes=1, seed=5).lengths[0]
    frames = evaluate.record_video(loaded.agent, loaded.env_cfg, tmp_path / "cartpole.gif", seed=5)
    gif = Image.open(tmp_path / "cartpole.gif")
    assert frames == gif.n_frames and 1 < frames <= length + 1 and gif.size == (600, 400)
    assert sum(gif_durations(tmp_path / "cartpole.gif")) == (length + 1) * 20


# --- a2c eval -----------------------------------------------------------------------------------------


def test_cli_prints_mean_and_std(cartpole: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, str(cartpole), "--episodes", "3", "--seed", "2")
    loaded = evaluate.load(cartpole)
    r = evaluate.evaluate(loaded.agent, loaded.env_cfg, episodes=3, seed=2)
    assert code == 0, err
    assert f"return {r.mean_return:.2f} ± {r.std_return:.2f}" in out and "over 3 episodes (seed 2)" in out
    assert "CartPole-v1 ckpt-000000007.pt (version 7)" in out


def test_cli_json_parses_and_matches_evaluate(cartpole: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = checkpoint.path_for(cartpole, 7)
    code, out, err = run_cli(capsys, str(file), "--episodes", "4", "--seed", "1", "--json")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 1, "with --json stdout holds only the JSON object"
    got = json.loads(lines[0])
    loaded = evaluate.load(file)
    want = evaluate.evaluate(loaded.agent, loaded.env_cfg, episodes=4, seed=1).summary()
    assert {k: got[k] for k in want} == want
    assert (got["checkpoint"], got["version"], got["env_steps"], got["env_id"], got["seed"]) == (
        str(file), 7, 1234, "CartPole-v1", 1)
    assert "return" in err, "the human-readable line moves to stderr"


def test_cli_video_frames_match_episode_zero(cartpole: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("pygame")
    gif = tmp_path / "out" / "ep0.gif"
    code, out, err = run_cli(capsys, str(cartpole), "--episodes", "2", "--json", "--video", str(gif))
    assert code == 0, err
    got = json.loads(out)
    assert got["video"] == str(gif) and got["video_frames"] == Image.open(gif).n_frames
    assert sum(gif_durations(gif)) == (got["lengths"][0] + 1) * 20, "the clip lasts episode 0's steps + 1 frames"


def test_a_video_on_a_terminal_without_a_display_prints_nothing_from_sdl(cartpole: Path, tmp_path: Path) -> None:
    """pygame's SDL looks for a display even for rgb_array frames; without one (no XDG_RUNTIME_DIR, as over
    ssh or in a container) it used to print "XDG_RUNTIME_DIR is invalid or not set" on the user's terminal."""
    pytest.importorskip("pygame")
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_RUNTIME_DIR", "SDL_VIDEODRIVER", "WAYLAND_DISPLAY",
                                                             "DISPLAY")}
    done = subprocess.run([sys.executable, "-m", "a2c", "eval", str(cartpole), "--episodes", "1",
                           "--video", str(tmp_path / "ep0.gif")], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "XDG_RUNTIME_DIR" not in done.stdout + done.stderr, done.stderr
    assert (tmp_path / "ep0.gif").exists()


def missing(d: Path) -> Path:
    return d / "missing.pt"


def empty_run_dir(d: Path) -> Path:
    return d


def garbage(d: Path) -> Path:
    (d / "junk.pt").write_bytes(b"not a torch file")
    return d / "junk.pt"


def foreign(d: Path) -> Path:
    torch.save({"weights": torch.zeros(2)}, d / "other.pt")
    return d / "other.pt"


@pytest.mark.parametrize(("make", "message"), [
    (missing, "no such checkpoint file or run directory"),
    (empty_run_dir, "a run directory without checkpoints"),
    (garbage, "junk.pt is not a readable a2c checkpoint"),
    (foreign, "other.pt is not an a2c checkpoint"),
])
def test_cli_bad_checkpoints_exit_2_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      make: Any, message: str) -> None:
    code, out, err = run_cli(capsys, str(make(tmp_path)))
    assert code == 2 and message in err and "Traceback" not in err and out == ""


def test_cli_checkpoint_without_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = agent.Agent(*env.spaces(config.EnvConfig()), config.AlgoConfig())
    checkpoint.save(tmp_path, 1, {"model": model.state_dict(), "progress": {}})
    code, _, err = run_cli(capsys, str(tmp_path))
    assert code == 2 and "has no 'config'" in err


def test_cli_weights_that_do_not_fit_the_config_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = save_untrained(tmp_path)
    state = checkpoint.load(path)
    state["config"]["algo"]["hidden_sizes"] = "32"
    torch.save(state, path)
    code, _, err = run_cli(capsys, str(path))
    assert code == 2 and "cannot rebuild the agent for CartPole-v1" in err and "size mismatch" in err


def test_cli_falls_back_past_a_corrupt_newest_checkpoint(cartpole: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint.path_for(cartpole, 9).write_bytes(b"torn")
    code, out, err = run_cli(capsys, str(cartpole), "--episodes", "1")
    assert code == 0 and "(version 7)" in out


@pytest.mark.parametrize(("args", "message"), [
    (["--episodes", "0"], "--episodes must be at least 1"),
    (["--video", "clip.mp4"], "only .gif is supported"),
    (["--fps", "-5", "--video", "clip.gif"], "--fps must be positive"),
])
def test_cli_bad_options_exit_2(cartpole: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                                message: str) -> None:
    code, out, err = run_cli(capsys, str(cartpole), *args)
    assert code == 2 and message in err and out == ""


@pytest.mark.slow
def test_eval_of_a_real_run(tmp_path: Path) -> None:
    """End to end as a user runs it: a short `a2c local`, then `a2c eval RUN_DIR --json` in a new process."""
    run_dir = tmp_path / "run"
    local = subprocess.run([sys.executable, "-m", "a2c", "local", "--max-env-steps", "3000", "--progress", "false",
                            "--plot", "false", "--run-dir", str(run_dir)], capture_output=True, text=True, timeout=120)
    assert local.returncode == 0, local.stdout + local.stderr
    newest = checkpoint.list_checkpoints(run_dir)[-1]
    runs = [subprocess.run([sys.executable, "-m", "a2c", "eval", str(run_dir), "--episodes", "3", "--seed", "4",
                            "--json"], capture_output=True, text=True, timeout=120) for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr
    first, second = (json.loads(r.stdout) for r in runs)
    assert first == second and first["checkpoint"] == str(newest) and first["env_steps"] >= 3000
    assert len(first["returns"]) == 3 and first["mean_return"] > 0


def test_a_normalised_obs_checkpoint_is_evaluated_with_its_statistics(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """The statistics are buffers of the model: saved in the checkpoint, rebuilt by `load`, used by `a2c eval`."""
    env_cfg, algo = config.EnvConfig(env_id="Pendulum-v1"), config.AlgoConfig(normalize_obs=True)
    torch.manual_seed(0)
    model = agent.Agent(*env.spaces(env_cfg), algo)
    assert model.obs_norm is not None
    model.obs_norm.update(torch.randn(256, 3, dtype=torch.float64) * torch.tensor([0.3, 0.3, 4.0]) + 0.5)
    state = {"model": model.state_dict(), "optimizer": {}, "progress": {"env_steps": 10},
             "config": {"env": dataclasses.asdict(env_cfg), "algo": dataclasses.asdict(algo)}}
    checkpoint.save(tmp_path, 3, state)
    loaded = evaluate.load(tmp_path)
    assert loaded.agent.obs_norm is not None
    for name in ("mean", "var", "count"):
        assert torch.equal(getattr(loaded.agent.obs_norm, name), getattr(model.obs_norm, name))
    with_stats = evaluate.evaluate(model, env_cfg, episodes=2, seed=0, max_episode_steps=30)
    model.obs_norm.mean.zero_()
    model.obs_norm.var.fill_(1.0)
    without = evaluate.evaluate(model, env_cfg, episodes=2, seed=0, max_episode_steps=30)
    assert with_stats.returns != without.returns, "the statistics change what the policy does"
    code, out, _ = run_cli(capsys, str(tmp_path), "--episodes", "2", "--max-episode-steps", "30", "--json")
    assert code == 0
    assert json.loads(out)["returns"] == pytest.approx(with_stats.returns)


def test_cli_best_plays_the_best_evaluated_weights_not_the_newest(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """--best plays checkpoints/best.pt (what checkpoint.Best keeps), while the run directory alone plays the
    newest checkpoint; the two hold different weights here, and each result is that of its own weights."""
    env_cfg, algo = config.EnvConfig(), config.AlgoConfig()
    save_untrained(tmp_path, version=20, seed=0)
    torch.manual_seed(3)
    other = agent.Agent(*env.spaces(env_cfg), algo)
    cfg = {"env": dataclasses.asdict(env_cfg), "algo": dataclasses.asdict(algo)}
    assert checkpoint.Best(tmp_path, cfg).offer(10, 640, {"mean_return": 50.0}, agent.snapshot(other, 10).tensors)
    code, out, err = run_cli(capsys, str(tmp_path), "--best", "--episodes", "3", "--json")
    assert code == 0, err
    got = json.loads(out)
    want = evaluate.evaluate(other, env_cfg, episodes=3, seed=0)
    assert (got["checkpoint"], got["version"], got["env_steps"]) == (str(checkpoint.best_path(tmp_path)), 10, 640)
    assert got["returns"] == want.returns
    code, out, _ = run_cli(capsys, str(tmp_path), "--episodes", "3", "--json")
    assert code == 0 and json.loads(out)["version"] == 20


def test_cli_best_without_a_best_checkpoint_exits_2(cartpole: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, str(cartpole), "--best")
    assert code == 2 and not out and "no checkpoints/best.pt" in err and "--keep-best" in err
    code, _, err = run_cli(capsys, str(checkpoint.path_for(cartpole, 7)), "--best")
    assert code == 2 and "--best takes a run directory" in err
