"""Weights through a --weights-dir (a2c/service/shared_weights.py): written once per version, read bit-exact by a
client that asks, never sent to one that does not; a file that is gone or wrong is asked for again or refused."""

from __future__ import annotations

import errno
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from a2c import config
from a2c.launch import local
from a2c.model import weights
from a2c.service import client, codec, shared_weights
from a2c.v1 import weights_pb2
from tests.support import server as live
from tests.support.rollouts import cartpole_rollout


def snapshot(version: int, generation: int = 7) -> weights.WeightSnapshot:
    rng = np.random.default_rng(version)
    shared = rng.normal(size=(300, 1000)).astype(np.float32)  # over one chunk; one array under two names
    return weights.WeightSnapshot(version=version, generation=generation, tensors={
        "a.w": shared, "b.w": shared, "bias": np.arange(5, dtype=np.int64)})


def file_reply(writer: shared_weights.Writer, snap: weights.WeightSnapshot, waited_s: float) -> weights_pb2.WeightChunk:
    """The writer's answer, which must be the one header that names the file."""
    (chunk,) = writer.reply(snap, waited_s)
    assert isinstance(chunk, weights_pb2.WeightChunk) and chunk.header.shared_file
    return chunk


def same(got: weights.WeightSnapshot, sent: weights.WeightSnapshot) -> bool:
    return set(got.tensors) == set(sent.tensors) and all(
        np.array_equal(got.tensors[k], v) and got.tensors[k].dtype == v.dtype for k, v in sent.tensors.items())


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[live.Served, shared_weights.Writer, Path]]:
    directory = tmp_path / "shm"
    directory.mkdir()
    writer = shared_weights.Writer(str(directory))
    trainer = live.start(shared=writer)
    yield trainer, writer, directory
    trainer.stop()
    writer.close()


def test_a_client_that_asks_reads_the_file_written_once_per_version(
        served: tuple[live.Served, shared_weights.Writer, Path]) -> None:
    trainer, writer, directory = served
    reader = client.TrainerClient(trainer.address, max_message_bytes=live.MAX_MESSAGE, retry_for_s=2.0,
                                  weights_dir=str(directory))
    try:
        sent = snapshot(3)
        trainer.board.publish(sent)
        for _ in range(2):  # two replies of one version: one file
            got, done = reader.fetch(-1, wait_s=5.0)
            assert got is not None and got.version == 3 and got.generation == 7 and not done and same(got, sent)
        assert reader.shared_reads == 2
        files = sorted(p.name for p in directory.iterdir())
        assert files == [f"{os.getpid()}-7-3.weights"]
        assert (directory / files[0]).stat().st_size == 16 + 300 * 1000 * 4 + 5 * 8  # a tag, the shared array once
        assert got is not None and got.tensors["a.w"].flags.writeable
        assert np.shares_memory(got.tensors["a.w"], got.tensors["b.w"])
        # the round trip: a rollout up, the next version down as a file
        trainer.version[0] = 3
        publish = snapshot(4)
        trainer.board.publish(publish)
        reply, _ = reader.exchange(cartpole_rollout(version=3), wait_s=5.0)
        assert reply.snapshot is not None and reply.version == 4 and same(reply.snapshot, publish)
        assert reader.shared_reads == 3
        # the plaintext client of the fixture does not ask: the same weights over gRPC, and no file read
        got, _ = trainer.client.fetch(-1, wait_s=5.0)
        assert got is not None and same(got, publish) and trainer.client.shared_reads == 0
    finally:
        reader.close()


