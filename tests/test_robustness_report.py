"""The robustness report: files written, numbers shown, escaping, determinism, errors.

The results here are made by hand (3 images, 6 edits in 3 families, 2 hashes),
and the expected thresholds and match rates are worked out by hand below, not
by calling the result's own statistics.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import re
import sys

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("matplotlib")

from neuralhash.errors import NeuralHashError  # noqa: E402
from neuralhash.robustness.edits import Edit  # noqa: E402
from neuralhash.robustness.report import terminal_summary, write_report  # noqa: E402
from neuralhash.robustness.results import MISSING, Failure, HasherInfo, RobustnessResult  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HOSTILE = "<script>a|b.jpg"
M = MISSING


def _edit(family: str, strength: float, unit: str, label: str) -> Edit:
    return Edit(family, float(strength), unit, label, f"{label}, described", func=lambda im, s, rng: im)


EDITS = [
    _edit("downscale", 0.5, "scale", "downscale 0.5x"),
    _edit("downscale", 0.75, "scale", "downscale 0.75x"),
    _edit("jpeg", 35, "quality", "jpeg q35"),
    _edit("jpeg", 75, "quality", "jpeg q75"),
    _edit("jpeg", 95, "quality", "jpeg q95"),
    _edit("hflip", 1, "none", "hflip"),
]

# Rows: images a.png, HOSTILE, c.jpg; columns: EDITS. Image 1's "downscale 0.75x" failed.
NH = [[0, 1, 2, 0, 0, 30],
      [3, M, 5, 1, 0, 40],
      [10, 2, 44, 0, 1, 50]]
PH = [[0, 0, 1, 0, 0, 20],
      [2, M, 3, 0, 0, 25],
      [4, 1, 9, 0, 0, 33]]
NH_DISTINCT = [45, 48, 52]  # pairs (0, 1), (0, 2), (1, 2)
PH_DISTINCT = [6, 30, 28]


def make_result(synthetic: bool = True, images: list[str] | None = None) -> RobustnessResult:
    return RobustnessResult(
        model="demo model (synthetic weights)",
        model_id="0123456789abcdef" * 4,
        synthetic=synthetic,
        seed=7,
        images=images or ["a.png", HOSTILE, "c.jpg"],
        sizes=[(640, 480), (360, 360), (800, 600)],
        edits=list(EDITS),
        hashers=[HasherInfo("NeuralHash", 96, "the demo model"),
                 HasherInfo("pHash", 64, "imagehash.phash, hash_size 8")],
        distances={"NeuralHash": np.array(NH, dtype=np.int32), "pHash": np.array(PH, dtype=np.int32)},
        distinct={"NeuralHash": np.array(NH_DISTINCT, dtype=np.int32),
                  "pHash": np.array(PH_DISTINCT, dtype=np.int32)},
        pairs=np.array([[0, 1], [0, 2], [1, 2]]),
        failures=[Failure(HOSTILE, "downscale 0.75x", "decoder said <no> | twice")],
        notes=["dHash and PDQ left out: a <b>note</b> from the run"],
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The synthetic report, written once: (result, out dir, files)."""
    out = tmp_path_factory.mktemp("report") / "nested" / "out"
    result = make_result()
    return result, out, write_report(result, out)


def _frac(bits: int, length: int) -> str:
    return f"{bits / length:.3f}"


def test_every_file_exists_and_is_not_empty(report):
    _, out, files = report
    names = [f.name for f in files]
    assert names[:4] == ["index.html", "summary.md", "distances.csv", "distinct_pairs.csv"]
    assert {"distance_vs_strength.png", "distinct_distances.png", "match_rate.png"} <= set(names)
    for f in files:
        assert f.parent == out and f.is_file() and f.stat().st_size > 0
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_pngs_are_valid_images(report):
    _, _, files = report
    pngs = [f for f in files if f.suffix == ".png"]
    assert len(pngs) == 3
    for f in pngs:
        assert f.read_bytes()[:8] == PNG_SIGNATURE
        with Image.open(f) as im:
            im.load()
            assert im.width >= 500 and im.height >= 250


def test_html_is_self_contained(report):
    _, out, files = report
    text = (out / "index.html").read_text(encoding="utf-8")
    assert text.count("data:image/png;base64,") == 3
    for bad in ("http://", "https://", 'src="/', "<script", "<link", "@import", "url("):
        assert bad not in text
    assert re.findall(r'src="([^"]*)"', text) and all(
        s.startswith("data:image/png;base64,") for s in re.findall(r'src="([^"]*)"', text))


