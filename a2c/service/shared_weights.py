"""Weights through files on a memory filesystem, for a trainer and its players on one machine (`a2c local`).

Data flow: the trainer's reply to a player that asks for them this way (`shared_ok` in Fetch and Exchange) ->
`Writer.reply`: the snapshot's payload written once per version into the trainer's --weights-dir (a temporary
name, then renamed: a reader never sees a partial file), and a reply of one header naming the file ->
the player's client -> `read_payload`: the file read into one writable buffer -> `codec` decodes the tensors as
views into it, as it does the chunks gRPC brings.

Why: Breakout's weights are 6.7 MB a version and every round sends them to every player. In `a2c local` at the
zoo's flags the wire took 282-297 us of CPU an env step over gRPC and 186-189 through these files; the whole run
2,447-2,507 against 2,314-2,350 (docs/atari.md). gRPC still carries everything else: the rollouts, the
version, `done`, the wait; a player that cannot read the file (gone, or not where its own --weights-dir says)
asks again over gRPC (`client.py`).

The files: `<pid>-<generation>-<version>.weights` in the directory, each a tag (the version and generation it
holds) and the payload; the newest KEEP versions stay. The file of the version before them is not unlinked but
written over in place for the next version (renamed first): a fresh tmpfs file costs a page allocation and a
zeroing per 4 KiB, which made the write of Breakout's 6.7 MB cost the trainer more than sending them over gRPC.
A player still reading that file sees its tag change (the writer clears the tag before it touches the payload
and sets it after; the reader checks it before and after) and asks again over gRPC (`Gone`), as for a file that
is gone. `Writer.close` removes the trainer's own; `a2c local` removes the directory. A file that cannot be
written (a full /dev/shm: a container's is 64 MiB) is removed, and the reply goes over gRPC (`Writer.reply`).
"""

from __future__ import annotations

import logging
import os
import struct
import threading
from pathlib import Path

from a2c.model import weights
from a2c.service import codec
from a2c.v1 import weights_pb2

log = logging.getLogger(__name__)
KEEP = 3  # and one more to write over: Breakout, 4 x 6.7 MB a trainer, 2 trainers within a container's 64 MiB /dev/shm
TAG = struct.Struct("<qq")  # (version, generation) at the start of a file; (-1, 0) while it is being written
WRITING = TAG.pack(-1, 0)


class Gone(Exception):
    """The file a reply named is not there (replaced since): ask again over gRPC."""


class Writer:
    """A trainer's side: each snapshot's payload in a file of `directory`, written at the first reply that wants it."""

    def __init__(self, directory: str) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise ValueError(f"--weights-dir {directory!r} is not a directory")
        self._lock = threading.Lock()
        self.failures = 0  # replies that could not write their file (OSError): they sent chunks instead
        self._written: list[tuple[weights.WeightSnapshot, Path, weights_pb2.WeightChunk]] = []
        self._spare: Path | None = None  # the file before the newest KEEP: the next version is written over it

    def reply(self, snap: weights.WeightSnapshot, waited_s: float) -> list[weights_pb2.WeightChunk | bytes]:
        """The answer for `snap`: one header naming the file that holds its payload; or, where the file cannot be
        written (a full /dev/shm, the directory gone), the chunks over gRPC (`codec.weight_reply`)."""
        with self._lock:
            found = next((c for s, _, c in self._written if s is snap), None)
            if found is None:
                try:
                    found = self._write(snap)
                except OSError as exc:
                    if self.failures == 0:
                        log.warning("weights over gRPC: writing them to --weights-dir failed (%s)", exc)
                    self.failures += 1
                    return codec.weight_reply(snap, waited_s)
        return [codec.with_wait(found, waited_s)]

    def _write(self, snap: weights.WeightSnapshot) -> weights_pb2.WeightChunk:
        """Write `snap`'s file (over the spare one, if there is one) and keep its header message."""
        header, blobs = codec.weight_header(snap)
        path = self.directory / f"{os.getpid()}-{snap.generation:x}-{snap.version}.weights"
        tmp = path.with_suffix(".tmp")
        try:
            if self._spare is not None:  # the oldest file, written over in place (its pages stay)
                os.replace(self._spare, tmp)
                self._spare = None
            with open(tmp, "r+b" if tmp.exists() else "wb") as f:
                f.write(WRITING)  # a reader of the file's old version sees it change: `read_payload`
                for blob in blobs:
                    f.write(blob)
                f.truncate()
                f.seek(0)
                f.write(TAG.pack(snap.version, snap.generation))
            os.replace(tmp, path)
        except OSError:
            tmp.unlink(missing_ok=True)  # no partial file stays (ENOSPC)
            raise
        header.shared_file = path.name
        chunk = weights_pb2.WeightChunk(seq=0, header=header)
        self._written.append((snap, path, chunk))
        if len(self._written) > KEEP:
            _, self._spare, _ = self._written.pop(0)
        return chunk

    def close(self) -> None:
        with self._lock:
            for path in [p for _, p, _ in self._written] + ([self._spare] if self._spare else []):
                path.unlink(missing_ok=True)
            self._written.clear()
            self._spare = None


def read_payload(directory: str, name: str, nbytes: int, version: int, generation: int) -> bytearray:
    """The payload a reply's header names: `nbytes` from file `name` of `directory` that holds `version` of
    `generation`, into a writable buffer. ValueError for a name that is not a plain file name or a file of another
    size; `Gone` if it is not there or no longer holds that version (written over while it was read)."""
    if not name or name != os.path.basename(name) or name in (".", ".."):
        raise ValueError(f"shared weights file {name!r} is not a file name")
    tag = TAG.pack(version, generation)
    try:
        with open(os.path.join(directory, name), "rb", buffering=0) as f:
            if f.read(TAG.size) != tag:
                raise Gone(f"shared weights file {name!r} holds another version now")
            size = os.fstat(f.fileno()).st_size - TAG.size
            if size != nbytes:
                raise ValueError(f"shared weights file {name!r} holds {size} bytes, its header announced {nbytes}")
            buf = bytearray(nbytes)
            view, got = memoryview(buf), 0
            while got < nbytes:
                n = f.readinto(view[got:])
                if not n:
                    if os.pread(f.fileno(), TAG.size, 0) != tag:
                        raise Gone(f"shared weights file {name!r} was written over while it was read")
                    raise ValueError(f"shared weights file {name!r} ended at {got} of {nbytes} bytes")
                got += n
            if os.pread(f.fileno(), TAG.size, 0) != tag:
                raise Gone(f"shared weights file {name!r} was written over while it was read")
            return buf
    except FileNotFoundError:
        raise Gone(f"shared weights file {name!r} is gone") from None
