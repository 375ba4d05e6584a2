"""The robustness edits: sizes, exactness of the lossless ones, re-encoding, determinism."""

from __future__ import annotations

import io
import math
import pickle
import subprocess
import sys
import zlib
from fractions import Fraction

import numpy as np
import pytest
from PIL import Image, ImageFilter, ImageFont

from neuralhash.errors import ImageError
from neuralhash.robustness import edits as edits_mod
from neuralhash.robustness.edits import Edit, apply_edit, default_edits, edit_families, edit_rng

EDITS = default_edits()
BY_LABEL = {e.label: e for e in EDITS}


def gradient(w: int, h: int, lo: int = 0, hi: int = 255) -> Image.Image:
    """A smooth RGB test image, different in every channel and not symmetric."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = x / max(w - 1, 1)
    g = y / max(h - 1, 1)
    b = (x + 2 * y) / max(w - 1 + 2 * (h - 1), 1)
    arr = lo + (hi - lo) * np.stack([r, g, b], axis=-1)
    return Image.fromarray(np.rint(arr).astype(np.uint8))


def noise_image(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def run(label: str, image: Image.Image, *, seed: int = 0, key: str = "img") -> Image.Image:
    return apply_edit(BY_LABEL[label], image, seed=seed, image_key=key)


def arr(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


# -- expected sizes, computed from the strengths with exact fractions --------------------------


def half_up(x: Fraction) -> int:
    return math.floor(x + Fraction(1, 2))


def expected_size(edit: Edit, w: int, h: int) -> tuple[int, int]:
    s = Fraction(str(edit.strength))  # the decimal strength, exactly
    fam = edit.family
    if fam in ("downscale", "upscale"):
        return max(1, half_up(w * s)), max(1, half_up(h * s))
    if fam == "aspect":
        return max(1, half_up(w * s)), h
    if fam in ("crop-left", "crop-right"):
        return w - min(half_up(w * s), w - 1), h
    if fam in ("crop-top", "crop-bottom"):
        return w, h - min(half_up(h * s), h - 1)
    if fam == "crop-center":
        return w - 2 * min(half_up(w * s), (w - 1) // 2), h - 2 * min(half_up(h * s), (h - 1) // 2)
    if fam == "pad":
        b = max(1, half_up(min(w, h) * s))
        return w + 2 * b, h + 2 * b
    if fam == "letterbox":
        num, den = (int(v) for v in edit.label.split()[-1].split(":"))
        target = Fraction(num, den)
        if Fraction(w, h) < target:
            return half_up(h * target), h
        return w, half_up(w / target)
    if fam == "rotate-right-angle" and edit.strength in (90, 270):
        return h, w
    if fam == "screenshot":
        extra = max(2, half_up(s * h))
        border = max(1, half_up(Fraction(extra, 10)))
        return w + 2 * border, h + extra
    return w, h


# -- the catalogue -----------------------------------------------------------------------------


def test_catalogue_shape():
    assert 90 <= len(EDITS) <= 110
    labels = [e.label for e in EDITS]
    assert len(set(labels)) == len(labels)
    assert all(label.isascii() for label in labels)
    families = edit_families(EDITS)
    # contiguous: each family appears in one run
    runs = [e.family for i, e in enumerate(EDITS) if i == 0 or EDITS[i - 1].family != e.family]
    assert runs == families
    for fam in families:
        assert fam == fam.lower() and " " not in fam
        strengths = [e.strength for e in EDITS if e.family == fam]
        assert strengths == sorted(strengths), fam
    for e in EDITS:
        assert e.unit and e.description and "\n" not in e.description
        assert isinstance(e.strength, float)
    expected_families = {
        "downscale", "upscale", "aspect", "jpeg", "webp", "crop-left", "crop-right", "crop-top",
        "crop-bottom", "crop-center", "pad", "letterbox", "rotate", "rotate-right-angle", "hflip",
        "vflip", "grayscale", "brightness", "contrast", "gamma", "hue", "blur", "sharpen", "noise",
        "text", "logo", "screenshot",
    }
    assert set(families) == expected_families


def test_catalogue_has_published_reference_points():
    have = {(e.family, e.strength) for e in EDITS}
    for point in [("downscale", 0.5), ("upscale", 1.5), ("upscale", 3.0), ("jpeg", 35.0),
                  ("contrast", 0.6), ("brightness", 1.45), ("hflip", 1.0)]:
        assert point in have


def test_default_edits_is_stable_and_edits_pickle():
    assert default_edits() == EDITS
    image = gradient(40, 30)
    for e in EDITS:
        clone = pickle.loads(pickle.dumps(e))
        assert clone == e
    for label in ("noise std 20", "crop left 10%", "letterbox 16:9", "logo 5%"):
        clone = pickle.loads(pickle.dumps(BY_LABEL[label]))
        assert apply_edit(clone, image, seed=3, image_key="k").tobytes() == run(label, image, seed=3, key="k").tobytes()


def test_edit_families_first_appearance():
    fake = [Edit(f, 1.0, "none", f"{f}{i}", "d", edits_mod._hflip) for i, f in enumerate("b a b c a".split())]
    assert edit_families(fake) == ["b", "a", "c"]


# -- every edit: mode and size -----------------------------------------------------------------


@pytest.mark.parametrize("size", [(301, 200), (200, 301), (7, 5), (1, 1), (3, 2), (2, 3)])
def test_every_edit_mode_and_size(size):
    image = gradient(*size)
    for e in EDITS:
        out = apply_edit(e, image, seed=1, image_key="x")
        assert out.mode == "RGB", e.label
        assert out.size == expected_size(e, *size), (e.label, size, out.size)
        assert out is not image


def test_documented_rounding_examples():
    image = gradient(301, 200)
    assert run("downscale 0.5x", image).size == (151, 100)  # 150.5 rounds up
    assert run("downscale 0.25x", image).size == (75, 50)   # 75.25
    assert run("upscale 1.5x", image).size == (452, 300)    # 451.5
    assert run("letterbox 16:9", image).size == (356, 200)  # 355.6
    assert run("letterbox 1:1", image).size == (301, 301)
    assert run("downscale 0.25x", gradient(1, 1)).size == (1, 1)


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "1", "CMYK", "I"])
def test_other_modes_through_apply_edit(mode):
    base = gradient(9, 6)
    image = base.convert(mode)
    before = image.tobytes()
    rgb = image.convert("RGB")
    for e in EDITS:
        out = apply_edit(e, image, seed=0, image_key="m")
        assert out.mode == "RGB" and out.size == expected_size(e, 9, 6), (mode, e.label)
        # the conversion to RGB is the only difference from an RGB input
        assert out.tobytes() == apply_edit(e, rgb, seed=0, image_key="m").tobytes(), (mode, e.label)
    assert image.mode == mode and image.tobytes() == before


# -- re-encoding -------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt,quality", [("JPEG", 10), ("JPEG", 35), ("JPEG", 95), ("WEBP", 25), ("WEBP", 90)])
def test_reencoded_like_pillow(fmt, quality):
    image = noise_image(64, 48, seed=5).filter(ImageFilter.GaussianBlur(1.5))
    out = run(f"{fmt.lower()} q{quality}", image)
    assert out.format == fmt and out.mode == "RGB"
    buf = io.BytesIO()
    image.save(buf, fmt, quality=quality)  # Pillow's defaults: 4:2:0 for JPEG, method 4 for WebP
    buf.seek(0)
    expected = Image.open(buf)
    expected.load()
    assert np.array_equal(np.asarray(out), np.asarray(expected.convert("RGB")))
    assert not np.array_equal(np.asarray(out), np.asarray(image))  # lossy: it really was re-encoded


def test_jpeg_quality_orders_error():
    image = noise_image(96, 64, seed=2).filter(ImageFilter.GaussianBlur(1))
    errors = [np.abs(arr(run(f"jpeg q{q}", image)) - arr(image)).mean() for q in (10, 35, 95)]
    assert errors[0] > errors[1] > errors[2]


# -- exact geometry ----------------------------------------------------------------------------


def test_flips_and_right_angles_are_exact():
    image = noise_image(31, 20)
    a = np.asarray(image)
    assert np.array_equal(np.asarray(run("hflip", image)), np.fliplr(a))
    assert np.array_equal(np.asarray(run("vflip", image)), np.flipud(a))
    assert np.array_equal(np.asarray(run("rotate 90 deg", image)), np.rot90(a, 1))
    assert np.array_equal(np.asarray(run("rotate 180 deg", image)), np.rot90(a, 2))
    assert np.array_equal(np.asarray(run("rotate 270 deg", image)), np.rot90(a, 3))


def test_crops_are_slices():
    image = noise_image(101, 60)
    a = np.asarray(image)
    w, h = image.size
    for f in (0.01, 0.05, 0.1, 0.2, 0.3):
        fr = Fraction(str(f))
        nx, ny = half_up(w * fr), half_up(h * fr)
        pct = f"{f * 100:g}%"
        assert np.array_equal(np.asarray(run(f"crop left {pct}", image)), a[:, nx:])
        assert np.array_equal(np.asarray(run(f"crop right {pct}", image)), a[:, : w - nx])
        assert np.array_equal(np.asarray(run(f"crop top {pct}", image)), a[ny:])
        assert np.array_equal(np.asarray(run(f"crop bottom {pct}", image)), a[: h - ny])
        assert np.array_equal(np.asarray(run(f"crop center {pct}", image)), a[ny : h - ny, nx : w - nx])


def test_crop_keeps_a_pixel_of_a_tiny_image():
    image = noise_image(2, 1)
    assert run("crop left 30%", image).size == (1, 1)
    assert np.array_equal(np.asarray(run("crop left 30%", image)), np.asarray(image)[:, 1:])
    assert run("crop center 30%", image).size == (2, 1)


def test_pad_letterbox_screenshot_keep_the_image_unscaled():
    image = noise_image(40, 30)
    a = np.asarray(image)

    out = np.asarray(run("pad 10%", image))  # 10% of 30 = 3 px
    assert np.array_equal(out[3:-3, 3:-3], a)
    border = np.ones(out.shape[:2], bool)
    border[3:-3, 3:-3] = False
    assert (out[border] == 255).all()

    out = np.asarray(run("letterbox 16:9", image))  # 30 * 16 / 9 = 53.3 -> 53 wide, bars 6 and 7
    assert out.shape == (30, 53, 3)
    assert np.array_equal(out[:, 6:46], a)
    assert (out[:, :6] == 0).all() and (out[:, 46:] == 0).all()

    out = np.asarray(run("letterbox 9:16", image))  # 40 * 16 / 9 = 71.1 -> 71 tall
    assert out.shape == (71, 40, 3)
    assert np.array_equal(out[20:50], a)
    assert (out[:20] == 0).all() and (out[50:] == 0).all()

    out = np.asarray(run("screenshot 20%", image))  # extra 6 rows: 1 bottom, 5 title; 1 px sides
    assert out.shape == (36, 42, 3)
    assert np.array_equal(out[5:35, 1:41], a)
    assert not np.array_equal(out[:5, 1:41], a[:5])


def test_small_rotation_same_canvas_black_corners():
    image = Image.new("RGB", (121, 81), (200, 180, 160))
    for deg in (1, 2, 5, 10, 15):
        out = np.asarray(run(f"rotate {deg} deg", image))
        assert out.shape == (81, 121, 3)
        assert (out[40, 60] == (200, 180, 160)).all()
        if deg >= 5:
            assert (out[0, 0] == 0).all() and (out[-1, -1] == 0).all()
    # counter-clockwise, as Image.rotate
    assert np.array_equal(np.asarray(run("rotate 5 deg", image)),
                          np.asarray(image.rotate(5, resample=Image.Resampling.BICUBIC, fillcolor=(0, 0, 0))))


def test_scaling_uses_lanczos():
    image = noise_image(50, 40)
    out = run("downscale 0.5x", image)
    assert np.array_equal(np.asarray(out), np.asarray(image.resize((25, 20), Image.Resampling.LANCZOS)))
    out = run("aspect 1.33x", image)
    assert np.array_equal(np.asarray(out), np.asarray(image.resize((67, 40), Image.Resampling.LANCZOS)))


# -- colour and tone ---------------------------------------------------------------------------


def test_grayscale():
    image = noise_image(30, 20)
    out = np.asarray(run("grayscale", image))
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    assert np.array_equal(out[..., 0], np.asarray(image.convert("L")))


def mean(image: Image.Image) -> float:
    return float(np.asarray(image, dtype=np.float32).mean())


def spread(image: Image.Image) -> float:
    return float(np.asarray(image.convert("L"), dtype=np.float32).std())


def test_tone_edits_move_in_the_right_direction():
    image = gradient(64, 48, lo=40, hi=200)
    m, sd = mean(image), spread(image)
    for f in (0.5, 0.6, 0.8):
        assert mean(run(f"brightness {f:g}x", image)) < m - 5
        assert spread(run(f"contrast {f:g}x", image)) < sd - 1
    for f in (1.2, 1.45):
        assert mean(run(f"brightness {f:g}x", image)) > m + 5
    for f in (1.2, 1.5):
        assert spread(run(f"contrast {f:g}x", image)) > sd + 1
    # levels convention: gamma above 1 brightens
    assert mean(run("gamma 0.5", image)) < mean(run("gamma 0.8", image)) < m
    assert m < mean(run("gamma 1.25", image)) < mean(run("gamma 2", image))
    # brightness is a plain multiplication, clipped
    flat = Image.new("RGB", (4, 4), (100, 50, 200))
    assert tuple(np.asarray(run("brightness 1.45x", flat))[0, 0]) in {(145, 72, 255), (145, 73, 255)}


def test_gamma_table():
    ramp = Image.fromarray(np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2))
    out = np.asarray(run("gamma 2", ramp))[0, :, 0].astype(int)
    expected = [math.floor(255 * (i / 255) ** 0.5 + 0.5) for i in range(256)]
    assert np.abs(out - np.array(expected)).max() <= 1
    assert out[0] == 0 and out[255] == 255


def test_hue_shift():
    red = Image.new("RGB", (8, 8), (255, 0, 0))
    cyan = arr(run("hue +180 deg", red))[0, 0]
    assert cyan[0] <= 3 and cyan[1] >= 250 and cyan[2] >= 250
    yellowish = arr(run("hue +60 deg", red))[0, 0]  # red -> yellow
    assert yellowish[0] >= 250 and yellowish[1] >= 240 and yellowish[2] <= 3
    grey = Image.new("RGB", (8, 8), (120, 120, 120))
    for deg in (10, 30, 60, 90, 180):
        assert np.abs(arr(run(f"hue +{deg} deg", grey)) - 120).max() <= 1
    # 360-degree consistency: two half turns come back close to the start
    image = gradient(32, 24)
    twice = run("hue +180 deg", run("hue +180 deg", image))
    assert np.abs(arr(twice) - arr(image)).mean() < 3


# -- filters and noise -------------------------------------------------------------------------


def test_blur_and_sharpen_scale_with_the_image():
    image = noise_image(720, 540).filter(ImageFilter.GaussianBlur(1))
    out = run("blur sigma 2", image)
    assert np.array_equal(np.asarray(out), np.asarray(image.filter(ImageFilter.GaussianBlur(3.0))))  # 2 * 540/360
    out = run("sharpen 200%", image)
    expected = image.filter(ImageFilter.UnsharpMask(radius=3.0, percent=200, threshold=3))  # 2 * 540/360
    assert np.array_equal(np.asarray(out), np.asarray(expected))

    # (below a 360-pixel side the relative sigma shrinks: 0.5 at 90 px is 0.125 px, next to nothing)
    small = image.resize((360, 270))
    stds = [spread(run(f"blur sigma {s:g}", small)) for s in (0.5, 1, 2, 4)]
    assert stds == sorted(stds, reverse=True) and stds[0] < spread(small)
    sharp = [spread(run(f"sharpen {p}%", small)) for p in (50, 100, 200, 400)]
    assert sharp == sorted(sharp) and sharp[0] > spread(small)


def test_noise_is_seeded_and_has_the_right_std():
    grey = Image.new("RGB", (96, 64), (128, 128, 128))
    for sd in (5, 10, 20, 40):
        a = run(f"noise std {sd}", grey, seed=7, key="k")
        diff = arr(a) - 128
        assert abs(diff.std() - sd) < 0.1 * sd and abs(diff.mean()) < 0.2 * sd
        assert run(f"noise std {sd}", grey, seed=7, key="k").tobytes() == a.tobytes()
        assert run(f"noise std {sd}", grey, seed=8, key="k").tobytes() != a.tobytes()
        assert run(f"noise std {sd}", grey, seed=7, key="other").tobytes() != a.tobytes()
    # clipped, not wrapped
    white = Image.new("RGB", (32, 32), (255, 255, 255))
    out = arr(run("noise std 40", white))
    assert out.min() < 200 and np.mean(out == 255) > 0.4


def test_noise_in_blocks_matches_the_documented_stream(monkeypatch):
    # Small blocks must give the same numbers as one block (standard_normal is sequential).
    image = noise_image(50, 40)
    whole = run("noise std 10", image)
    monkeypatch.setattr(edits_mod, "_NOISE_CHUNK", 120)  # blocks of 2 rows
    assert run("noise std 10", image).tobytes() == whole.tobytes()


# -- overlays ----------------------------------------------------------------------------------


def changed_box(a: Image.Image, b: Image.Image) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero((np.asarray(a) != np.asarray(b)).any(axis=2))
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def test_logo_is_a_square_in_a_corner():
    image = noise_image(300, 200)
    for f in (0.02, 0.05, 0.1):
        out = run(f"logo {f * 100:g}%", image)
        side = math.floor(math.sqrt(f * 300 * 200) + 0.5)
        x0, y0, x1, y1 = changed_box(image, out)
        assert (x1 - x0, y1 - y0) == (side, side)
        margin = 4  # 2% of 200
        assert x0 == margin or x1 == 300 - margin
        assert y0 == margin or y1 == 200 - margin
        area = (np.asarray(image) != np.asarray(out)).any(axis=2).mean()
        assert abs(area - f) < 0.15 * f
    corners = {changed_box(image, run("logo 5%", image, key=f"k{i}"))[:2] for i in range(12)}
    assert len(corners) > 1  # the corner comes from the generator


def test_logo_on_a_long_thin_image_is_clamped():
    image = noise_image(400, 6)
    out = run("logo 10%", image)
    x0, y0, x1, y1 = changed_box(image, out)
    assert y1 - y0 <= 6 and x1 - x0 <= 6


def test_text_overlay():
    image = gradient(400, 300)
    positions = set()
    for f, key in [(0.05, "a"), (0.1, "a"), (0.1, "b"), (0.1, "c"), (0.2, "a")]:
        out = run(f"text {f * 100:g}%", image, key=key)
        x0, y0, x1, y1 = changed_box(image, out)
        assert 0 <= x0 < x1 <= 400 and 0 <= y0 < y1 <= 300
        assert x1 - x0 <= 0.95 * 400
        if f <= 0.1:  # fits the width at its full size
            assert 0.5 * f * 300 <= y1 - y0 <= 1.5 * f * 300
        pixels = np.asarray(out)[y0:y1, x0:x1]
        assert (pixels == 255).all(axis=2).any() and (pixels == 0).all(axis=2).any()  # white text, black outline
        if f == 0.1:
            positions.add((x0, y0))
    assert len(positions) > 1


def test_text_overlay_without_scalable_font(monkeypatch):
    # Pillow 10.0 has no load_default(size=...): the bitmap font is scaled instead.
    real = ImageFont.load_default
    bitmap = getattr(ImageFont, "load_default_imagefont", None)
    if bitmap is None:
        pytest.skip("this Pillow has no load_default_imagefont")

    def old_load_default(**kwargs):
        if kwargs:
            raise TypeError("load_default() got an unexpected keyword argument 'size'")
        return bitmap()

    monkeypatch.setattr(edits_mod.ImageFont, "load_default", old_load_default)
    image = gradient(400, 300)
    out = run("text 10%", image)
    x0, y0, x1, y1 = changed_box(image, out)
    assert 15 <= y1 - y0 <= 45
    monkeypatch.setattr(edits_mod.ImageFont, "load_default", real)
    assert run("text 5%", gradient(1, 1)).size == (1, 1)


# -- determinism and purity --------------------------------------------------------------------


def test_catalogue_deterministic_order_independent_and_pure():
    image = noise_image(48, 36, seed=11)
    before = image.tobytes()
    first = {e.label: apply_edit(e, image, seed=5, image_key="p").tobytes() for e in EDITS}
    second = {e.label: apply_edit(e, image, seed=5, image_key="p").tobytes() for e in reversed(EDITS)}
    assert first == second
    assert image.tobytes() == before and image.mode == "RGB" and image.size == (48, 36)
    # edits that use no randomness ignore the seed; the random ones depend on it
    random_families = {"noise", "text", "logo"}
    other = {e.label: apply_edit(e, image, seed=6, image_key="p").tobytes() for e in EDITS}
    for e in EDITS:
        if e.family not in random_families:
            assert other[e.label] == first[e.label], e.label
    assert other["noise std 10"] != first["noise std 10"]


def test_edit_rng_is_stable_across_processes():
    expected = np.random.default_rng(
        [42, zlib.crc32("noise std 10".encode()), zlib.crc32("photos/ü.jpg".encode())]
    ).integers(0, 2**32, 4)
    assert (edit_rng(42, "noise std 10", "photos/ü.jpg").integers(0, 2**32, 4) == expected).all()
    code = (
        "from neuralhash.robustness.edits import edit_rng;"
        "print([int(v) for v in edit_rng(42, 'noise std 10', 'photos/\\u00fc.jpg').integers(0, 2**32, 4)])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123", "PATH": ""}).stdout
    assert out.strip() == str([int(v) for v in expected])


def test_edit_rng_rejects_negative_seed():
    with pytest.raises(ValueError):
        edit_rng(-1, "a", "b")
    with pytest.raises(ImageError, match="seed"):
        apply_edit(BY_LABEL["hflip"], gradient(4, 4), seed=-1, image_key="k")


# -- apply and apply_edit ----------------------------------------------------------------------


def test_apply_edit_wraps_failures():
    def broken(image, strength, rng):
        raise ValueError("boom")

    edit = Edit("broken", 1.0, "none", "broken edit", "always fails", broken)
    with pytest.raises(ImageError) as info:
        apply_edit(edit, gradient(5, 5), seed=0, image_key="holiday/beach.jpg")
    message = str(info.value)
    assert message.startswith("holiday/beach.jpg: ") and "'broken edit'" in message and "boom" in message
    assert isinstance(info.value.__cause__, ValueError)

    with pytest.raises(ImageError, match="x.png: edit 'webp q25' failed"):
        apply_edit(BY_LABEL["webp q25"], Image.new("RGB", (20000, 1)), seed=0, image_key="x.png")  # too wide for WebP


def test_apply_always_returns_a_new_rgb_image():
    image = gradient(6, 4)
    same = Edit("same", 1.0, "none", "same", "returns its input", lambda im, s, r: im)
    assert same.apply(image, np.random.default_rng(0)) is not image
    grey = Edit("grey", 1.0, "none", "grey", "returns L", lambda im, s, r: im.convert("L"))
    assert grey.apply(image, np.random.default_rng(0)).mode == "RGB"
