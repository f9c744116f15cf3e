"""service.codec: bit-exact round trips, chunking, and a clear CodecError for every malformed stream."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from a2c.model import weights
from a2c.service import codec, protowire, rollout, status
from a2c.v1 import rollout_pb2, trainer_pb2, weights_pb2
from tests.support.rollouts import cartpole_rollout

LIMIT = 64 << 20


def weights_from_chunks(chunks: Iterator[weights_pb2.WeightChunk | bytes],
                        max_bytes: int) -> tuple[weights.WeightSnapshot | None, bool]:
    """(snapshot or None when unchanged, done flag) of a weight reply stream."""
    reply = codec.weight_reply_from_chunks(chunks, max_bytes)
    return reply.snapshot, reply.done


def same_array(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal dtype, shape and bytes (bit-exact: NaN payloads and -0.0 included)."""
    a_le = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
    b_le = np.ascontiguousarray(b, dtype=b.dtype.newbyteorder("<"))
    return a.dtype.name == b.dtype.name and a.shape == b.shape and a_le.tobytes() == b_le.tobytes()


def assert_same_rollout(a: rollout.Rollout, b: rollout.Rollout) -> None:
    assert (a.player_id, a.policy_version) == (b.player_id, b.policy_version)
    assert (a.episode_returns, a.episode_lengths) == (b.episode_returns, b.episode_lengths)
    for name in rollout.ARRAY_FIELDS:
        assert same_array(getattr(a, name), getattr(b, name)), name


def pixel_rollout(e: int = 3) -> rollout.Rollout:
    r = cartpole_rollout(e=e, player_id=7, version=11)
    rng = np.random.default_rng(1)
    r.obs = rng.integers(0, 256, size=(r.num_steps + 1, e, 4, 84, 84), dtype=np.uint8)
    r.final_obs = rng.integers(0, 256, size=(len(r.final_index), 4, 84, 84), dtype=np.uint8)
    return r


def test_rollout_round_trip_is_bit_exact() -> None:
    r = cartpole_rollout(player_id=5, version=9)
    r.rewards[0, 0] = -0.0
    r.episode_returns = [1.0 / 3.0, 1e300]
    back = codec.rollout_from_chunks(codec.rollout_chunks(r), LIMIT)
    assert_same_rollout(r, back)
    assert back.obs.flags.writeable and back.obs.dtype.isnative


def test_pixel_rollout_over_one_mib_travels_in_several_chunks() -> None:
    r = pixel_rollout(e=8)
    chunks = list(codec.rollout_chunks(r))
    assert r.nbytes() > codec.CHUNK_BYTES
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    assert chunks[0].WhichOneof("part") == "header" and chunks[0].header.payload_bytes == r.nbytes()
    data = [c.data for c in chunks[1:]]
    assert len(data) == math.ceil(r.nbytes() / codec.CHUNK_BYTES) >= 2
    assert all(len(d) <= codec.CHUNK_BYTES for d in data)
    assert all(c.ByteSize() < 2 * codec.CHUNK_BYTES for c in chunks)
    assert_same_rollout(r, codec.rollout_from_chunks(iter(chunks), LIMIT))


def test_rollout_with_no_finished_episodes() -> None:
    r = cartpole_rollout()
    r.final_obs, r.final_index = np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    r.episode_returns, r.episode_lengths = [], []
    assert_same_rollout(r, codec.rollout_from_chunks(codec.rollout_chunks(r, chunk_bytes=7), LIMIT))


def test_big_endian_and_non_contiguous_arrays_travel_as_little_endian_values() -> None:
    r = cartpole_rollout()
    expected_obs = r.obs.copy()
    r.obs = r.obs.astype(">f4")
    r.values = np.asfortranarray(r.values)
    r.rewards = np.ones((r.num_envs, r.num_steps), np.float32).T  # a transposed view
    back = codec.rollout_from_chunks(codec.rollout_chunks(r), LIMIT)
    assert back.obs.dtype == np.float32 and back.obs.dtype.isnative
    assert np.array_equal(back.obs, expected_obs)
    assert np.array_equal(back.values, r.values) and np.array_equal(back.rewards, r.rewards)


