"""Conversions between the forms a 96-bit NeuralHash takes.

- **hex**: 24 hex digits, bit 0 first and most significant (``"8" + "0" * 23`` has
  only bit 0 set). Upper case is accepted on input; output is always lower case.
- **packed**: ``uint8`` array ``[N, 12]``, byte ``k`` holds bits ``8k .. 8k+7``, most
  significant first: exactly ``bytes.fromhex(hex)``, and what ``np.packbits`` makes of
  a ``[N, 96]`` bit array. This is the exchange and storage form (12 bytes a hash,
  e.g. a SQLite BLOB), and also the layout faiss binary indexes use.
- **bits**: ``uint8`` array ``[N, 96]`` of 0/1, the ``hash_bits`` output of the model.
- **words** (the search engine's internal form): two parallel arrays,
  ``hi`` ``uint64[N]`` = bits 0-63 (the first 16 hex digits read as one big-endian
  number) and ``lo`` ``uint32[N]`` = bits 64-95 (the last 8 hex digits). The Hamming
  distance of two hashes is then
  ``bitwise_count(hi_a ^ hi_b) + bitwise_count(lo_a ^ lo_b)``: two XORs and two
  popcounts over 12 bytes, with no padding to read (a ``[N, 2] uint64`` layout would
  read 16 bytes a hash, a third more memory traffic for a scan that is
  bandwidth-bound). Keeping ``hi`` and ``lo`` as separate arrays also lets a scan with
  a small radius read only ``hi`` first and touch ``lo`` only for the few survivors.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..errors import NeuralHashError

HASH_BITS = 96
HASH_BYTES = 12
HEX_DIGITS = 24

# ASCII code -> nibble value, 255 for anything that is not a hex digit.
_NIBBLE = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _NIBBLE[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _NIBBLE[_c] = 10 + _i


def _bad_hex(index: int, value) -> NeuralHashError:
    return NeuralHashError(
        f"hash {index}: {value!r} is not a NeuralHash (expected {HEX_DIGITS} hex digits)")


def pack_hex(hexes: Iterable[str]) -> np.ndarray:
    """Pack hex hashes into a ``uint8 [N, 12]`` array.

    Raises :class:`NeuralHashError` naming the index and value of the first hash
    that is not a string of exactly 24 hex digits.
    """
    if isinstance(hexes, (str, bytes, bytearray)):
        raise NeuralHashError("pack_hex expects a sequence of hex hashes, not a single string; "
                              "wrap it in a list")
    items = hexes if isinstance(hexes, list) else list(hexes)
    n = len(items)
    if n == 0:
        return np.zeros((0, HASH_BYTES), dtype=np.uint8)
    try:
        joined = "".join(items)
    except TypeError:
        k = next(k for k, h in enumerate(items) if not isinstance(h, str))
        raise _bad_hex(k, items[k]) from None
    if len(joined) != n * HEX_DIGITS:
        lengths = np.fromiter(map(len, items), dtype=np.int64, count=n)
        k = int(np.flatnonzero(lengths != HEX_DIGITS)[0])
        raise _bad_hex(k, items[k])
    raw = joined.encode("ascii", errors="replace")  # one byte a character; non-ASCII -> '?'
    nib = _NIBBLE[np.frombuffer(raw, dtype=np.uint8)]
    bad = np.flatnonzero(nib == 255)
    if bad.size:
        k = int(bad[0]) // HEX_DIGITS
        raise _bad_hex(k, items[k])
    nib = nib.reshape(n, HEX_DIGITS)
    return (nib[:, 0::2] << 4) | nib[:, 1::2]


def check_packed(packed, what: str = "packed hashes") -> np.ndarray:
    """Return ``packed`` as a C-contiguous ``uint8 [N, 12]`` array, or raise."""
    arr = np.asarray(packed)
    if arr.dtype != np.uint8:
        raise NeuralHashError(f"{what} must be a uint8 array of shape [N, 12], got dtype {arr.dtype}")
    if arr.ndim == 1 and arr.shape[0] == HASH_BYTES:
        arr = arr.reshape(1, HASH_BYTES)
    if arr.ndim != 2 or arr.shape[1] != HASH_BYTES:
        raise NeuralHashError(f"{what} must be a uint8 array of shape [N, 12], got shape {arr.shape}")
    return np.ascontiguousarray(arr)


def unpack_hex(packed) -> list[str]:
    """The inverse of :func:`pack_hex`: ``uint8 [N, 12]`` -> list of 24-digit lower-case hex."""
    arr = check_packed(packed)
    text = arr.tobytes().hex()
    return [text[k:k + HEX_DIGITS] for k in range(0, len(text), HEX_DIGITS)]


def pack_bits(bits) -> np.ndarray:
    """``[N, 96]`` array of 0/1 (bit 0 first) -> packed ``uint8 [N, 12]``."""
    arr = np.asarray(bits)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2 or arr.shape[1] != HASH_BITS:
        raise NeuralHashError(f"hash bits must have shape [N, 96], got {np.asarray(bits).shape}")
    if arr.size and not np.isin(arr, (0, 1)).all():
        raise NeuralHashError("hash bits must be 0 or 1")
    return np.packbits(arr.astype(np.uint8), axis=1)


def unpack_bits(packed) -> np.ndarray:
    """Packed ``uint8 [N, 12]`` -> ``uint8 [N, 96]`` of 0/1, bit 0 first."""
    return np.unpackbits(check_packed(packed), axis=1)


def to_words(packed) -> tuple[np.ndarray, np.ndarray]:
    """Packed ``uint8 [N, 12]`` -> ``(hi uint64[N], lo uint32[N])`` (see the module docstring)."""
    arr = check_packed(packed)
    hi = arr[:, :8].copy().view(">u8").reshape(-1).astype(np.uint64)
    lo = arr[:, 8:].copy().view(">u4").reshape(-1).astype(np.uint32)
    return hi, lo


def from_words(hi, lo) -> np.ndarray:
    """The inverse of :func:`to_words`."""
    hi = np.asarray(hi, dtype=np.uint64).reshape(-1)
    lo = np.asarray(lo, dtype=np.uint32).reshape(-1)
    if hi.shape != lo.shape:
        raise NeuralHashError(f"hi and lo words differ in length: {hi.shape[0]} and {lo.shape[0]}")
    out = np.empty((hi.shape[0], HASH_BYTES), dtype=np.uint8)
    out[:, :8] = hi.astype(">u8").view(np.uint8).reshape(-1, 8)
    out[:, 8:] = lo.astype(">u4").view(np.uint8).reshape(-1, 4)
    return out


def as_queries(queries, *, single: bool = False) -> np.ndarray:
    """Normalise query input to packed ``uint8 [Q, 12]``.

    Accepts a hex string, 12 raw bytes or a ``uint8 [12]`` array (one hash), a
    ``uint8 [Q, 12]`` array, or (unless ``single``) an iterable of hex strings.
    """
    if isinstance(queries, str):
        return pack_hex([queries])
    if isinstance(queries, (bytes, bytearray, memoryview)):
        raw = bytes(queries)
        if len(raw) != HASH_BYTES:
            raise NeuralHashError(f"a raw hash is {HASH_BYTES} bytes, got {len(raw)}")
        return np.frombuffer(raw, dtype=np.uint8).reshape(1, HASH_BYTES).copy()
    if isinstance(queries, np.ndarray):
        arr = check_packed(queries, "query")
        if single and arr.shape[0] != 1:
            raise NeuralHashError(f"query expects one hash, got {arr.shape[0]}; use query_many")
        return arr
    if single:
        raise NeuralHashError(
            f"a query is a hex string, 12 bytes or a uint8 [12] array, not {type(queries).__name__}")
    return pack_hex(queries)
