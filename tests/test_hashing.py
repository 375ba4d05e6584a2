"""The hashing API: Hash values, model construction and discovery, images that fight back, hash_many."""

from __future__ import annotations

import io
import multiprocessing
import os
import pickle
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile, features

from neuralhash.errors import ImageError, ModelNotFoundError, NeuralHashError
from neuralhash.hashing import DEFAULT_MARGIN, IMAGE_EXTENSIONS, Hash, HashResult, NeuralHash, find_system_model
from neuralhash.hashing import image as image_module
from neuralhash.hashing import model as model_module
from neuralhash.hashing import pipeline
from neuralhash.hashing.seed import FILE_SIZE, HEADER_SIZE, default_seed_matrix

from conftest import draw_shapes, tiny_brightness_onnx

# -- Hash ------------------------------------------------------------------------------------------

HEX = "59a34eabe31910abfb06f308"


def test_hex_round_trip_and_bit_order():
    h = Hash.from_hex(HEX)
    assert h.hex == HEX and str(h) == HEX and repr(h) == f"Hash('{HEX}')"
    assert h.bytes == bytes.fromhex(HEX) and len(h.bytes) == 12
    assert h.int == int(HEX, 16)
    assert h.bits.dtype == np.uint8 and h.bits.shape == (96,)
    assert Hash.from_bits(h.bits) == h
    first = Hash.from_bits([1] + [0] * 95)
    assert first.hex == "800000000000000000000000"  # bit 0 first and most significant
    assert Hash.from_bits(np.arange(96) == 95).hex == "000000000000000000000001"


def test_from_hex_accepts_case_and_whitespace():
    assert Hash.from_hex(f"  {HEX.upper()}\n") == Hash.from_hex(HEX)


@pytest.mark.parametrize("bad", ["", HEX[:-1], HEX + "0", "0x" + HEX[2:], "g" + HEX[1:], f"{HEX[:12]} {HEX[12:]}"])
def test_from_hex_rejects_bad_values_naming_them(bad):
    with pytest.raises(NeuralHashError) as info:
        Hash.from_hex(bad)
    assert repr(bad) in str(info.value)


def test_from_hex_rejects_non_strings():
    with pytest.raises(NeuralHashError):
        Hash.from_hex(12345)  # type: ignore[arg-type]


@pytest.mark.parametrize("bits", [[0] * 95, [0] * 97, [2] + [0] * 95, np.zeros((8, 12))])
def test_from_bits_validates(bits):
    with pytest.raises(NeuralHashError):
        Hash.from_bits(bits)


def test_values_margins_and_unstable_bits():
    values = np.linspace(-1, 1, 96).astype(np.float32)
    h = Hash.from_bits(values >= 0, values)
    assert h.values.dtype == np.float32 and np.array_equal(h.values, values)
    assert np.array_equal(h.margins, np.abs(values))
    assert h.unstable_bits(0.05) == int((np.abs(values) < 0.05).sum()) > 0
    assert h.unstable_bits(0.0) == 0
    assert h.unstable_mask(0.05).dtype == bool and h.unstable_mask(0.05).sum() == h.unstable_bits(0.05)
    assert h.unstable_bits() == int((np.abs(values) < DEFAULT_MARGIN).sum())
    plain = Hash.from_hex(HEX)
    assert plain.values is None and plain.margins is None
    assert plain.unstable_bits() is None and plain.unstable_mask() is None
    with pytest.raises(NeuralHashError):
        Hash.from_bits(values >= 0, values[:10])


def test_default_margin_is_a_small_positive_float():
    assert isinstance(DEFAULT_MARGIN, float) and 0 < DEFAULT_MARGIN < 1


def test_hash_is_an_immutable_value_compared_by_bits():
    h = Hash.from_hex(HEX)
    with pytest.raises(ValueError):
        h.bits[0] = 1
    with pytest.raises(AttributeError):
        h.foo = 1  # type: ignore[attr-defined]
    with_values = Hash.from_bits(h.bits, np.where(h.bits == 1, 1.0, -1.0))
    assert with_values == h and hash(with_values) == hash(h)
    assert len({h, with_values, Hash.from_hex(HEX.upper())}) == 1
    assert h != HEX and h != Hash.from_hex("0" * 24)
    assert pickle.loads(pickle.dumps(with_values)) == h
    assert np.array_equal(pickle.loads(pickle.dumps(with_values)).values, with_values.values)


def test_hamming():
    h = Hash.from_hex(HEX)
    assert h.hamming(h) == 0
    other = Hash.from_bits(np.concatenate([1 - h.bits[:5], h.bits[5:]]))
    assert h.hamming(other) == 5 == other.hamming(h)
    assert h.hamming(other.hex.upper()) == 5
    assert Hash.from_hex("0" * 24).hamming("f" * 24) == 96
    with pytest.raises(NeuralHashError):
        h.hamming("nope")


def test_hash_result():
    ok = HashResult(Path("a/b.jpg"), Hash.from_hex(HEX), None)
    assert ok.ok and ok.path == os.path.join("a", "b.jpg")
    bad = HashResult("<bytes>", None, "<bytes>: empty (0 bytes)")
    assert not bad.ok and bad.path == "<bytes>"
    with pytest.raises(AttributeError):
        ok.error = "x"  # type: ignore[misc]


