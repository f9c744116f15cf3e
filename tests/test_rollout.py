"""rollout.validate: refuses each kind of malformed rollout with a message naming the problem."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from a2c.service import rollout
from tests.support.rollouts import SPEC, cartpole_rollout

Mutation = Callable[[rollout.Rollout], None]


def test_accepts_a_good_rollout(rollout_factory: Callable[..., rollout.Rollout]) -> None:
    r = rollout_factory()
    rollout.validate(r, SPEC)
    rollout.validate(rollout_factory(seed=3, e=1, player_id=4, version=2), SPEC)
    assert (r.num_steps, r.num_envs, r.num_samples) == (5, 3, 15)
    assert r.nbytes() == sum(a.nbytes for a in r.arrays().values())


def test_accepts_no_finished_episodes_and_pixel_observations() -> None:
    r = cartpole_rollout()
    r.terminated[:] = False
    r.truncated[:] = False
    r.final_obs = np.zeros((0, 4), np.float32)
    r.final_index = np.zeros(0, np.int64)
    r.episode_returns, r.episode_lengths = [], []
    rollout.validate(r, SPEC)
    pixels = rollout.Spec(obs_shape=(4, 84, 84), obs_dtype=np.dtype(np.uint8), action_shape=(),
                          action_dtype=np.dtype(np.int64), num_steps=5)
    r.obs = np.zeros((6, 3, 4, 84, 84), np.uint8)
    r.final_obs = np.zeros((0, 4, 84, 84), np.uint8)
    rollout.validate(r, pixels)


def test_num_samples_counts_valid_steps_only() -> None:
    r = cartpole_rollout()
    r.valid[0, :] = False
    assert r.num_samples == 12


def _set(name: str, value: Callable[[rollout.Rollout], object]) -> Mutation:
    def mutate(r: rollout.Rollout) -> None:
        setattr(r, name, value(r))
    return mutate


def _poke(name: str, index: tuple[int, ...], value: float) -> Mutation:
    def mutate(r: rollout.Rollout) -> None:
        getattr(r, name)[index] = value
    return mutate


CASES: list[tuple[str, Mutation, str]] = [
    ("rewards 1-D", _set("rewards", lambda r: r.rewards.reshape(-1)), r"rewards must be \[T, E\]"),
    ("too few steps", _set("rewards", lambda r: r.rewards[:4]), r"rollout has 4 steps, the trainer expects 5"),
    ("no envs", _set("rewards", lambda r: r.rewards[:, :0]), r"rollout has 0 environments"),
    ("obs missing bootstrap row", _set("obs", lambda r: r.obs[:5]), r"obs has shape \(5, 3, 4\), expected \(6, 3, 4\)"),
    ("obs wrong feature size", _set("obs", lambda r: np.zeros((6, 3, 5), np.float32)), r"obs has shape"),
    ("obs float64", _set("obs", lambda r: r.obs.astype(np.float64)), r"obs has dtype float64, expected float32"),
    ("actions float", _set("actions", lambda r: r.actions.astype(np.float32)), r"actions has dtype float32"),
    ("actions with a trailing dim", _set("actions", lambda r: r.actions[..., None]), r"actions has shape"),
    ("terminated as uint8", _set("terminated", lambda r: r.terminated.astype(np.uint8)),
     r"terminated has dtype uint8, expected bool"),
    ("truncated wrong shape", _set("truncated", lambda r: r.truncated[:, :2]), r"truncated has shape"),
    ("valid wrong dtype", _set("valid", lambda r: r.valid.astype(np.int64)), r"valid has dtype"),
    ("logprobs float64", _set("logprobs", lambda r: r.logprobs.astype(np.float64)), r"logprobs has dtype float64"),
    ("values wrong shape", _set("values", lambda r: r.values[:4]), r"values has shape"),
    ("final_obs count differs", _set("final_obs", lambda r: r.final_obs[:1]), r"final_obs has shape"),
    ("final_index int32", _set("final_index", lambda r: r.final_index.astype(np.int32)), r"final_index has dtype"),
    ("NaN reward", _poke("rewards", (2, 1), np.nan), r"rewards holds NaN or infinite"),
    ("inf obs", _poke("obs", (5, 0, 3), np.inf), r"obs holds NaN or infinite"),
    ("NaN value", _poke("values", (0, 0), np.nan), r"values holds NaN"),
    ("-inf logprob", _poke("logprobs", (0, 0), -np.inf), r"logprobs holds NaN"),
    ("NaN final obs", _poke("final_obs", (0, 0), np.nan), r"final_obs holds NaN"),
    ("final_index past the end", _poke("final_index", (1,), 15), r"final_index out of range \[0, 15\)"),
    ("negative final_index", _poke("final_index", (0,), -1), r"final_index out of range"),
    ("episode lists differ", _set("episode_lengths", lambda r: [2]),
     r"episode_returns and episode_lengths differ in length"),
    ("NaN episode return", _set("episode_returns", lambda r: [1.0, float("nan")]), r"episode_returns hold NaN"),
    ("negative episode length", _set("episode_lengths", lambda r: [2, -1]), r"episode_lengths must be >= 0"),
]


@pytest.mark.parametrize(("mutate", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refuses(mutate: Mutation, message: str) -> None:
    r = cartpole_rollout()
    mutate(r)
    with pytest.raises(rollout.RolloutError, match=message):
        rollout.validate(r, SPEC)


def test_refuses_too_many_envs() -> None:
    small = rollout.Spec(obs_shape=(4,), obs_dtype=np.dtype(np.float32), action_shape=(),
                         action_dtype=np.dtype(np.int64), num_steps=5, max_envs=2)
    with pytest.raises(rollout.RolloutError, match=r"rollout has 3 environments, expected 1..2"):
        rollout.validate(cartpole_rollout(), small)


def test_rollout_error_is_a_value_error() -> None:
    assert issubclass(rollout.RolloutError, ValueError)


def test_refuses_negative_discrete_actions() -> None:
    r = cartpole_rollout()
    r.actions[0, 0] = -1
    with pytest.raises(rollout.RolloutError, match="actions"):
        rollout.validate(r, SPEC)


def test_two_dimensional_final_index_is_named_in_the_message() -> None:
    r = cartpole_rollout()
    r.final_index = r.final_index[None]
    with pytest.raises(rollout.RolloutError, match=r"final_index has shape \(1, 2\)"):
        rollout.validate(r, SPEC)
