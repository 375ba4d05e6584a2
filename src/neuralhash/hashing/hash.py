"""The 96-bit NeuralHash value and the result of hashing one input.

A :class:`Hash` holds the 96 bits and, when known, the 96 projected values
``v = M @ logits`` the bits were taken from (bit ``i`` is 1 when ``v[i] >= 0``).
``|v[i]|`` is the margin of bit ``i``: how far the value is from flipping. Bits
with a small margin are the ones that differ between devices and runtimes
(floating-point differences across 200+ layers move ``v`` a little), so a
careful comparison can discount them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import NeuralHashError
from .seed import HASH_BITS

HEX_DIGITS = HASH_BITS // 4

#: Default margin below which a bit counts as unstable (``Hash.unstable_bits``).
#:
#: ``v = M @ logits`` with ``M`` ~ N(0, 1) (96 x 128, rows independent), so for
#: one image each ``v[i]`` is a normal variable with standard deviation
#: ``s = ||logits||``, and the chance that a bit lies within ``t`` of 0 is about
#: ``0.8 * t / s``. For networks whose 128 outputs have a spread of order 1
#: (the synthetic demo model is calibrated to that; measured over photos,
#: ``s`` is about 9 and the median ``|v|`` about 4.4), a margin of 0.1 is about
#: 1% of ``s`` and flags about 96 * 0.8 * 0.1 / 9 = 0.9 bits per hash (measured:
#: 0.9), the "a few bits apart across devices" scale reported for Apple's model.
#: It is also well above float32 noise (about 1e-5 of ``s``) and of the order
#: of float16 execution noise (relative 1e-3..1e-2 through 200+ layers, i.e.
#: 0.01-0.1 in ``v``). It is an absolute threshold: for a model with a very
#: different output scale pass ``threshold`` explicitly (for example a small
#: fraction of ``float(np.median(h.margins))``).
DEFAULT_MARGIN = 0.1


class Hash:
    """A NeuralHash: 96 bits, bit 0 first and most significant; immutable.

    Equality and ``hash()`` use the bits only (two hashes with the same bits
    but different projected values are equal).
    """

    __slots__ = ("_bits", "_values", "_int")

    def __init__(self, bits: Any, values: Any = None):
        arr = np.asarray(bits)
        if arr.shape != (HASH_BITS,):
            raise NeuralHashError(f"a NeuralHash has {HASH_BITS} bits, got an array of shape {list(arr.shape)}")
        if arr.dtype == bool:
            arr = arr.astype(np.uint8)
        elif not np.issubdtype(arr.dtype, np.number) or not np.isin(arr, (0, 1)).all():
            raise NeuralHashError("a NeuralHash's bits must be 0 or 1")
        arr = arr.astype(np.uint8)
        arr.flags.writeable = False
        vals = None
        if values is not None:
            vals = np.array(values, dtype=np.float32).reshape(-1)
            if vals.shape != (HASH_BITS,):
                raise NeuralHashError(f"a NeuralHash has {HASH_BITS} projected values, got {vals.size}")
            _require_finite(vals)
            vals.flags.writeable = False
        object.__setattr__(self, "_bits", arr)
        object.__setattr__(self, "_values", vals)
        object.__setattr__(self, "_int", int.from_bytes(np.packbits(arr).tobytes(), "big"))

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def from_bits(cls, bits: Any, values: Any = None) -> "Hash":
        """From 96 bits (0/1 or booleans, bit 0 first); ``values``: the 96 projected values, if known."""
        return cls(bits, values)

    @classmethod
    def from_hex(cls, text: str) -> "Hash":
        """From 24 hex digits (any case, surrounding whitespace allowed)."""
        if not isinstance(text, str):
            raise NeuralHashError(f"{text!r} is not a NeuralHash (expected a string of {HEX_DIGITS} hex digits)")
        s = text.strip()
        if len(s) != HEX_DIGITS or any(c not in "0123456789abcdefABCDEF" for c in s):
            raise NeuralHashError(f"{text!r} is not a NeuralHash (expected {HEX_DIGITS} hex digits)")
        return cls(np.unpackbits(np.frombuffer(bytes.fromhex(s), dtype=np.uint8)))

    @classmethod
    def from_projection(cls, values: np.ndarray) -> "Hash":
        """From the projected values ``v``: bit i is 1 when ``v[i] >= 0``.

        Non-finite values raise :class:`NeuralHashError`: ``NaN >= 0`` is False,
        so they would otherwise become 0 bits silently (an all-zero hash that
        matches every other broken one).
        """
        vals = np.asarray(values, dtype=np.float32).reshape(-1)
        _require_finite(vals)
        return cls((vals >= 0).astype(np.uint8), vals)

    # -- views --------------------------------------------------------------------------------

    @property
    def hex(self) -> str:
        """24 lowercase hex digits."""
        return format(self._int, f"0{HEX_DIGITS}x")

    @property
    def bytes(self) -> bytes:
        """12 bytes, big-endian (bit 0 is the top bit of the first byte)."""
        return self._int.to_bytes(HASH_BITS // 8, "big")

    @property
    def int(self) -> int:
        """The hash as an unsigned 96-bit integer (bit 0 most significant)."""
        return self._int

    @property
    def bits(self) -> np.ndarray:
        """Read-only uint8 array of 96 bits, bit 0 first."""
        return self._bits

    @property
    def values(self) -> np.ndarray | None:
        """Read-only float32 [96]: the projection ``v`` the bits come from, or None if unknown."""
        return self._values

    @property
    def margins(self) -> np.ndarray | None:
        """float32 [96]: ``|v|``, how far each bit is from flipping; None if unknown."""
        if self._values is None:
            return None
        out = np.abs(self._values)
        out.flags.writeable = False
        return out

    def unstable_mask(self, threshold: float = DEFAULT_MARGIN) -> np.ndarray | None:
        """Boolean [96]: bits whose margin is below ``threshold``; None if the values are unknown."""
        if self._values is None:
            return None
        return np.abs(self._values) < np.float32(threshold)

    def unstable_bits(self, threshold: float = DEFAULT_MARGIN) -> int | None:
        """How many bits have a margin below ``threshold``; None if the values are unknown."""
        mask = self.unstable_mask(threshold)
        return None if mask is None else int(mask.sum())

    def hamming(self, other: "Hash | str") -> int:
        """Number of differing bits (0 = same hash). ``other``: a Hash or 24 hex digits."""
        if isinstance(other, str):
            other = Hash.from_hex(other)
        elif not isinstance(other, Hash):
            raise NeuralHashError(f"cannot compare a NeuralHash with {type(other).__name__}")
        return (self._int ^ other._int).bit_count()

    # -- value semantics ------------------------------------------------------------------

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Hash is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Hash is immutable")

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Hash):
            return self._int == other._int
        return NotImplemented

    def __hash__(self) -> int:
        return hash(("neuralhash", self._int))

    def __str__(self) -> str:
        return self.hex

    def __repr__(self) -> str:
        return f"Hash('{self.hex}')"

    def __reduce__(self):
        return (Hash, (self._bits.copy(), None if self._values is None else self._values.copy()))


def _require_finite(values: np.ndarray) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        kinds = " and ".join(k for k, present in (("NaN", np.isnan(values).any()), ("infinity", np.isinf(values).any()))
                             if present)
        raise NeuralHashError(f"{int(bad.sum())} of the {values.size} projected values are not finite ({kinds}): "
                              "no hash")


@dataclass(frozen=True)
class HashResult:
    """The outcome for one input of :meth:`NeuralHash.hash_many`.

    ``item`` is the input exactly as given for paths (``str`` or ``PathLike``);
    for in-memory inputs it is a placeholder: ``"<bytes>"``, ``"<image>"``
    (a Pillow image), ``"<array>"`` (a NumPy array) or ``"<object>"``.
    Exactly one of ``hash`` and ``error`` is set.
    """

    item: Any
    hash: Hash | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.hash is not None

    @property
    def path(self) -> str:
        """``item`` as a string (the path, or the placeholder)."""
        item = self.item
        if isinstance(item, (str, os.PathLike)):
            return os.fsdecode(item) if not isinstance(item, str) else item
        return str(item)


__all__ = ["DEFAULT_MARGIN", "Hash", "HashResult"]