def test_the_newest_versions_stay_the_one_before_is_written_over_and_close_removes_them(tmp_path: Path) -> None:
    writer = shared_weights.Writer(str(tmp_path))
    snaps = [snapshot(v) for v in range(shared_weights.KEEP + 3)]
    inodes = {}
    for s in snaps:
        header = file_reply(writer, s, 0.25)
        assert header.header.shared_file == f"{os.getpid()}-7-{s.version}.weights" and header.header.waited_s == 0.25
        inodes[s.version] = (tmp_path / header.header.shared_file).stat().st_ino
    # the newest KEEP, and the one before them (the next version is written over it)
    kept = sorted(int(p.stem.rsplit("-", 1)[1]) for p in tmp_path.iterdir())
    assert kept == [s.version for s in snaps[-shared_weights.KEEP - 1:]]
    assert inodes[shared_weights.KEEP + 1] == inodes[0] and inodes[shared_weights.KEEP + 2] == inodes[1]  # in place
    assert not list(tmp_path.glob("*.tmp"))
    for s in snaps[-shared_weights.KEEP:]:  # what every kept file holds is its own version, read back bit-exact
        header = file_reply(writer, s, 0.0)
        payload = shared_weights.read_payload(str(tmp_path), header.header.shared_file, header.header.payload_bytes,
                                              s.version, s.generation)
        decoded = codec.weight_reply_from_chunks([header], 64 << 20, lambda _: payload).snapshot  # noqa: B023
        assert decoded is not None and same(decoded, s)
    writer.close()
    assert not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="is not a directory"):
        shared_weights.Writer(str(tmp_path / "missing"))


