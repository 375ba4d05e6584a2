"""NeuralHash.hash / hash_many against the community reference pipeline, literally, bit for bit.

The reference (NEURALHASH.md) is written out below as the 2021 script does it:
Pillow open + convert("RGB") + resize((360, 360)), float32 / 255 * 2 - 1, a
plain onnxruntime.InferenceSession on the same ONNX file NeuralHash runs,
seed.dot(logits.flatten()) with the seed read from a seed file's bytes, and
the sign. It runs on the synthetic demo model over 50+ generated images in
every mode and format Pillow reads.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
from PIL import Image, ImageDraw, ImageOps, features

from neuralhash.hashing import NeuralHash
from neuralhash.hashing.seed import default_seed_matrix

from conftest import assert_close, draw_shapes

skimage_data = pytest.importorskip("skimage.data")


# -- the reference, literally ------------------------------------------------------------------


def reference_hash(session: onnxruntime.InferenceSession, seed: np.ndarray, source) -> str:
    image = source if isinstance(source, Image.Image) else Image.open(source)
    image = image.convert("RGB")
    image = image.resize((360, 360))
    arr = np.array(image).astype(np.float32) / 255.0
    arr = arr * 2.0 - 1.0
    arr = arr.transpose(2, 0, 1).reshape([1, 3, 360, 360])
    outs = session.run(None, {session.get_inputs()[0].name: arr})
    hash_output = seed.dot(outs[0].flatten())
    hash_bits = "".join(["1" if it >= 0 else "0" for it in hash_output])
    return "{:0{}x}".format(int(hash_bits, 2), len(hash_bits) // 4)


@pytest.fixture(scope="module")
def nh(tmp_path_factory) -> NeuralHash:
    # The session's base temp is shared by the test files: the demo model is built once.
    return NeuralHash.demo(cache_dir=tmp_path_factory.getbasetemp() / "neuralhash-cache")


@pytest.fixture(scope="module")
def reference(nh, tmp_path_factory):
    assert nh.onnx_path is not None and nh.onnx_path.is_file()
    session = onnxruntime.InferenceSession(str(nh.onnx_path), providers=["CPUExecutionProvider"])
    seed_file = tmp_path_factory.mktemp("seed") / "neuralhash_128x96_seed1.dat"
    seed_file.write_bytes(bytes(128) + default_seed_matrix().astype("<f4").tobytes())
    seed_file_bytes = seed_file.read_bytes()
    seed = np.frombuffer(seed_file_bytes[128:], dtype=np.float32).reshape([96, 128])

    def run(source) -> str:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's palette-transparency notes
            return reference_hash(session, seed, source)

    return run


# -- generated images --------------------------------------------------------------------------


def gradient(w: int, h: int, phase: float = 0.0) -> Image.Image:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 255 * (x / max(w - 1, 1))
    g = 255 * (y / max(h - 1, 1))
    b = 127.5 + 127.5 * np.sin((x + y) / max(w, h) * 6.28 * 3 + phase)
    return Image.fromarray(np.stack([r, g, b], axis=-1).astype(np.uint8), "RGB")


def shapes(w: int, h: int, seed: int = 0) -> Image.Image:
    return draw_shapes(w, h, seed)


def noise(w: int, h: int, seed: int = 1) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


def photo(name: str) -> Image.Image:
    arr = getattr(skimage_data, name)()
    if arr.ndim == 2:
        return Image.fromarray(arr, "L")
    return Image.fromarray(arr, "RGBA" if arr.shape[2] == 4 else "RGB")


def with_alpha(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    w, h = rgba.size
    alpha = np.tile(np.linspace(0, 255, w, dtype=np.float32), (h, 1)).astype(np.uint8)
    rgba.putalpha(Image.fromarray(alpha, "L"))
    return rgba


def mode_i16(img: Image.Image) -> Image.Image:
    arr = (np.asarray(img.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    return Image.fromarray(arr)


def mode_i(img: Image.Image) -> Image.Image:
    return Image.fromarray(np.asarray(img.convert("L"), dtype=np.int32) * 3 - 100)


def mode_f(img: Image.Image) -> Image.Image:
    return Image.fromarray(np.asarray(img.convert("L"), dtype=np.float32) * 1.5 - 20.0)


def palette_with_index_transparency(img: Image.Image) -> Image.Image:
    p = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    p.info["transparency"] = 3
    return p


def palette_with_alpha_palette(img: Image.Image) -> Image.Image:
    return with_alpha(img).quantize(colors=48)  # RGBA palette: PNG stores a tRNS byte table


def save(img: Image.Image, path: Path, fmt: str, **kwargs) -> Path:
    img.save(path, fmt, **kwargs)
    return path


def cases() -> list[tuple[str, callable]]:
    """(file name, writer(path) -> path) for every image the exactness test hashes."""
    out = []

    def add(name, make, fmt, **kw):
        out.append((name, lambda p, make=make, fmt=fmt, kw=kw: save(make(), p, fmt, **kw)))

    # RGB in every format
    add("rgb_gradient.png", lambda: gradient(640, 480), "PNG")
    add("rgb_shapes_q95.jpg", lambda: shapes(800, 600, 1), "JPEG", quality=95)
    add("rgb_shapes_q40_444.jpg", lambda: shapes(500, 700, 2), "JPEG", quality=40, subsampling=0)
    add("rgb_progressive.jpg", lambda: gradient(900, 500, 1.0), "JPEG", quality=85, progressive=True)
    add("rgb_noise.bmp", lambda: noise(400, 300), "BMP")
    add("rgb_shapes.tiff", lambda: shapes(360, 360, 3), "TIFF")
    add("rgb_lzw.tif", lambda: gradient(300, 500, 2.0), "TIFF", compression="tiff_lzw")
    add("rgb_lossy.webp", lambda: shapes(600, 400, 4), "WEBP", quality=70)
    add("rgb_lossless.webp", lambda: gradient(420, 380, 3.0), "WEBP", lossless=True)
    add("rgb_as_palette.gif", lambda: shapes(500, 300, 5), "GIF")
    add("rgb.ppm", lambda: shapes(256, 200, 6), "PPM")
    add("rgb.tga", lambda: gradient(250, 180, 4.0), "TGA")
    # photos (scikit-image's bundled samples, no network)
    add("astronaut.jpg", lambda: photo("astronaut"), "JPEG", quality=90)
    add("astronaut.png", lambda: photo("astronaut"), "PNG")
    add("coffee.jpg", lambda: photo("coffee"), "JPEG")
    add("chelsea.webp", lambda: photo("chelsea"), "WEBP")
    add("rocket.tif", lambda: photo("rocket"), "TIFF")
    add("hubble.jpg", lambda: photo("hubble_deep_field"), "JPEG")
    add("ihc.bmp", lambda: photo("immunohistochemistry"), "BMP")
    add("colorwheel.png", lambda: photo("colorwheel"), "PNG")
    add("retina_large.jpg", lambda: photo("retina").resize((2800, 2800)), "JPEG", quality=88)
    add("camera_gray.png", lambda: photo("camera"), "PNG")
    add("coins_gray.jpg", lambda: photo("coins"), "JPEG")
    add("page_gray.bmp", lambda: photo("page"), "BMP")
    add("moon_gray.webp", lambda: photo("moon"), "WEBP")
    # modes
    add("mode1.png", lambda: shapes(320, 240, 7).convert("1"), "PNG")
    add("mode1.bmp", lambda: photo("camera").convert("1"), "BMP")
    add("mode1.tif", lambda: gradient(333, 222).convert("1"), "TIFF")
    add("modeL.tif", lambda: shapes(400, 400, 8).convert("L"), "TIFF")
    add("modeLA.png", lambda: with_alpha(shapes(380, 300, 9)).convert("LA"), "PNG")
    add("modeLA.tif", lambda: with_alpha(gradient(300, 380)).convert("LA"), "TIFF")
    add("modeP.png", lambda: shapes(500, 400, 10).convert("P", palette=Image.Palette.ADAPTIVE), "PNG")
    add("modeP_index_transparency.png", lambda: palette_with_index_transparency(shapes(400, 300, 11)), "PNG")
    add("modeP_alpha_palette.png", lambda: palette_with_alpha_palette(gradient(410, 300)), "PNG")
    add("modeP_transparency.gif", lambda: palette_with_index_transparency(photo("chelsea")), "GIF")
    add("modeP.bmp", lambda: photo("coffee").convert("P", palette=Image.Palette.ADAPTIVE), "BMP")
    add("modeRGBA.png", lambda: with_alpha(photo("astronaut")), "PNG")
    add("modeRGBA.webp", lambda: with_alpha(shapes(450, 300, 12)), "WEBP")
    add("modeRGBA.tif", lambda: with_alpha(noise(200, 260, 2)), "TIFF")
    add("logo_rgba.png", lambda: photo("logo"), "PNG")
    add("modeCMYK.jpg", lambda: photo("rocket").convert("CMYK"), "JPEG")
    add("modeCMYK.tif", lambda: shapes(300, 300, 13).convert("CMYK"), "TIFF")
    add("modeI16.png", lambda: mode_i16(photo("moon")), "PNG")
    add("modeI16.tif", lambda: mode_i16(gradient(300, 200)), "TIFF")
    add("modeI.tif", lambda: mode_i(shapes(256, 256, 14)), "TIFF")
    add("modeI_photo.tif", lambda: mode_i(photo("camera")), "TIFF", compression="tiff_deflate")
    add("modeF.tif", lambda: mode_f(photo("coins")), "TIFF")
    # sizes: tiny, extreme aspect ratios, exactly 360, huge
    add("tiny_1x1.png", lambda: Image.new("RGB", (1, 1), (200, 30, 90)), "PNG")
    add("tiny_3x2.png", lambda: noise(3, 2, 5), "PNG")
    add("tiny_3x2.jpg", lambda: noise(3, 2, 6), "JPEG")
    add("strip_2000x3.png", lambda: gradient(2000, 3), "PNG")
    add("strip_5x1500.jpg", lambda: gradient(5, 1500), "JPEG")
    add("exact_360.png", lambda: shapes(360, 360, 15), "PNG")
    add("huge_4000x3000.jpg", lambda: gradient(1000, 750).resize((4000, 3000)), "JPEG", quality=80)
    if features.check("avif"):
        add("rgb.avif", lambda: photo("coffee"), "AVIF")
        add("rgba.avif", lambda: with_alpha(shapes(300, 200, 16)), "AVIF")
    return out


def animated_gif(path: Path) -> Path:
    frames = [shapes(200, 150, i).convert("P", palette=Image.Palette.ADAPTIVE) for i in range(3)]
    frames[0].save(path, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return path


def heic(path: Path) -> Path | None:
    try:
        import pillow_heif
    except ImportError:
        return None
    pillow_heif.register_heif_opener()
    try:
        photo("chelsea").save(path, "HEIF", quality=90)
    except Exception:  # a libheif without an encoder
        return None
    return path


def exif_rotated_jpeg(path: Path, orientation: int = 6) -> Path:
    img = shapes(480, 320, 21)
    ImageDraw.Draw(img).rectangle([0, 0, 160, 60], fill=(255, 255, 255))  # asymmetric: a bar top left
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(path, "JPEG", quality=92, exif=exif)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("exact")
    paths = [write(folder / name) for name, write in cases()]
    paths.append(animated_gif(folder / "animated.gif"))
    paths.append(exif_rotated_jpeg(folder / "exif_orientation6.jpg"))
    extra = heic(folder / "chelsea.heic")
    if extra is not None:
        paths.append(extra)
    return paths


# -- the tests -------------------------------------------------------------------------------


def test_the_generated_images_cover_every_mode(images):
    assert len(images) >= 50
    modes = set()
    formats = set()
    for path in images:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as img:
                modes.add(img.mode)
                formats.add(img.format)
    assert {"1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F"} <= modes
    assert {"JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP"} <= formats


@pytest.fixture(scope="module")
def expected(reference, images) -> dict[Path, str]:
    return {path: reference(path) for path in images}


def test_hash_equals_the_reference_for_every_image(nh, expected):
    mismatches = [f"{path.name}: {nh.hash(path).hex} != reference {want}"
                  for path, want in expected.items() if nh.hash(path).hex != want]
    assert not mismatches, "\n".join(mismatches)


def test_hash_many_with_workers_equals_the_reference(nh, expected):
    paths = [str(p) for p in expected]
    results = list(nh.hash_many(paths, batch_size=16, workers=2))
    assert [r.item for r in results] == paths
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    mismatches = [f"{p}: {r.hash.hex} != reference {want}"
                  for p, r, want in zip(paths, results, expected.values()) if r.hash.hex != want]
    assert not mismatches, "\n".join(mismatches)


def test_in_memory_inputs_equal_the_reference(nh, expected, images):
    for path in images[:8]:
        want = expected[path]
        data = path.read_bytes()
        assert nh.hash(data).hex == want
        with Image.open(path) as img:
            assert nh.hash(img).hex == want
            rgb = np.array(img.convert("RGB"))
        assert nh.hash(rgb).hex == want


def test_grayscale_array_equals_the_reference(nh, reference):
    gray = skimage_data.camera()
    assert nh.hash(gray).hex == reference(Image.fromarray(gray, "L"))


def test_exif_orientation_is_ignored_by_default_and_applied_on_request(nh, reference, tmp_path):
    path = exif_rotated_jpeg(tmp_path / "rotated.jpg")
    default = nh.hash(path)
    assert default.hex == reference(path)
    transposed = nh.hash(path, exif_transpose=True)
    assert transposed != default
    with Image.open(path) as img:
        assert img.getexif()[0x0112] == 6
        manual = img.transpose(Image.Transpose.ROTATE_270)  # what orientation 6 means
    assert manual.size == (320, 480)
    assert transposed == nh.hash(manual)
    assert transposed.hex == reference(manual)
    with Image.open(path) as img:
        assert transposed.hex == reference(ImageOps.exif_transpose(img))


def test_batching_does_not_change_bits_or_values(nh, images):
    paths = images[:40]
    one = list(nh.hash_many(paths, batch_size=1, workers=0))
    many = list(nh.hash_many(paths, batch_size=16, workers=0))
    assert [r.hash.hex for r in one] == [r.hash.hex for r in many]
    for a, b in zip(one, many):
        assert_close(b.hash.values, a.hash.values, 1e-6)


def test_onnx_outputs_of_batch_1_and_16_agree(nh):
    rng = np.random.default_rng(3)
    batch = rng.uniform(-1, 1, (16, 3, 360, 360)).astype(np.float32)
    together = nh.logits(batch)
    alone = np.concatenate([nh.logits(batch[i : i + 1]) for i in range(16)])
    assert_close(together, alone, 1e-6)


def test_workers_do_not_change_results(nh, images):
    paths = images[:24]
    inline = list(nh.hash_many(paths, batch_size=5, workers=0))
    pooled = list(nh.hash_many(paths, batch_size=5, workers=2))
    assert [(r.item, r.hash) for r in inline] == [(r.item, r.hash) for r in pooled]
    for a, b in zip(inline, pooled):
        assert np.array_equal(a.hash.values, b.hash.values)


def test_order_is_kept_with_errors_interleaved(nh, images, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not an image\n")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    good = [str(p) for p in images[:9]]
    items = [good[0], str(tmp_path / "missing.jpg"), good[1], good[2], str(text), good[3], str(tmp_path),
             good[4], good[5], str(empty), good[6], good[7], good[8]]
    expected_ok = [x in good for x in items]
    individually = {p: nh.hash(p) for p in good}
    for workers in (0, 2):
        results = list(nh.hash_many(iter(items), batch_size=4, workers=workers))
        assert [r.item for r in results] == items
        assert [r.ok for r in results] == expected_ok
        for r in results:
            if r.ok:
                assert r.hash == individually[r.item]
                assert np.array_equal(r.hash.values, individually[r.item].values)
            else:
                assert r.error.startswith(f"{r.item}: ")
