"""Bounded decompression of the chunk formats Apple's images use.

Every decoder is told how many bytes to expect and refuses more, so a
corrupt or hostile chunk cannot expand into gigabytes (a decompression bomb).
LZFSE goes through the ``lzfse`` binding the Espresso reader already uses;
the binding has no output limit, so the stream's block headers, which declare
their decoded sizes, are checked against the limit before it is called.
"""

from __future__ import annotations

import bz2
import lzma
import struct
import zlib

import lzfse

from ..errors import FirmwareError

_LZFSE_END, _LZFSE_RAW, _LZFSE_V1, _LZFSE_V2, _LZFSE_LZVN = b"bvx$", b"bvx-", b"bvx1", b"bvx2", b"bvxn"
# lzfse_compressed_block_header_v1: 7 uint32 + int32 + 4 uint16 + int32 + 3 uint16 + (20 + 20 + 64 + 256) uint16.
_V1_HEADER = 4 * 7 + 4 + 2 * 4 + 4 + 2 * 3 + 2 * (20 + 20 + 64 + 256)


def lzfse_declared_size(data: bytes, where: str) -> int:
    """The sum of the decoded sizes an LZFSE stream's blocks declare (its headers walked, nothing decoded)."""
    pos, total = 0, 0
    while True:
        magic = bytes(data[pos : pos + 4])
        if magic == _LZFSE_END:
            return total
        if len(data) < pos + 8:
            raise FirmwareError(f"{where}: LZFSE stream truncated (no end-of-stream block)")
        (raw,) = struct.unpack_from("<I", data, pos + 4)
        if magic == _LZFSE_RAW:
            length = 8 + raw
        elif magic == _LZFSE_LZVN:
            length = 12 + struct.unpack_from("<I", data, pos + 8)[0] if len(data) >= pos + 12 else len(data) + 1
        elif magic == _LZFSE_V2:
            if len(data) < pos + 32:
                raise FirmwareError(f"{where}: LZFSE stream truncated")
            f0, f1, f2 = struct.unpack_from("<QQQ", data, pos + 8)
            length = (f2 & 0xFFFFFFFF) + ((f0 >> 20) & 0xFFFFF) + ((f1 >> 40) & 0xFFFFF)
        elif magic == _LZFSE_V1:
            if len(data) < pos + 28:
                raise FirmwareError(f"{where}: LZFSE stream truncated")
            literal_bytes, lmd_bytes = struct.unpack_from("<II", data, pos + 20)
            length = _V1_HEADER + literal_bytes + lmd_bytes
        else:
            raise FirmwareError(f"{where}: not an LZFSE stream (block magic {magic!r} at byte {pos})")
        total += raw
        pos += length
        if pos > len(data):
            raise FirmwareError(f"{where}: LZFSE stream truncated (a block runs past the chunk)")


def lzfse_decompress(data: bytes, expected: int, where: str) -> bytes:
    """Decode an LZFSE stream that must decode to at most ``expected`` bytes."""
    declared = lzfse_declared_size(data, where)
    if declared > expected:
        raise FirmwareError(f"{where}: LZFSE stream declares {declared:,} bytes, more than the {expected:,} expected")
    try:
        out = lzfse.decompress(bytes(data))
    except lzfse.error as exc:
        raise FirmwareError(f"{where}: corrupt LZFSE data ({exc})") from None
    if len(out) != declared:
        raise FirmwareError(f"{where}: LZFSE data decodes to {len(out):,} bytes, its headers declare {declared:,}")
    return out


def _bounded(decoder, data: bytes, expected: int, where: str, codec: str, errors) -> bytes:
    try:
        out = decoder.decompress(data, expected + 1)
    except errors as exc:
        raise FirmwareError(f"{where}: corrupt {codec} data ({exc})") from None
    if len(out) > expected:
        raise FirmwareError(f"{where}: {codec} data decodes to more than the {expected:,} bytes expected")
    return out


def zlib_decompress(data: bytes, expected: int, where: str) -> bytes:
    return _bounded(zlib.decompressobj(), data, expected, where, "zlib", zlib.error)


def bzip2_decompress(data: bytes, expected: int, where: str) -> bytes:
    return _bounded(bz2.BZ2Decompressor(), data, expected, where, "bzip2", (OSError, ValueError, EOFError))


def lzma_decompress(data: bytes, expected: int, where: str) -> bytes:
    return _bounded(lzma.LZMADecompressor(), data, expected, where, "LZMA", lzma.LZMAError)


def adc_decompress(data: bytes, expected: int, where: str) -> bytes:
    """Apple Data Compression (old ``hdiutil`` images): literal runs and back-references up to 64 KiB."""
    out = bytearray()
    pos, n = 0, len(data)
    try:
        while pos < n:
            op = data[pos]
            if op & 0x80:  # literal run of 1..128 bytes
                length = (op & 0x7F) + 1
                if pos + 1 + length > n:
                    raise IndexError
                out += data[pos + 1 : pos + 1 + length]
                pos += 1 + length
                continue
            if op & 0x40:  # 3-byte code: length 4..67, 16-bit distance
                length, distance = (op & 0x3F) + 4, (data[pos + 1] << 8 | data[pos + 2]) + 1
                pos += 3
            else:  # 2-byte code: length 3..18, 10-bit distance
                length, distance = ((op & 0x3C) >> 2) + 3, ((op & 0x03) << 8 | data[pos + 1]) + 1
                pos += 2
            if distance > len(out):
                raise IndexError
            start = len(out) - distance
            if distance >= length:
                out += out[start : start + length]
            else:  # overlapping copy repeats the last `distance` bytes
                for i in range(length):
                    out.append(out[start + i])
            if len(out) > expected:
                raise FirmwareError(f"{where}: ADC data decodes to more than the {expected:,} bytes expected")
    except IndexError:
        raise FirmwareError(f"{where}: corrupt ADC data (a code at byte {pos} runs past its input)") from None
    return bytes(out)
