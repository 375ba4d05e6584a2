"""Shared test fixtures.

Apple's real graph and shape files live outside the repository, in
``../shared/fixtures/neuralhash-v3b`` seen from the project root, or under the
folder named by ``$NEURALHASH_SHARED`` (``$NEURALHASH_SHARED/fixtures/...``)
when it is set. Tests that need them skip cleanly when that folder is absent;
every test module takes these paths from here.
"""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
#: Environment variable: the folder holding ``fixtures/`` (default: ``../shared`` beside the project).
SHARED_ENV = "NEURALHASH_SHARED"
SHARED = Path(os.environ.get(SHARED_ENV) or ROOT.parent / "shared").expanduser()
FIXTURES = SHARED / "fixtures"
#: The real compiled Core ML models (MIT) of ../shared/fixtures/coreml-wild.
WILD_DIR = FIXTURES / "coreml-wild"
REAL_DIR = FIXTURES / "neuralhash-v3b"
REAL_NET = REAL_DIR / "NeuralHashv3b-current.espresso.net"
REAL_SHAPE = REAL_DIR / "NeuralHashv3b-current.espresso.shape"
REAL_SEED = REAL_DIR / "neuralhash_128x96_seed1.dat"


def assert_close(actual, expected, rtol: float, *, what: str = "") -> None:
    """``max |actual - expected| <= rtol * max |expected|``: a tolerance that scales with the values.

    Float results differ by a few units in the last place between CPUs (AVX2,
    AVX-512, NEON), BLAS builds and thread counts, and those units are relative
    to the magnitude of the values: an absolute tolerance that holds for values
    near 1 fails for values near 60. The scale is the largest |expected|, not
    each element's, so values that cross zero are compared at the array's scale.
    Shapes must agree and every value must be finite.
    """
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    label = f"{what}: " if what else ""
    assert actual.shape == expected.shape, f"{label}shape {actual.shape} != {expected.shape}"
    assert np.isfinite(actual).all() and np.isfinite(expected).all(), f"{label}non-finite values"
    if actual.size == 0:
        return
    scale = float(np.abs(expected).max())
    error = float(np.abs(actual - expected).max())
    assert error <= rtol * scale, (
        f"{label}max abs error {error:.3g} on values up to {scale:.3g} "
        f"(relative {error / scale if scale else float('inf'):.3g} > rtol {rtol:g})"
    )


@pytest.fixture(scope="session")
def real_dir() -> Path:
    if not REAL_NET.is_file() or not REAL_SHAPE.is_file():
        pytest.skip(f"Apple's NeuralHash structure files are not present in {REAL_DIR} (set ${SHARED_ENV})")
    return REAL_DIR


@pytest.fixture(scope="module")
def module_env(tmp_path_factory):
    """A demo-model cache of the module's own (the model is built once per module), no system model path."""
    mp = pytest.MonkeyPatch()
    mp.setenv("NEURALHASH_CACHE", str(tmp_path_factory.mktemp("nh-cache")))
    mp.delenv("NEURALHASH_MODEL_PATH", raising=False)
    yield
    mp.undo()


def draw_image(path: Path, seed: int, size=(80, 60)) -> Path:
    """A small deterministic picture (gradients and noise), PNG or JPEG by the file's suffix."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * (seed + 1) * 3) % 256, (y * (seed + 2) * 5) % 256, ((x + y) * 7 + seed * 40) % 256], -1)
    arr = np.clip(base + rng.integers(0, 60, (h, w, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    Image.fromarray(arr).save(path, format=fmt)
    return path


def draw_shapes(w: int, h: int, seed: int = 0, count: int = 12, rectangles: bool = True) -> Image.Image:
    """Random filled ellipses (and rectangles) on a random background: a picture with edges and flat areas."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (w, h), tuple(int(c) for c in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(count):
        x0, x1 = sorted(rng.integers(0, w, 2).tolist())
        y0, y1 = sorted(rng.integers(0, h, 2).tolist())
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.rectangle if rectangles and rng.random() >= 0.5 else draw.ellipse
        shape([x0, y0, x1, y1], fill=fill)
    return img


def blank_png(path: Path, width: int, height: int, colour=(255, 255, 255)) -> Path:
    """A ``width`` x ``height`` RGB PNG of one colour, written row by row: a 99-megapixel
    image costs a few hundred KB on disk and about nothing in memory to make."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + bytes(colour) * width  # filter type 0, then the pixels
    packer = zlib.compressobj(9)
    parts = []
    for _ in range(height):
        parts.append(packer.compress(row))
    parts.append(packer.flush())
    with open(path, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n")
        fh.write(chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)))
        fh.write(chunk(b"IDAT", b"".join(parts)))
        fh.write(chunk(b"IEND", b""))
    return path


def tiny_brightness_onnx(path: Path, *, log_of_brightness: bool) -> Path:
    """A model NeuralHash accepts: [batch, 3, 360, 360] -> [batch, 128] from the per-channel means.

    ``log_of_brightness``: logits = log(mean + 1) @ W, -inf (then NaN) for an
    all-black image only. Otherwise logits = (mean + 2) @ W with W = 1e37: every
    logit is finite, but the float32 projection seed @ logits overflows.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)
    w = rng.standard_normal((3, 128)).astype(np.float32) if log_of_brightness else np.full((3, 128), 1e37, np.float32)
    nodes = [
        helper.make_node("ReduceMean", ["image", "axes"], ["mean"], keepdims=0),
        helper.make_node("Add", ["mean", "shift"], ["shifted"]),
    ]
    if log_of_brightness:
        nodes.append(helper.make_node("Log", ["shifted"], ["features"]))
    else:
        nodes.append(helper.make_node("Identity", ["shifted"], ["features"]))
    nodes.append(helper.make_node("MatMul", ["features", "w"], ["logits"]))
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 360, 360])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 128])],
        initializer=[numpy_helper.from_array(np.array([2, 3], np.int64), "axes"),
                     numpy_helper.from_array(np.float32(1.0 if log_of_brightness else 2.0), "shift"),
                     numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


def threatexchange_runner(tmp_path_factory, *, text: bool = False):
    """``run(*args, check=True, **env)``: the real ``threatexchange`` CLI in a subprocess, with a
    temporary HOME, this tree's ``neuralhash`` importable and the demo model (skips without the CLI)."""
    beside = Path(sys.executable).parent / "threatexchange"
    exe = str(beside) if beside.is_file() else shutil.which("threatexchange")
    if exe is None:
        pytest.skip("the threatexchange command is not installed")
    home = tmp_path_factory.mktemp("tx-home")
    env = {k: v for k, v in os.environ.items() if k not in ("TX_STATEDIR", "NEURALHASH_MODEL_PATH")}
    env.update(HOME=str(home), PYTHONPATH=str(ROOT / "src"), NEURALHASH_MODEL="demo",
               NEURALHASH_CACHE=str(tmp_path_factory.mktemp("tx-cache")))

    def run(*args, check: bool = True, **extra_env):
        proc = subprocess.run([exe, *args], capture_output=True, text=text, env={**env, **extra_env},
                              cwd=str(home), timeout=300)
        if check:
            assert proc.returncode == 0, proc.stderr[-2000:]
        return proc

    return run


def default_signal_dispositions() -> None:
    """``preexec_fn`` for a child that a test signals: the signals it is sent start at their default
    action. A test run under ``nohup`` (SIGHUP ignored) or as a background job (SIGINT ignored)
    passes those dispositions on to every child, and an ignored signal is ignored across exec: the
    child would carry on where the test expects it to stop."""
    for signum in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGQUIT):
        signal.signal(signum, signal.SIG_DFL)