ALL_DTYPES = sorted(codec.DTYPES)


def test_weight_round_trip_every_dtype() -> None:
    rng = np.random.default_rng(0)
    tensors = {f"t.{d}": (rng.normal(size=(3, 5)) * 50).astype(d) for d in ALL_DTYPES}
    tensors["scalar"] = np.array(2.5, np.float32)
    tensors["empty"] = np.zeros((0, 7), np.int64)
    tensors["nan"] = np.array([np.nan, -np.inf, -0.0], np.float32)
    snap = weights.WeightSnapshot(version=3, tensors=tensors)
    back, done = weights_from_chunks(iter(codec.weight_chunks(snap, chunk_bytes=16)), LIMIT)
    assert back is not None and back.version == 3 and not done and not back.done
    assert list(back.tensors) == list(tensors)
    for k, v in tensors.items():
        assert same_array(v, back.tensors[k]), k


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(
    st.text(min_size=1, max_size=12),
    st.sampled_from(ALL_DTYPES).flatmap(
        lambda d: hnp.arrays(np.dtype(d), hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5))),
    max_size=5,
), st.integers(1, 64), st.integers(-1, 2**40), st.booleans())
def test_weight_round_trip_property(tensors: dict[str, np.ndarray], chunk: int, version: int, done: bool) -> None:
    snap = weights.WeightSnapshot(version=version, tensors=tensors, done=done)
    back, back_done = weights_from_chunks(iter(codec.weight_chunks(snap, chunk_bytes=chunk)), LIMIT)
    assert back is not None and back.version == version and back_done == done
    assert set(back.tensors) == set(tensors)
    for k, v in tensors.items():
        assert same_array(v, back.tensors[k]), k


def test_weight_chunks_are_encoded_once_per_snapshot() -> None:
    snap = weights.WeightSnapshot(version=1, tensors={"w": np.zeros(400_000, np.float32)})  # 1.6 MB
    first = codec.weight_chunks(snap)
    assert len(first) == 1 + 2 and first is codec.weight_chunks(snap)
    back, _ = weights_from_chunks(iter(first), LIMIT)
    assert back is not None and np.array_equal(back.tensors["w"], snap.tensors["w"])


def test_unchanged_reply() -> None:
    assert weights_from_chunks(iter([codec.unchanged_chunk(4, done=False)]), LIMIT) == (None, False)
    assert weights_from_chunks(iter([codec.unchanged_chunk(4, done=True)]), LIMIT) == (None, True)


def as_sent(chunks: list[weights_pb2.WeightChunk | bytes]) -> list[bytes]:
    """The messages of a weight reply as a client reads them: the bytes gRPC carried (`codec.serialize`)."""
    return [codec.serialize(c) for c in chunks]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(
    st.text(min_size=1, max_size=12),
    st.sampled_from(ALL_DTYPES).flatmap(
        lambda d: hnp.arrays(np.dtype(d), hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5))),
    max_size=5,
), st.integers(1, 64))
def test_weight_round_trip_through_the_bytes_on_the_wire(tensors: dict[str, np.ndarray], chunk: int) -> None:
    snap = weights.WeightSnapshot(version=3, tensors=tensors)
    back, _ = weights_from_chunks(iter(as_sent(codec.weight_chunks(snap, chunk_bytes=chunk))), LIMIT)
    assert back is not None and set(back.tensors) == set(tensors)
    for k, v in tensors.items():
        got = back.tensors[k]
        assert same_array(v, got), k
        assert got.flags.writeable and got.dtype.isnative, k


def test_data_chunks_are_the_messages_protobuf_would_serialize() -> None:
    """What the trainer sends as bytes is WeightChunk(seq, data), byte for byte as protobuf writes it."""
    w = np.arange(100_000, dtype=np.float32)  # 400 kB: chunk numbers whose varint takes two bytes, at 2 kB chunks
    chunks = codec.weight_chunks(weights.WeightSnapshot(version=1, tensors={"w": w}), chunk_bytes=2048)
    payload = w.tobytes()
    assert isinstance(chunks[0], weights_pb2.WeightChunk) and len(chunks) == 1 + math.ceil(len(payload) / 2048)
    for seq, c in enumerate(chunks[1:], start=1):
        assert isinstance(c, bytes)
        expected = weights_pb2.WeightChunk(seq=seq, data=payload[(seq - 1) * 2048:seq * 2048])
        assert c == expected.SerializeToString()
        assert weights_pb2.WeightChunk.FromString(c) == expected


