"""Deterministic CartPole-shaped rollouts for the learner and trainer tests (no environment needed)."""

from __future__ import annotations

import numpy as np

from a2c import rollout


def make_rollout(seed: int, t: int = 5, e: int = 3, player_id: int = 0, version: int = 0) -> rollout.Rollout:
    rng = np.random.default_rng(seed)
    term = rng.random((t, e)) < 0.15
    trunc = (rng.random((t, e)) < 0.1) & ~term
    valid = rng.random((t, e)) > 0.1
    done_flat = np.flatnonzero((trunc & valid).reshape(-1))
    return rollout.Rollout(
        player_id=player_id, policy_version=version,
        obs=rng.normal(size=(t + 1, e, 4)).astype(np.float32),
        actions=rng.integers(0, 2, size=(t, e)).astype(np.int64),
        rewards=rng.normal(size=(t, e)).astype(np.float32),
        terminated=term & valid, truncated=trunc & valid, valid=valid,
        logprobs=np.full((t, e), -0.69, np.float32), values=np.zeros((t, e), np.float32),
        final_obs=rng.normal(size=(len(done_flat), 4)).astype(np.float32), final_index=done_flat.astype(np.int64),
    )
