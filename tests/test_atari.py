"""atari: the preprocessing stack, episodic life against the reported score, uint8 on the wire, `a2c local`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("ale_py")
pytest.importorskip("cv2")

from a2c import config  # noqa: E402
from a2c.envs import atari
from a2c.envs import vector as env
from a2c.model import agent
from a2c.observe import journal
from a2c.service import (
    codec,  # noqa: E402
    rollout,
)
from tests.support.collectors import collector, spec_for  # noqa: E402


def _wrappers(e: gym.Env) -> list[type]:
    out = []
    while isinstance(e, gym.Wrapper):
        out.append(type(e))
        e = e.env
    return out


def test_observations_are_four_stacked_84x84_uint8_frames() -> None:
    e = env.Env(config.EnvConfig(env_id="ALE/Breakout-v5", num_envs=2))
    try:
        space = e.observation_space
        assert isinstance(space, gym.spaces.Box)
        assert (space.shape, space.dtype, space.low.min(), space.high.max()) == ((4, 84, 84), np.uint8, 0, 255)
        obs = e.reset(seed=1)
        assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
        for _ in range(3):
            out = e.step(np.array([2, 3]))
            assert out.obs.shape == (2, 4, 84, 84) and out.obs.dtype == np.uint8
            assert all(space.contains(o) for o in out.obs)
            assert out.rewards.dtype == np.float32
        assert isinstance(agent.make_extractor(space, config.AlgoConfig()), agent.NatureCNN)
    finally:
        e.close()


def test_ids_and_the_no_frameskip_variant() -> None:
    assert atari.is_atari("ALE/Pong-v5") and atari.is_atari("PongNoFrameskip-v4")
    assert not atari.is_atari("CartPole-v1")
    e = atari.make("PongNoFrameskip-v4", noop_max=0)
    assert e.observation_space.shape == (4, 84, 84)
    e.close()


@pytest.mark.parametrize("env_id,make_kwargs", [
    ("BreakoutNoFrameskip-v4", {}),
    ("ALE/Breakout-v5", {}),  # sticky actions 0.25: ALE's own draws, seeded by reset
    ("PongNoFrameskip-v4", {"max_num_frames_per_episode": 700}),  # truncated inside a frame skip, again and again
])
def test_the_direct_step_gives_what_gymnasiums_atari_preprocessing_gives(env_id: str, make_kwargs: dict) -> None:
    """`Preprocessing` steps the emulator itself instead of going through `AtariEnv.step` frame by frame:
    side by side with gymnasium's own `AtariPreprocessing` on the same seed and actions, every observation,
    reward, end and info of 2,000 steps (resets included) is the same."""
    atari.register()
    opts = {"noop_max": 30, "frame_skip": 4, "screen_size": 84, "terminal_on_life_loss": False,
            "grayscale_obs": True, "scale_obs": False}
    ours = atari.Preprocessing(gym.make(env_id, frameskip=1, **make_kwargs), **opts)
    theirs = gym.wrappers.AtariPreprocessing(gym.make(env_id, frameskip=1, **make_kwargs), **opts)
    try:
        assert ours.direct, "the direct step is off: this ale-py's AtariEnv.step is not the code it copies"
        rng = np.random.default_rng(0)
        a, _ = ours.reset(seed=3)
        b, _ = theirs.reset(seed=3)
        ends = truncations = 0
        for _ in range(2_000):
            action = int(rng.integers(ours.action_space.n))  # type: ignore[attr-defined]
            mine, other = ours.step(action), theirs.step(action)
            assert np.array_equal(mine[0], other[0])
            assert mine[1:] == other[1:]
            if mine[2] or mine[3]:
                ends += 1
                truncations += bool(mine[3])
                a, _ = ours.reset()
                b, _ = theirs.reset()
                assert np.array_equal(a, b)
        assert ends >= 1 and (truncations >= 1 or "max_num_frames_per_episode" not in make_kwargs)
    finally:
        ours.close()
        theirs.close()


def test_fire_reset_launches_the_ball_in_breakout_only_where_fire_exists() -> None:
    """Breakout waits for FIRE: with FireReset a NOOP-only player loses its first life (the ball was
    launched and the paddle never moves); Freeway has no FIRE action and gets no FireReset."""
    e = atari.make("ALE/Breakout-v5", noop_max=0, repeat_action_probability=0.0)
    assert atari.FireReset in _wrappers(e)
    e.reset(seed=0)
    assert e.unwrapped.ale.getEpisodeFrameNumber() == 8  # type: ignore[attr-defined]  # FIRE, then action 2
    terminated = False
    for _ in range(500):
        _, _, terminated, _, _ = e.step(0)
        if terminated:
            break
    assert terminated and e.unwrapped.ale.lives() == 4  # type: ignore[attr-defined]
    e.close()
    freeway = atari.make("ALE/Freeway-v5")
    assert atari.FireReset not in _wrappers(freeway)
    freeway.close()


def test_whole_games_press_fire_after_a_lost_life_so_they_end() -> None:
    """Without episodic life (evaluation), Breakout waits for FIRE after each lost life; training never had to
    press it (its reset did), so the wrapper must, or a greedy game stalls until the time limit."""
    e = atari.make("BreakoutNoFrameskip-v4", episodic_life=False, clip_rewards=False)
    try:
        e.reset(seed=0)
        terminated = truncated = False
        steps = 0
        while not (terminated or truncated) and steps < 5_000:  # NOOP only: every ball is missed
            _, _, terminated, truncated, info = e.step(0)
            steps += 1
        assert terminated and not truncated, "all 5 lives were lost: the game ended by itself"
        assert steps < 2_000 and info["game_score"] == 0.0
    finally:
        e.close()


def test_a_lost_life_ends_the_training_episode_but_the_report_is_the_whole_unclipped_game() -> None:
    """SpaceInvaders (3 lives, invaders worth 5 to 30 points), random actions, same seed twice: once as
    trained (clipped rewards) and once unclipped; clipping does not change the game, so the unclipped
    rewards add up to the score the trained copy must report, once, at game over."""
    actions = np.random.default_rng(0).integers(0, 6, size=5000)
    runs = {}
    for clip in (True, False):
        kwargs = f'{{"clip_rewards": {str(clip).lower()}}}'
        e = env.Env(config.EnvConfig(env_id="ALE/SpaceInvaders-v5", num_envs=1, env_kwargs=kwargs))
        e.reset(seed=3)
        rewards, ends, episodes = [], 0, []
        for a in actions:
            out = e.step(np.array([a]))
            rewards.append(float(out.rewards[0]))
            ends += int(out.terminated[0] or out.truncated[0])
            episodes += list(out.episodes.values())
            if episodes:
                break
        e.close()
        runs[clip] = (rewards, ends, episodes)
    clipped, ends, episodes = runs[True]
    unclipped = runs[False][0]
    assert len(clipped) == len(unclipped) < len(actions), "both copies play the same game to its end"
    assert ends == 3, "every lost life ends a training episode"
    assert set(clipped) <= {-1.0, 0.0, 1.0} and max(unclipped) >= 5
    (score, length), = episodes
    assert score == sum(unclipped) > sum(clipped)
    assert length == len(clipped)


def test_rollouts_travel_as_uint8_in_several_chunks() -> None:
    """A 16-step rollout of 8 copies holds 17 x 8 x 4 x 84 x 84 uint8 = 3.8 MB of observations: it is
    split into 1 MiB chunks and arrives as uint8, as the trainer's spec demands."""
    c = collector(config.EnvConfig(env_id="ALE/Breakout-v5", num_envs=8), t=16, seed=0)
    try:
        r = c.collect(version=0)
        assert r.obs.dtype == np.uint8 and r.nbytes() > 1 << 20
        chunks = list(codec.rollout_chunks(r))
        specs = {s.name: s for s in chunks[0].header.tensors}
        assert specs["obs"].dtype == "uint8" and specs["final_obs"].dtype == "uint8"
        assert specs["obs"].nbytes == 17 * 8 * 4 * 84 * 84
        assert len(chunks) - 1 == -(-r.nbytes() // codec.CHUNK_BYTES) > 1
        assert all(len(ch.data) <= codec.CHUNK_BYTES for ch in chunks[1:])
        back = codec.rollout_from_chunks(chunks, max_bytes=64 << 20)
        spec = spec_for(c.env, 16)
        assert spec.obs_dtype == np.uint8
        rollout.validate(back, spec)
        np.testing.assert_array_equal(back.obs, r.obs)
    finally:
        c.env.close()


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", None])
def test_a2c_local_trains_breakout_over_grpc(tmp_path: Path, precision: str | None) -> None:
    """The whole topology (2 trainers under DDP, 2 players, gRPC) on Breakout, at fp32 and at the default
    (auto: bf16 on a CPU with native bf16, which every process says in its log): iterations complete. A trainer
    refuses rollouts whose obs dtype differs from its uint8 spec, so samples counted here arrived as uint8."""
    proc = subprocess.run(
        [sys.executable, "-m", "a2c", "local", "--run-dir", str(tmp_path), "--env-id", "ALE/Breakout-v5",
         "--num-envs", "2", "--n-steps", "5", "--max-env-steps", "60", "--progress", "false", "--plot", "false",
         *(["--precision", precision] if precision else [])],
        capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = journal.read(tmp_path / "metrics.jsonl")
    assert rows and rows[0]["iteration"] == 1 and rows[-1]["env_steps"] >= 60, rows
    logs = "".join(p.read_text() for p in (tmp_path / "logs").glob("*.log"))
    assert "refused" not in logs, logs
    arithmetic = "fp32" if precision == "fp32" or not agent.cpu_has_bf16() else "bf16"
    said = f"NatureCNN in {arithmetic} (--precision {precision or 'auto'})"
    assert len(re.findall(re.escape(said), logs)) == 4, logs  # 2 trainers and 2 players
