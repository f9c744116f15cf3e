"""Weights through files on a memory filesystem, for a trainer and its players on one machine (`a2c local`).

Data flow: the trainer's reply to a player that asks for them this way (`shared_ok` in Fetch and Exchange) ->
`Writer.reply`: the snapshot's payload written once per version into the trainer's --weights-dir (a temporary
name, then renamed: a reader never sees a partial file), and a reply of one header naming the file ->
the player's client -> `read_payload`: the file read into one writable buffer -> `codec` decodes the tensors as
views into it, as it does the chunks gRPC brings.

Why: Breakout's weights are 6.7 MB a version and every round sends them to every player. Over gRPC on loopback
a round's exchange, new version and load took ~17.5 ms of CPU; through a file on /dev/shm ~6.3 ms
(`bench/wire_codec.py --loopback`, `docs/atari.md`). gRPC still carries everything else: the rollouts, the
version, `done`, the wait; a player that cannot read the file (gone, or not where its own --weights-dir says)
asks again over gRPC (`client.py`).

The files: `<pid>-<generation>-<version>.weights` in the directory; the newest KEEP versions stay (a player may
still be opening one the trainer has just replaced; POSIX lets a reader that has it open finish after the
unlink). `Writer.close` removes the trainer's own; `a2c local` removes the directory. A file that cannot be
written (a full /dev/shm: a container's is 64 MiB) leaves no partial file, and the reply goes over gRPC
(`servicers.py`).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from a2c.model import weights
from a2c.v1 import weights_pb2

KEEP = 3  # Breakout: 3 x 6.7 MB a trainer, within a container's 64 MiB /dev/shm for 2 trainers


class Gone(Exception):
    """The file a reply named is not there (replaced since): ask again over gRPC."""


class Writer:
    """A trainer's side: each snapshot's payload in a file of `directory`, written at the first reply that wants it."""

    def __init__(self, directory: str) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise ValueError(f"--weights-dir {directory!r} is not a directory")
        self._lock = threading.Lock()
        self.failures = 0  # replies that could not write their file (OSError): the server sent chunks instead
        self._written: list[tuple[weights.WeightSnapshot, Path, weights_pb2.WeightHeader]] = []

    def reply(self, snap: weights.WeightSnapshot, waited_s: float) -> list[weights_pb2.WeightChunk]:
        """The one-message answer for `snap`: its header, naming the file that holds its payload."""
        from a2c.service import codec  # codec imports this module for the reader's side

        with self._lock:
            found = next((h for s, _, h in self._written if s is snap), None)
            if found is None:
                specs, blobs = codec.blobs(snap.tensors)
                path = self.directory / f"{os.getpid()}-{snap.generation:x}-{snap.version}.weights"
                tmp = path.with_suffix(".tmp")
                try:
                    with open(tmp, "wb") as f:
                        for blob in blobs:
                            f.write(blob)
                    os.replace(tmp, path)
                except OSError:
                    tmp.unlink(missing_ok=True)  # no partial file stays (ENOSPC)
                    raise
                found = weights_pb2.WeightHeader(
                    version=snap.version, done=snap.done, tensors=specs, payload_bytes=sum(len(b) for b in blobs),
                    generation=snap.generation, shared_file=path.name)
                self._written.append((snap, path, found))
                for _, old, _ in self._written[:-KEEP]:
                    old.unlink(missing_ok=True)
                del self._written[:-KEEP]
        header = weights_pb2.WeightHeader()
        header.CopyFrom(found)
        header.waited_s = waited_s
        return [weights_pb2.WeightChunk(seq=0, header=header)]

    def close(self) -> None:
        with self._lock:
            for _, path, _ in self._written:
                path.unlink(missing_ok=True)
            self._written.clear()


def read_payload(directory: str, name: str, nbytes: int) -> bytearray:
    """The payload a reply's header names: `nbytes` from file `name` of `directory`, into a writable buffer.
    ValueError for a name that is not a plain file name or a file of another size; `Gone` if it is not there."""
    if not name or name != os.path.basename(name) or name in (".", ".."):
        raise ValueError(f"shared weights file {name!r} is not a file name")
    try:
        with open(os.path.join(directory, name), "rb", buffering=0) as f:
            size = os.fstat(f.fileno()).st_size
            if size != nbytes:
                raise ValueError(f"shared weights file {name!r} holds {size} bytes, its header announced {nbytes}")
            buf = bytearray(nbytes)
            view, got = memoryview(buf), 0
            while got < nbytes:
                n = f.readinto(view[got:])
                if not n:
                    raise ValueError(f"shared weights file {name!r} ended at {got} of {nbytes} bytes")
                got += n
            return buf
    except FileNotFoundError:
        raise Gone(f"shared weights file {name!r} is gone") from None
