"""Measuring robustness: distances against the right originals, the baseline, thresholds, the command."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from neuralhash.cli import main
from neuralhash.robustness import MISSING, Failure, HasherInfo, RobustnessResult, apply_edit, default_edits
from neuralhash.robustness.measuring import image_key, measure

imagehash = pytest.importorskip("imagehash")
pdqhash = pytest.importorskip("pdqhash")

WARNING = "neuralhash: warning: the demo model has synthetic weights"
EDIT_LABELS = ["downscale 0.5x", "jpeg q35", "hflip", "noise std 20"]


@pytest.fixture(scope="module")
def nh(module_env):
    from neuralhash.hashing import NeuralHash

    return NeuralHash.demo()


def _photo(path: Path, seed: int, size=(96, 72)) -> str:
    """A smooth random picture (blobs of colour), so that hashes have structure to keep."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    arr = np.zeros((h, w, 3))
    for _ in range(6):
        cx, cy, r = rng.random(3)
        arr += rng.random(3) * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (0.02 + 0.1 * r))[..., None]
    arr = (255 * arr / arr.max()).astype(np.uint8)
    Image.fromarray(arr).save(path)
    return str(path)


@pytest.fixture(scope="module")
def photos(tmp_path_factory, module_env):
    root = tmp_path_factory.mktemp("photos")
    return [_photo(root / f"p{i}.png", i) for i in range(4)]


@pytest.fixture(scope="module")
def edits():
    by_label = {e.label: e for e in default_edits()}
    return [by_label[label] for label in EDIT_LABELS]


@pytest.fixture(scope="module")
def measured(photos, nh, edits):
    return measure(photos, nh, edits=edits, seed=3, workers=2)


def _bits_phash(img):
    return np.asarray(imagehash.phash(img).hash).ravel()


def _bits_pdq(img):
    return np.asarray(pdqhash.compute(np.asarray(img))[0], bool)


def test_distances_are_against_each_images_own_original(measured, photos, nh, edits):
    for i, path in enumerate(photos):
        original = Image.open(path).convert("RGB")
        key = image_key(original)
        for j, edit in enumerate(edits):
            copy = apply_edit(edit, original, seed=3, image_key=key)
            assert measured.distances["NeuralHash"][i, j] == nh.hash(path).hamming(nh.hash(copy))
            assert measured.distances["pHash"][i, j] == np.count_nonzero(_bits_phash(original) != _bits_phash(copy))
            assert measured.distances["PDQ"][i, j] == np.count_nonzero(_bits_pdq(original) != _bits_pdq(copy))


def test_baseline_is_every_pair_of_distinct_originals(measured, photos, nh):
    assert measured.pairs.tolist() == [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]]
    for (a, b), d in zip(measured.pairs, measured.distinct["NeuralHash"]):
        assert d == nh.hash(photos[a]).hamming(nh.hash(photos[b]))
    for (a, b), d in zip(measured.pairs, measured.distinct["dHash"]):
        ha, hb = (imagehash.dhash(Image.open(photos[k]).convert("RGB")) for k in (a, b))
        assert d == ha - hb


def test_same_numbers_in_any_order_and_with_any_number_of_workers(measured, photos, nh, edits):
    order = list(range(len(photos)))
    random.Random(1).shuffle(order)
    again = measure([photos[k] for k in order], nh, edits=edits, seed=3, workers=0)
    for name in measured.distances:
        assert np.array_equal(again.distances[name], measured.distances[name][order])
    assert measured.sizes == [(96, 72)] * 4


def test_max_side_shrinks_the_originals_before_editing(photos, nh, edits):
    result = measure(photos[:2], nh, edits=edits, seed=3, workers=0, max_side=48)
    assert result.max_side == 48 and result.sizes[0] == (96, 72)  # the size of the file as read
    for i, path in enumerate(photos[:2]):
        original = Image.open(path).convert("RGB").resize((48, 36), Image.LANCZOS)
        key = image_key(original)
        for j, edit in enumerate(edits):
            copy = apply_edit(edit, original, seed=3, image_key=key)
            assert result.distances["NeuralHash"][i, j] == nh.hash(original).hamming(nh.hash(copy))


