"""The one rollout factory: CartPole-shaped rollouts, valid for `SPEC`, deterministic for a seed; and
Breakout-shaped ones (`pixel_rollout`) for the pixel learner's tests."""

from __future__ import annotations

import numpy as np

from a2c.service import rollout

T, E = 5, 3
OBS_SHAPE = (4,)
SPEC = rollout.Spec(obs_shape=OBS_SHAPE, obs_dtype=np.dtype(np.float32), action_shape=(),
                    action_dtype=np.dtype(np.int64), num_steps=T)


def cartpole_rollout(seed: int = 0, t: int = T, e: int = E, player_id: int = 0, version: int = 0,
                     random_ends: bool = False) -> rollout.Rollout:
    """A rollout shaped like CartPole's: float32 [4] observations, int64 scalar actions.

    By default it is valid for `SPEC`: env 0 terminates at step 1, env 1 is truncated at step 2 (same-step
    reset: its final obs travels in final_obs), env 2 runs through; returns/lengths describe the two finished
    episodes. `random_ends`: the learner's kind instead, with random rewards, ends and invalid (reset) steps
    (not for `rollout.validate`: its final observations are those of the truncations only).
    """
    rng = np.random.default_rng(seed)
    if random_ends:
        terminated = rng.random((t, e)) < 0.15
        truncated = (rng.random((t, e)) < 0.1) & ~terminated
        valid = rng.random((t, e)) > 0.1
        terminated, truncated = terminated & valid, truncated & valid
        done = np.flatnonzero(truncated.reshape(-1)).astype(np.int64)
        return rollout.Rollout(
            player_id=player_id, policy_version=version,
            obs=rng.normal(size=(t + 1, e, *OBS_SHAPE)).astype(np.float32),
            actions=rng.integers(0, 2, size=(t, e)).astype(np.int64),
            rewards=rng.normal(size=(t, e)).astype(np.float32),
            terminated=terminated, truncated=truncated, valid=valid,
            logprobs=np.full((t, e), -0.69, np.float32), values=np.zeros((t, e), np.float32),
            final_obs=rng.normal(size=(len(done), *OBS_SHAPE)).astype(np.float32), final_index=done,
        )
    terminated = np.zeros((t, e), bool)
    truncated = np.zeros((t, e), bool)
    terminated[1, 0] = True
    truncated[2, 1 % e] = True
    done = np.flatnonzero((terminated | truncated).reshape(-1)).astype(np.int64)
    return rollout.Rollout(
        player_id=player_id, policy_version=version,
        obs=rng.normal(size=(t + 1, e, *OBS_SHAPE)).astype(np.float32),
        actions=rng.integers(0, 2, size=(t, e)).astype(np.int64),
        rewards=np.ones((t, e), np.float32),
        terminated=terminated, truncated=truncated, valid=np.ones((t, e), bool),
        logprobs=np.full((t, e), -0.69, np.float32), values=rng.normal(size=(t, e)).astype(np.float32),
        final_obs=rng.normal(size=(len(done), *OBS_SHAPE)).astype(np.float32), final_index=done,
        episode_returns=[2.0, 3.0], episode_lengths=[2, 3],
    )


def pixel_rollout(seed: int = 0, t: int = 5, e: int = 2) -> rollout.Rollout:
    """A rollout shaped like Breakout's: uint8 [4, 84, 84] random frames, 4 actions, random rewards, no ends."""
    rng = np.random.default_rng(seed)
    return rollout.Rollout(
        player_id=0, policy_version=0, obs=rng.integers(0, 256, (t + 1, e, 4, 84, 84), dtype=np.uint8),
        actions=rng.integers(0, 4, (t, e)), rewards=rng.normal(size=(t, e)).astype(np.float32),
        terminated=np.zeros((t, e), bool), truncated=np.zeros((t, e), bool), valid=np.ones((t, e), bool),
        logprobs=np.zeros((t, e), np.float32), values=np.zeros((t, e), np.float32),
        final_obs=np.zeros((0, 4, 84, 84), np.uint8), final_index=np.zeros(0, np.int64))
