"""envpool_env: EnvPool's Atari frames against our wrappers', the option mapping, the step contract, `a2c local`."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ale_py")
pytest.importorskip("cv2")

from a2c import config  # noqa: E402
from a2c.envs import envpool_env
from a2c.envs import vector as env
from a2c.observe import journal
from a2c.service import rollout
from tests.support.collectors import collector, spec_for  # noqa: E402

needs_envpool = pytest.mark.skipif(importlib.util.find_spec("envpool") is None,
                                   reason="EnvPool is not installed (pip install 'a2c[envpool]')")


def _cfg(env_id: str, n: int, vectorization: str, **kwargs: object) -> config.EnvConfig:
    return config.EnvConfig(env_id=env_id, num_envs=n, vectorization=vectorization, env_kwargs=json.dumps(kwargs))


def test_options_map_ours_and_keep_the_ids_ale_settings() -> None:
    v5 = envpool_env.options("ALE/Breakout-v5", {})
    assert v5 == {"episodic_life": True, "reward_clip": True, "noop_max": 30, "frame_skip": 4, "stack_num": 4,
                  "img_height": 84, "img_width": 84, "repeat_action_probability": 0.25, "full_action_space": False,
                  "max_episode_steps": 27_000}
    v4 = envpool_env.options("PongNoFrameskip-v4", {"clip_rewards": False, "episodic_life": False, "screen_size": 64,
                                                    "frame_skip": 2, "max_num_frames_per_episode": 1000})
    assert (v4["reward_clip"], v4["episodic_life"], v4["img_height"], v4["img_width"]) == (False, False, 64, 64)
    assert (v4["repeat_action_probability"], v4["max_episode_steps"]) == (0.0, 500)
    assert envpool_env.task("ALE/Pong-v5") == envpool_env.task("PongNoFrameskip-v4") == "Pong-v5"


@pytest.mark.parametrize(("env_id", "kwargs", "match"), [
    ("ALE/Breakout-v5", {"render_mode": "human"}, "cannot map --env-kwargs \\['render_mode'\\]"),
    ("ALE/Breakout-v5", {"noop_max": 0}, "noop_max must be >= 1"),
    ("CartPole-v1", {}, "steps Atari games"),
])
def test_what_cannot_be_mapped_is_refused_by_name(env_id: str, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        envpool_env.task(env_id)
        envpool_env.options(env_id, kwargs)


@needs_envpool
@pytest.mark.parametrize("game", ["Breakout", "Pong"])
def test_frames_equal_our_wrappers_until_the_first_lost_life(game: str) -> None:
    """Same ROM, no sticky actions (-v4), one no-op frame at reset on both sides, and EnvPool's FIRE frame left
    out so that the test presses FIRE then 2 as our FireReset does: from then on both engines see the same
    emulator frames, and max-pool, grey, resize and stack must give equal bytes. Compared step by step, with
    rewards and episode ends, until a copy's first lost life (there the resets differ by design, docs/atari.md);
    the step that loses it is compared too: our same-step `final_obs` against EnvPool's next-step obs."""
    n, steps = 2, 300
    ours = env.Env(_cfg(f"{game}NoFrameskip-v4", n, "sync", noop_max=1))
    pool = envpool_env.EnvPoolVec(f"{game}NoFrameskip-v4", n, fire_reset=False, noop_max=1)
    try:
        ours.reset(seed=0)
        pool.reset(seed=0)
        for fire in (1, 2):
            pool_obs, *_ = pool.step(np.full(n, fire))
        live = np.ones(n, dtype=bool)
        compared = np.zeros(n, dtype=int)
        actions = np.random.default_rng(0).integers(0, 4, size=(steps, n))  # Breakout has 4 actions, Pong 6
        for t, a in enumerate(actions):
            out = ours.step(a)
            pool_obs, pool_rew, pool_term, pool_trunc, _ = pool.step(a)
            for i in np.flatnonzero(live):
                ended = bool(out.terminated[i] or out.truncated[i])
                mine = out.final_obs[int(i)] if ended else out.obs[i]
                frames = slice(None) if t >= 2 else slice(-1, None)  # our reset stacks its frame 4 times
                np.testing.assert_array_equal(pool_obs[i][frames], mine[frames], err_msg=f"{game} copy {i} step {t}")
                assert (pool_rew[i], pool_term[i], pool_trunc[i]) == (out.rewards[i], out.terminated[i],
                                                                      out.truncated[i]), (game, i, t)
                compared[i] += 1
                live[i] = not ended
        # Breakout: copies 0 and 1 lose their first ball after 98 and 23 steps; Pong has no lives
        assert (compared >= 20).all() and compared.sum() >= 100, f"too few steps compared: {compared}"
    finally:
        ours.close()
        pool.close()


