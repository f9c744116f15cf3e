"""Rollouts and weight snapshots <-> protobuf chunks.

Data flow: player `Rollout` -> `exchange_request` (one message) -> RolloutService.Exchange ->
`rollout_from_request` -> trainer inbox, answered like a Fetch; or, too large for one message,
`rollout_chunks` -> RolloutService.Upload -> `rollout_from_chunks` -> trainer inbox; trainer
`WeightSnapshot` -> `weight_chunks` (encoded once per version) -> Exchange's reply or Fetch ->
`weight_reply_from_chunks` -> player; the trainer's `status.TrainerStatus` -> `status_message` -> TrainerService.Status
(`status_from_message` reads it back). Tensors travel as raw little-endian bytes with dtype and shape; a
header describes them, payload chunks of at most CHUNK_BYTES follow, numbered from 1.

Pixels make these bytes the bulk of the CPU a round spends on the wire (a Breakout rollout is 1.4 MB, the
weights with NatureCNN 6.7 MB, 13.5 MB while `agent.snapshot` lists the extractor shared by actor and critic
under both names), so they are copied as few times as the wire allows: a contiguous little-endian array is read
where it lies (`blobs`: no `tobytes`); the payload is cut into chunks from those views (one copy, no joined
payload to slice again); a snapshot's data chunks are serialized messages (`bytes`) made once per version and
sent as they are (`serialize`, the server's response serializer for Exchange and Fetch: no protobuf message of
megabytes is built, copied or serialized per reply); one array object under two names travels once. A client
reads those replies as the bytes that came, takes each chunk's data where it lies in them (`protowire.data_of`; any
other form of the message is parsed by protobuf), joins them once into a writable buffer, and the decoded
tensors are views into it (no copy per tensor). Before, the trainer's gRPC thread spent 23 ms a round encoding
and serializing Breakout's weights (5 copies of 13.5 MB; 714 us per env step of the trainers' other threads
in `bench/atari_throughput.py`, 199 after); `bench/wire_codec.py` times each step alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
from google.protobuf.message import DecodeError

from a2c.model import weights
from a2c.service import protowire, rollout, status
from a2c.v1 import rollout_pb2, tensor_pb2, trainer_pb2, weights_pb2

CHUNK_BYTES = 1 << 20  # 1 MiB: far below any message limit
DTYPES = {"float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "bool"}


class CodecError(ValueError):
    """Malformed chunks: the message says what is wrong."""


def blobs(arrays: dict[str, np.ndarray]) -> tuple[list[tensor_pb2.TensorSpec], list[memoryview]]:
    """The specs of `arrays` and the little-endian bytes of each, in payload order: views of the arrays
    themselves where they are contiguous and little-endian (no copy). One array object under two names (a
    feature extractor shared by actor and critic) is laid out once; both specs point at it."""
    specs, blobs, offset = [], [], 0
    at: dict[int, int] = {}  # id(array) -> its offset (the arrays outlive this call: ids are not reused)
    for name, arr in arrays.items():
        le = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
        start = at.get(id(arr))
        if start is None:
            start = at[id(arr)] = offset
            blobs.append(le.reshape(-1).view(np.uint8).data)
            offset += le.nbytes
        specs.append(tensor_pb2.TensorSpec(name=name, dtype=arr.dtype.name, shape=list(arr.shape), offset=start,
                                           nbytes=le.nbytes))
    return specs, blobs


def _pieces(blobs: list[memoryview], chunk_bytes: int) -> Iterator[list[memoryview]]:
    """The payload (the blobs end to end) cut into chunks of chunk_bytes (the last may be shorter), each as the
    views of the blobs it spans: joining a chunk's views is the one copy of its bytes."""
    chunk: list[memoryview] = []
    room = chunk_bytes
    for blob in blobs:
        start = 0
        while start < len(blob):
            take = min(room, len(blob) - start)
            chunk.append(blob[start:start + take])
            start += take
            room -= take
            if room == 0:
                yield chunk
                chunk, room = [], chunk_bytes
    if chunk:
        yield chunk


def serialize(message: weights_pb2.WeightChunk | bytes) -> bytes:
    """The wire form of a reply's message: what `weight_chunks` serialized already goes as it is. The servers'
    response serializer for Exchange and Fetch."""
    return message if isinstance(message, bytes) else message.SerializeToString()