def test_a_file_written_over_while_it_is_read_is_gone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader holding the file of an old version while the trainer writes the next one over it: the tag it
    checks before and after the payload differs, so it asks again (never a torn mix of two versions)."""
    writer = shared_weights.Writer(str(tmp_path))
    header = file_reply(writer, snapshot(1), 0.0)
    name, nbytes = header.header.shared_file, header.header.payload_bytes
    assert shared_weights.read_payload(str(tmp_path), name, nbytes, 1, 7)
    with pytest.raises(shared_weights.Gone, match="another version"):
        shared_weights.read_payload(str(tmp_path), name, nbytes, 2, 7)
    with pytest.raises(shared_weights.Gone, match="another version"):
        shared_weights.read_payload(str(tmp_path), name, nbytes, 1, 8)  # same version, another generation
    real_pread = os.pread

    def overwritten_meanwhile(fd: int, n: int, offset: int) -> bytes:  # the trainer starts on it meanwhile
        with open(tmp_path / name, "r+b") as f:
            f.write(shared_weights.WRITING)
        return real_pread(fd, n, offset)

    monkeypatch.setattr(shared_weights.os, "pread", overwritten_meanwhile)
    with pytest.raises(shared_weights.Gone, match="written over while it was read"):
        shared_weights.read_payload(str(tmp_path), name, nbytes, 1, 7)


def test_a_file_that_is_gone_is_asked_for_again_over_grpc(
        served: tuple[live.Served, shared_weights.Writer, Path], tmp_path: Path) -> None:
    """A reply names a file the client cannot find (replaced since, or the client's directory is another one):
    the weights come over gRPC instead, in the same call to fetch or exchange, and the rollout is not sent twice."""
    trainer, _, _ = served
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    reader = client.TrainerClient(trainer.address, max_message_bytes=live.MAX_MESSAGE, retry_for_s=2.0,
                                  weights_dir=str(elsewhere))
    try:
        sent = snapshot(1)
        trainer.board.publish(sent)
        got, _ = reader.fetch(-1, wait_s=5.0)
        assert got is not None and same(got, sent) and reader.shared_gone == 1 and reader.shared_reads == 0
        trainer.version[0] = 1
        newer = snapshot(2)
        trainer.board.publish(newer)
        reply, _ = reader.exchange(cartpole_rollout(version=1), wait_s=5.0)
        assert reply.snapshot is not None and same(reply.snapshot, newer) and reader.shared_gone == 2
        assert len(trainer.box.take_round(1, timeout_s=0.0).rollouts) == 1  # queued once
    finally:
        reader.close()


def test_a_file_reference_nobody_asked_for_or_a_wrong_file_is_refused(tmp_path: Path) -> None:
    writer = shared_weights.Writer(str(tmp_path))
    chunks = [file_reply(writer, snapshot(1), 0.0)]
    with pytest.raises(codec.CodecError, match="not asked for"):
        codec.weight_reply_from_chunks(chunks, 64 << 20)
    header = chunks[0].header

    def read(name: str, nbytes: int) -> codec.WeightReply:
        bad = weights_pb2.WeightHeader()
        bad.CopyFrom(header)
        bad.shared_file, bad.payload_bytes = name, nbytes
        return codec.weight_reply_from_chunks([weights_pb2.WeightChunk(seq=0, header=bad)], 64 << 20,
                                              lambda h: shared_weights.read_payload(str(tmp_path), h.shared_file,
                                                                                    h.payload_bytes, h.version,
                                                                                    h.generation))

    assert same(read(header.shared_file, header.payload_bytes).snapshot, snapshot(1))  # type: ignore[arg-type]
    for name in ("../etc/passwd", "a/b", ".."):
        with pytest.raises(codec.CodecError, match="not a file name|not asked for"):
            read(name, header.payload_bytes)
    with pytest.raises(codec.CodecError, match="holds .* bytes, its header announced"):
        read(header.shared_file, header.payload_bytes - 8)
    with pytest.raises(codec.CodecError, match="exceeds the limit"):
        read(header.shared_file, 65 << 20)
    with pytest.raises(shared_weights.Gone):
        read("123-7-99.weights", header.payload_bytes)
    data = weights_pb2.WeightChunk(seq=1, data=b"x" * 8)  # no data may follow a file reference
    with pytest.raises(codec.CodecError, match="longer than"):
        codec.weight_reply_from_chunks([chunks[0], data], 64 << 20, lambda h: bytearray(h.payload_bytes))


def test_a2c_local_makes_the_directory_hands_it_to_every_process_and_can_do_without(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "SHM", tmp_path)
    cfg = config.LocalConfig()
    directory = local.shared_weights_dir(cfg)
    assert Path(directory).parent == tmp_path and Path(directory).name.startswith(f"a2c-weights-{os.getpid()}-")
    children = local.plan(cfg, tmp_path / "run", directory)
    assert {c.cfg.weights_dir for c in children} == {directory} and {c.role for c in children} == {"trainer", "player"}
    assert local.shared_weights_dir(config.LocalConfig(shared_weights=False)) == ""
    dead, alive = tmp_path / "a2c-weights-999999999-x1", tmp_path / f"a2c-weights-{os.getppid()}-x2"
    for d in (dead, alive):
        d.mkdir()
        (d / "1-7-3.weights").write_bytes(b"w")
    local.shared_weights_dir(cfg)  # a launcher's leftovers go, a live one's stay
    assert not dead.exists() and alive.exists()
    monkeypatch.setattr(local, "SHM", tmp_path / "missing")
    assert local.shared_weights_dir(cfg) == ""


def test_a_file_that_cannot_be_written_leaves_nothing_and_the_weights_go_over_grpc(
        served: tuple[live.Served, shared_weights.Writer, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """A directory removed under the trainer, or a full /dev/shm (ENOSPC): the player still gets its weights."""
    trainer, writer, directory = served
    reader = client.TrainerClient(trainer.address, max_message_bytes=live.MAX_MESSAGE, retry_for_s=2.0,
                                  weights_dir=str(directory))
    try:
        directory.rmdir()
        sent = snapshot(5)
        trainer.board.publish(sent)
        for _ in range(2):
            got, _ = reader.fetch(-1, wait_s=5.0)
            assert got is not None and same(got, sent)
        assert writer.failures == 2 and reader.shared_reads == 0 and reader.shared_gone == 0
        directory.mkdir()

        class Full(io.FileIO):
            def write(self, b: Any) -> int:
                super().write(bytes(memoryview(b)[:100]))  # part of it went in, then the filesystem was full
                raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(shared_weights, "open", lambda path, mode: Full(path, mode), raising=False)
        got, _ = reader.fetch(4, wait_s=5.0)
        assert got is not None and same(got, sent) and writer.failures == 3
        assert not list(directory.iterdir())  # the partial file went with the failure
    finally:
        reader.close()