def test_markdown_references_the_plots_by_name(report):
    _, out, files = report
    md = (out / "summary.md").read_text(encoding="utf-8")
    for f in files:
        if f.suffix == ".png":
            assert f"]({f.name})" in md


def test_synthetic_warning_comes_before_the_first_table(report, tmp_path):
    _, out, _ = report
    html = (out / "index.html").read_text(encoding="utf-8")
    md = (out / "summary.md").read_text(encoding="utf-8")
    assert 0 <= html.index('class="warning"') < html.index("<table")
    assert 0 <= md.index("synthetic") < md.index("\n|")
    assert "carry no meaning" in html and "carry no meaning" in md and "--model" in md

    write_report(make_result(synthetic=False), tmp_path)
    html = (tmp_path / "index.html").read_text(encoding="utf-8")
    md = (tmp_path / "summary.md").read_text(encoding="utf-8")
    assert 'class="warning"' not in html
    assert "carry no meaning" not in html and "carry no meaning" not in md


def test_report_states_the_model(report):
    result, out, _ = report
    for name in ("index.html", "summary.md"):
        text = (out / name).read_text(encoding="utf-8")
        assert result.model in text and "0123456789ab" in text and "0123456789abcdef0" not in text


def test_thresholds_and_match_rates_in_markdown(report):
    _, out, _ = report
    md = (out / "summary.md").read_text(encoding="utf-8")
    # NeuralHash: distinct 45, 48, 52 -> threshold 44. The copies above 44: only hflip of c.jpg (50),
    # out of 17 measured -> 16 of 17 = 94.1%.
    assert (f"| NeuralHash | 96 | 45 ({_frac(45, 96)}) | 48 ({_frac(48, 96)}) | 52 ({_frac(52, 96)}) "
            f"| 44 ({_frac(44, 96)}) | 94.1% (16 of 17) |") in md
    # pHash: distinct 6, 28, 30 -> threshold 5. Above 5: jpeg q35 of c.jpg (9) and the 3 flips -> 13 of 17.
    assert (f"| pHash | 64 | 6 ({_frac(6, 64)}) | 28 ({_frac(28, 64)}) | 30 ({_frac(30, 64)}) "
            f"| 5 ({_frac(5, 64)}) | 76.5% (13 of 17) |") in md
    # Per edit: mean (fraction without its leading zero), max, match rate at the threshold.
    # jpeg q35: NeuralHash 2, 5, 44 -> mean 17.0, all <= 44; pHash 1, 3, 9 -> mean 4.3, 2 of 3 <= 5.
    assert "| jpeg | jpeg q35 | 3 | 17.0 (.177) | 44 | 100.0% | 4.3 (.068) | 9 | 66.7% |" in md
    # hflip: NeuralHash 30, 40, 50 -> 2 of 3 matched; pHash 20, 25, 33 -> none.
    assert "| hflip | hflip | 3 | 40.0 (.417) | 50 | 66.7% | 26.0 (.406) | 33 | 0.0% |" in md
    # downscale 0.75x: image 1 missing -> 2 copies; NeuralHash 1, 2; pHash 0, 1.
    assert "|  | downscale 0.75x | 2 | 1.5 (.016) | 2 | 100.0% | 0.5 (.008) | 1 | 100.0% |" in md


def test_html_shows_the_same_numbers(report):
    _, out, _ = report
    html = (out / "index.html").read_text(encoding="utf-8")
    assert "94.1%" in html and "76.5%" in html and "16 of 17" in html and "66.7%" in html
    assert "17.0" in html and ".177" in html


def test_at_a_glance_table(report):
    _, out, _ = report
    md = (out / "summary.md").read_text(encoding="utf-8")
    # Present: rescale 0.5x (0, 3, 10 -> median 3), JPEG 35, the flip, the distinct pairs; absent edits skipped.
    assert "| rescale 0.5x | downscale 0.5x | 3 | 4.3 | 0–10 | 0 |" in md
    assert "| JPEG quality 35 | jpeg q35 | 5 | 17.0 | 2–44 | 0 |" in md
    assert "| horizontal flip | hflip | 40 | 40.0 | 30–50 | 27 |" in md
    assert "| unrelated images | distinct pairs | 48 | 48.3 | 45–52 | 41–53 |" in md
    assert "brightness x1.45" not in md


