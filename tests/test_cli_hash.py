"""The ``hash`` and ``compare`` commands, on the synthetic demo model and small generated images."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from neuralhash.cli import output as cli_output
from neuralhash.cli import main

from conftest import draw_image

WARNING = "neuralhash: warning: the demo model has synthetic weights; its hashes carry no perceptual meaning"


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _env(module_env):
    yield


@pytest.fixture(scope="module")
def images(tmp_path_factory, module_env):
    """Three images, as strings."""
    root = tmp_path_factory.mktemp("images")
    return [str(draw_image(root / name, i)) for i, name in enumerate(["one.png", "two.jpg", "three.png"])]


@pytest.fixture(scope="module")
def nh(module_env):
    from neuralhash.hashing import NeuralHash

    return NeuralHash.from_source("demo")


@pytest.fixture(scope="module")
def ref(nh, images):
    """path -> hex, computed one by one through the library."""
    return {p: nh.hash(p).hex for p in images}


def _lines(text: str) -> list[str]:
    return text.splitlines()


# -- hash: formats -------------------------------------------------------------------------


def test_text_output_in_input_order(images, ref, capsys):
    order = [images[2], images[0], images[1]]
    assert main(["hash", "--model", "demo", *order]) == 0
    out, err = capsys.readouterr()
    assert _lines(out) == [f"{ref[p]}  {p}" for p in order]
    assert err.strip() == WARNING  # once, and nothing else
    assert len(set(ref.values())) == 3


def test_hashes_match_the_demo_library(images, ref):
    from neuralhash.hashing import NeuralHash

    demo = NeuralHash.demo() if hasattr(NeuralHash, "demo") else NeuralHash.from_source("demo")
    for p in images:
        assert demo.hash(p).hex == ref[p]
        assert len(ref[p]) == 24 and ref[p] == ref[p].lower()


def test_directory_recursion_filter_and_sorted_order(tmp_path, nh, capsys):
    root = tmp_path / "photos"
    draw_image(root / "b.png", 1)
    draw_image(root / "A.JPG", 2)
    draw_image(root / "sub" / "c.jpeg", 3)
    draw_image(root / "sub" / "deeper" / "d.png", 4)
    draw_image(root / "c.png", 5)
    (root / "notes.txt").write_text("not an image\n")
    (root / "sub" / "data.bin").write_bytes(b"\0" * 10)
    draw_image(root / "picture.unknownext", 6)  # an image, but not named like one: skipped in directories
    os.symlink("..", root / "sub" / "loop")  # a loop back to the top: not followed twice
    assert main(["hash", "--model", "demo", str(root)]) == 0
    out = capsys.readouterr().out
    paths = [line.split("  ", 1)[1] for line in _lines(out)]
    expected = [root / "A.JPG", root / "b.png", root / "c.png", root / "sub" / "c.jpeg",
                root / "sub" / "deeper" / "d.png"]
    assert paths == [str(p) for p in expected]
    for line in _lines(out):
        hex_, path = line.split("  ", 1)
        assert hex_ == nh.hash(path).hex


def test_named_file_is_hashed_whatever_its_extension(tmp_path, nh, capsys):
    odd = draw_image(tmp_path / "picture.unknownext", 6)
    assert main(["hash", "--model", "demo", str(odd)]) == 0
    assert _lines(capsys.readouterr().out) == [f"{nh.hash(str(odd)).hex}  {odd}"]


def test_paths_from_stdin(images, ref, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "dir"
    inside = draw_image(folder / "x.png", 9)
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{images[1]}\n\n   \n{images[0]}\n{folder}\n"))
    assert main(["hash", "--model", "demo", images[2], "-"]) == 0
    paths = [line.split("  ", 1)[1] for line in _lines(capsys.readouterr().out)]
    assert paths == [images[2], images[1], images[0], str(inside)]


def test_jsonl(images, ref, capsys):
    assert main(["hash", "--model", "demo", "--jsonl", *images]) == 0
    rows = [json.loads(line) for line in _lines(capsys.readouterr().out)]
    assert rows == [{"path": p, "hash": ref[p]} for p in images]


def test_jsonl_with_margins(images, ref, nh, capsys):
    assert main(["hash", "--model", "demo", "--jsonl", "--margins", images[0]]) == 0
    (row,) = [json.loads(line) for line in _lines(capsys.readouterr().out)]
    assert set(row) == {"path", "hash", "margins", "unstable_bits"}
    assert row["hash"] == ref[images[0]]
    h = nh.hash(images[0])
    assert len(row["margins"]) == 96
    np.testing.assert_allclose(row["margins"], h.margins, rtol=1e-5)
    assert all(m >= 0 for m in row["margins"])
    assert all(m == float(f"{m:.6g}") for m in row["margins"])  # rounded to 6 significant digits
    assert row["unstable_bits"] == h.unstable_bits() and isinstance(row["unstable_bits"], int)


def test_csv(images, ref, capsys):
    assert main(["hash", "--model", "demo", "--csv", *images]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["path", "hash", "error"]
    assert rows[1:] == [[p, ref[p], ""] for p in images]


def test_csv_with_margins_and_quoting(tmp_path, nh, capsys):
    odd = draw_image(tmp_path / 'a, "quoted" name.png', 3)
    assert main(["hash", "--model", "demo", "--csv", "--margins", str(odd)]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["path", "hash", "error", "unstable_bits", "margins"]
    path, hex_, error, unstable, margins = rows[1]
    h = nh.hash(str(odd))
    assert (path, hex_, error, int(unstable)) == (str(odd), h.hex, "", h.unstable_bits())
    np.testing.assert_allclose([float(m) for m in margins.split(" ")], h.margins, rtol=1e-5)


def test_failures_are_reported_and_the_rest_still_hashed(images, ref, tmp_path, capsys):
    missing = str(tmp_path / "missing.png")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "text.png"
    text.write_text("hello, not an image\n")
    items = [images[0], missing, str(empty), images[1], str(text), images[2]]
    assert main(["hash", "--model", "demo", *items]) == 1
    out, err = capsys.readouterr()
    assert _lines(out) == [f"{ref[p]}  {p}" for p in images]
    err_lines = _lines(err)
    assert err_lines[0] == WARNING
    failed = err_lines[1:]
    assert len(failed) == 3
    for line, path in zip(failed, [missing, str(empty), str(text)]):
        assert line.startswith(f"neuralhash: {path}: ") and len(line) > len(f"neuralhash: {path}: ")
        assert not line.startswith(f"neuralhash: {path}: {path}")  # the path is named once
    assert "Traceback" not in err


def test_failures_in_jsonl_and_csv(images, ref, tmp_path, capsys):
    missing = str(tmp_path / "missing.png")
    assert main(["hash", "--model", "demo", "--jsonl", "--margins", missing, images[0]]) == 1
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in _lines(out)]
    assert set(rows[0]) == {"path", "error"} and rows[0]["path"] == missing
    assert rows[0]["error"] and not rows[0]["error"].startswith(missing)  # the path is its own field
    assert rows[1]["hash"] == ref[images[0]] and len(rows[1]["margins"]) == 96
    assert f"neuralhash: {missing}: " in err

    assert main(["hash", "--model", "demo", "--csv", missing, images[0]]) == 1
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[1][0] == missing and rows[1][1] == "" and rows[1][2] and not rows[1][2].startswith(missing)
    assert rows[2] == [images[0], ref[images[0]], ""]


def test_paths_stream_into_hash_many(images, monkeypatch, capsys):
    """Results are written while standard input is still being read: nothing is collected first."""
    total = 60
    consumed = []

    class Stdin:
        def __iter__(self):
            for i in range(total):
                consumed.append(i)
                yield images[i % 3] + "\n"

    seen_at_write = []
    original = cli_output.Writer.write

    def write(self, result):
        seen_at_write.append(len(consumed))
        return original(self, result)

    monkeypatch.setattr(sys, "stdin", Stdin())
    monkeypatch.setattr(cli_output.Writer, "write", write)
    assert main(["hash", "--model", "demo", "--batch-size", "2", "--workers", "1", "-"]) == 0
    assert len(_lines(capsys.readouterr().out)) == total
    assert seen_at_write[0] < total


def test_progress_only_on_a_terminal(images, monkeypatch, capsys):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    fake = Tty()
    monkeypatch.setattr(sys, "stderr", fake)
    monkeypatch.setattr(cli_output.Progress, "INTERVAL", 0.0)
    assert main(["hash", "--model", "demo", *images]) == 0
    text = fake.getvalue()
    assert "\r" in text and "3 image(s)" in text
    assert text.endswith("\r\x1b[K")  # cleared at the end
    assert "\r" not in capsys.readouterr().out


def test_empty_directory_warns(tmp_path, capsys):
    assert main(["hash", "--model", "demo", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert out == "" and "no images found" in err


# -- hash: the model -----------------------------------------------------------------------


def test_system_model_from_env_path(tmp_path, images, monkeypatch, capsys):
    from neuralhash.hashing import NeuralHash
    from neuralhash.demo.synthetic import write_neuralhash_v3b

    folder = tmp_path / "models"
    write_neuralhash_v3b(folder, calibrate=False)
    monkeypatch.setenv("NEURALHASH_MODEL_PATH", str(folder))
    assert main(["hash", *images[:2]]) == 0
    out, err = capsys.readouterr()
    own = NeuralHash.from_source(str(folder))
    assert _lines(out) == [f"{own.hash(p).hex}  {p}" for p in images[:2]]
    assert "warning" not in err  # not the built-in demo model


def test_no_system_model_is_a_helpful_error(tmp_path, images, monkeypatch, capsys):
    empty = tmp_path / "nothing-here"
    empty.mkdir()
    monkeypatch.setenv("NEURALHASH_MODEL_PATH", str(empty))
    assert main(["hash", images[0]]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert len(_lines(err)) == 1 and err.startswith("neuralhash: error: ")
    assert "--model" in err and "NEURALHASH_MODEL_PATH" in err and str(empty) in err


@pytest.mark.parametrize("extra", [["--model", "{tmp}/nope"], ["--model", "demo", "--seed", "{tmp}/bad.dat"]])
def test_model_errors_are_one_line(extra, tmp_path, images, capsys):
    (tmp_path / "bad.dat").write_bytes(b"not a seed file")
    assert main(["hash", *[x.format(tmp=tmp_path) for x in extra], images[0]]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    assert _lines(err)[-1].startswith("neuralhash: error: ")
    assert len([line for line in _lines(err) if "warning" not in line]) == 1


def test_seed_file(images, ref, capsys):
    from conftest import REAL_SEED

    if not REAL_SEED.is_file():
        pytest.skip("Apple's seed file is not present")
    assert main(["hash", "--model", "demo", "--seed", str(REAL_SEED), images[0]]) == 0
    assert _lines(capsys.readouterr().out) == [f"{ref[images[0]]}  {images[0]}"]  # the same matrix as rebuilt


# -- compare -------------------------------------------------------------------------------


def test_compare_two_images(images, ref, nh, capsys):
    assert main(["compare", images[0], images[1], "--model", "demo"]) == 0
    out, err = capsys.readouterr()
    a, b = ref[images[0]], ref[images[1]]
    distance = bin(int(a, 16) ^ int(b, 16)).count("1")
    assert _lines(out) == [f"{a}  {images[0]}", f"{b}  {images[1]}", f"distance {distance}"]
    assert distance == nh.hash(images[0]).hamming(b)
    assert WARNING in err


def test_compare_image_and_hex_jsonl(images, ref, capsys):
    other = "0" * 24
    assert main(["compare", images[0], other.upper(), "--model", "demo", "--jsonl"]) == 0
    obj = json.loads(capsys.readouterr().out)
    a = ref[images[0]]
    assert obj == {"a": images[0], "b": other.upper(), "hash_a": a, "hash_b": other,
                   "distance": bin(int(a, 16)).count("1")}


def test_compare_two_hashes_loads_no_model(monkeypatch, capsys):
    from neuralhash.hashing import NeuralHash

    def boom(*args, **kwargs):
        raise AssertionError("no model should be loaded")

    monkeypatch.setattr(NeuralHash, "from_source", boom)
    assert main(["compare", "59a34eabe31910abfb06f308", "59A34EABE31910ABFB06F309"]) == 0
    out, err = capsys.readouterr()
    assert _lines(out) == ["59a34eabe31910abfb06f308  59a34eabe31910abfb06f308",
                           "59a34eabe31910abfb06f309  59A34EABE31910ABFB06F309", "distance 1"]
    assert err == ""


def test_compare_a_file_named_like_a_hash_is_andraw_image(images, ref, tmp_path, monkeypatch, capsys):
    name = "abcdefabcdefabcdefabcdef"
    Path(tmp_path / name).write_bytes(Path(images[1]).read_bytes())
    monkeypatch.chdir(tmp_path)
    assert main(["compare", name, images[1], "--model", "demo"]) == 0
    assert _lines(capsys.readouterr().out)[-1] == "distance 0"


@pytest.mark.parametrize("bad", ["59a34eabe31910abfb06f30z", "59a34eabe31910abfb06f3", "nope.png"])
def test_compare_not_a_hash_and_not_a_file(bad, images, capsys):
    assert main(["compare", images[0], bad, "--model", "demo"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("neuralhash: error: ") and bad in err and len(_lines(err)) == 1


def test_compare_unreadabledraw_image(tmp_path, capsys):
    text = tmp_path / "text.png"
    text.write_text("not an image")
    assert main(["compare", str(text), "0" * 24, "--model", "demo"]) == 1
    err = capsys.readouterr().err
    assert "neuralhash: error: " in err and str(text) in err and "Traceback" not in err


# -- usage ---------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [
    ["hash"],
    ["hash", "--model", "demo"],
    ["hash", "--jsonl", "--csv", "x.png"],
    ["hash", "--margins", "x.png"],
    ["hash", "--batch-size", "0", "x.png"],
    ["hash", "--workers", "zero", "x.png"],
    ["hash", "--workers", "-1", "x.png"],
    ["compare", "0" * 24],
    ["compare"],
])
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2


# -- a real process ------------------------------------------------------------------------


def _run(args, stdin=None):
    return subprocess.run([sys.executable, "-m", "neuralhash.cli", *args], input=stdin, capture_output=True,
                          text=True, env=dict(os.environ), timeout=120)


def test_process_streams_stdout_and_stderr_apart(images, ref, tmp_path):
    missing = str(tmp_path / "missing.png")
    odd = os.fsencode(tmp_path) + b"/caf\xe9.png"  # not UTF-8: printed back byte for byte
    with open(odd, "wb") as f:
        f.write(Path(images[2]).read_bytes())
    proc = subprocess.run([sys.executable, "-m", "neuralhash.cli", "hash", "--model", "demo", images[0], missing,
                           images[1], "-"], input=odd + b"\n", capture_output=True, env=dict(os.environ), timeout=120)
    assert proc.returncode == 1
    assert proc.stdout.split(b"\n") == [f"{ref[images[0]]}  {images[0]}".encode(),
                                        f"{ref[images[1]]}  {images[1]}".encode(),
                                        ref[images[2]].encode() + b"  " + odd, b""]
    err = _lines(proc.stderr.decode())
    assert err[0] == WARNING and err[1].startswith(f"neuralhash: {missing}: ") and len(err) == 2
    assert b"\r" not in proc.stderr  # no progress bar into a pipe


def test_process_stdin_jsonl_and_usage(images, ref):
    proc = _run(["hash", "--model", "demo", "--jsonl", "-"], stdin="\n".join(images) + "\n")
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line) for line in _lines(proc.stdout)] == [{"path": p, "hash": ref[p]} for p in images]
    proc = _run(["hash", "--csv", "--jsonl", images[0]])
    assert proc.returncode == 2 and proc.stdout == "" and "not allowed with" in proc.stderr


def test_sigterm_leaves_no_worker_processes(images, tmp_path):
    """``kill`` / ``timeout`` on a long run: exit 143, and the decoding workers go with it."""
    import signal
    import time

    def group_alive(pgid: int) -> bool:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True

    listing = tmp_path / "many.txt"
    listing.write_text("\n".join(images * 2000) + "\n")
    with open(listing) as stdin, open(tmp_path / "err.txt", "w+b") as err_file:
        # stderr to a file: orphaned workers holding a pipe open would make reading it hang.
        proc = subprocess.Popen([sys.executable, "-m", "neuralhash.cli", "hash", "--model", "demo", "--workers", "2",
                                 "-"], stdin=stdin, stdout=subprocess.PIPE, stderr=err_file,
                                env=dict(os.environ), start_new_session=True)
        try:
            first = proc.stdout.readline()  # the workers are running once results come back
            assert len(first.split(b"  ")[0]) == 24
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
            deadline = time.monotonic() + 15
            while group_alive(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.1)  # the forkserver and resource tracker leave shortly after the process
            leftover = group_alive(proc.pid)
        finally:
            if group_alive(proc.pid):
                os.killpg(proc.pid, signal.SIGKILL)  # this test's own process group only
            proc.stdout.close()
        err_file.seek(0)
        err = err_file.read().decode()
    assert proc.returncode == 143, err
    assert err.splitlines()[-1] == "neuralhash: terminated"
    assert not leftover, "worker processes outlived the terminated command"


# -- usage errors: every argument checked before a model loads, exit 2 (issue 10, item 13) ---


@pytest.fixture
def no_model_loads(monkeypatch):
    """Loading a model (or Espresso files) fails the test: usage errors must come first."""
    from neuralhash.cli import model_cmds
    from neuralhash.hashing import NeuralHash

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr(NeuralHash, "from_source", classmethod(refuse))
    monkeypatch.setattr(model_cmds, "load_espresso", refuse)


def _usage_cases(tmp: Path, image: str) -> list[tuple[list[str], str]]:
    db, out_file = str(tmp / "h.db"), tmp / "a-file"
    out_file.write_text("x")
    m = ["--model", "demo"]
    hexq = "59a34eabe31910abfb06f308"
    return [
        (["hash", *m, "--margins", image], "--margins"),
        (["hash", *m, "--scheduler", "", image], "--scheduler"),
        (["hash", *m, "--paths-per-task", "3", image], "--paths-per-task"),
        (["hash", *m, "--parquet", str(tmp / "pq"), image], "--parquet"),
        (["hash", *m, "--max-pixels", "0", image], "--max-pixels"),
        (["hash", *m, "--workers", "-1", image], "--workers"),
        (["hash", *m, "--batch-size", "0", image], "--batch-size"),
        (["hash", *m, "--batch-size", "100000", image], "--batch-size"),
        (["dupes", db, "--max-distance", "2", "--model-id", ""], "--model-id"),
        (["hash", *m, "--provider", "NoSuchExecutionProvider", image], "--provider"),
        (["hash", "--model", "", image], "--model"),
        (["compare", *m, "--max-pixels", "-5", image, hexq], "--max-pixels"),
        (["compare", *m, "--provider", "Nope", image, image], "--provider"),
        (["match", db, hexq, "--max-distance", "200"], "--max-distance"),
        (["match", db, image, *m, "--max-distance", "97"], "--max-distance"),
        (["dupes", db, "--max-distance", "-1"], "--max-distance"),
        (["index", "add", db, image, *m, "--batch-size", "0"], "--batch-size"),
        (["index", "add", db, image, *m, "--max-pixels", "x"], "--max-pixels"),
        (["index", "import", db, image, "--model-id", ""], "--model-id"),
        (["robustness", *m, image, "--out", str(tmp / "r"), "--edits", "nope"], "--edits"),
        (["robustness", *m, image, "--out", str(tmp / "r"), "--edits", ","], "--edits"),
        (["robustness", *m, image, "--out", str(tmp / "r"), "--hashes", "SHA1"], "--hashes"),
        (["robustness", *m, image, "--out", str(out_file)], "--out"),
        (["robustness", *m, image], "--out"),
        (["robustness", *m, image, "--out", str(tmp / "r"), "--max-pixels", "0"], "--max-pixels"),
        (["verify", str(tmp), "--atol", "nan"], "--atol"),
        (["verify", str(tmp), "--atol", "-1"], "--atol"),
        (["verify", str(tmp), "--batch", "0"], "--batch"),
        (["verify", str(tmp), "--seeds", "-1"], "--seeds"),
        (["verify", str(tmp), "--provider", "Nope"], "--provider"),
        (["decode", image, "-o", "-", "--max-decoded-size", "0"], "--max-decoded-size"),
        (["verify", str(tmp), "--onnx", str(tmp / "missing.onnx")], "--onnx"),
        (["verify", str(tmp), "--image", image, "--image", str(tmp / "missing.png")], "--image"),
        (["convert", str(tmp), "-o", str(tmp / "o.onnx"), "--hash-head", str(tmp)], "--hash-head"),
        (["inspect", str(tmp), "--shape", str(tmp / "x.shape")], "--shape"),
        (["hash", *m, "--seed", str(tmp / "missing.dat"), image], "--seed"),
        (["inspect", str(tmp), "--max-decoded-size", "-3"], "--max-decoded-size"),
    ]


def test_usage_errors_exit_2_naming_the_option_before_any_model_loads(tmp_path, images, capsys, no_model_loads):
    for argv, option in _usage_cases(tmp_path, images[0]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        err = capsys.readouterr().err
        assert exc.value.code == 2, (argv, err)
        last = err.strip().splitlines()[-1]
        assert option in last and last.startswith(f"neuralhash {argv[0]}"), (argv, last)
        assert "Traceback" not in err and "max_distance" not in err and "max_pixels" not in err, (argv, err)


def test_every_command_has_help(capsys):
    from neuralhash.cli import build_parser

    commands = ["decode", "inspect", "convert", "verify", "demo", "hash", "compare", "match", "dupes", "robustness",
                "index add", "index import", "index export", "index info"]
    for command in commands:
        with pytest.raises(SystemExit) as exc:
            build_parser().parse_args([*command.split(), "--help"])
        assert exc.value.code == 0 and "usage: neuralhash " + command in capsys.readouterr().out


def test_too_many_workers_are_capped_with_a_warning(images, ref, monkeypatch, capsys):
    from neuralhash.hashing import NeuralHash

    seen = []
    original = NeuralHash.hash_many

    def spy(self, items, **kwargs):
        seen.append(kwargs["workers"])
        return original(self, items, **kwargs)

    monkeypatch.setattr(NeuralHash, "hash_many", spy)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert main(["hash", "--model", "demo", "--workers", "150", images[0]]) == 0
    out, err = capsys.readouterr()
    assert seen == [8] and out == f"{ref[images[0]]}  {images[0]}\n"
    assert "neuralhash: warning: --workers 150 capped to 8 (4 per CPU; this machine has 2)" in err


# -- --max-pixels (issue 10, item 16) ---------------------------------------------------------


def test_a_99_megapixel_png_needs_max_pixels(tmp_path, nh, capsys):
    from conftest import blank_png
    from PIL import Image

    big = str(blank_png(tmp_path / "big.png", 9950, 9950, (200, 120, 40)))  # 99 MP, Pillow refuses it
    assert main(["hash", "--model", "demo", "--workers", "0", big]) == 1
    out, err = capsys.readouterr()
    line = err.strip().splitlines()[-1]
    assert out == "" and line.startswith(f"neuralhash: {big}: image too large: 9950 x 9950 = 99,002,500 pixels")
    assert "--max-pixels" in line and "MAX_IMAGE_PIXELS" not in line
    assert main(["hash", "--model", "demo", "--workers", "0", "--max-pixels", "100000000", big]) == 0
    out, _ = capsys.readouterr()
    # Independent expectation: a flat image resizes to the same flat 360 x 360 image.
    assert out == f"{nh.hash(Image.new('RGB', (360, 360), (200, 120, 40))).hex}  {big}\n"


def test_robustness_finds_no_images_before_loading_the_model(tmp_path, capsys, no_model_loads):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["robustness", "--model", "demo", str(empty), "--out", str(tmp_path / "r")]) == 1
    assert capsys.readouterr().err.strip().endswith(f"no images found in {empty}")
