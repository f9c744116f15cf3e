"""A player's Collector on real environments, with the rollout spec a trainer would build for them."""

from __future__ import annotations

import torch

from a2c import config
from a2c.acting import player
from a2c.envs import vector as env
from a2c.model import agent
from a2c.service import rollout


def spec_for(e: env.Env, t: int) -> rollout.Spec:
    """The spec a trainer builds for this environment."""
    return rollout.Spec.of(e.observation_space, e.action_space, t)


def collector(cfg: config.EnvConfig, t: int, seed: int, player_id: int = 3) -> player.Collector:
    """A Collector of a fresh agent (seeded by `seed`) on `cfg`'s environments, `t` steps a rollout."""
    torch.manual_seed(seed)
    e = env.Env(cfg)
    model = agent.Agent(e.observation_space, e.action_space, config.AlgoConfig())
    return player.Collector(e, model, player_id=player_id, num_steps=t, seed=seed)