def test_weights_are_encoded_once_per_version_whoever_asks() -> None:
    """Every reply of one version (Fetch and Exchange, every player) sends the chunks encoded for it once."""
    encoded: list[int] = []
    real = protowire.data_message

    def counting(seq: int, pieces: list[memoryview]) -> bytes:
        encoded.append(seq)
        return real(seq, pieces)

    snap = weights.WeightSnapshot(version=4, tensors={"w": np.ones(700_000, np.float32)})  # 2.8 MB: 3 chunks
    import unittest.mock
    with unittest.mock.patch.object(protowire, "data_message", counting):
        replies = [codec.weight_reply(snap, waited_s=0.1 * i) for i in range(5)]
    assert encoded == [1, 2, 3]
    assert all(r[1:] == replies[0][1:] and r[1] is replies[0][1] for r in replies)
    assert [r[0].header.waited_s for r in replies] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])  # type: ignore[union-attr]
    for r in replies:
        back, _ = weights_from_chunks(iter(as_sent(r)), LIMIT)
        assert back is not None and np.array_equal(back.tensors["w"], snap.tensors["w"])


def test_an_array_under_two_names_travels_once_and_arrives_shared() -> None:
    """A feature extractor shared by actor and critic (one NatureCNN): its weights under both names, sent once."""
    shared = np.arange(1000, dtype=np.float32)
    snap = weights.WeightSnapshot(version=1, tensors={"actor.w": shared, "head": np.ones(3, np.float32),
                                                      "critic.w": shared})
    chunks = codec.weight_chunks(snap, chunk_bytes=512)
    header = chunks[0].header  # type: ignore[union-attr]
    assert header.payload_bytes == shared.nbytes + 12
    back, _ = weights_from_chunks(iter(as_sent(chunks)), LIMIT)
    assert back is not None
    assert np.array_equal(back.tensors["actor.w"], shared) and np.array_equal(back.tensors["critic.w"], shared)
    assert np.shares_memory(back.tensors["actor.w"], back.tensors["critic.w"])
    equal_not_same = weights.WeightSnapshot(version=1, tensors={"a": shared, "b": shared.copy()})
    assert codec.weight_chunks(equal_not_same)[0].header.payload_bytes == 2 * shared.nbytes  # type: ignore[union-attr]


def test_decoded_weights_are_views_into_one_buffer_not_copies_each() -> None:
    tensors: dict[str, np.ndarray] = {"a": np.arange(10, dtype=np.float32),
                                      "b": np.arange(6, dtype=np.int64).reshape(2, 3)}
    back, _ = weights_from_chunks(iter(as_sent(codec.weight_chunks(weights.WeightSnapshot(1, tensors)))), LIMIT)
    assert back is not None
    a, b = back.tensors["a"], back.tensors["b"]

    def root(x: object) -> object:
        while isinstance(x, np.ndarray) and x.base is not None:
            x = x.base
        return x.obj if isinstance(x, memoryview) else x

    assert not a.flags.owndata and not b.flags.owndata and root(a) is root(b) and isinstance(root(a), bytearray)
    assert a.flags.writeable and a.flags.aligned and b.flags.aligned


def test_a_misaligned_tensor_is_copied_aligned() -> None:
    """A float32 after 3 bytes of bools lies at offset 3 of the payload: it comes back as an aligned copy."""
    tensors = {"flags": np.array([True, False, True]), "w": np.arange(5, dtype=np.float32)}
    back, _ = weights_from_chunks(iter(as_sent(codec.weight_chunks(weights.WeightSnapshot(1, tensors)))), LIMIT)
    assert back is not None and back.tensors["w"].flags.aligned and np.array_equal(back.tensors["w"], tensors["w"])


