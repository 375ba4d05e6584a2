"""The command line: decode and inspect on the real files, and clean errors."""

from __future__ import annotations

import hashlib
import json

import pytest

from neuralhash.cli import main
from neuralhash.espresso import encode_container


def test_decode_real_file_gives_published_bytes(real_dir, tmp_path, capsys):
    out = tmp_path / "net.json"
    assert main(["decode", str(real_dir / "NeuralHashv3b-current.espresso.shape"), "-o", str(out)]) == 0
    assert hashlib.sha256(out.read_bytes()).hexdigest() == (
        "f4fe7e9d854fd0f0585a732bd5a8dcb7de8dfcbbd946d68c10e821b9691b1db8"
    )


def test_decode_bad_file_is_one_line_error_and_no_output(tmp_path, capsys):
    bad = tmp_path / "bad.espresso.net"
    bad.write_bytes(b"pbze" + b"\0" * 40)
    out = tmp_path / "out.json"
    assert main(["decode", str(bad), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("neuralhash: error: ") and str(bad) in err and "Traceback" not in err
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [bad]  # no temporary file left behind either


def test_inspect_json_keys(real_dir, capsys):
    assert main(["inspect", str(real_dir), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["layers"] == 225
    assert info["layer_types"]["convolution"] == 54
    assert info["inputs"] == {"image": [1, 3, 360, 360]}
    assert info["outputs"] == {"leaf/logits": [1, 128, 1, 1]}
    assert info["parameters"] is None
    assert info["transform_params"]["image"]["is_network_bgr"] is False


def test_inspect_text(real_dir, capsys):
    assert main(["inspect", str(real_dir)]) == 0
    text = capsys.readouterr().out
    assert "layers       225" in text and "image  n,k,h,w [1, 3, 360, 360]  seq 1  ONNX [batch, 3, 360, 360]" in text and "RGB" in text


def test_decode_cap_is_an_option(tmp_path, capsys):
    f = tmp_path / "big.espresso.net"
    f.write_bytes(encode_container(b"{" + b" " * 5000 + b"}"))
    assert main(["decode", str(f), "-o", "-", "--max-decoded-size", "100"]) == 1
    assert "above the limit of 100" in capsys.readouterr().err


def test_usage_error_exits_2():
    with pytest.raises(SystemExit) as exc:
        main(["convert"])
    assert exc.value.code == 2


def test_explicit_weights_and_shape_paths(tmp_path, capsys):
    """Files that do not share a prefix are given one by one."""
    import numpy as np

    from neuralhash.espresso import write_espresso

    layer = {"type": "activation", "name": "relu", "bottom": "x", "top": "y", "mode": 0}
    layer_ip = {"type": "inner_product", "name": "fc", "bottom": "y", "top": "z", "nB": 4, "nC": 2,
                "has_biases": 0, "blob_weights": 1}
    sources = write_espresso(tmp_path / "a", "net", layers=[layer, layer_ip],
                             shapes={"x": (1, 4, 1, 1), "y": (1, 4, 1, 1), "z": (1, 2, 1, 1)},
                             blobs={1: np.ones((2, 4), np.float32)})
    other = tmp_path / "elsewhere"
    other.mkdir()
    weights = other / "w.bin"
    shape = other / "s.json"
    sources.weights.rename(weights)
    sources.shape.rename(shape)
    assert main(["inspect", str(sources.net), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["parameters"] is None
    assert main(["inspect", str(sources.net), "--json", "--weights", str(weights), "--shape", str(shape)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parameters"] == 8 and info["inputs"] == {"x": [1, 4, 1, 1]}
    assert main(["convert", str(sources.net), "-o", str(tmp_path / "m.onnx"), "--weights", str(weights),
                 "--shape", str(shape)]) == 0
    with pytest.raises(SystemExit) as exc:  # a usage error, found before anything is read
        main(["inspect", str(sources.net), "--weights", str(other / "missing")])
    assert exc.value.code == 2 and f"argument --weights: no such file: {other / 'missing'}" in capsys.readouterr().err


# -- robustness: memory bounded by the pixel limit (issue 10, item 9) -----------------------

import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from conftest import ROOT, blank_png  # noqa: E402

#: Address space allowed to the robustness run on an 81-megapixel image. Its original alone is
#: 243 MB of RGB, and the catalogue's 3x upscale would be 729 megapixels (2.2 GB): the run must
#: refuse that copy rather than allocate it (it reached 9 GB with PDQ on two workers).
MEMORY_LIMIT = 1200 << 20


def _limited(argv: list[str], limit: int, cwd: Path) -> subprocess.CompletedProcess:
    program = textwrap.dedent(f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
        from neuralhash.cli import main
        sys.exit(main({argv!r}))
    """)
    # One BLAS/OpenMP thread and two malloc arenas: the address space then measures the data,
    # not per-thread reservations that grow with the machine's core count.
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
           "MALLOC_ARENA_MAX": "2", "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=300)


@pytest.fixture(scope="module")
def blank_81mp(tmp_path_factory) -> Path:
    path = blank_png(tmp_path_factory.mktemp("huge") / "blank-81mp.png", 9000, 9000)
    assert path.stat().st_size < 400_000  # a decompression bomb: tiny file, 81 megapixels
    return path


def test_robustness_on_an_81_megapixel_png_stays_within_a_memory_limit(blank_81mp, tmp_path):
    out = tmp_path / "report"
    done = _limited(["robustness", "--hashes", "dHash", "--edits", "upscale,downscale", "--workers", "0",
                     "--out", str(out), str(blank_81mp)], MEMORY_LIMIT, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "index.html").is_file()
    refused = [line for line in done.stderr.splitlines() if "not applied" in line]
    assert len(refused) == 3, done.stderr  # upscale 1.5x, 2x, 3x: 182, 324 and 729 megapixels
    for line, side in zip(refused, (13500, 18000, 27000)):
        assert f"{side} x {side}" in line and "above the limit of 89,478,485" in line and "--max-pixels" in line
    assert "MemoryError" not in done.stderr and "out of memory" not in done.stderr
    assert "Traceback" not in done.stderr


def test_robustness_refuses_an_original_above_max_pixels(blank_81mp, tmp_path):
    done = _limited(["robustness", "--hashes", "dHash", "--edits", "hflip", "--workers", "0",
                     "--max-pixels", "50000000", "--out", str(tmp_path / "r"), str(blank_81mp)],
                    MEMORY_LIMIT, tmp_path)
    assert done.returncode == 1
    line = [x for x in done.stderr.splitlines() if str(blank_81mp) in x][0]
    assert "image too large: 9000 x 9000 = 81,000,000 pixels, above the limit of 50,000,000" in line
    assert "--max-pixels" in line and "Traceback" not in done.stderr


def test_every_edit_declares_the_size_of_its_copy():
    from neuralhash.robustness.edits import apply_edit, default_edits

    rng = np.random.default_rng(0)
    for w, h in ((37, 23), (23, 37), (1, 1), (64, 64)):
        image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        for edit in default_edits():
            copy = apply_edit(edit, image, seed=0, image_key="k")
            pw, ph = edit.output_size(w, h)
            if edit.size is None:  # declared "the original's size or smaller"
                assert copy.width * copy.height <= w * h, edit.label
            else:
                assert copy.size == (pw, ph), (edit.label, copy.size, (pw, ph))


def test_image_key_is_the_same_computed_in_strips(monkeypatch):
    from neuralhash.robustness import measuring

    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (301, 97, 3), dtype=np.uint8))
    whole = measuring.image_key(image)
    monkeypatch.setattr(measuring, "_KEY_ROWS_BYTES", 97 * 3 * 7)  # strips of 7 rows (301 = 43 x 7)
    assert measuring.image_key(image) == whole
    monkeypatch.setattr(measuring, "_KEY_ROWS_BYTES", 97 * 3 * 10)  # a short last strip
    assert measuring.image_key(image) == whole


def test_python_dash_m_neuralhash_is_the_command():
    import subprocess
    import sys

    from neuralhash import __version__

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-m", "neuralhash", "--version"], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == f"neuralhash {__version__}"
    proc = subprocess.run([sys.executable, "-m", "neuralhash", "hash"], capture_output=True, text=True, env=env,
                          timeout=60)
    assert proc.returncode == 2 and "PATH" in proc.stderr