def test_distances_csv(report):
    result, out, _ = report
    rows = list(csv.DictReader(io.StringIO((out / "distances.csv").read_text(encoding="utf-8"))))
    assert len(rows) == 3 * 6 * 2
    assert list(rows[0]) == ["image", "edit", "family", "strength", "unit", "hash", "bits", "distance", "fraction"]
    missing = [r for r in rows if r["distance"] == ""]
    assert [(r["image"], r["edit"]) for r in missing] == [(HOSTILE, "downscale 0.75x")] * 2
    assert all(r["fraction"] == "" for r in missing)
    row = next(r for r in rows if r["image"] == "c.jpg" and r["edit"] == "hflip" and r["hash"] == "NeuralHash")
    assert (row["distance"], row["fraction"], row["bits"], row["family"]) == ("50", "0.5208", "96", "hflip")

    pairs = list(csv.DictReader(io.StringIO((out / "distinct_pairs.csv").read_text(encoding="utf-8"))))
    assert len(pairs) == 3 * 2
    assert (pairs[0]["image_a"], pairs[0]["image_b"], pairs[0]["hash"], pairs[0]["distance"]) == \
        ("a.png", HOSTILE, "NeuralHash", "45")


def test_writing_twice_gives_identical_bytes(report, tmp_path):
    _, out, files = report
    again = write_report(make_result(), tmp_path)
    assert [f.name for f in again] == [f.name for f in files]
    for a, b in zip(files, again):
        assert a.read_bytes() == b.read_bytes(), a.name


def test_hostile_names_are_escaped(report):
    _, out, _ = report
    html = (out / "index.html").read_text(encoding="utf-8")
    md = (out / "summary.md").read_text(encoding="utf-8")
    assert "<script" not in html and "&lt;script&gt;a|b.jpg" in html
    assert "<b>note</b>" not in html and "&lt;b&gt;note&lt;/b&gt;" in html
    assert "<script" not in md and "&lt;script&gt;a\\|b.jpg" in md
    assert "decoder said &lt;no&gt; \\| twice" in md
    # Every table row of the Markdown has the same number of unescaped pipes as its header.
    for block in re.split(r"\n\n", md):
        lines = [ln for ln in block.splitlines() if ln.startswith("|")]
        if lines:
            counts = {len(re.findall(r"(?<!\\)\|", ln)) for ln in lines}
            assert len(counts) == 1, block


def test_existing_files_are_left_alone(tmp_path):
    (tmp_path / "mine.txt").write_text("keep")
    write_report(make_result(), tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "keep"


def test_one_image_and_equal_hashes(tmp_path):
    one = dataclasses.replace(
        make_result(images=["only.png"]), sizes=[(10, 10)],
        distances={"NeuralHash": np.array(NH[:1], dtype=np.int32), "pHash": np.array(PH[:1], dtype=np.int32)},
        distinct={"NeuralHash": np.zeros(0, np.int32), "pHash": np.zeros(0, np.int32)},
        pairs=np.zeros((0, 2), int), failures=[])
    files = write_report(one, tmp_path / "one")
    md = (tmp_path / "one" / "summary.md").read_text(encoding="utf-8")
    assert "n/a (needs two or more images)" in md and all(f.stat().st_size for f in files)
    assert "n/a (needs two or more images)" in terminal_summary(one)

    same = dataclasses.replace(make_result(), distinct={"NeuralHash": np.array([0, 48, 52], np.int32),
                                                        "pHash": np.array(PH_DISTINCT, np.int32)})
    write_report(same, tmp_path / "same")
    md = (tmp_path / "same" / "summary.md").read_text(encoding="utf-8")
    assert "none (two distinct images have equal hashes)" in md
    assert "| NeuralHash | 96 | 0 (0.000) | 48 (0.500) | 52 (0.542) | none (two distinct images have equal " \
           "hashes) | 0.0% (0 of 17) |" in md


def test_terminal_summary(report):
    result, out, _ = report
    text = terminal_summary(result, out)
    lines = text.splitlines()
    assert len(lines) <= 20 and max(len(ln) for ln in lines) <= 100
    assert "NeuralHash" in text and "pHash" in text
    assert re.search(r"^NeuralHash\s+96\s+45-52.*44 \(0\.458\)\s+94\.1%$", text, re.M)
    assert re.search(r"^pHash\s+64\s+6-30.*5 \(0\.078\)\s+76\.5%$", text, re.M)
    assert "WARNING" in text and "synthetic" in text and "--model" in text
    assert "hflip (40.0)" in text  # the edit moving NeuralHash most
    assert str(out / "index.html") in text
    assert "WARNING" not in terminal_summary(make_result(synthetic=False))


def test_unwritable_directory(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(NeuralHashError, match=re.escape(str(blocker / "report"))):
        write_report(make_result(), blocker / "report")


def test_matplotlib_missing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    with pytest.raises(NeuralHashError, match=re.escape("pip install '.[robustness]'")):
        write_report(make_result(), tmp_path / "out")
    assert not (tmp_path / "out").exists()
