"""Recall at a fixed precision (hand-computed and against perception's own function), and NeuralHash
inside perception's benchmarking, beside its pHash and PDQ, on the bundled sample photos."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import neuralhash
from neuralhash.robustness.edits import default_edits
from neuralhash.robustness.results import MISSING, HasherInfo, RecallAtPrecision, RobustnessResult, \
    recall_at_precision

DATA = Path(neuralhash.__file__).resolve().parent / "data"


# --------------------------------------------------------------------------- the metric


def test_recall_at_precision_hand_computed():
    own = [0, 1, 1, 3, 5, MISSING]
    other = [9, 2, MISSING, 4, 1, 0]
    # Measured copies: 5 (the last is not). At t = 0, 1, 3, 5: true 1, 3, 4, 5; false
    # (other <= t among 9, 2, none, 4, 1) 0, 1, 2, 3; precision 1, 3/4, 4/6, 5/8.
    assert recall_at_precision(own, other, 0.9999) == RecallAtPrecision(0, 0.2, 1.0, 5)
    assert recall_at_precision(own, other, 0.7) == RecallAtPrecision(1, 0.6, 0.75, 5)
    assert recall_at_precision(own, other, 0.6) == RecallAtPrecision(5, 1.0, 0.625, 5)
    none = recall_at_precision([2], [1], 0.9)
    assert none.threshold is None and none.recall == 0.0 and none.copies == 1
    empty = recall_at_precision([MISSING], [3], 0.9)
    assert empty.copies == 0 and math.isnan(empty.recall)


def test_result_recall_per_edit_and_overall():
    edits = default_edits()[:2]
    own = np.array([[0, 4], [1, 6], [2, MISSING]], np.int32)
    other = np.array([[5, 5], [7, 3], [9, MISSING]], np.int32)
    result = RobustnessResult(
        model="m", model_id="", synthetic=True, seed=0, images=["a", "b", "c"], sizes=[(1, 1)] * 3, edits=edits,
        hashers=[HasherInfo("H", 96, "test")], distances={"H": own}, distinct={"H": np.array([9, 9, 9])},
        pairs=np.zeros((3, 2), np.int64), nearest_other={"H": other})
    per_edit, overall = result.recall_at_precision("H", 0.99)
    # Edit 0: own 0, 1, 2 and other 5, 7, 9: all matched at 2 with no false match.
    assert per_edit[0] == RecallAtPrecision(2, 1.0, 1.0, 3)
    # Edit 1: own 4, 6; other 5, 3. t = 4: 1 true, 1 false (3) -> 0.5: nothing at 99%.
    assert per_edit[1].threshold is None and per_edit[1].recall == 0.0
    # Pooled: own 0, 1, 2, 4, 6; other 5, 7, 9, 5, 3. t = 2: 3 true, 0 false; t = 4: 4 true, 1 false.
    assert overall == RecallAtPrecision(2, 0.6, 1.0, 5)

    # The report shows the same numbers (at its 99.99%, which these cases share with 99%).
    from neuralhash.robustness.report import md_precision, precision_rows

    text = md_precision(result)
    assert "| H | 60.0% | 2 | 100.0% | 5 |" in text
    assert f"| {edits[0].label} | 100.0% (≤ 2) |" in text and f"| {edits[1].label} | 0.0% |" in text
    assert "pHash 82.0%" in text and "PDQ 77.2%" in text
    assert precision_rows(result)[0][0][1] == "60.0%"  # the rows the HTML template shows
    result.nearest_other.clear()  # a result measured before this metric existed: no section
    assert md_precision(result) == "" and precision_rows(result)[1] == []


perception = pytest.importorskip("perception")


def test_metric_equals_perceptions_on_tie_free_data():
    from perception.benchmarking.common import compute_threshold_precision_recall

    rng = np.random.default_rng(0)
    for trial in range(20):
        n = int(rng.integers(5, 200))
        own = rng.permutation(n)                    # distinct: perception ranks ties arbitrarily
        other = rng.integers(0, 2 * n, n)
        target = float(rng.choice([99.99, 99.0, 95.0, 80.0]))
        thr, prec, rec = compute_threshold_precision_recall(own.astype(float), other.astype(float), target)
        ours = recall_at_precision(own, other, target / 100)
        assert math.isclose(100 * ours.recall, rec, rel_tol=1e-9, abs_tol=1e-3), trial
        if rec not in (0, 100):
            assert ours.threshold == thr, trial


# --------------------------------------------------------------------------- the hasher


@pytest.fixture(scope="module")
def hasher(module_env_for_perception):
    from neuralhash.integrations.perception import NeuralHashHasher

    return NeuralHashHasher("demo")


@pytest.fixture(scope="module")
def module_env_for_perception(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("NEURALHASH_CACHE", str(tmp_path_factory.mktemp("nh-cache")))
    yield
    mp.undo()


def _photos() -> list[Path]:
    import skimage

    sk = Path(skimage.__file__).parent / "data"
    extra = [sk / n for n in ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "camera.png")]
    return sorted(DATA.iterdir()) + [p for p in extra if p.is_file()]


def test_hasher_hex_is_neuralhash_hash(hasher):
    for path in [DATA / "landscape.png", DATA / "shapes.png"]:  # lossless: same pixels as Pillow's
        assert hasher.compute(str(path), hash_format="hex") == hasher.model.hash(path).hex
    vec = hasher.compute(str(DATA / "circles.png"), hash_format="hex")
    assert hasher.compute_distance(vec, vec, hash_format="hex") == 0.0
    # compute_isometric transforms the full image, then hashes: the same hashes as neuralhash's dihedral.
    from neuralhash.hashing.dihedral import dihedral_hashes

    names = {"r0": "original", "fv": "flip_vertical", "fh": "flip_horizontal", "r180": "rotate_180",
             "r90": "rotate_90", "r90fv": "transpose", "r90fh": "transverse", "r270": "rotate_270"}
    from neuralhash.hashing.dihedral import ORIENTATIONS

    ours = dict(zip(ORIENTATIONS, dihedral_hashes(hasher.model, DATA / "landscape.png")))
    iso = hasher.compute_isometric(str(DATA / "landscape.png"))
    assert set(iso) == set(names)
    for key, value in iso.items():
        assert np.packbits(hasher.string_to_vector(value)).tobytes().hex() == ours[names[key]].hex, key


def test_tiny_perception_benchmark_runs_neuralhash_beside_phash_and_pdq(hasher, tmp_path):
    import cv2
    from perception import benchmarking
    from perception.hashers import PHash
    from perception.hashers.tools import read

    hashers = {"NeuralHash": hasher, "pHash": PHash()}
    try:
        from perception.hashers import PDQHash

        hashers["PDQ"] = PDQHash()
    except ImportError:  # perception's PDQ needs pdqhash
        pass
    photos = _photos()
    dataset = benchmarking.BenchmarkImageDataset.from_tuples([(str(p), "samples") for p in photos])
    transforms = {
        "noop": lambda image: image,
        "half": lambda image: cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2),
                                         interpolation=cv2.INTER_AREA),
        "hflip": lambda image: np.ascontiguousarray(image[:, ::-1]),
    }
    transformed = dataset.transform(transforms, storage_dir=str(tmp_path / "transformed"), errors="raise")
    hashes = transformed.compute_hashes(hashers, max_workers=2)
    table = hashes.compute_threshold_recall(precision_threshold=99.99).reset_index()
    got = set(zip(table["transform_name"], table["hasher_name"]))
    assert got == {(t, h) for t in transforms for h in hashers}
    rows = table[(table.hasher_name == "NeuralHash") & (table.transform_name == "noop")]
    assert float(rows.recall.iloc[0]) == 100.0  # each noop is its own nearest hash

    # perception's distances for NeuralHash equal ours, computed directly from the files it wrote.
    metrics = hashes.compute_metrics()
    files = hashes._df  # guid, transform_name, filepath per hashed file
    nh = metrics[metrics.hasher_name == "NeuralHash"]
    ours = {}
    for row in files[files.hasher_name == "NeuralHash"].itertuples():
        ours[(row.guid, row.transform_name)] = hasher.model.hash(read(row.filepath))
    for row in nh.itertuples():
        expect = ours[(row.guid, row.transform_name)].hamming(ours[(row.guid, "noop")])
        assert round(row.distance_to_closest_correct_image * 96) == expect
    assert len(nh) == len(photos) * len(transforms)