def test_image_extensions():
    assert isinstance(IMAGE_EXTENSIONS, frozenset)
    assert {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".heic", ".heif", ".avif"} <= IMAGE_EXTENSIONS
    assert all(e.startswith(".") and e == e.lower() for e in IMAGE_EXTENSIONS)


# -- models ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.getbasetemp() / "neuralhash-cache"  # shared with test_hash_exact


@pytest.fixture(scope="module")
def nh(cache) -> NeuralHash:
    return NeuralHash.demo(cache_dir=cache)


@pytest.fixture(scope="module")
def demo_dir(nh, cache) -> Path:
    from neuralhash.demo import demo_model_dir

    return demo_model_dir(cache)


def picture(w: int = 320, h: int = 240, seed: int = 0) -> Image.Image:
    return draw_shapes(w, h, seed, count=10, rectangles=False)


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("good")
    paths = []
    for i in range(8):
        path = folder / f"good{i}.{'jpg' if i % 2 else 'png'}"
        picture(300 + 37 * i, 200 + 23 * i, i).save(path)
        paths.append(str(path))
    return paths


def test_demo_model(nh):
    assert nh.is_synthetic
    assert "synthetic" in nh.description
    assert nh.providers == ["CPUExecutionProvider"]
    assert len(nh.model_id) == 64 and int(nh.model_id, 16) >= 0
    assert nh.onnx_path is not None and nh.onnx_path.suffix == ".onnx"
    assert nh.seed.shape == (96, 128) and np.array_equal(nh.seed, default_seed_matrix())


def test_from_espresso_caches_the_onnx_model(demo_dir, cache, nh, monkeypatch, good):
    def no_conversion(sources):
        raise AssertionError("converted again although the cached ONNX file exists")

    monkeypatch.setattr(model_module, "_convert_to_bytes", no_conversion)
    again = NeuralHash.from_espresso(demo_dir, cache_dir=cache)
    assert again.onnx_path == nh.onnx_path and again.onnx_path.parent == cache / "onnx"
    assert again.model_id == nh.model_id and not again.is_synthetic
    assert again.hash(good[0]) == nh.hash(good[0])


def test_from_espresso_converts_into_a_fresh_cache_and_repairs_a_bad_file(demo_dir, nh, tmp_path, good):
    first = NeuralHash.from_espresso(demo_dir / "NeuralHashv3b-current.espresso.net", cache_dir=tmp_path)
    assert first.onnx_path.parent == tmp_path / "onnx" and first.onnx_path.name == nh.onnx_path.name
    assert first.model_id == nh.model_id
    first.onnx_path.write_bytes(b"garbage")
    repaired = NeuralHash.from_espresso(demo_dir, cache_dir=tmp_path)
    assert repaired.model_id == nh.model_id
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("x")
    in_memory = NeuralHash.from_espresso(demo_dir, cache_dir=blocked)
    assert in_memory.onnx_path is None and in_memory.model_id == nh.model_id
    assert in_memory.hash(good[1]) == nh.hash(good[1])


def test_from_onnx_with_a_hash_head_uses_the_logits(demo_dir, nh, tmp_path, good):
    from neuralhash.convert import convert, save_model
    from neuralhash.espresso import load_model

    path = tmp_path / "head.onnx"
    save_model(convert(load_model(demo_dir), hash_head=default_seed_matrix()), path)
    with_head = NeuralHash.from_onnx(path)
    assert not with_head.is_synthetic and with_head.onnx_path == path
    assert with_head.output_name == "leaf/logits"
    assert with_head.model_id == nh.model_id  # the same network and seed: the same id (issue 12)
    for p in good[:3]:
        assert with_head.hash(p) == nh.hash(p)


def test_seeds(nh, demo_dir, cache, tmp_path, good):
    matrix = np.random.default_rng(5).standard_normal((96, 128)).astype(np.float32)
    custom = NeuralHash.from_onnx(nh.onnx_path, seed=matrix)
    assert custom.model_id != nh.model_id
    assert custom.hash(good[0]) != nh.hash(good[0])
    seed_file = tmp_path / "seed.dat"
    seed_file.write_bytes(bytes(HEADER_SIZE) + default_seed_matrix().astype("<f4").tobytes())
    assert seed_file.stat().st_size == FILE_SIZE
    assert NeuralHash.from_onnx(nh.onnx_path, seed=seed_file).model_id == NeuralHash.from_onnx(nh.onnx_path).model_id
    # a seed file beside the Espresso files is used when no seed is given
    folder = tmp_path / "model"
    shutil.copytree(demo_dir, folder)
    (folder / "neuralhash_128x96_seed1.dat").write_bytes(bytes(HEADER_SIZE) + matrix.astype("<f4").tobytes())
    beside = NeuralHash.from_espresso(folder, cache_dir=cache)
    assert beside.model_id == NeuralHash.from_onnx(nh.onnx_path, seed=matrix).model_id
    assert beside.hash(good[0]) == custom.hash(good[0])
    assert NeuralHash.from_espresso(folder, cache_dir=cache, seed=default_seed_matrix()).hash(good[0]) == nh.hash(good[0])
    with pytest.raises(NeuralHashError, match="96x128"):
        NeuralHash.from_onnx(nh.onnx_path, seed=np.zeros((96, 127), np.float32))
    with pytest.raises(NeuralHashError):
        NeuralHash.from_onnx(nh.onnx_path, seed=tmp_path / "missing.dat")


