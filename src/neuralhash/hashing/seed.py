"""The NeuralHash seed matrix: 96 x 128 float32 that projects the network's 128 outputs.

Apple's ``neuralhash_128x96_seed1.dat`` is a 128-byte header followed by
96 x 128 little-endian float32, row-major. Its values are exactly
``numpy.random.RandomState(1).randn(96, 128).astype(float32)``, so the matrix
can be rebuilt without Apple's file, and a given file can be checked against it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import SeedError

HASH_BITS = 96
FEATURES = 128
HEADER_SIZE = 128
FILE_SIZE = HEADER_SIZE + HASH_BITS * FEATURES * 4


def default_seed_matrix() -> np.ndarray:
    """The projection rebuilt from numpy's legacy generator, identical to Apple's file."""
    return np.random.RandomState(1).randn(HASH_BITS, FEATURES).astype(np.float32)


def read_seed_file(path: str | os.PathLike) -> np.ndarray:
    """Read a seed file, checking its size and that its values are finite."""
    path = Path(path).expanduser()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SeedError(f"{path}: cannot read seed file ({exc.strerror or exc})") from None
    if len(data) != FILE_SIZE:
        raise SeedError(
            f"{path}: {len(data)} bytes; a seed file is {FILE_SIZE} "
            f"({HEADER_SIZE}-byte header + {HASH_BITS}x{FEATURES} float32)"
        )
    matrix = np.frombuffer(data, dtype="<f4", offset=HEADER_SIZE).reshape(HASH_BITS, FEATURES).astype(np.float32)
    if not np.isfinite(matrix).all():
        raise SeedError(f"{path}: the seed matrix holds non-finite values")
    return matrix


def is_apple_seed(matrix: np.ndarray) -> bool:
    """True when ``matrix`` equals Apple's published projection exactly."""
    return matrix.shape == (HASH_BITS, FEATURES) and np.array_equal(matrix, default_seed_matrix())
