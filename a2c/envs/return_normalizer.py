"""Reward scaling by the running standard deviation of the discounted return, as Stable-Baselines3's
VecNormalize(norm_reward=True): the critic and the policy gradient see rewards of about unit scale
whatever the environment's units (HalfCheetah's rewards per step are in the single digits, its
returns in the thousands).

Data flow: `env.Env.step` (in each player) -> `ReturnNormalizer.scale(raw rewards, valid, ended)` ->
the scaled rewards go into the rollout; the episode returns the player reports stay the raw ones.

Per environment copy i: R_i <- gamma * R_i + r_i; the statistics take the batch of R over the valid
copies; the reward becomes clip(r / sqrt(var(R) + 1e-8), +-10); R_i restarts at 0 when its episode ends.
Statistics are the player's own (not shared, not checkpointed: a restarted player starts afresh), as
SB3 keeps them per VecNormalize. A step that only reset the environment (next-step autoreset) is
no transition: it neither feeds the statistics nor touches R.
"""

from __future__ import annotations

import numpy as np

from a2c import moments

EPSILON = 1e-8
CLIP = 10.0


class ReturnNormalizer:
    def __init__(self, num_envs: int, gamma: float, clip: float = CLIP) -> None:
        self.gamma, self.clip = gamma, clip
        self.returns = np.zeros(num_envs, np.float64)  # discounted, of the running episodes
        self.stats = moments.RunningMeanStd()

    def scale(self, rewards: np.ndarray, valid: np.ndarray, ended: np.ndarray) -> np.ndarray:
        """The rewards of one step, scaled (float32); invalid entries stay as they are (they are ignored)."""
        r = np.asarray(rewards, np.float64)
        self.returns = np.where(valid, self.returns * self.gamma + r, self.returns)
        self.stats.update(self.returns[valid])
        scaled = np.clip(r / np.sqrt(self.stats.var + EPSILON), -self.clip, self.clip)
        self.returns[ended & valid] = 0.0
        return np.where(valid, scaled, r).astype(np.float32)
