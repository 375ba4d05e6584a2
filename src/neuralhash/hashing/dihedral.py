"""Matching rotated and flipped copies: the eight orientations of an image (the dihedral group D4).

A horizontal flip moves a NeuralHash by about 27 of 96 bits (published
measurement on Apple's model), so a mirrored copy is missed at any useful
distance. Hashing the query in all eight orientations and keeping the nearest
finds it.

    from neuralhash.hashing.dihedral import dihedral_hashes, match_dihedral

    hashes = dihedral_hashes(nh, "query.jpg")       # 8 Hash, in ORIENTATIONS order
    found = match_dihedral(index, hashes, 4)        # DihedralMatches: per stored hash, its best orientation

Each orientation is hashed exactly as the pipeline hashes a file holding that
orientation: the image is decoded and converted to RGB at full size, rotated or
flipped (a lossless pixel permutation), then resized to 360 x 360. (Rotating the
360 x 360 result instead would differ slightly: Pillow's resize is two passes,
horizontal then vertical, with rounding in between.)

An orientation names what was done to the **query** to reach the stored hash:
``flip_horizontal`` means the query mirrored left-right matches, i.e. the stored
image is a mirrored copy of the query. Rotations are counter-clockwise, as in Pillow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from PIL import Image

from ..errors import NeuralHashError
from . import image as _image
from .hash import Hash

_T = Image.Transpose

#: The eight orientations, identity first; the Pillow transpose that produces each.
ORIENTATIONS: tuple[str, ...] = (
    "original",
    "rotate_90",        # counter-clockwise
    "rotate_180",
    "rotate_270",       # counter-clockwise, i.e. 90 clockwise
    "flip_horizontal",  # mirror left-right
    "flip_vertical",    # mirror top-bottom
    "transpose",        # mirror about the main diagonal
    "transverse",       # mirror about the other diagonal
)
_OPS: tuple[Any, ...] = (None, _T.ROTATE_90, _T.ROTATE_180, _T.ROTATE_270, _T.FLIP_LEFT_RIGHT,
                         _T.FLIP_TOP_BOTTOM, _T.TRANSPOSE, _T.TRANSVERSE)


def orient(img: Image.Image, orientation: str | int) -> Image.Image:
    """``img`` in one of :data:`ORIENTATIONS` (a name or its position)."""
    k = orientation if isinstance(orientation, int) else _position(orientation)
    op = _OPS[k]
    return img.copy() if op is None else img.transpose(op)


def _position(name: str) -> int:
    try:
        return ORIENTATIONS.index(name)
    except ValueError:
        raise NeuralHashError(f"unknown orientation {name!r}; choose among {', '.join(ORIENTATIONS)}") from None


def load_rgb(source: Any, *, exif_transpose: bool = False, max_pixels: int | None = None) -> Image.Image:
    """``source`` (a path, encoded bytes, a Pillow image or an RGB / grayscale uint8 array)
    decoded at full size and converted to RGB, by :func:`neuralhash.hashing.image.decode`
    itself (the same checks, size limit and reasons), stopped before the resize."""
    pixels = _image.decode(source, exif_transpose=exif_transpose, max_pixels=max_pixels, resize=False)
    return Image.fromarray(pixels, "RGB")


def oriented_pixels(source: Any, *, exif_transpose: bool = False, max_pixels: int | None = None) -> np.ndarray:
    """uint8 [8, 360, 360, 3]: the pipeline's input pixels of each orientation, in ORIENTATIONS order."""
    img = load_rgb(source, exif_transpose=exif_transpose, max_pixels=max_pixels)
    return np.stack([_image.decode(orient(img, k)) for k in range(len(ORIENTATIONS))])


def dihedral_hashes(model, source: Any, *, exif_transpose: bool = False, max_pixels: int | None = None) -> list[Hash]:
    """The 8 hashes of ``source`` under ``model`` (a :class:`~neuralhash.hashing.NeuralHash`),
    in :data:`ORIENTATIONS` order; the first is the plain hash."""
    return model.hash_pixels(list(oriented_pixels(source, exif_transpose=exif_transpose, max_pixels=max_pixels)))


@dataclass(frozen=True, eq=False)
class DihedralMatches:
    """Stored hashes within the radius of some orientation of one query, nearest first.

    ``indices`` (int64, positions in the index), ``distances`` (uint8, the smallest
    over the orientations), ``orientations`` (int8, position in :data:`ORIENTATIONS`
    of the orientation that reached that distance; the first in that order on a tie),
    ``ids`` (the index's ids, or None).
    """

    indices: np.ndarray
    distances: np.ndarray
    orientations: np.ndarray
    ids: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def orientation_names(self) -> list[str]:
        return [ORIENTATIONS[k] for k in self.orientations.tolist()]


def best_orientation(query: np.ndarray, stored: np.ndarray, distance: np.ndarray,
                     per_query: int = len(ORIENTATIONS)) -> tuple[np.ndarray, np.ndarray]:
    """Collapse matches of oriented queries to one row per (original query, stored hash).

    ``query`` holds positions in a batch where original query ``q`` was expanded
    into rows ``q * per_query + k`` (orientation ``k``). Returns ``(rows, orientation)``:
    the positions of the rows kept (the nearest orientation for each pair, the first
    orientation on a tie), ordered by original query, distance, stored hash; and each
    kept row's orientation.
    """
    query = np.asarray(query, dtype=np.int64)
    stored = np.asarray(stored, dtype=np.int64)
    distance = np.asarray(distance)
    original, k = np.divmod(query, per_query)
    order = np.lexsort((k, distance, stored, original))  # per (original, stored): nearest, then first k
    o, s = original[order], stored[order]
    first = np.ones(len(order), bool)
    first[1:] = (o[1:] != o[:-1]) | (s[1:] != s[:-1])
    kept = order[first]
    kept = kept[np.lexsort((stored[kept], distance[kept], original[kept]))]
    return kept, k[kept].astype(np.int8)


def match_dihedral(index, hashes: Sequence[Any], max_distance: int, *, method: str = "auto") -> DihedralMatches:
    """Search ``index`` (a :class:`~neuralhash.matching.HashIndex`) with the 8 oriented
    hashes of one query (``Hash`` objects, hex strings or a packed ``uint8 [8, 12]``)."""
    from ..matching import pack_hex

    if isinstance(hashes, np.ndarray):
        packed = hashes
    else:
        packed = pack_hex([h.hex if isinstance(h, Hash) else h for h in hashes])
    if len(packed) != len(ORIENTATIONS):
        raise NeuralHashError(f"a dihedral query is {len(ORIENTATIONS)} hashes, got {len(packed)}")
    found = index.query_many(packed, max_distance, method=method)
    rows, k = best_orientation(found.query, found.index, found.distance)
    return DihedralMatches(found.index[rows], found.distance[rows], k,
                           None if found.ids is None else found.ids[rows])