def test_from_onnx_errors(tmp_path):
    with pytest.raises(NeuralHashError, match="no such"):
        NeuralHash.from_onnx(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(NeuralHashError, match="bad.onnx"):
        NeuralHash.from_onnx(bad)


def test_from_source_dispatch(nh, demo_dir, cache, monkeypatch, good):
    assert NeuralHash.from_source("demo", cache_dir=cache).is_synthetic
    from_onnx = NeuralHash.from_source(str(nh.onnx_path))
    assert not from_onnx.is_synthetic and from_onnx.model_id == nh.model_id
    assert NeuralHash.from_source(demo_dir, cache_dir=cache).model_id == nh.model_id
    monkeypatch.setenv("NEURALHASH_MODEL_PATH", str(demo_dir))
    system = NeuralHash.from_source(None, cache_dir=cache)
    assert system.model_id == nh.model_id and system.hash(good[2]) == nh.hash(good[2])
    monkeypatch.setenv("NEURALHASH_MODEL_PATH", "")
    with pytest.raises(ModelNotFoundError):
        NeuralHash.from_source(None, cache_dir=cache)
    with pytest.raises(NeuralHashError):
        NeuralHash.from_source(str(demo_dir / "nothing-here"), cache_dir=cache)


# -- find_system_model -----------------------------------------------------------------------------


def test_find_system_model_searches_the_environment_only(tmp_path, monkeypatch):
    empty, fp16, both = tmp_path / "empty", tmp_path / "fp16", tmp_path / "both"
    for folder in (empty, fp16, both):
        folder.mkdir()
    (fp16 / "NeuralHashv3b_fp16-current.espresso.net").write_bytes(b"x")
    (both / "NeuralHashv3b_fp16-current.espresso.net").write_bytes(b"x")
    (both / "NeuralHashv3b-current.espresso.net").write_bytes(b"x")
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setenv("NEURALHASH_MODEL_PATH", os.pathsep.join([str(empty), str(fp16)]))
    assert find_system_model() == fp16 / "NeuralHashv3b_fp16-current.espresso.net"
    monkeypatch.setenv("NEURALHASH_MODEL_PATH", str(both))
    assert find_system_model() == both / "NeuralHashv3b-current.espresso.net"
    monkeypatch.setenv("NEURALHASH_MODEL_PATH", os.pathsep.join([str(empty), str(tmp_path / "missing")]))
    with pytest.raises(ModelNotFoundError) as info:
        find_system_model()
    message = str(info.value)
    assert str(empty) in message and str(tmp_path / "missing") in message
    assert "NEURALHASH_MODEL_PATH" in message and "/System/Library" not in message


def test_find_system_model_without_the_environment(monkeypatch):
    monkeypatch.delenv("NEURALHASH_MODEL_PATH", raising=False)
    monkeypatch.setattr(sys, "platform", "darwin")
    if not Path("/System/Library/Frameworks/Vision.framework").exists():
        with pytest.raises(ModelNotFoundError) as info:
            find_system_model()
        assert "/System/Library/Frameworks/Vision.framework/Versions/A/Resources" in str(info.value)
        assert "/System/Library/Frameworks/Vision.framework/Resources" in str(info.value)
    monkeypatch.setattr(sys, "platform", "linux")
    with pytest.raises(ModelNotFoundError, match="macOS"):
        find_system_model()


# -- inputs ------------------------------------------------------------------------------------------


def test_every_input_kind_gives_the_same_hash(nh, good):
    path = good[0]
    want = nh.hash(path)
    assert want.values is not None and want.values.dtype == np.float32
    assert want == Hash.from_bits(want.values >= 0)
    assert nh.hash(Path(path)) == want
    assert nh.hash(Path(path).read_bytes()) == want
    with Image.open(path) as img:
        assert nh.hash(img) == want
        arr = np.array(img.convert("RGB"))
    assert nh.hash(arr) == want
    assert nh.hash(np.asfortranarray(arr)) == want
    gray = np.array(Image.open(path).convert("L"))
    assert nh.hash(gray) == nh.hash(Image.fromarray(gray))


@pytest.mark.parametrize(
    "arr",
    [np.zeros((10, 10, 3), np.float32), np.zeros((10, 10, 4), np.uint8), np.zeros((10,), np.uint8),
     np.zeros((0, 10, 3), np.uint8), np.zeros((10, 10, 3), np.uint16)],
)
def test_bad_arrays(nh, arr):
    with pytest.raises(ImageError, match="<array>"):
        nh.hash(arr)


def test_hash_raises_image_errors_naming_the_path(nh, tmp_path):
    with pytest.raises(ImageError, match=f"^{tmp_path / 'nope.jpg'}: no such file"):
        nh.hash(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match="unsupported input type int"):
        nh.hash(42)
    with pytest.raises(ImageError, match="<bytes>: empty"):
        nh.hash(b"")


# -- images that fight back -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict[str, tuple[str, str]]:
    """name -> (path, a phrase its error must contain)."""
    folder = tmp_path_factory.mktemp("hostile")
    out = {}
    buf = io.BytesIO()
    picture(600, 400, 9).save(buf, "JPEG", quality=90)
    jpeg = buf.getvalue()
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    out["truncated jpeg"] = (str(folder / "truncated.jpg"), "truncated")
    buf = io.BytesIO()
    picture(300, 300, 10).save(buf, "PNG")
    png = buf.getvalue()
    (folder / "truncated.png").write_bytes(png[: len(png) - 200])
    out["truncated png"] = (str(folder / "truncated.png"), "truncated")
    corrupt = bytearray(png)
    middle = len(corrupt) // 2
    corrupt[middle : middle + 64] = bytes(64)
    (folder / "corrupt.png").write_bytes(bytes(corrupt))
    out["corrupt png"] = (str(folder / "corrupt.png"), "corrupt")
    (folder / "corrupt.jpg").write_bytes(jpeg[:20] + os.urandom(500))
    out["corrupt jpeg"] = (str(folder / "corrupt.jpg"), "")
    (folder / "notes.jpg").write_text("these are not the pixels you are looking for\n")
    out["text file"] = (str(folder / "notes.jpg"), "not an image")
    (folder / "empty.png").write_bytes(b"")
    out["zero bytes"] = (str(folder / "empty.png"), "empty file")
    out["missing"] = (str(folder / "missing.png"), "no such file")
    (folder / "folder.jpg").mkdir()
    out["directory"] = (str(folder / "folder.jpg"), "is a directory")
    return out


@pytest.mark.parametrize("workers", [0, 2])
def test_hostile_files_are_per_item_errors(nh, good, hostile, workers):
    items = []
    for i, (path, _) in enumerate(hostile.values()):
        items += [path, good[i % len(good)]]
    results = list(nh.hash_many(items, batch_size=3, workers=workers))
    assert [r.item for r in results] == items
    phrases = {path: phrase for path, phrase in hostile.values()}
    for r in results:
        if r.item in phrases:
            assert not r.ok and r.hash is None
            assert r.error.startswith(f"{r.item}: "), r.error
            assert phrases[r.item] in r.error, r.error
        else:
            assert r.ok and r.hash == nh.hash(r.item)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize("workers", [0, 2])
def test_decompression_bombs_are_errors(nh, tmp_path, monkeypatch, workers):
    warning_size = tmp_path / "warns.png"  # between MAX_IMAGE_PIXELS and twice that: Pillow only warns
    picture(40, 40).save(warning_size)
    error_size = tmp_path / "errors.png"
    picture(100, 100).save(error_size)
    small = [tmp_path / "small0.png", tmp_path / "small1.jpg"]
    for i, path in enumerate(small):
        picture(30, 20, i).save(path)
    filters = list(warnings.filters)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    items = [str(small[0]), str(warning_size), str(error_size), str(small[1])]
    results = list(nh.hash_many(items, workers=workers))
    assert [r.ok for r in results] == [True, False, False, True]
    for r in results[1:3]:
        assert r.error.startswith(f"{r.item}: image too large") and "decompression bomb" in r.error
    with pytest.raises(ImageError, match="decompression bomb"):
        nh.hash(warning_size)
    assert warnings.filters == filters
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000_000)
    assert nh.hash(warning_size).hex