def test_a_data_chunk_in_another_field_order_is_read_by_protobuf() -> None:
    """The fast path reads only seq-then-data; any other valid serialization (here data before seq) is parsed."""
    snap = weights.WeightSnapshot(version=2, tensors={"w": np.arange(4, dtype=np.float32)})
    header, data = as_sent(codec.weight_chunks(snap))
    payload = np.arange(4, dtype=np.float32).tobytes()
    reordered = bytes([3 << 3 | 2, len(payload)]) + payload + bytes([1 << 3, 1])
    assert weights_pb2.WeightChunk.FromString(reordered) == weights_pb2.WeightChunk.FromString(data)
    back, _ = weights_from_chunks(iter([header, reordered]), LIMIT)
    assert back is not None and np.array_equal(back.tensors["w"], snap.tensors["w"])


@pytest.mark.parametrize("garbage", [b"\xff\xff\xff", b"\x08", b"\x08\x01\x1a\x7fabc"])
def test_bytes_that_are_no_weight_chunk_are_a_codec_error(garbage: bytes) -> None:
    snap = weights.WeightSnapshot(version=2, tensors={"w": np.arange(4, dtype=np.float32)})
    header = as_sent(codec.weight_chunks(snap))[0]
    with pytest.raises(codec.CodecError):
        weights_from_chunks(iter([header, garbage]), LIMIT)


def test_payload_exactly_at_the_limit_is_accepted() -> None:
    r = cartpole_rollout()
    codec.rollout_from_chunks(codec.rollout_chunks(r), r.nbytes())
    with pytest.raises(codec.CodecError, match=f"exceeds the limit of {r.nbytes() - 1}"):
        codec.rollout_from_chunks(codec.rollout_chunks(r), r.nbytes() - 1)


# --- refusals ---------------------------------------------------------------------------------------------

Chunks = list[rollout_pb2.RolloutChunk]


def small_chunks() -> Chunks:
    """A good rollout in 64-byte payload chunks (so there are many to reorder, drop or add)."""
    return list(codec.rollout_chunks(cartpole_rollout(), chunk_bytes=64))


def renumber(chunks: Chunks) -> Chunks:
    for i, c in enumerate(chunks):
        c.seq = i
    return chunks


def swapped(c: Chunks) -> Chunks:
    c[2], c[3] = c[3], c[2]
    return c


def second_header(c: Chunks) -> Chunks:
    c[2] = rollout_pb2.RolloutChunk(seq=2, header=c[0].header)
    return c


def longer(c: Chunks) -> Chunks:
    return [*c, rollout_pb2.RolloutChunk(seq=len(c), data=b"x")]


def spec_edit(edit: Callable[[rollout_pb2.RolloutHeader], None]) -> Callable[[Chunks], Chunks]:
    def mutate(c: Chunks) -> Chunks:
        edit(c[0].header)
        return c
    return mutate


def tensor(h: rollout_pb2.RolloutHeader, name: str):  # type: ignore[no-untyped-def]
    return next(t for t in h.tensors if t.name == name)


def _set_shape(name: str, shape: list[int]) -> Callable[[rollout_pb2.RolloutHeader], None]:
    def edit(h: rollout_pb2.RolloutHeader) -> None:
        del tensor(h, name).shape[:]
        tensor(h, name).shape.extend(shape)
    return edit


def _drop_tensor(h: rollout_pb2.RolloutHeader) -> None:
    del h.tensors[len(h.tensors) - 1]  # final_index


def _duplicate_tensor(h: rollout_pb2.RolloutHeader) -> None:
    h.tensors.add().CopyFrom(h.tensors[0])


def _set(which: str, **fields: object) -> Callable[[rollout_pb2.RolloutHeader], None]:
    def edit(h: rollout_pb2.RolloutHeader) -> None:
        t = tensor(h, which)
        for k, v in fields.items():
            setattr(t, k, v)
    return edit