def _decode(specs: Iterable[tensor_pb2.TensorSpec], payload: bytes | bytearray, allowed: set[str] | None,
            views: bool = False) -> dict[str, np.ndarray]:
    """The tensors the specs describe: copies (writable, native order), or with `views` views into a writable
    payload where they are aligned and native (weights: what shares bytes on the wire shares them here too)."""
    out: dict[str, np.ndarray] = {}
    for s in specs:
        if allowed is not None and s.name not in allowed:
            raise CodecError(f"unknown tensor {s.name!r}")
        if s.name in out:
            raise CodecError(f"tensor {s.name!r} appears twice")
        if s.dtype not in DTYPES:
            raise CodecError(f"tensor {s.name!r} has unsupported dtype {s.dtype!r}")
        if any(d < 0 for d in s.shape) or len(s.shape) > 8:
            raise CodecError(f"tensor {s.name!r} has invalid shape {list(s.shape)}")
        dtype = np.dtype(s.dtype).newbyteorder("<")
        count = math.prod(int(d) for d in s.shape)  # Python ints: no wrap-around on absurd shapes
        if count * dtype.itemsize != s.nbytes or s.offset < 0 or s.offset + s.nbytes > len(payload):
            raise CodecError(f"tensor {s.name!r}: {s.nbytes} bytes at offset {s.offset} do not match shape "
                             f"{list(s.shape)} of {s.dtype} within a payload of {len(payload)} bytes")
        arr = np.frombuffer(payload, dtype=dtype, count=count, offset=s.offset).reshape(tuple(s.shape))
        if not (views and arr.flags.writeable and arr.flags.aligned and arr.dtype.isnative):
            arr = arr.astype(dtype.newbyteorder("="))  # a writable, native-order copy
        out[s.name] = arr
    if allowed is not None and set(out) != allowed:
        raise CodecError(f"missing tensors: {sorted(allowed - set(out))}")
    return out


Part = tuple[int, str | None, object]  # (seq, which part: "header", "data" or None, the header or the data)


def _part(chunk: rollout_pb2.RolloutChunk | weights_pb2.WeightChunk) -> Part:
    kind = chunk.WhichOneof("part")
    return chunk.seq, kind, chunk.header if kind == "header" else chunk.data


def _weight_part(chunk: weights_pb2.WeightChunk | bytes) -> Part:
    """A weight reply's message, parsed or serialized (as a client reads it raw): data where it lies, if it can."""
    if not isinstance(chunk, bytes):
        return _part(chunk)
    data = protowire.data_of(chunk)
    if data is not None:
        return data[0], "data", data[1]
    try:
        return _part(weights_pb2.WeightChunk.FromString(chunk))
    except DecodeError as exc:
        raise CodecError(f"weights chunk of {len(chunk)} bytes is not a WeightChunk: {exc}") from None


# Reads the payload a weights header names in a file (`shared_weights`) instead of sending it: the client's.
External = Callable[[weights_pb2.WeightHeader], bytearray]


def _collect(parts: Iterable[Part], max_bytes: int, what: str, writable: bool = False,
             external: External | None = None) -> tuple[object, bytes | bytearray]:
    """The header and the payload (joined once; a bytearray with `writable`) of a chunk stream, checked; a weights
    header with `shared_file` has its payload read by `external` (no data chunks may follow it)."""
    header = None
    data: list[bytes | memoryview] = []
    size = 0
    expected = 0
    elsewhere: bytearray | None = None
    for seq, (chunk_seq, kind, value) in enumerate(parts):
        if chunk_seq != seq:
            raise CodecError(f"{what} chunk {chunk_seq} arrived where chunk {seq} was expected")
        if seq == 0:
            if kind != "header":
                raise CodecError(f"{what} must start with a header")
            header = value
            expected = header.payload_bytes  # type: ignore[attr-defined]
            if expected < 0 or expected > max_bytes:
                raise CodecError(f"{what} payload of {expected} bytes exceeds the limit of {max_bytes}")
            if getattr(header, "shared_file", ""):
                if external is None:
                    raise CodecError(f"{what} came as file {header.shared_file!r}, which was not asked for")  # type: ignore[attr-defined]
                try:
                    elsewhere = external(header)  # type: ignore[arg-type]
                except ValueError as exc:
                    raise CodecError(str(exc)) from None
                expected = 0  # the payload is there, not in chunks
            continue
        if kind != "data":
            raise CodecError(f"{what} has a second header at chunk {seq}")
        assert isinstance(value, bytes | memoryview)
        size += len(value)
        if size > expected:
            raise CodecError(f"{what} payload is longer than the {expected} bytes its header announced")
        data.append(value)
    if header is None:
        raise CodecError(f"empty {what} stream")
    if size != expected:
        raise CodecError(f"{what} payload is truncated: {size} of {expected} bytes arrived")
    if elsewhere is not None:
        return header, elsewhere
    return header, bytearray().join(data) if writable else b"".join(data)