def test_library_prints_nothing(nh, good, hostile, capfd):
    items = [good[0], *(p for p, _ in hostile.values()), good[1]]
    list(nh.hash_many(items, workers=2))
    list(nh.hash_many(items, workers=0))
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""


# -- HEIC and AVIF ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def heic_bytes() -> bytes:
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    buf = io.BytesIO()
    try:
        picture(320, 240, 3).save(buf, "HEIF", quality=90)
    except Exception as exc:
        pytest.skip(f"pillow-heif cannot encode here ({exc})")
    return buf.getvalue()


def test_heic_loads_with_pillow_heif(nh, heic_bytes, tmp_path):
    path = tmp_path / "photo.heic"
    path.write_bytes(heic_bytes)
    with Image.open(io.BytesIO(heic_bytes)) as img:
        want = nh.hash(img.convert("RGB"))
    assert nh.hash(path) == want
    assert nh.hash(heic_bytes) == want
    results = list(nh.hash_many([str(path), str(path)], workers=2))  # workers register the opener too
    assert all(r.ok and r.hash == want for r in results)


def test_heic_without_pillow_heif_names_the_extra(nh, heic_bytes, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # import pillow_heif now raises ImportError
    monkeypatch.setattr(image_module, "_HEIF_STATE", None)
    disguised = tmp_path / "really-a-heic.jpg"  # found by its ftyp brand, not by its name
    disguised.write_bytes(heic_bytes)
    named = tmp_path / "photo.HEIC"
    named.write_bytes(heic_bytes)
    message = ("HEIC/HEIF support needs the optional extra: pip install '.[heif]' in a checkout of neuralhash "
               "(or 'WHEEL[heif]' for a wheel built from it)")
    for source, name in ((disguised, str(disguised)), (named, str(named)), (heic_bytes, "<bytes>")):
        with pytest.raises(ImageError) as info:
            nh.hash(source)
        assert str(info.value) == f"{name}: {message}"
    results = list(nh.hash_many([str(named)], workers=0))
    assert results[0].error == f"{named}: {message}"


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow has no AVIF support")
def test_avif_loads_natively(nh, tmp_path):
    path = tmp_path / "photo.avif"
    picture(300, 200, 4).save(path, "AVIF", quality=90)
    with Image.open(path) as img:
        assert img.format == "AVIF"
        want = nh.hash(img.convert("RGB"))
    assert nh.hash(path) == want


def test_avif_without_support_is_a_clear_error(nh, tmp_path, monkeypatch):
    header = b"\x00\x00\x00\x20ftypavif\x00\x00\x00\x00avifmif1miafMA1B" + bytes(64)
    path = tmp_path / "photo.avif"
    path.write_bytes(header)
    monkeypatch.setattr(image_module, "avif_available", lambda: False)
    with pytest.raises(ImageError, match="AVIF support needs"):
        nh.hash(path)


def test_sniff_container():
    assert image_module.sniff_container(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic") == "heif"
    assert image_module.sniff_container(b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1heic") == "heif"
    assert image_module.sniff_container(b"\x00\x00\x00\x18ftypavif\x00\x00\x00\x00avifmif1") == "avif"
    assert image_module.sniff_container(b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1avif") == "avif"
    assert image_module.sniff_container(b"\x00\x00\x00\x18ftypisom\x00\x00\x00\x00isommp41") is None
    assert image_module.sniff_container(b"\xff\xd8\xff\xe0" + bytes(40)) is None


# -- fast mode ----------------------------------------------------------------------------------------------


def resize_input_sizes(monkeypatch) -> list[tuple[int, int]]:
    sizes: list[tuple[int, int]] = []
    original = Image.Image.resize

    def spy(self, size, *args, **kwargs):
        sizes.append(self.size)
        return original(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", spy)
    return sizes


def test_fast_mode_reduces_large_images_but_never_below_the_limits(nh, tmp_path, monkeypatch):
    small = tmp_path / "small.jpg"
    picture(700, 500, 1).save(small, quality=90)
    big_jpeg = tmp_path / "big.jpg"
    picture(3000, 2000, 2).save(big_jpeg, quality=90)
    odd_jpeg = tmp_path / "odd.jpg"
    picture(1000, 730, 3).save(odd_jpeg, quality=90)
    big_png = tmp_path / "big.png"
    picture(3000, 1600, 4).save(big_png)
    assert nh.hash(small, fast=True) == nh.hash(small)  # nothing to reduce: identical pixels
    sizes = resize_input_sizes(monkeypatch)
    for path in (big_jpeg, odd_jpeg, big_png):
        pixels = image_module.decode(path, fast=True)
        assert pixels.shape == (360, 360, 3) and pixels.dtype == np.uint8
    assert sizes[0] == (1500, 1000)  # JPEG DCT scaling by 2: by 4 would go below 720 (2 x 360)
    assert sizes[1] == (1000, 730)  # no DCT scaling: 730 / 2 < 720
    assert sizes[2] == (1500, 800)  # Image.reduce(2): no less than 720
    assert all(min(s) >= 720 for s in sizes)
    monkeypatch.undo()
    exact, fast = nh.hash(big_jpeg), nh.hash(big_jpeg, fast=True)
    assert exact.hamming(fast) < 48  # close, but not promised to be equal
    results = list(nh.hash_many([str(big_jpeg), str(big_png)], workers=0, fast=True))
    assert results[0].hash == fast


# -- hash_many ------------------------------------------------------------------------------------------------


def test_hash_many_validates_arguments(nh):
    with pytest.raises(NeuralHashError, match="batch_size"):
        nh.hash_many([], batch_size=0)
    with pytest.raises(NeuralHashError, match="workers"):
        nh.hash_many([], workers=-1)
    with pytest.raises(NeuralHashError, match="single image"):
        nh.hash_many("photo.jpg")
    assert list(nh.hash_many([])) == []
    assert list(nh.hash_many(iter([]), workers=2)) == []


def test_hash_many_mixed_inputs_keep_order_and_placeholders(nh, good):
    with Image.open(good[1]) as img:
        pil = img.copy()
    arr = np.array(Image.open(good[2]).convert("RGB"))
    data = Path(good[3]).read_bytes()
    items = [good[0], pil, Path(good[4]), arr, data, b"", np.zeros(3, np.float64), good[5]]
    results = list(nh.hash_many(items, batch_size=2, workers=2))
    assert [r.item for r in results] == [good[0], "<image>", Path(good[4]), "<array>", "<bytes>", "<bytes>",
                                         "<array>", good[5]]
    assert results[2].item is items[2]  # paths exactly as given
    assert [r.ok for r in results] == [True, True, True, True, True, False, False, True]
    assert results[1].hash == nh.hash(good[1]) and results[3].hash == nh.hash(good[2])
    assert results[4].hash == nh.hash(good[3]) and results[2].path == good[4]


def test_a_single_item_does_not_start_a_pool(nh, good, monkeypatch):
    def no_pool(*args, **kwargs):
        raise AssertionError("a pool was started for one item")

    monkeypatch.setattr(pipeline, "ProcessPoolExecutor", no_pool)
    assert [r.hash for r in nh.hash_many([good[0]], workers=4)] == [nh.hash(good[0])]
    assert [r.hash for r in nh.hash_many(good[:3], workers=0)] == [nh.hash(p) for p in good[:3]]


def test_lazy_input_bounded_window_and_early_exit(nh, good):
    pulled = 0

    def endless():
        nonlocal pulled
        while True:
            for p in good:
                pulled += 1
                yield p

    workers, batch_size = 2, 4
    gen = nh.hash_many(endless(), batch_size=batch_size, workers=workers)
    consumed = 0
    most_ahead = 0
    for r in gen:
        assert r.ok
        consumed += 1
        most_ahead = max(most_ahead, pulled - consumed)
        if consumed == 30:
            break
    gen.close()
    window = workers * 4 + batch_size
    assert most_ahead <= window + batch_size + 1
    assert multiprocessing.active_children() == []


class WorkerKiller(os.PathLike):
    """A path whose unpickling (in a worker) kills the worker process."""

    def __fspath__(self) -> str:
        return "/nonexistent/killer.png"

    def __reduce__(self):
        return (os._exit, (3,))

    def __repr__(self) -> str:
        return "WorkerKiller()"


def test_a_crashing_decoder_only_fails_its_own_item(nh, good):
    killer = WorkerKiller()
    items = [good[0], good[1], killer, good[2], good[3], good[4]]
    results = list(nh.hash_many(items, batch_size=2, workers=2))
    assert [r.item for r in results] == items
    assert [r.ok for r in results] == [True, True, False, True, True, True]
    assert "crashed" in results[2].error
    for r in results:
        if r.ok:
            assert r.hash == nh.hash(r.item)
    assert multiprocessing.active_children() == []


def test_threads_can_share_a_model_and_leave_the_warning_filters_alone(nh, good, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    palette = tmp_path / "palette_alpha.png"  # Pillow warns when converting this one to RGB
    rgba = picture(200, 150, 7).convert("RGBA")
    rgba.putalpha(128)
    rgba.quantize(colors=32).save(palette)
    paths = [str(palette), *good[:5]]
    expected = [nh.hash(p) for p in paths]
    filters = list(warnings.filters)
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(nh.hash, paths * 6))
    assert results == expected * 6
    assert shown == []
    assert warnings.filters == filters


class UnpicklablePath(os.PathLike):
    """A path object that cannot be sent to a worker process."""

    def __init__(self, path: str):
        self.path = path

    def __fspath__(self) -> str:
        return self.path

    def __reduce__(self):
        raise TypeError("no pickling")


def test_items_that_cannot_go_to_a_worker_are_decoded_here(nh, good):
    items = [good[0], UnpicklablePath(good[1]), good[2]]
    results = list(nh.hash_many(items, workers=2))
    assert [r.item for r in results] == items
    assert [r.hash for r in results] == [nh.hash(p) for p in good[:3]]


def test_a_missing_execution_provider_is_an_error_listing_the_installed_ones(nh, demo_dir, cache):
    with pytest.raises(NeuralHashError, match="NoSuchExecutionProvider is not installed.*CPUExecutionProvider"):
        NeuralHash.from_onnx(nh.onnx_path, providers=["NoSuchExecutionProvider"])
    with pytest.raises(NeuralHashError, match="not installed"):
        NeuralHash.from_espresso(demo_dir, cache_dir=cache, providers=["NoSuchExecutionProvider"])


def test_default_workers(nh, good):
    results = list(nh.hash_many(good))  # workers=None: os.cpu_count() processes
    assert [r.hash for r in results] == [nh.hash(p) for p in good]


class Interrupted(Exception):
    """Like an exception that a signal handler raises."""


def test_only_onnxruntime_failures_become_neuralhash_errors(nh, good, monkeypatch):
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail

    model = NeuralHash.from_onnx(nh.onnx_path)

    class Session:
        def __init__(self, exc):
            self.exc = exc

        def run(self, *args, **kwargs):
            raise self.exc

    monkeypatch.setattr(model, "_session", Session(Fail("out of memory")))
    with pytest.raises(NeuralHashError, match="onnxruntime failed on a batch of 1 .*out of memory"):
        model.hash(good[0])
    monkeypatch.setattr(model, "_session", Session(Interrupted()))
    with pytest.raises(Interrupted):
        model.hash(good[0])
    with pytest.raises(Interrupted):
        list(model.hash_many(good[:4], workers=2))
    assert multiprocessing.active_children() == []


def test_hash_many_from_a_program_on_stdin(good, cache):
    """`python -` names a main file that does not exist: workers could not start, so decoding stays in-process."""
    import subprocess
    import textwrap

    program = textwrap.dedent(f"""
        import os
        os.environ["NEURALHASH_CACHE"] = {str(cache)!r}
        from neuralhash.hashing import NeuralHash
        nh = NeuralHash.demo()
        for r in nh.hash_many({[str(p) for p in good[:3]]!r}, workers=2):
            print(r.hash.hex if r.ok else "ERROR " + r.error)
    """)
    proc = subprocess.run([sys.executable, "-"], input=program, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    nh = NeuralHash.demo(cache_dir=cache)
    assert proc.stdout.split() == [nh.hash(p).hex for p in good[:3]]


def test_missing_provider_is_not_mistaken_for_a_bad_cache(nh, demo_dir, cache):
    from neuralhash.errors import ProviderError

    cached = sorted((cache / "onnx").glob("*.onnx"))
    assert cached, "the demo model should be cached by now"
    before = {p: p.stat().st_mtime_ns for p in cached}
    with pytest.raises(ProviderError, match="NoSuchExecutionProvider is not installed"):
        NeuralHash.from_espresso(demo_dir, cache_dir=cache, providers=["NoSuchExecutionProvider"])
    assert {p: p.stat().st_mtime_ns for p in cached} == before  # not converted again and rewritten


# -- a non-finite network output is an error, never a hash (issue 10, item 4) -----------------


@pytest.fixture(scope="module")
def brightness_images(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("nonfinite")
    out = {}
    for name, colour in (("black", (0, 0, 0)), ("grey", (128, 128, 128)), ("orange", (250, 140, 10))):
        out[name] = folder / f"{name}.png"
        Image.new("RGB", (40, 30), colour).save(out[name])
    return out


def _expected_hash(nh: NeuralHash, path: Path) -> Hash:
    """The hash computed by hand: the network's logits, then seed @ logits (float32), bit = v >= 0."""
    pixels = image_module.decode(path)
    logits = nh.logits(image_module.to_input(pixels)[None])[0]
    v = nh.seed.dot(logits)
    assert np.isfinite(v).all()
    return Hash.from_bits((v >= 0).astype(np.uint8))


@pytest.mark.parametrize("workers", [0, 2])
def test_nan_output_is_a_per_image_error(tmp_path, brightness_images, workers):
    nh = NeuralHash.from_onnx(tiny_brightness_onnx(tmp_path / "log.onnx", log_of_brightness=True))
    black, grey, orange = (str(brightness_images[k]) for k in ("black", "grey", "orange"))
    assert not np.isfinite(nh.logits(image_module.to_input(image_module.decode(black))[None])).all()
    results = list(nh.hash_many([grey, black, orange, black], workers=workers, batch_size=4))
    assert [r.ok for r in results] == [True, False, True, False]
    for r in (results[1], results[3]):
        assert r.hash is None and r.error.startswith(f"{black}: the network's output is not finite")
        assert "NaN" in r.error or "infinity" in r.error
    assert results[0].hash == _expected_hash(nh, grey) and results[2].hash == _expected_hash(nh, orange)
    assert results[0].hash != results[2].hash
    with pytest.raises(NeuralHashError, match=f"^{black}: the network's output is not finite"):
        nh.hash(black)
    with pytest.raises(NeuralHashError, match="^image 1 of 2: the network's output is not finite"):
        nh.hash_pixels([image_module.decode(grey), image_module.decode(black)])


def test_overflowing_projection_is_an_error(tmp_path, brightness_images):
    nh = NeuralHash.from_onnx(tiny_brightness_onnx(tmp_path / "huge.onnx", log_of_brightness=False))
    grey = brightness_images["grey"]
    logits = nh.logits(image_module.to_input(image_module.decode(grey))[None])
    assert np.isfinite(logits).all() and np.abs(logits).max() > 1e37  # finite, but seed @ logits is not
    with pytest.raises(NeuralHashError, match="the projection seed @ logits is not finite"):
        nh.hash(grey)
    (result,) = nh.hash_many([str(grey)], workers=0)
    assert not result.ok and "not finite" in result.error


@pytest.mark.parametrize("values", [np.full(96, np.nan), np.r_[np.ones(95), np.inf]])
def test_hash_refuses_non_finite_projected_values(values):
    with pytest.raises(NeuralHashError, match="not finite"):
        Hash.from_projection(values)
    with pytest.raises(NeuralHashError, match="not finite"):
        Hash.from_bits(np.zeros(96, np.uint8), values)


def test_non_finite_outputs_in_the_commands_and_the_robustness_measure(tmp_path, brightness_images, capsys):
    from neuralhash.cli import main
    from neuralhash.robustness import default_edits, measure

    model = str(tiny_brightness_onnx(tmp_path / "log.onnx", log_of_brightness=True))
    nh = NeuralHash.from_onnx(model)
    black, grey = str(brightness_images["black"]), str(brightness_images["grey"])
    assert main(["hash", "--model", model, "--workers", "0", black, grey]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"{_expected_hash(nh, grey).hex}  {grey}"]
    assert err.startswith(f"neuralhash: {black}: the network's output is not finite")
    assert main(["compare", "--model", model, black, grey]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "not finite" in err and len(err.splitlines()) == 1

    edits = [e for e in default_edits() if e.family in ("brightness", "hflip")]
    result = measure([grey, black], nh, edits=edits, hashers=["NeuralHash"], workers=0)
    # the black original and its copies have no hash; the grey ones all hash (to the same bits: flat images)
    assert [(f.image, f.edit) for f in result.failures if f.image == black][:1] == [(black, None)]
    assert all("not finite" in f.reason for f in result.failures)
    assert not any(f.image == grey for f in result.failures)


# -- max_pixels: a documented limit instead of Pillow's global (issue 10, item 16) ------------


@pytest.mark.parametrize("workers", [0, 2])
def test_max_pixels_is_an_argument_passed_to_the_workers(nh, tmp_path, workers):
    big, small = tmp_path / "big.png", tmp_path / "small.png"
    picture(200, 100).save(big)  # 20,000 pixels
    picture(50, 40, 1).save(small)
    before = Image.MAX_IMAGE_PIXELS
    items = [str(small), str(big), str(small), str(big)]
    results = list(nh.hash_many(items, workers=workers, max_pixels=10_000))
    assert [r.ok for r in results] == [True, False, True, False]
    assert results[1].error == (f"{big}: image too large: 200 x 100 = 20,000 pixels, above the limit of 10,000; "
                                "refused as a possible decompression bomb (raise the limit with --max-pixels N, "
                                "or max_pixels= in Python)")
    assert all(r.ok for r in nh.hash_many(items, workers=workers, max_pixels=20_000))
    assert Image.MAX_IMAGE_PIXELS == before  # never changed, in this process at least


def test_max_pixels_overrides_pillows_global_both_ways(nh, tmp_path, monkeypatch):
    path = tmp_path / "p.png"
    picture(300, 200).save(path)
    want = nh.hash(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow would refuse it (above twice the limit)
    with pytest.raises(ImageError, match="above the limit of 1,000"):
        nh.hash(path)
    assert nh.hash(path, max_pixels=60_000) == want
    assert nh.hash(path.read_bytes(), max_pixels=60_000) == want
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # Pillow: no limit
    assert nh.hash(path) == want
    with pytest.raises(ImageError, match="above the limit of 59,999"):
        nh.hash(path, max_pixels=59_999)
    with Image.open(path) as lazy:  # opened, not decoded yet: refused too
        with pytest.raises(ImageError, match=r"^<image>: image too large"):
            nh.hash(lazy, max_pixels=100)


def test_max_pixels_default_of_a_model(demo_dir, cache, tmp_path):
    path = tmp_path / "p.png"
    picture(300, 200).save(path)
    limited = NeuralHash.from_source(str(demo_dir), cache_dir=cache, max_pixels=50_000)
    assert limited.max_pixels == 50_000
    with pytest.raises(ImageError, match="above the limit of 50,000"):
        limited.hash(path)
    (result,) = limited.hash_many([str(path)], workers=0)
    assert not result.ok and "above the limit of 50,000" in result.error
    assert limited.hash(path, max_pixels=60_000).hex  # a call's own limit wins


@pytest.mark.parametrize("bad", [0, -1, 1.5, "100", True])
def test_max_pixels_must_be_a_positive_integer(nh, good, bad):
    with pytest.raises(NeuralHashError, match="max_pixels must be a positive integer"):
        nh.hash(good[0], max_pixels=bad)
    with pytest.raises(NeuralHashError, match="max_pixels must be a positive integer"):
        nh.hash_many(good, max_pixels=bad)


# -- hash_many from a script without `if __name__ == "__main__":` (issue 10, item 12) ---------

_UNGUARDED = """
import os
os.environ["NEURALHASH_CACHE"] = {cache!r}
from neuralhash import NeuralHash

nh = NeuralHash.demo()
for r in nh.hash_many({paths!r}, workers=2):
    print(r.hash.hex if r.ok else "ERROR " + r.error)
"""

_UNGUARDED_MAIN = """
import os
os.environ["NEURALHASH_CACHE"] = {cache!r}
from neuralhash import NeuralHash


def main():
    nh = NeuralHash.demo()
    for r in nh.hash_many({paths!r}, workers=2):
        print(r.hash.hex if r.ok else "ERROR " + r.error)


main()
"""

_GUARDED = """
import os
os.environ["NEURALHASH_CACHE"] = {cache!r}
from neuralhash import NeuralHash

if __name__ == "__main__":
    import multiprocessing
    nh = NeuralHash.demo()
    started = 0
    for r in nh.hash_many({paths!r}, workers=2):
        print(r.hash.hex if r.ok else "ERROR " + r.error)
        started = max(started, len(multiprocessing.active_children()))
    print("workers", started)
"""


@pytest.mark.parametrize("template,guarded", [(_UNGUARDED, False), (_UNGUARDED_MAIN, False), (_GUARDED, True)])
def test_hash_many_from_a_plain_script(good, cache, tmp_path, template, guarded):
    import subprocess

    script = tmp_path / "script.py"
    paths = [str(p) for p in good[:4]]
    script.write_text(template.format(cache=str(cache), paths=paths))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    nh = NeuralHash.demo(cache_dir=cache)
    lines = proc.stdout.split("\n")
    assert lines[:4] == [nh.hash(p).hex for p in paths]
    assert "Traceback" not in proc.stderr and "crashed" not in proc.stderr
    if guarded:  # decoded in worker processes, and nothing said
        assert lines[4] == "workers 2" and proc.stderr == ""
    else:  # decoded here, with one warning naming the guard
        assert proc.stderr.count("RuntimeWarning") == 1 and 'if __name__ == "__main__":' in proc.stderr
        assert len(proc.stderr.splitlines()) <= 2  # the warning and its source line


def test_guarded_lines_of_a_script(tmp_path):
    script = tmp_path / "s.py"
    script.write_text(
        "import x\n"                             # 1
        "def f():\n"                             # 2
        "    if __name__ == '__main__':\n"       # 3: in a function, not a guard of the script
        "        pass\n"                         # 4
        "if '__main__' == __name__:\n"           # 5
        "    a = 1\n"                            # 6
        "    b = 2\n"                            # 7
        "try:\n"                                 # 8
        "    if __name__ != '__main__':\n"       # 9
        "        pass\n"                         # 10
        "    else:\n"                            # 11
        "        c = 3\n"                        # 12
        "except ImportError:\n"                  # 13
        "    pass\n"                             # 14
    )
    assert sorted(pipeline._guarded_lines(str(script))) == [(6, 7), (12, 12)]
    assert pipeline._guarded_lines(str(tmp_path / "missing.py")) is None


def test_a_package_main_run_with_dash_m_is_not_rerun(good, cache, tmp_path):
    """`python -m pkg` runs pkg/__main__.py, which multiprocessing never re-imports: no guard needed there."""
    import subprocess

    package = tmp_path / "runner"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(_UNGUARDED.format(cache=str(cache), paths=[str(p) for p in good[:3]]))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"),
                                                        str(tmp_path)])}
    proc = subprocess.run([sys.executable, "-m", "runner"], capture_output=True, text=True, timeout=300, env=env,
                          cwd=tmp_path)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr[-3000:]
    nh = NeuralHash.demo(cache_dir=cache)
    assert proc.stdout.split() == [nh.hash(p).hex for p in good[:3]]
