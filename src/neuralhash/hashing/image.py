"""Image loading and preprocessing exactly as the community reference pipeline does it.

See NEURALHASH.md: Pillow ``convert("RGB")`` (no EXIF rotation), ``resize((360, 360))``
with Pillow's default filter (BICUBIC), ``float32(pixel) / 255 * 2 - 1``, NCHW.
"""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image

from ..errors import NeuralHashError

SIZE = 360


def load_image(source: str | os.PathLike | bytes | Image.Image) -> Image.Image:
    """Open ``source`` (a path, encoded bytes or a Pillow image) as RGB."""
    if isinstance(source, Image.Image):
        return source.convert("RGB")
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
            return img.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        name = "<bytes>" if isinstance(source, bytes) else os.fspath(source)
        raise NeuralHashError(f"{name}: cannot read image ({exc})") from None


def preprocess(source: str | os.PathLike | bytes | Image.Image) -> np.ndarray:
    """The network input for one image: float32 [3, 360, 360] in [-1, 1], RGB."""
    img = load_image(source).resize((SIZE, SIZE))
    arr = np.asarray(img, dtype=np.float32) / 255.0
    arr = arr * 2.0 - 1.0
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def bits_to_hex(bits: np.ndarray) -> str:
    """96 bits (bit 0 first, most significant) as 24 lowercase hex digits."""
    bits = np.asarray(bits).astype(bool).ravel()
    return np.packbits(bits).tobytes().hex()