def _rollout_header(r: rollout.Rollout) -> tuple[rollout_pb2.RolloutHeader, list[memoryview]]:
    specs, views = blobs(r.arrays())
    header = rollout_pb2.RolloutHeader(
        player_id=r.player_id, policy_version=r.policy_version, num_steps=r.num_steps, num_envs=r.num_envs,
        episode_returns=r.episode_returns, episode_lengths=r.episode_lengths, tensors=specs,
        payload_bytes=sum(len(b) for b in views), generation=r.generation,
    )
    return header, views


def rollout_chunks(r: rollout.Rollout, chunk_bytes: int = CHUNK_BYTES) -> Iterator[rollout_pb2.RolloutChunk]:
    header, views = _rollout_header(r)
    yield rollout_pb2.RolloutChunk(seq=0, header=header)
    for i, pieces in enumerate(_pieces(views, chunk_bytes), start=1):
        yield rollout_pb2.RolloutChunk(seq=i, data=b"".join(pieces))


def exchange_request(r: rollout.Rollout, wait_s: float, shared_ok: bool = False) -> rollout_pb2.ExchangeRequest:
    """The whole rollout in one message (Exchange), asking for weights newer than it within wait_s (with
    `shared_ok`, as a file of the trainer's --weights-dir if it has one)."""
    header, data = _rollout_header(r)
    return rollout_pb2.ExchangeRequest(header=header, payload=b"".join(data), wait_s=wait_s, shared_ok=shared_ok)


def rollout_from_chunks(chunks: Iterable[rollout_pb2.RolloutChunk], max_bytes: int) -> rollout.Rollout:
    header, payload = _collect(map(_part, chunks), max_bytes, "rollout")
    assert isinstance(header, rollout_pb2.RolloutHeader)
    return _rollout(header, payload)


def rollout_from_request(request: rollout_pb2.ExchangeRequest, max_bytes: int) -> rollout.Rollout:
    header, payload = request.header, request.payload
    if not request.HasField("header"):
        raise CodecError("exchange request without a rollout header")
    if header.payload_bytes != len(payload):
        raise CodecError(f"rollout payload is {len(payload)} bytes, its header announced {header.payload_bytes}")
    if len(payload) > max_bytes:
        raise CodecError(f"rollout payload of {len(payload)} bytes exceeds the limit of {max_bytes}")
    return _rollout(header, payload)


def _rollout(header: rollout_pb2.RolloutHeader, payload: bytes | bytearray) -> rollout.Rollout:
    arrays = _decode(header.tensors, payload, set(rollout.ARRAY_FIELDS))
    return rollout.Rollout(player_id=header.player_id, policy_version=header.policy_version,
                           episode_returns=list(header.episode_returns),
                           episode_lengths=list(header.episode_lengths), generation=header.generation, **arrays)


def weight_chunks(snap: weights.WeightSnapshot,
                  chunk_bytes: int = CHUNK_BYTES) -> list[weights_pb2.WeightChunk | bytes]:
    """The wire form of a snapshot, made once and cached on the snapshot (every reply of its version sends it):
    the header as a message, then the data chunks already serialized (`protowire.data_message`: one copy of the tensors'
    bytes, an array shared under two names once). `serialize` sends either; `weight_reply_from_chunks` reads
    either."""
    if snap.encoded is None:
        header, views = weight_header(snap)
        out: list[weights_pb2.WeightChunk | bytes] = [weights_pb2.WeightChunk(seq=0, header=header)]
        out += [protowire.data_message(i, pieces) for i, pieces in enumerate(_pieces(views, chunk_bytes), start=1)]
        snap.encoded = out
    return snap.encoded  # type: ignore[no-any-return]