REFUSALS: list[tuple[str, Callable[[Chunks], Chunks], str]] = [
    ("out of order", swapped, r"rollout chunk 3 arrived where chunk 2 was expected"),
    ("header missing", lambda c: c[1:], r"chunk 1 arrived where chunk 0 was expected"),
    ("header missing, renumbered", lambda c: renumber(c[1:]), r"rollout must start with a header"),
    ("second header", second_header, r"rollout has a second header at chunk 2"),
    ("truncated", lambda c: c[:-1], r"rollout payload is truncated: \d+ of \d+ bytes arrived"),
    ("longer than announced", longer, r"rollout payload is longer than the \d+ bytes its header announced"),
    ("empty stream", lambda c: [], r"empty rollout stream"),
    ("negative announced size", spec_edit(lambda h: setattr(h, "payload_bytes", -1)), r"exceeds the limit"),
    ("unknown dtype", spec_edit(_set("rewards", dtype="complex64")),
     r"tensor 'rewards' has unsupported dtype 'complex64'"),
    ("object dtype", spec_edit(_set("obs", dtype="object")), r"tensor 'obs' has unsupported dtype 'object'"),
    ("unknown tensor", spec_edit(_set("obs", name="observations")), r"unknown tensor 'observations'"),
    ("missing tensor", spec_edit(_drop_tensor), r"missing tensors: \['final_index'\]"),
    ("tensor twice", spec_edit(_duplicate_tensor), r"tensor 'obs' appears twice"),
    ("shape vs nbytes", spec_edit(_set_shape("rewards", [5, 4])), r"tensor 'rewards': 60 bytes at offset \d+ do not "
     r"match shape \[5, 4\] of float32"),
    ("nbytes vs shape", spec_edit(_set("values", nbytes=4)), r"tensor 'values': 4 bytes"),
    ("negative dim", spec_edit(_set_shape("rewards", [-5, -3])), r"tensor 'rewards' has invalid shape \[-5, -3\]"),
    ("too many dims", spec_edit(_set_shape("rewards", [1] * 9)), r"tensor 'rewards' has invalid shape"),
    ("beyond the payload", spec_edit(_set("final_index", offset=10**6)), r"within a payload of \d+ bytes"),
    ("negative offset", spec_edit(_set("obs", offset=-4)), r"tensor 'obs': .* at offset -4"),
]


@pytest.mark.parametrize(("mutate", "message"), [c[1:] for c in REFUSALS], ids=[c[0] for c in REFUSALS])
def test_refuses_malformed_rollout_streams(mutate: Callable[[Chunks], Chunks], message: str) -> None:
    with pytest.raises(codec.CodecError, match=message):
        codec.rollout_from_chunks(iter(mutate(small_chunks())), LIMIT)


def test_refuses_an_oversized_announcement_before_reading_the_payload() -> None:
    consumed = []

    def stream():  # type: ignore[no-untyped-def]
        chunks = small_chunks()
        chunks[0].header.payload_bytes = 10**12
        for c in chunks:
            consumed.append(c.seq)
            yield c

    with pytest.raises(codec.CodecError, match=rf"payload of {10**12} bytes exceeds the limit of {LIMIT}"):
        codec.rollout_from_chunks(stream(), LIMIT)
    assert consumed == [0]


def test_refuses_malformed_weight_streams() -> None:
    snap = weights.WeightSnapshot(version=1, tensors={"a": np.arange(40, dtype=np.float32)})
    chunks = list(codec.weight_chunks(snap, chunk_bytes=32))
    with pytest.raises(codec.CodecError, match="weights payload is truncated"):
        weights_from_chunks(iter(chunks[:-1]), LIMIT)
    with pytest.raises(codec.CodecError, match="weights must start with a header"):
        weights_from_chunks(iter([weights_pb2.WeightChunk(seq=0, data=b"abc")]), LIMIT)
    bad = weights_pb2.WeightChunk()
    assert isinstance(chunks[0], weights_pb2.WeightChunk)
    bad.CopyFrom(chunks[0])
    bad.header.tensors[0].dtype = "float128"
    with pytest.raises(codec.CodecError, match="unsupported dtype 'float128'"):
        weights_from_chunks(iter([bad, *chunks[1:]]), LIMIT)


