from a2c.v1 import tensor_pb2 as _tensor_pb2
from a2c.v1 import weights_pb2 as _weights_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RolloutHeader(_message.Message):
    __slots__ = ("player_id", "policy_version", "num_steps", "num_envs", "episode_returns", "episode_lengths", "tensors", "payload_bytes", "generation")
    PLAYER_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    NUM_STEPS_FIELD_NUMBER: _ClassVar[int]
    NUM_ENVS_FIELD_NUMBER: _ClassVar[int]
    EPISODE_RETURNS_FIELD_NUMBER: _ClassVar[int]
    EPISODE_LENGTHS_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    player_id: int
    policy_version: int
    num_steps: int
    num_envs: int
    episode_returns: _containers.RepeatedScalarFieldContainer[float]
    episode_lengths: _containers.RepeatedScalarFieldContainer[int]
    tensors: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.TensorSpec]
    payload_bytes: int
    generation: int
    def __init__(self, player_id: _Optional[int] = ..., policy_version: _Optional[int] = ..., num_steps: _Optional[int] = ..., num_envs: _Optional[int] = ..., episode_returns: _Optional[_Iterable[float]] = ..., episode_lengths: _Optional[_Iterable[int]] = ..., tensors: _Optional[_Iterable[_Union[_tensor_pb2.TensorSpec, _Mapping]]] = ..., payload_bytes: _Optional[int] = ..., generation: _Optional[int] = ...) -> None: ...

class RolloutChunk(_message.Message):
    __slots__ = ("seq", "header", "data")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    seq: int
    header: RolloutHeader
    data: bytes
    def __init__(self, seq: _Optional[int] = ..., header: _Optional[_Union[RolloutHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class UploadReply(_message.Message):
    __slots__ = ("accepted", "trainer_version", "done")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    TRAINER_VERSION_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    trainer_version: int
    done: bool
    def __init__(self, accepted: _Optional[bool] = ..., trainer_version: _Optional[int] = ..., done: _Optional[bool] = ...) -> None: ...

class ExchangeRequest(_message.Message):
    __slots__ = ("header", "payload", "wait_s", "shared_ok")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    WAIT_S_FIELD_NUMBER: _ClassVar[int]
    SHARED_OK_FIELD_NUMBER: _ClassVar[int]
    header: RolloutHeader
    payload: bytes
    wait_s: float
    shared_ok: bool
    def __init__(self, header: _Optional[_Union[RolloutHeader, _Mapping]] = ..., payload: _Optional[bytes] = ..., wait_s: _Optional[float] = ..., shared_ok: _Optional[bool] = ...) -> None: ...
