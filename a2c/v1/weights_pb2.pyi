from a2c.v1 import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FetchRequest(_message.Message):
    __slots__ = ("since_version", "wait_s", "player_id", "since_generation", "shared_ok")
    SINCE_VERSION_FIELD_NUMBER: _ClassVar[int]
    WAIT_S_FIELD_NUMBER: _ClassVar[int]
    PLAYER_ID_FIELD_NUMBER: _ClassVar[int]
    SINCE_GENERATION_FIELD_NUMBER: _ClassVar[int]
    SHARED_OK_FIELD_NUMBER: _ClassVar[int]
    since_version: int
    wait_s: float
    player_id: int
    since_generation: int
    shared_ok: bool
    def __init__(self, since_version: _Optional[int] = ..., wait_s: _Optional[float] = ..., player_id: _Optional[int] = ..., since_generation: _Optional[int] = ..., shared_ok: _Optional[bool] = ...) -> None: ...

class WeightHeader(_message.Message):
    __slots__ = ("version", "unchanged", "done", "tensors", "payload_bytes", "waited_s", "generation", "shared_file")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    WAITED_S_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    SHARED_FILE_FIELD_NUMBER: _ClassVar[int]
    version: int
    unchanged: bool
    done: bool
    tensors: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.TensorSpec]
    payload_bytes: int
    waited_s: float
    generation: int
    shared_file: str
    def __init__(self, version: _Optional[int] = ..., unchanged: _Optional[bool] = ..., done: _Optional[bool] = ..., tensors: _Optional[_Iterable[_Union[_tensor_pb2.TensorSpec, _Mapping]]] = ..., payload_bytes: _Optional[int] = ..., waited_s: _Optional[float] = ..., generation: _Optional[int] = ..., shared_file: _Optional[str] = ...) -> None: ...

class WeightChunk(_message.Message):
    __slots__ = ("seq", "header", "data")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    seq: int
    header: WeightHeader
    data: bytes
    def __init__(self, seq: _Optional[int] = ..., header: _Optional[_Union[WeightHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...
