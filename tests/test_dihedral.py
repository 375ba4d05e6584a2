"""Rotations and flips: each orientation hashed as the pipeline hashes a pre-rotated file; match --dihedral."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import draw_shapes
from neuralhash.cli import main
from neuralhash.hashing.dihedral import (
    ORIENTATIONS,
    best_orientation,
    dihedral_hashes,
    match_dihedral,
    orient,
    oriented_pixels,
)
from neuralhash.hashing.image import decode
from neuralhash.matching import HashIndex, pack_hex

pytestmark = pytest.mark.usefixtures("module_env")

# Independent statement of each orientation with NumPy on an H x W x 3 array.
NUMPY_OPS = {
    "original": lambda a: a,
    "rotate_90": lambda a: np.rot90(a, 1),
    "rotate_180": lambda a: np.rot90(a, 2),
    "rotate_270": lambda a: np.rot90(a, 3),
    "flip_horizontal": lambda a: a[:, ::-1],
    "flip_vertical": lambda a: a[::-1],
    "transpose": lambda a: a.transpose(1, 0, 2),
    "transverse": lambda a: np.rot90(a, 2).transpose(1, 0, 2),
}


@pytest.fixture(scope="module")
def nh():
    from neuralhash.hashing import NeuralHash

    return NeuralHash.demo()


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    # Not square and larger than 360 on one side: rotation changes the resize.
    path = tmp_path_factory.mktemp("dihedral") / "photo.png"
    draw_shapes(517, 293, seed=3, count=25).save(path)
    return path


def test_orientation_names_mean_what_numpy_says(photo):
    img = Image.open(photo).convert("RGB")
    arr = np.asarray(img)
    assert set(NUMPY_OPS) == set(ORIENTATIONS)
    for name in ORIENTATIONS:
        np.testing.assert_array_equal(np.asarray(orient(img, name)), NUMPY_OPS[name](arr), err_msg=name)


def test_each_orientation_is_hashed_as_a_pre_rotated_file(nh, photo, tmp_path):
    pixels = oriented_pixels(photo)
    hashes = dihedral_hashes(nh, photo)
    arr = np.asarray(Image.open(photo).convert("RGB"))
    for k, name in enumerate(ORIENTATIONS):
        rotated = tmp_path / f"{name}.png"
        Image.fromarray(np.ascontiguousarray(NUMPY_OPS[name](arr))).save(rotated)
        np.testing.assert_array_equal(pixels[k], decode(rotated), err_msg=name)
        assert hashes[k].hex == nh.hash(rotated).hex, name
    assert hashes[0].hex == nh.hash(photo).hex
    # The orientations are different images to the model (else the test proves nothing).
    assert len({h.hex for h in hashes}) == len(ORIENTATIONS)


def test_inputs_other_than_paths_and_bad_input(nh, photo):
    data = photo.read_bytes()
    from_path = [h.hex for h in dihedral_hashes(nh, photo)]
    assert [h.hex for h in dihedral_hashes(nh, data)] == from_path
    assert [h.hex for h in dihedral_hashes(nh, Image.open(photo))] == from_path
    from neuralhash.errors import ImageError

    with pytest.raises(ImageError, match=r"^<bytes>: not an image"):
        oriented_pixels(b"not an image at all")
    with pytest.raises(ImageError, match="no such file"):
        oriented_pixels(photo.parent / "missing.png")


def test_best_orientation_hand_computed():
    # Query 0 expanded to rows 0..7, query 1 to rows 8..15.
    query = np.array([0, 4, 5, 9, 12, 1, 8])
    stored = np.array([7, 7, 3, 7, 7, 3, 2])
    distance = np.array([5, 2, 2, 1, 1, 4, 0])
    rows, k = best_orientation(query, stored, distance)
    # query 0: stored 3 best at distance 2 (row 2, k=5; row 5 k=1 is 4), stored 7 at 2 (row 1, k=4)
    # query 1: stored 2 at 0 (row 6, k=0), stored 7 at 1 twice (rows 3 k=1 and 4 k=4: first k wins)
    assert rows.tolist() == [2, 1, 6, 3]
    assert k.tolist() == [5, 4, 0, 1]


def test_a_flipped_copy_is_found_only_with_dihedral(nh, photo, tmp_path):
    arr = np.asarray(Image.open(photo).convert("RGB"))
    flipped = tmp_path / "flipped.png"
    Image.fromarray(np.ascontiguousarray(arr[:, ::-1])).save(flipped)
    rng = np.random.default_rng(0)
    others = [bytes(rng.integers(0, 256, 12, dtype=np.uint8)).hex() for _ in range(500)]
    stored = others[:250] + [nh.hash(flipped).hex] + others[250:]
    index = HashIndex(pack_hex(stored))
    plain = nh.hash(photo)
    assert plain.hamming(stored[250]) > 8  # a flip moves the hash far
    assert len(index.query(plain.hex, 8)) == 0
    found = match_dihedral(index, dihedral_hashes(nh, photo), 8)
    assert found.indices.tolist() == [250]
    assert found.distances.tolist() == [0]
    assert found.orientation_names() == ["flip_horizontal"]
    # Identical to brute force over the 8 hashes.
    brute = match_dihedral(index, dihedral_hashes(nh, photo), 30, method="brute")
    auto = match_dihedral(index, dihedral_hashes(nh, photo), 30)
    assert brute.indices.tolist() == auto.indices.tolist()
    assert brute.orientations.tolist() == auto.orientations.tolist()


def test_cli_match_dihedral(nh, photo, tmp_path, capsys):
    arr = np.asarray(Image.open(photo).convert("RGB"))
    folder = tmp_path / "stored"
    folder.mkdir()
    Image.fromarray(np.ascontiguousarray(np.rot90(arr, 1))).save(folder / "rotated.png")
    draw_shapes(300, 200, seed=11).save(folder / "other.png")
    db = tmp_path / "db.sqlite"
    assert main(["index", "add", str(db), str(folder), "--model", "demo", "--workers", "0"]) == 0
    capsys.readouterr()
    assert main(["match", str(db), str(photo), "--max-distance", "4", "--model", "demo"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["match", str(db), str(photo), "--max-distance", "4", "--model", "demo", "--dihedral",
                 "--jsonl"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 1
    assert rows[0]["orientation"] == "rotate_90"
    assert rows[0]["distance"] == 0
    assert rows[0]["path"].endswith("rotated.png")
    assert rows[0]["query_hash"] == nh.hash(photo).hex
    # A bad query image: one line naming it, exit 1, the good query still answered.
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"garbage")
    assert main(["match", str(db), str(bad), str(folder / "rotated.png"), "--max-distance", "0",
                 "--model", "demo", "--dihedral"]) == 1
    captured = capsys.readouterr()
    assert f"{bad}:" in captured.err and "Traceback" not in captured.err
    assert captured.out.split("  ")[1] == "original"
