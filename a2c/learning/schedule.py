"""The learning rate as a function of training progress: constant, or rl-baselines3-zoo's `lin_X`
(linear from X at the start to 0 when the step budget is spent).

Data flow: each round, after the gradient all-reduce (`distributed.GradientSum`) every trainer holds the same
job-wide env-step count -> `learning_rate(...)` -> `learner.Learner.set_lr` before the DDP step, so every rank
applies the same rate. As in Stable-Baselines3, the count includes the round being trained on.
"""

from __future__ import annotations

SCHEDULES = ("constant", "linear")


def learning_rate(base: float, schedule: str, env_steps: int, max_env_steps: int) -> float:
    """The rate for the update after `env_steps` job-wide environment steps."""
    if schedule == "constant":
        return base
    if schedule == "linear":
        return base * max(0.0, 1.0 - env_steps / max(1, max_env_steps))
    raise ValueError(f"unknown learning-rate schedule {schedule!r}: expected one of {SCHEDULES}")
