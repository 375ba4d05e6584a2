"""The compressed JSON container of ``.espresso.net`` / ``.espresso.shape``.

Layout (see ESPRESSO.md): 28-byte header, then one LZFSE stream::

    0-3   b"pbze"
    4-7   zero
    8-15  little-endian u64 (64 in every observed file)
    16-19 big-endian u32: length of the decoded JSON
    20-23 zero
    24-27 big-endian u32: length of the LZFSE stream (file size - 28)

Both declared lengths are checked, and the LZFSE block headers are walked
*before* decompressing, so a lying header or stream cannot make us allocate
more than ``max_decoded_size`` bytes.
"""

from __future__ import annotations

import struct

import lzfse

from ..errors import ContainerError

MAGIC = b"pbze"
HEADER_SIZE = 28
HEADER_CONSTANT = 64
DEFAULT_MAX_DECODED_SIZE = 64 * 1024 * 1024

# LZFSE block magics (from the reference implementation's stream format).
_END = b"bvx$"
_RAW = b"bvx-"
_V1 = b"bvx1"
_V2 = b"bvx2"
_LZVN = b"bvxn"


def is_container(data: bytes) -> bool:
    """True when ``data`` starts with the container magic."""
    return data[:4] == MAGIC


def lzfse_declared_size(stream: bytes, *, source: str = "<bytes>") -> int:
    """Sum of the decoded sizes that the LZFSE block headers declare.

    Walks block headers only; raises :class:`ContainerError` when a header is
    unknown, truncated, or the blocks do not end exactly at the end of ``stream``.
    """
    pos = 0
    total = 0
    end = len(stream)
    while True:
        if pos + 4 > end:
            raise ContainerError(f"{source}: LZFSE stream truncated at byte {pos} (no end-of-stream block)")
        magic = stream[pos : pos + 4]
        if magic == _END:
            pos += 4
            break
        if pos + 8 > end:
            raise ContainerError(f"{source}: LZFSE block header truncated at byte {pos}")
        n_raw = struct.unpack_from("<I", stream, pos + 4)[0]
        if magic == _RAW:
            size = 8 + n_raw
        elif magic == _LZVN:
            if pos + 12 > end:
                raise ContainerError(f"{source}: LZFSE block header truncated at byte {pos}")
            size = 12 + struct.unpack_from("<I", stream, pos + 8)[0]
        elif magic == _V2:
            if pos + 32 > end:
                raise ContainerError(f"{source}: LZFSE block header truncated at byte {pos}")
            f0, f1, f2 = struct.unpack_from("<3Q", stream, pos + 8)
            header_size = f2 & 0xFFFFFFFF
            literal_bytes = (f0 >> 20) & 0xFFFFF
            lmd_bytes = (f1 >> 40) & 0xFFFFF
            if header_size < 32:
                raise ContainerError(f"{source}: LZFSE block at byte {pos} declares a header of {header_size} bytes")
            size = header_size + literal_bytes + lmd_bytes
        elif magic == _V1:
            # v1 headers are an in-memory form the reference encoder never writes to a stream.
            raise ContainerError(f"{source}: LZFSE v1 block at byte {pos} is not supported in a stream")
        else:
            raise ContainerError(f"{source}: not an LZFSE block at byte {pos} (magic {magic!r})")
        total += n_raw
        pos += size
        if pos > end:
            raise ContainerError(
                f"{source}: LZFSE block at byte {pos - size} runs past the end of the stream ({end} bytes)"
            )
    if pos != end:
        raise ContainerError(f"{source}: {end - pos} stray bytes after the LZFSE end-of-stream block")
    return total


def decode_container(
    data: bytes, *, source: str = "<bytes>", max_decoded_size: int = DEFAULT_MAX_DECODED_SIZE
) -> bytes:
    """Return the JSON bytes held in a ``pbze`` container, after checking every length."""
    if len(data) < HEADER_SIZE:
        raise ContainerError(f"{source}: {len(data)} bytes is shorter than the {HEADER_SIZE}-byte container header")
    if data[:4] != MAGIC:
        raise ContainerError(f"{source}: wrong magic {data[:4]!r}, expected {MAGIC!r}")
    decoded_len = struct.unpack_from(">I", data, 16)[0]
    stream_len = struct.unpack_from(">I", data, 24)[0]
    if stream_len != len(data) - HEADER_SIZE:
        raise ContainerError(
            f"{source}: header declares an LZFSE stream of {stream_len} bytes, the file holds {len(data) - HEADER_SIZE}"
        )
    if decoded_len > max_decoded_size:
        raise ContainerError(
            f"{source}: header declares {decoded_len} decoded bytes, above the limit of {max_decoded_size}"
        )
    stream = bytes(data[HEADER_SIZE:])
    block_total = lzfse_declared_size(stream, source=source)
    if block_total != decoded_len:
        raise ContainerError(
            f"{source}: header declares {decoded_len} decoded bytes, the LZFSE blocks declare {block_total}"
        )
    try:
        out = lzfse.decompress(stream)
    except Exception as exc:  # the binding raises lzfse.error (and others) on garbage
        raise ContainerError(f"{source}: LZFSE stream does not decode ({exc})") from None
    if len(out) != decoded_len:
        raise ContainerError(f"{source}: decoded {len(out)} bytes, header declares {decoded_len}")
    return out


def encode_container(payload: bytes) -> bytes:
    """Wrap ``payload`` (JSON bytes) in a ``pbze`` container, as Apple's files are."""
    stream = lzfse.compress(bytes(payload))
    header = MAGIC + bytes(4) + struct.pack("<Q", HEADER_CONSTANT)
    header += struct.pack(">I", len(payload)) + bytes(4) + struct.pack(">I", len(stream))
    return header + stream