def weight_header(snap: weights.WeightSnapshot) -> tuple[weights_pb2.WeightHeader, list[memoryview]]:
    """A snapshot's header and its payload's bytes in order (`blobs`), for the chunks or a file
    (`shared_weights`)."""
    specs, views = blobs(snap.tensors)
    return weights_pb2.WeightHeader(version=snap.version, done=snap.done, tensors=specs,
                                    payload_bytes=sum(len(b) for b in views), generation=snap.generation), views


def with_wait(first: weights_pb2.WeightChunk, waited_s: float) -> weights_pb2.WeightChunk:
    """A copy of a reply's header message with this call's wait in it (the cached one stays as it is)."""
    out = weights_pb2.WeightChunk()
    out.CopyFrom(first)
    out.header.waited_s = waited_s
    return out


def unchanged_chunk(version: int, done: bool, waited_s: float = 0.0) -> weights_pb2.WeightChunk:
    return weights_pb2.WeightChunk(seq=0, header=weights_pb2.WeightHeader(version=version, unchanged=True, done=done,
                                                                          waited_s=waited_s))


def weight_reply(snap: weights.WeightSnapshot, waited_s: float) -> list[weights_pb2.WeightChunk | bytes]:
    """`weight_chunks` with this call's wait in the header (a copy of the header: the rest is shared)."""
    chunks = weight_chunks(snap)
    assert isinstance(chunks[0], weights_pb2.WeightChunk)
    return [with_wait(chunks[0], waited_s), *chunks[1:]]


@dataclass
class WeightReply:
    snapshot: weights.WeightSnapshot | None  # None: no newer version (the header said unchanged)
    version: int                              # the snapshot's, or the trainer's current version
    done: bool
    waited_s: float                           # how long the trainer held the call waiting for it


def weight_reply_from_chunks(chunks: Iterable[weights_pb2.WeightChunk | bytes], max_bytes: int,
                             external: External | None = None) -> WeightReply:
    """A weight reply from its messages, parsed or as serialized bytes (a client's raw stream, `client.py`): the
    tensors are views into one buffer that holds the payload (the one copy of it here), names that share bytes
    on the wire share them here. A header that names a file has its payload read by `external` (a client that
    asked with shared_ok; ValueError from it becomes CodecError)."""
    header, payload = _collect(map(_weight_part, chunks), max_bytes, "weights", writable=True, external=external)
    assert isinstance(header, weights_pb2.WeightHeader)
    snap = None if header.unchanged else weights.WeightSnapshot(
        version=header.version, tensors=_decode(header.tensors, payload, None, views=True), done=header.done,
        generation=header.generation)
    return WeightReply(snap, header.version, header.done, header.waited_s)


def status_message(s: status.TrainerStatus) -> trainer_pb2.TrainerStatus:
    """The wire form of a trainer's status (its phase by name: the domain's names are the proto's)."""
    return trainer_pb2.TrainerStatus(
        iteration=s.iteration, env_steps=s.env_steps, mean_return=s.mean_return, episodes=s.episodes,
        world_size=s.world_size, rank=s.rank, phase=s.phase.value, target_return=s.target_return,
        elapsed_s=s.elapsed_s, steps_per_second=s.steps_per_second, active_players=s.active_players,
        message=s.message)


def phase_from_message(phase: int) -> status.Phase:
    """A TrainerStatus.Phase from the wire; CodecError for PHASE_UNSPECIFIED or a number this build does not know."""
    try:
        return status.Phase(trainer_pb2.TrainerStatus.Phase.Name(phase))
    except ValueError:
        raise CodecError(f"trainer phase {phase} is not one a trainer reports") from None


def status_from_message(m: trainer_pb2.TrainerStatus) -> status.TrainerStatus:
    return status.TrainerStatus(
        phase=phase_from_message(m.phase), rank=m.rank, world_size=m.world_size, iteration=m.iteration,
        env_steps=m.env_steps, episodes=m.episodes, mean_return=m.mean_return, target_return=m.target_return,
        elapsed_s=m.elapsed_s, steps_per_second=m.steps_per_second, active_players=m.active_players,
        message=m.message)