@needs_envpool
def test_copy_i_is_seeded_with_seed_plus_i() -> None:
    """As gymnasium's vector environments: copy 1 of seed 7 is copy 0 of seed 8 (the no-ops at reset and the
    sticky actions of -v5 come from the seed), and another seed plays another game."""
    def frames(seed: int, n: int) -> np.ndarray:
        e = env.Env(_cfg("ALE/Breakout-v5", n, "envpool"))
        try:
            obs = [e.reset(seed=seed)]
            obs += [e.step(np.full(n, a)).obs for a in (3, 3, 2, 2, 3, 1) * 5]
            return np.stack(obs, axis=1)
        finally:
            e.close()
    two, one = frames(7, 2), frames(8, 1)
    np.testing.assert_array_equal(two[1], one[0])
    assert not np.array_equal(two[0], two[1])


@needs_envpool
def test_lives_end_episodes_and_the_report_is_the_whole_unclipped_game() -> None:
    """SpaceInvaders (3 lives), same seed and actions with and without clipping: every lost life ends a training
    episode and the step after it only resets (invalid); the game is reported once, with its unclipped score
    (the sum of the unclipped run's rewards) and its length in valid agent steps."""
    actions = np.random.default_rng(0).integers(0, 6, size=5000)
    runs = {}
    for clip in (True, False):
        e = env.Env(_cfg("SpaceInvadersNoFrameskip-v4", 1, "envpool", clip_rewards=clip))
        e.reset(seed=3)
        rewards, ends, invalid_after_end, episodes, ended_before = [], 0, 0, [], False
        for a in actions:
            out = e.step(np.array([a]))
            invalid_after_end += int(ended_before and not out.valid[0])
            ended_before = bool(out.terminated[0] or out.truncated[0])
            rewards.append(float(out.rewards[0]) if out.valid[0] else 0.0)
            ends += int(ended_before)
            episodes += list(out.episodes.values())
            if episodes:
                break
        e.close()
        runs[clip] = (rewards, ends, invalid_after_end, episodes)
    clipped, ends, invalid_after_end, episodes = runs[True]
    unclipped = runs[False][0]
    assert len(clipped) == len(unclipped) < len(actions), "both copies play the same game to its end"
    assert ends == 3 and invalid_after_end == 2, "3 lives end 3 episodes; the 2 lost before game over reset next"
    assert set(clipped) <= {-1.0, 0.0, 1.0} and max(unclipped) >= 5
    (score, length), = episodes
    assert score == sum(unclipped) > sum(clipped)
    assert length == len(clipped) - invalid_after_end


@needs_envpool
def test_truncated_games_are_reported_and_rollouts_hold_the_contract() -> None:
    """A game cut at 12 agent steps (48 frames): truncated, not terminated, reported with its score, the next
    step resets it (invalid); the collector's rollouts of the EnvPool backend validate against the trainer's spec."""
    cfg = _cfg("ALE/Pong-v5", 2, "envpool", max_num_frames_per_episode=48)
    c = collector(cfg, t=8, seed=1)
    try:
        rollouts = [c.collect(version=0) for _ in range(3)]
        for r in rollouts:
            rollout.validate(r, spec_for(c.env, 8))
            assert r.obs.dtype == np.uint8 and len(r.final_obs) == 0, "next-step: final obs are in the next row"
        truncated = np.concatenate([r.truncated for r in rollouts])
        valid = np.concatenate([r.valid for r in rollouts])
        assert truncated[11].all() and not np.concatenate([r.terminated for r in rollouts]).any()
        assert not valid[12].any() and valid[:12].all() and valid[13:].all()
        assert [r.episode_lengths for r in rollouts] == [[], [12, 12], []]
        assert rollouts[1].episode_returns == [0.0, 0.0]  # 48 frames of Pong: nobody scores yet
    finally:
        c.env.close()


@needs_envpool
@pytest.mark.slow
def test_a2c_local_trains_breakout_with_envpool(tmp_path: Path) -> None:
    """The whole topology (2 trainers, 2 players, gRPC) with EnvPool stepping the players' copies: rounds
    complete and no rollout is refused (uint8 [4, 84, 84] observations, valid masks of a next-step env)."""
    proc = subprocess.run(
        [sys.executable, "-m", "a2c", "local", "--run-dir", str(tmp_path), "--env-id", "ALE/Breakout-v5",
         "--vectorization", "envpool", "--num-envs", "2", "--n-steps", "5", "--max-env-steps", "200",
         "--progress", "false", "--plot", "false"],
        capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = journal.read(tmp_path / "metrics.jsonl")
    assert rows and rows[0]["iteration"] == 1 and rows[-1]["env_steps"] >= 200, rows
    logs = "".join(p.read_text() for p in (tmp_path / "logs").glob("*.log"))
    assert "refused" not in logs, logs
