"""envs/vector.py's Env: one step contract over gymnasium's next-step (CartPole's native vector env) and
same-step (sync vector env) autoreset modes; envs/single.py builds each copy and evaluation's environment."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

from a2c import config
from a2c.envs import return_normalizer, single
from a2c.envs import vector as env
from a2c.evaluation import evaluate


def test_cartpole_native_vector_env_marks_the_reset_step_invalid() -> None:
    e = env.Env(config.EnvConfig(num_envs=2))
    try:
        assert e.mode == AutoresetMode.NEXT_STEP
        assert not isinstance(e.vec, gym.vector.SyncVectorEnv)
        obs = e.reset(seed=0)
        assert obs.shape == (2, 4) and obs.dtype == np.float32
        pushes = np.ones(2, np.int64)  # always push right: the pole falls within a few dozen steps
        ended_at = None
        for t in range(100):
            s = e.step(pushes)
            assert s.final_obs == {}, "next-step mode has no final_obs: obs[t+1] is the final obs itself"
            if ended_at is None and s.terminated.any():
                ended_at, i = t, int(np.flatnonzero(s.terminated)[0])
                assert s.valid[i]
                # the returned observation is the terminal one: the pole is beyond 12 degrees or the cart out
                assert abs(s.obs[i, 2]) > 0.2095 or abs(s.obs[i, 0]) > 2.4
            elif ended_at is not None and t == ended_at + 1:
                assert not s.valid[i], "the step after the end only resets the env: not a transition"
                assert not s.terminated[i] and not s.truncated[i]
                assert np.all(np.abs(s.obs[i]) <= 0.05), "a fresh CartPole start state"
            elif ended_at is not None and t == ended_at + 2:
                assert s.valid[i]
                break
        assert ended_at is not None
    finally:
        e.close()


def _reference(env_id: str, seed: int, **kwargs: Any) -> gym.Env:
    ref = gym.make(env_id, **kwargs)
    ref.reset(seed=seed)
    return ref


def test_truncation_in_same_step_mode_fills_final_obs() -> None:
    e = env.Env(config.EnvConfig(num_envs=2, env_kwargs='{"max_episode_steps": 5}'))
    refs = [_reference("CartPole-v1", 10 + i, max_episode_steps=5) for i in range(2)]
    try:
        assert isinstance(e.vec, gym.vector.SyncVectorEnv), "kwargs force the sync vector env"
        assert e.mode == AutoresetMode.SAME_STEP
        e.reset(seed=10)  # the sync vector env seeds copy i with 10 + i, like the references
        actions = np.array([0, 1], np.int64)
        for t in range(5):
            s = e.step(actions)
            expected = [ref.step(int(a)) for ref, a in zip(refs, actions, strict=True)]
            assert s.valid.all()
            assert not s.terminated.any()
            if t < 4:
                assert not s.truncated.any() and s.final_obs == {}
                assert np.array_equal(s.obs, np.stack([x[0] for x in expected]))
        assert s.truncated.all()
        assert sorted(s.final_obs) == [0, 1]
        for i in range(2):
            assert np.array_equal(s.final_obs[i], expected[i][0]), "final obs = the obs the time limit cut"
            reset_obs, _ = refs[i].reset()
            assert np.array_equal(s.obs[i], reset_obs), "same step: obs is already the next episode's first"
        s = e.step(actions)
        assert s.valid.all() and not s.truncated.any() and s.final_obs == {}
    finally:
        e.close()
        for ref in refs:
            ref.close()


def test_termination_in_same_step_mode() -> None:
    e = env.Env(config.EnvConfig(num_envs=3, env_kwargs='{"max_episode_steps": 500}'))
    try:
        assert e.mode == AutoresetMode.SAME_STEP
        e.reset(seed=3)
        for _ in range(100):
            s = e.step(np.ones(3, np.int64))
            assert s.valid.all()
            assert set(s.final_obs) == set(np.flatnonzero(s.terminated | s.truncated).tolist())
            if s.terminated.any():
                break
        assert s.terminated.any() and not s.truncated.any()
        for i, final in s.final_obs.items():
            assert abs(final[2]) > 0.2095 or abs(final[0]) > 2.4
            assert np.all(np.abs(s.obs[i]) <= 0.05)
    finally:
        e.close()


def test_box_actions_are_clipped_to_the_space() -> None:
    e = env.Env(config.EnvConfig(env_id="Pendulum-v1", num_envs=1))
    ref = _reference("Pendulum-v1", 5)
    try:
        assert isinstance(e.action_space, gym.spaces.Box)
        e.reset(seed=5)
        s = e.step(np.array([[10.0]], np.float32))  # far beyond the max torque of 2
        obs, reward, *_ = ref.step(np.array([2.0], np.float32))
        assert np.allclose(s.obs[0], obs) and s.rewards[0] == pytest.approx(reward, rel=1e-6)
        assert s.rewards.dtype == np.float32
    finally:
        e.close()
        ref.close()


def test_pendulum_time_limit_truncates_with_final_obs() -> None:
    e = env.Env(config.EnvConfig(env_id="Pendulum-v1", num_envs=2))
    try:
        assert e.mode == AutoresetMode.SAME_STEP
        e.reset(seed=0)
        for t in range(200):
            s = e.step(np.zeros((2, 1), np.float32))
            assert s.truncated.all() == (t == 199)
        assert not s.terminated.any() and sorted(s.final_obs) == [0, 1]
    finally:
        e.close()


def test_spaces_and_describe() -> None:
    obs_space, act_space = env.spaces(config.EnvConfig())
    assert obs_space.shape == (4,) and act_space == gym.spaces.Discrete(2)
    assert env.describe(config.EnvConfig()) == "CartPole-v1"
    assert env.describe(config.EnvConfig(env_kwargs='{"max_episode_steps": 5}')) == \
        'CartPole-v1 {"max_episode_steps": 5}'


def test_env_kwargs_must_be_a_json_object() -> None:
    with pytest.raises(ValueError, match="--env-kwargs must be a JSON object"):
        env.Env(config.EnvConfig(env_kwargs="[1, 2]"))


def test_async_vectorization_steps_in_subprocesses_with_same_step_reset() -> None:
    e = env.Env(config.EnvConfig(env_id="CartPole-v1", num_envs=2, vectorization="async"))
    try:
        assert type(e.vec).__name__ == "AsyncVectorEnv"
        e.reset(seed=0)
        ended = False
        for _ in range(200):
            out = e.step(np.zeros(2, dtype=np.int64))
            assert out.valid.all()
            if (out.terminated | out.truncated).any():
                ended = True
                assert set(out.final_obs) == set(np.flatnonzero(out.terminated | out.truncated))
                break
        assert ended
    finally:
        e.close()


@pytest.mark.parametrize("kwargs", ["{}", '{"max_episode_steps": 500}'], ids=["next-step", "same-step"])
def test_normalized_rewards_are_scaled_while_reported_returns_stay_raw(kwargs: str) -> None:
    """CartPole pays 1 per step: the reported return is the episode's length; the rollout's rewards are scaled.
    In next-step mode the reset step is invalid and must not count (its reward is 0, not a transition)."""
    cfg = config.EnvConfig(num_envs=3, env_kwargs=kwargs)
    plain, scaled = env.Env(cfg), env.Env(cfg, normalize_reward_gamma=0.99)
    try:
        assert scaled.reward_scaler is not None and plain.reward_scaler is None
        plain.reset(seed=3)
        scaled.reset(seed=3)
        pushes = np.ones(3, np.int64)
        reference = return_normalizer.ReturnNormalizer(3, 0.99)
        valid_steps, episodes = 0, 0
        for _ in range(60):
            a, b = plain.step(pushes), scaled.step(pushes)
            np.testing.assert_array_equal(a.valid, b.valid)
            np.testing.assert_array_equal(a.rewards, np.where(a.valid, 1.0, 0.0))
            expected = reference.scale(a.rewards, a.valid, a.terminated | a.truncated)
            np.testing.assert_array_equal(b.rewards, expected)
            assert np.all(b.rewards[~b.valid] == 0.0)
            assert a.episodes == b.episodes, "reported returns are the raw ones"
            for ret, length in b.episodes.values():
                assert ret == float(length)
            valid_steps += int(b.valid.sum())
            episodes += len(b.episodes)
        assert episodes >= 3
        assert np.all(b.rewards[b.valid] < 0.5), "after dozens of steps, a reward of 1 is below the returns' std"
        if kwargs == "{}":
            assert valid_steps < 180, "some steps were reset steps"
        assert scaled.reward_scaler.stats.count == pytest.approx(valid_steps + 1e-4), "only valid steps count"
    finally:
        plain.close()
        scaled.close()


@pytest.mark.parametrize("width", [1, 64, 1000, 1001, 4096])
def test_no_two_players_copies_share_a_seed_at_any_width(width: int) -> None:
    seeds = [range(base, base + width) for base in (env.player_seed(7, j, width) for j in range(5))]
    assert len(set().union(*seeds)) == 5 * width


def test_up_to_1000_copies_players_keep_the_seeds_of_earlier_runs() -> None:
    assert [env.player_seed(7, j, 64) for j in range(3)] == [7, 1007, 2007]
    assert env.player_seed(7, 2, 1000) == 2007


def test_players_with_1001_copies_start_from_different_states() -> None:
    """Copy i resets with base + i: at the old stride of 1000, player 1's first copy repeated player 0's last."""
    e = env.Env(config.EnvConfig(num_envs=1001, vectorization="sync"))
    try:
        first = {row.tobytes() for row in e.reset(env.player_seed(0, 0, e.num_envs))}
        second = {row.tobytes() for row in e.reset(env.player_seed(0, 1, e.num_envs))}
    finally:
        e.close()
    assert len(first) == len(second) == 1001 and not first & second


def _wrappers(e: gym.Env) -> list[type]:
    out = []
    while isinstance(e, gym.Wrapper):
        out.append(type(e))
        e = e.env
    return out


@pytest.mark.parametrize("vectorization", ["sync", "async"])
def test_the_players_copies_and_the_evaluations_env_are_built_by_one_function(vectorization: str) -> None:
    """`single.make` builds every copy a player steps (copy i reset with seed + i) and the one environment an
    evaluation plays: the same id and --env-kwargs give the same first observations and the same time limit."""
    cfg = config.EnvConfig(env_id="Pendulum-v1", num_envs=3, vectorization=vectorization,
                           env_kwargs='{"g": 3.0, "max_episode_steps": 7}')
    e = env.Env(cfg)
    try:
        first = e.reset(seed=11)
        steps = [e.step(np.zeros((3, 1), dtype=np.float32)) for _ in range(7)]
    finally:
        e.close()
    assert [bool(s.truncated.all()) for s in steps] == [False] * 6 + [True], "every copy has the kwargs' limit"
    for i in range(3):
        for one in (single.make(cfg), evaluate.make_env(cfg)):
            try:
                obs, _ = one.reset(seed=11 + i)
                assert np.array_equal(obs, first[i])
                assert one.unwrapped.g == 3.0  # type: ignore[attr-defined]
                assert one.spec is not None and one.spec.max_episode_steps == 7
            finally:
                one.close()


def test_no_copy_is_built_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[config.EnvConfig] = []
    make = single.make

    def counted(cfg: config.EnvConfig, **kwargs: Any) -> gym.Env:
        built.append(cfg)
        return make(cfg, **kwargs)

    monkeypatch.setattr(single, "make", counted)
    cfg = config.EnvConfig(env_id="CartPole-v1", num_envs=2, vectorization="sync")
    env.Env(cfg).close()
    evaluate.make_env(cfg).close()
    assert built == [cfg] * 3


def test_an_evaluation_plays_atari_as_whole_unclipped_games_where_training_loses_lives() -> None:
    pytest.importorskip("ale_py")
    from a2c.envs import atari

    cfg = config.EnvConfig(env_id="ALE/Breakout-v5", env_kwargs='{"noop_max": 0}')
    training, evaluation = single.make(cfg), evaluate.make_env(cfg)
    try:
        assert atari.EpisodicLife in _wrappers(training) and gym.wrappers.TransformReward in _wrappers(training)
        assert atari.EpisodicLife not in _wrappers(evaluation)
        assert gym.wrappers.TransformReward not in _wrappers(evaluation)
        assert training.observation_space == evaluation.observation_space
    finally:
        training.close()
        evaluation.close()
