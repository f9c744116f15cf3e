"""Protobuf's wire format, by hand, for the one message that carries megabytes: a WeightChunk of data.

Data flow: `codec.weight_chunks` writes each data chunk once per version as bytes (`data_message`: one copy
of the tensors' bytes, no protobuf message built); a client reads a reply's chunk where it lies in the bytes
that came (`data_of`: a view, no copy), and hands any other form of the message to protobuf.
"""

from __future__ import annotations


def _varint(n: int) -> bytes:
    """Protobuf's base-128 varint of n >= 0."""
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    """(value, position after it) of the varint at pos; (-1, pos) if there is none (truncated, over 10 bytes)."""
    value = shift = 0
    for i in range(pos, min(pos + 10, len(buf))):
        byte = buf[i]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i + 1
        shift += 7
    return -1, pos


# WeightChunk's fields as its message puts them (weights.proto): seq = 1 (varint), data = 3 (length-delimited)
_SEQ_TAG = bytes([1 << 3 | 0])
_DATA_TAG = bytes([3 << 3 | 2])


def data_message(seq: int, pieces: list[memoryview]) -> bytes:
    """The serialized WeightChunk(seq=seq, data=the pieces joined), in one copy of the pieces."""
    size = sum(len(p) for p in pieces)
    return b"".join([_SEQ_TAG + _varint(seq) + _DATA_TAG + _varint(size), *pieces])


def data_of(message: bytes) -> tuple[int, memoryview] | None:
    """(seq, data as a view into message) of a serialized WeightChunk holding data in the form `data_message`
    writes (seq 1 or more, then data, nothing else); None for any other message (protobuf parses it)."""
    buf = memoryview(message)
    if len(buf) < 2 or buf[0] != _SEQ_TAG[0]:
        return None
    seq, pos = _read_varint(buf, 1)
    if seq < 1 or seq >= 1 << 63 or pos >= len(buf) or buf[pos] != _DATA_TAG[0]:
        return None
    size, start = _read_varint(buf, pos + 1)
    if size < 0 or start + size != len(buf):
        return None
    return seq, buf[start:]
