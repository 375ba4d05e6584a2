"""The seed matrix: rebuilt exactly, and read with checks."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import REAL_SEED
from neuralhash.errors import SeedError
from neuralhash.hashing.image import bits_to_hex
from neuralhash.hashing.seed import FILE_SIZE, default_seed_matrix, is_apple_seed, read_seed_file


def test_rebuilt_seed_equals_apples_file(real_dir):
    from_file = read_seed_file(REAL_SEED)
    assert from_file.shape == (96, 128) and from_file.dtype == np.float32
    assert np.array_equal(from_file, default_seed_matrix())
    assert is_apple_seed(from_file)


def test_seed_file_errors(tmp_path):
    short = tmp_path / "short.dat"
    short.write_bytes(b"\0" * 100)
    with pytest.raises(SeedError, match=f"100 bytes; a seed file is {FILE_SIZE}"):
        read_seed_file(short)
    bad = tmp_path / "nan.dat"
    body = default_seed_matrix().copy()
    body[3, 4] = np.nan
    bad.write_bytes(b"\0" * 128 + body.astype("<f4").tobytes())
    with pytest.raises(SeedError, match="non-finite"):
        read_seed_file(bad)
    with pytest.raises(SeedError, match="cannot read"):
        read_seed_file(tmp_path / "missing.dat")


def test_bits_to_hex_bit_zero_is_most_significant():
    bits = np.zeros(96, np.uint8)
    bits[0] = 1
    assert bits_to_hex(bits) == "8" + "0" * 23
    bits = np.zeros(96, np.uint8)
    bits[95] = 1
    assert bits_to_hex(bits) == "0" * 23 + "1"
    # a published-style value round-trips through its bits
    value = "59a34eabe31910abfb06f308"
    unpacked = np.unpackbits(np.frombuffer(bytes.fromhex(value), np.uint8))
    assert bits_to_hex(unpacked) == value
