"""Quantized weights: how a layer's uint8 payload and its companions become float32.

Two schemes are read, both *unverified* against Apple's runtime (no file
with them is at hand; the readings come from public reverse engineering):

- ``affine``: ``W_U8`` (uint8, the layer's usual [out, ...] layout) with
  ``per_ch_qscale`` and ``per_ch_qbias`` (float32, one per output channel),
  usually inside the layer's ``weights`` object: ``w = q * scale[c] + bias[c]``.
- ``range``: ``quantization_lut_weights_blob`` (uint8 indices, same layout)
  with ``quantization_ranges_blob`` (float32 ``[min of every channel...,
  max of every channel...]``): ``w = min[c] + q / 255 * (max[c] - min[c])``.

A wrong guess must fail loudly: companion blobs must hold exactly one value
per output channel (zero padding aside), and a range whose minimum exceeds its
maximum is refused rather than dequantised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from ..errors import GraphError, WeightsError
from .layers import BlobRef

AFFINE = "affine"
RANGE = "range"

# (scheme, key of the uint8 payload, companion keys by role, values per channel of each companion)
_SCHEMES = (
    (AFFINE, "W_U8", (("scale", "per_ch_qscale", 1), ("bias", "per_ch_qbias", 1))),
    (RANGE, "quantization_lut_weights_blob", (("ranges", "quantization_ranges_blob", 2),)),
)
QUANTIZED_KEYS = frozenset(
    [key for _, key, _ in _SCHEMES] + [c[1] for _, _, companions in _SCHEMES for c in companions]
)


@dataclass(frozen=True)
class QuantizedRef(BlobRef):
    """A uint8 weight payload plus the float32 blobs that dequantise it (per output channel, axis 0)."""

    scheme: str = AFFINE
    companions: Mapping[str, BlobRef] = field(default_factory=dict)


def find_quantized(raw: Mapping[str, Any], where: str, shape: tuple[int, ...]) -> QuantizedRef | None:
    """The quantized weights a layer declares (None when it has none).

    Keys are looked up in the layer's ``weights`` object first, then at the top level.
    """
    nested = raw.get("weights")
    scopes = [nested] if isinstance(nested, dict) else []
    scopes.append(raw)
    channels = shape[0]

    def blob_id(key: str) -> int | None:
        for scope in scopes:
            if key in scope:
                value = scope[key]
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise GraphError(f"{where}: field {key!r} should be a blob id (a non-negative integer), got {value!r}")
                return value
        return None

    for scope in scopes:  # another width of the W_U8 family: name it rather than "companions without weights"
        for key in scope:
            width = key[3:] if isinstance(key, str) and key.startswith("W_U") else ""
            if width.isdigit() and width != "8":
                raise GraphError(
                    f"{where}: {key!r}: {width}-bit quantized weights are not supported: how Espresso packs "
                    f"{width}-bit values into bytes is not evidenced by any file (only W_U8, one byte per weight, is read)")
    found = None
    for scheme, key, companions in _SCHEMES:
        payload = blob_id(key)
        if payload is None:
            continue
        if found is not None:
            raise GraphError(f"{where}: both {found.field!r} and {key!r} give the weights")
        refs = {}
        for role, companion_key, per_channel in companions:
            cid = blob_id(companion_key)
            if cid is None:
                raise GraphError(f"{where}: {key!r} needs {companion_key!r} (its {role}), which is missing")
            refs[role] = BlobRef(cid, "float32", (per_channel * channels,), companion_key)
        found = QuantizedRef(payload, "uint8", shape, key, scheme=scheme, companions=refs)
    if found is None:
        for _, _, companions in _SCHEMES:
            for _, companion_key, _ in companions:
                if blob_id(companion_key) is not None:
                    raise GraphError(f"{where}: {companion_key!r} without the quantized weights it belongs to")
    return found


def check_quantized(ref: QuantizedRef, companions: Mapping[str, np.ndarray], where: str) -> None:
    """Refuse companions that cannot be right, without dequantising the whole payload.

    ``range``: every channel's minimum is at most its maximum. ``affine``: the
    largest value a uint8 can reach, ``255 * |scale| + |bias|``, fits in float32.
    """
    channels = ref.shape[0]
    if ref.scheme == RANGE:
        ranges = companions["ranges"].astype(np.float64)
        low, high = ranges[:channels], ranges[channels:]
        bad = np.flatnonzero(low > high)
        if bad.size:
            c = int(bad[0])
            raise WeightsError(
                f"{where}: {ref.companions['ranges'].field} {ref.companions['ranges'].id}: channel {c} has "
                f"minimum {low[c]:g} above maximum {high[c]:g} (the [mins | maxes] reading is unverified)"
            )
    else:
        bound = 255 * np.abs(companions["scale"].astype(np.float64)) + np.abs(companions["bias"].astype(np.float64))
        if bound.size and not bound.max() <= np.finfo(np.float32).max:
            raise WeightsError(f"{where}: {ref.field} {ref.id} dequantises to values beyond float32 "
                               f"(per_ch_qscale / per_ch_qbias too large)")


def dequantize(ref: QuantizedRef, q: np.ndarray, companions: Mapping[str, np.ndarray], where: str) -> np.ndarray:
    """float32 weights from the uint8 payload ``q`` (already [out, ...]) and the companion arrays."""
    channels = ref.shape[0]
    bshape = (channels,) + (1,) * (len(ref.shape) - 1)
    if ref.scheme == AFFINE:
        scale = companions["scale"].astype(np.float64).reshape(bshape)
        bias = companions["bias"].astype(np.float64).reshape(bshape)
        values = q * scale + bias
    elif ref.scheme == RANGE:
        check_quantized(ref, companions, where)
        ranges = companions["ranges"].astype(np.float64)
        low, high = ranges[:channels], ranges[channels:]
        values = low.reshape(bshape) + q * ((high - low) / 255.0).reshape(bshape)
    else:  # pragma: no cover - the parser only makes the two schemes
        raise GraphError(f"{where}: unknown quantization scheme {ref.scheme!r}")
    out = values.astype(np.float32)
    if not np.isfinite(out).all():
        raise WeightsError(f"{where}: {ref.field} {ref.id} dequantises to non-finite values (float32 overflow)")
    return out
