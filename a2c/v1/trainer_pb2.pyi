from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TrainerStatus(_message.Message):
    __slots__ = ("iteration", "env_steps", "mean_return", "episodes", "world_size", "rank", "phase", "target_return", "elapsed_s", "steps_per_second", "active_players", "message")
    class Phase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        PHASE_UNSPECIFIED: _ClassVar[TrainerStatus.Phase]
        STARTING: _ClassVar[TrainerStatus.Phase]
        TRAINING: _ClassVar[TrainerStatus.Phase]
        SUCCEEDED: _ClassVar[TrainerStatus.Phase]
        FINISHED: _ClassVar[TrainerStatus.Phase]
        STOPPING: _ClassVar[TrainerStatus.Phase]
        FAILED: _ClassVar[TrainerStatus.Phase]
    PHASE_UNSPECIFIED: TrainerStatus.Phase
    STARTING: TrainerStatus.Phase
    TRAINING: TrainerStatus.Phase
    SUCCEEDED: TrainerStatus.Phase
    FINISHED: TrainerStatus.Phase
    STOPPING: TrainerStatus.Phase
    FAILED: TrainerStatus.Phase
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    ENV_STEPS_FIELD_NUMBER: _ClassVar[int]
    MEAN_RETURN_FIELD_NUMBER: _ClassVar[int]
    EPISODES_FIELD_NUMBER: _ClassVar[int]
    WORLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    TARGET_RETURN_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_S_FIELD_NUMBER: _ClassVar[int]
    STEPS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_PLAYERS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    iteration: int
    env_steps: int
    mean_return: float
    episodes: int
    world_size: int
    rank: int
    phase: TrainerStatus.Phase
    target_return: float
    elapsed_s: float
    steps_per_second: float
    active_players: int
    message: str
    def __init__(self, iteration: _Optional[int] = ..., env_steps: _Optional[int] = ..., mean_return: _Optional[float] = ..., episodes: _Optional[int] = ..., world_size: _Optional[int] = ..., rank: _Optional[int] = ..., phase: _Optional[_Union[TrainerStatus.Phase, str]] = ..., target_return: _Optional[float] = ..., elapsed_s: _Optional[float] = ..., steps_per_second: _Optional[float] = ..., active_players: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...