def test_unreadable_images_are_reported_and_left_out_of_the_baseline(photos, nh, edits, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    result = measure([photos[0], str(broken), photos[1], str(tmp_path / "missing.png")], nh, edits=edits[:2],
                     seed=0, workers=0)
    assert [f.image for f in result.failures] == [str(broken), str(tmp_path / "missing.png")]
    assert all(f.edit is None for f in result.failures)
    assert (result.distances["NeuralHash"][[1, 3]] == MISSING).all()
    assert (result.distances["NeuralHash"][[0, 2]] != MISSING).all()
    assert result.pairs.tolist() == [[0, 2]]


def test_a_missing_hash_package_is_a_note_not_a_failure(photos, nh, edits, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pdqhash" else real(name, *a))
    result = measure(photos[:2], nh, edits=edits[:1], workers=0)
    assert [h.name for h in result.hashers] == ["NeuralHash", "pHash", "dHash"]
    assert "PDQ" in result.notes[0] and "pip install '.[robustness]'" in result.notes[0]


def _result(distances, distinct, bits=96):
    distances = np.array(distances, np.int32)
    edits = default_edits()[: distances.shape[1]]
    return RobustnessResult(
        model="m", model_id="x", synthetic=False, seed=0, images=[f"i{k}" for k in range(len(distances))],
        sizes=[(1, 1)] * len(distances), edits=edits, hashers=[HasherInfo("H", bits, "h")],
        distances={"H": distances}, distinct={"H": np.array(distinct, np.int32)}, pairs=np.zeros((len(distinct), 2)),
        failures=[Failure("i9", None, "broken")],
    )


def test_threshold_and_match_rates_by_hand():
    # Distinct pairs at 5, 7, 9: the largest threshold with no false match is 4.
    r = _result([[0, 4, 5], [MISSING, 2, 9], [3, 6, 4]], [9, 5, 7])
    assert r.threshold("H") == 4
    # Edit 0: copies at 0 and 3 (one missing) -> 2/2; edit 1: 4, 2, 6 -> 2/3; edit 2: 5, 9, 4 -> 1/3.
    assert np.allclose(r.match_rates("H"), [1.0, 2 / 3, 1 / 3])
    assert np.allclose(r.match_rates("H", threshold=5), [1.0, 2 / 3, 2 / 3])
    stats = r.edit_stats("H")
    assert np.allclose(stats["mean"], [1.5, 4.0, 6.0]) and stats["count"].tolist() == [2, 3, 3]
    t, copies, false = r.curve("H")
    # 8 measured copies: 0, 2, 3, 4, 4, 5, 6, 9; pairs 5, 7, 9.
    assert copies[4] == 5 / 8 and copies[9] == 1.0 and false[4] == 0.0 and false[5] == 1 / 3 and false[9] == 1.0


def test_threshold_without_baseline_or_with_equal_hashes():
    assert _result([[1]], []).threshold("H") is None
    assert np.isnan(_result([[1]], []).match_rates("H")).all()
    assert _result([[1]], [0, 12]).threshold("H") == -1
    assert _result([[1]], [0, 12]).match_rates("H").tolist() == [0.0]


def test_the_command_writes_a_report(photos, tmp_path, capsys):
    out = tmp_path / "report"
    code = main(["robustness", "--model", "demo", *photos[:3], "--out", str(out), "--edits", "hflip,jpeg",
                 "--workers", "0", "--max-side", "64"])
    assert code == 0
    captured = capsys.readouterr()
    assert WARNING in captured.err
    for name in ("index.html", "summary.md", "distances.csv"):
        assert (out / name).stat().st_size > 0
    pngs = list(out.glob("*.png"))
    assert pngs and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    with open(out / "distances.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    jpeg = [e for e in default_edits() if e.family in ("hflip", "jpeg")]
    assert len(rows) == 3 * len(jpeg) * 4
    assert "NeuralHash" in captured.out
    assert "shrunk to at most 64 px" in (out / "summary.md").read_text()


def test_the_command_explains_bad_choices(photos, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:  # a usage error (exit 2), found before the model loads
        main(["robustness", "--model", "demo", photos[0], "--out", str(tmp_path / "r"), "--edits", "nope"])
    assert exc.value.code == 2 and "unknown edit family 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["robustness", "--model", "demo", photos[0]])
    assert exc.value.code == 2
    assert main(["robustness", "--list-edits"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == len(default_edits())
