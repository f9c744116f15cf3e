"""What a trainer says about itself: its phase and its numbers (no gRPC; `codec` maps them to the wire).

Data flow: `learning.progress.ended` names the final phase -> the trainer's `Phase` and `TrainerStatus` ->
`codec.status_message` -> TrainerService.Status -> the launcher, the controller's probe, `a2c` clients.
The phase's names are those of trainer.proto's `TrainerStatus.Phase` (which also has PHASE_UNSPECIFIED, the
protobuf default, that a trainer never reports).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Phase(enum.Enum):
    STARTING = "STARTING"    # forming the group, resuming, publishing the first weights
    TRAINING = "TRAINING"
    SUCCEEDED = "SUCCEEDED"  # the mean return reached the target
    FINISHED = "FINISHED"    # the step budget is spent
    STOPPING = "STOPPING"    # asked to stop (SIGTERM/SIGINT): a final checkpoint, then exit
    FAILED = "FAILED"

    @property
    def final(self) -> bool:
        """The run has ended for good: a restart would not train further (its players are told `done`)."""
        return self in (Phase.SUCCEEDED, Phase.FINISHED)


@dataclass(frozen=True)
class TrainerStatus:
    phase: Phase
    rank: int
    world_size: int
    iteration: int = 0  # the weights' version
    env_steps: int = 0
    episodes: int = 0
    mean_return: float = float("nan")
    target_return: float = 0.0
    elapsed_s: float = 0.0
    steps_per_second: float = 0.0
    active_players: int = 0
    message: str = ""
