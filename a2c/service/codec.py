"""Rollouts and weight snapshots <-> protobuf chunks.

Data flow: player `Rollout` -> `exchange_request` (one message) -> RolloutService.Exchange ->
`rollout_from_request` -> trainer inbox, answered like a Fetch; or, too large for one message,
`rollout_chunks` -> RolloutService.Upload -> `rollout_from_chunks` -> trainer inbox; trainer
`WeightSnapshot` -> `weight_chunks` (encoded once per version) -> Exchange's reply or Fetch ->
`weight_reply_from_chunks` -> player; the trainer's `status.TrainerStatus` -> `status_message` -> TrainerService.Status
(`status_from_message` reads it back). Tensors travel as raw little-endian bytes with dtype and shape; a
header describes them, payload chunks of at most CHUNK_BYTES follow, numbered from 1.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from a2c.model import weights
from a2c.service import rollout, status
from a2c.v1 import rollout_pb2, tensor_pb2, trainer_pb2, weights_pb2

CHUNK_BYTES = 1 << 20  # 1 MiB: far below any message limit
DTYPES = {"float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "bool"}


class CodecError(ValueError):
    """Malformed chunks: the message says what is wrong."""


def _specs(arrays: dict[str, np.ndarray]) -> tuple[list[tensor_pb2.TensorSpec], list[bytes]]:
    specs, blobs, offset = [], [], 0
    for name, arr in arrays.items():
        data = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
        specs.append(tensor_pb2.TensorSpec(name=name, dtype=arr.dtype.name, shape=list(arr.shape), offset=offset,
                                           nbytes=len(data)))
        blobs.append(data)
        offset += len(data)
    return specs, blobs


def _split(blobs: list[bytes], chunk_bytes: int) -> Iterator[bytes]:
    payload = b"".join(blobs)
    for start in range(0, len(payload), chunk_bytes):
        yield payload[start:start + chunk_bytes]


def _decode(specs: Iterable[tensor_pb2.TensorSpec], payload: bytes, allowed: set[str] | None) -> dict[str, np.ndarray]:
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
        out[s.name] = arr.astype(dtype.newbyteorder("="))  # a writable, native-order copy
    if allowed is not None and set(out) != allowed:
        raise CodecError(f"missing tensors: {sorted(allowed - set(out))}")
    return out


def _collect(chunks: Iterable[rollout_pb2.RolloutChunk | weights_pb2.WeightChunk], max_bytes: int,
             what: str) -> tuple[object, bytes]:
    header = None
    parts: list[bytes] = []
    size = 0
    expected = 0
    for seq, chunk in enumerate(chunks):
        if chunk.seq != seq:
            raise CodecError(f"{what} chunk {chunk.seq} arrived where chunk {seq} was expected")
        kind = chunk.WhichOneof("part")
        if seq == 0:
            if kind != "header":
                raise CodecError(f"{what} must start with a header")
            header = chunk.header
            expected = header.payload_bytes
            if expected < 0 or expected > max_bytes:
                raise CodecError(f"{what} payload of {expected} bytes exceeds the limit of {max_bytes}")
            continue
        if kind != "data":
            raise CodecError(f"{what} has a second header at chunk {seq}")
        size += len(chunk.data)
        if size > expected:
            raise CodecError(f"{what} payload is longer than the {expected} bytes its header announced")
        parts.append(chunk.data)
    if header is None:
        raise CodecError(f"empty {what} stream")
    if size != expected:
        raise CodecError(f"{what} payload is truncated: {size} of {expected} bytes arrived")
    return header, b"".join(parts)


def _rollout_header(r: rollout.Rollout) -> tuple[rollout_pb2.RolloutHeader, list[bytes]]:
    specs, blobs = _specs(r.arrays())
    header = rollout_pb2.RolloutHeader(
        player_id=r.player_id, policy_version=r.policy_version, num_steps=r.num_steps, num_envs=r.num_envs,
        episode_returns=r.episode_returns, episode_lengths=r.episode_lengths, tensors=specs,
        payload_bytes=sum(len(b) for b in blobs), generation=r.generation,
    )
    return header, blobs


def rollout_chunks(r: rollout.Rollout, chunk_bytes: int = CHUNK_BYTES) -> Iterator[rollout_pb2.RolloutChunk]:
    header, blobs = _rollout_header(r)
    yield rollout_pb2.RolloutChunk(seq=0, header=header)
    for i, data in enumerate(_split(blobs, chunk_bytes), start=1):
        yield rollout_pb2.RolloutChunk(seq=i, data=data)


def exchange_request(r: rollout.Rollout, wait_s: float) -> rollout_pb2.ExchangeRequest:
    """The whole rollout in one message (Exchange), asking for weights newer than it within wait_s."""
    header, blobs = _rollout_header(r)
    return rollout_pb2.ExchangeRequest(header=header, payload=b"".join(blobs), wait_s=wait_s)


def rollout_from_chunks(chunks: Iterable[rollout_pb2.RolloutChunk], max_bytes: int) -> rollout.Rollout:
    header, payload = _collect(chunks, max_bytes, "rollout")
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


def _rollout(header: rollout_pb2.RolloutHeader, payload: bytes) -> rollout.Rollout:
    arrays = _decode(header.tensors, payload, set(rollout.ARRAY_FIELDS))
    return rollout.Rollout(player_id=header.player_id, policy_version=header.policy_version,
                           episode_returns=list(header.episode_returns),
                           episode_lengths=list(header.episode_lengths), generation=header.generation, **arrays)


def weight_chunks(snap: weights.WeightSnapshot, chunk_bytes: int = CHUNK_BYTES) -> list[weights_pb2.WeightChunk]:
    """The wire form of a snapshot; cached on the snapshot, since every player fetches the same one."""
    if snap.encoded is None:
        specs, blobs = _specs(snap.tensors)
        header = weights_pb2.WeightHeader(version=snap.version, done=snap.done, tensors=specs,
                                          payload_bytes=sum(len(b) for b in blobs), generation=snap.generation)
        out = [weights_pb2.WeightChunk(seq=0, header=header)]
        out += [weights_pb2.WeightChunk(seq=i, data=d) for i, d in enumerate(_split(blobs, chunk_bytes), start=1)]
        snap.encoded = out
    return snap.encoded  # type: ignore[no-any-return]


def unchanged_chunk(version: int, done: bool, waited_s: float = 0.0) -> weights_pb2.WeightChunk:
    return weights_pb2.WeightChunk(seq=0, header=weights_pb2.WeightHeader(version=version, unchanged=True, done=done,
                                                                          waited_s=waited_s))


def weight_reply(snap: weights.WeightSnapshot, waited_s: float) -> list[weights_pb2.WeightChunk]:
    """`weight_chunks` with this call's wait in the header (a copy of the header: the rest is shared)."""
    chunks = weight_chunks(snap)
    first = weights_pb2.WeightChunk()
    first.CopyFrom(chunks[0])
    first.header.waited_s = waited_s
    return [first, *chunks[1:]]


@dataclass
class WeightReply:
    snapshot: weights.WeightSnapshot | None  # None: no newer version (the header said unchanged)
    version: int                              # the snapshot's, or the trainer's current version
    done: bool
    waited_s: float                           # how long the trainer held the call waiting for it


def weight_reply_from_chunks(chunks: Iterable[weights_pb2.WeightChunk], max_bytes: int) -> WeightReply:
    header, payload = _collect(chunks, max_bytes, "weights")
    assert isinstance(header, weights_pb2.WeightHeader)
    snap = None if header.unchanged else weights.WeightSnapshot(
        version=header.version, tensors=_decode(header.tensors, payload, None), done=header.done,
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