def test_refuses_a_shape_whose_element_count_overflows_int64() -> None:
    chunks = small_chunks()
    _set_shape("obs", [2**62, 4, 0 + 4])(chunks[0].header)  # 2**66 elements: wraps to 0 in int64
    _set("obs", nbytes=0)(chunks[0].header)
    with pytest.raises(codec.CodecError):
        codec.rollout_from_chunks(iter(chunks), LIMIT)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_any_mangled_stream_decodes_or_raises_codec_error(data: st.DataObject) -> None:
    """Random edits of a good stream: the decoder returns a Rollout or raises CodecError, nothing else."""
    chunks = small_chunks()
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["drop", "dup", "seq", "data", "spec", "size"]))
        i = data.draw(st.integers(0, len(chunks) - 1)) if chunks else 0
        if not chunks:
            break
        if action == "drop":
            del chunks[i]
        elif action == "dup":
            chunks.insert(i, chunks[i])
        elif action == "seq":
            chunks[i].seq = data.draw(st.integers(-3, 100))
        elif action == "data" and chunks[i].WhichOneof("part") == "data":
            chunks[i].data = data.draw(st.binary(max_size=100))
        elif action == "size" and chunks[i].WhichOneof("part") == "header":
            chunks[i].header.payload_bytes = data.draw(st.integers(-10, 10_000))
        elif action == "spec" and chunks[i].WhichOneof("part") == "header":
            specs = chunks[i].header.tensors
            s = specs[data.draw(st.integers(0, len(specs) - 1))]
            field = data.draw(st.sampled_from(["name", "dtype", "shape", "offset", "nbytes"]))
            if field == "name":
                s.name = data.draw(st.sampled_from([*rollout.ARRAY_FIELDS, "x", ""]))
            elif field == "dtype":
                s.dtype = data.draw(st.sampled_from([*ALL_DTYPES, "complex64", "object", "", "<f4"]))
            elif field == "shape":
                del s.shape[:]
                s.shape.extend(data.draw(st.lists(st.integers(-2, 4096), max_size=4)))
            else:
                setattr(s, field, data.draw(st.integers(-10, 10_000)))
    try:
        r = codec.rollout_from_chunks(iter(chunks), LIMIT)
    except codec.CodecError as exc:
        assert str(exc)
    else:
        assert isinstance(r, rollout.Rollout)


def test_the_generation_of_rollouts_and_weights_travels() -> None:
    r = cartpole_rollout(player_id=2, version=5)
    r.generation = 0x7FFF_FFFF_FFFF_FFFF  # the largest a trainer draws
    assert codec.rollout_from_chunks(codec.rollout_chunks(r), 1 << 20).generation == r.generation
    assert codec.rollout_from_request(codec.exchange_request(r, 0.0), 1 << 20).generation == r.generation
    snap = weights.WeightSnapshot(version=5, tensors={"w": np.zeros(3, np.float32)}, generation=0xB)
    got = codec.weight_reply_from_chunks(codec.weight_chunks(snap), 1 << 20).snapshot
    assert got is not None and (got.version, got.generation) == (5, 0xB)


def test_every_trainer_phase_maps_to_the_wire_and_back() -> None:
    """The domain's phases are the proto's, less PHASE_UNSPECIFIED: a phase added on one side only fails here."""
    wire = set(trainer_pb2.TrainerStatus.Phase.keys()) - {"PHASE_UNSPECIFIED"}
    assert {p.value for p in status.Phase} == wire
    for phase in status.Phase:
        message = codec.status_message(status.TrainerStatus(phase=phase, rank=1, world_size=2))
        assert trainer_pb2.TrainerStatus.Phase.Name(message.phase) == phase.name == phase.value
        assert codec.phase_from_message(message.phase) is phase


def test_a_trainer_status_travels_whole() -> None:
    sent = status.TrainerStatus(phase=status.Phase.SUCCEEDED, rank=1, world_size=3, iteration=7, env_steps=4096,
                                episodes=12, mean_return=195.5, target_return=195.0, elapsed_s=12.25,
                                steps_per_second=2048.0, active_players=5, message="reached the target")
    wire = trainer_pb2.TrainerStatus.FromString(codec.status_message(sent).SerializeToString())
    assert codec.status_from_message(wire) == sent


@pytest.mark.parametrize("phase", [trainer_pb2.TrainerStatus.PHASE_UNSPECIFIED, 99])
def test_a_phase_no_trainer_reports_is_a_codec_error(phase: int) -> None:
    with pytest.raises(codec.CodecError, match=f"trainer phase {phase} "):
        codec.phase_from_message(phase)
