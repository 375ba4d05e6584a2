"""Hostile file names through everything ``hash`` and ``compare`` write (issue 10, items 3, 6, 10, 14).

Real files with hostile names are hashed with ``--model demo`` in every output
format; the output is parsed back with the rule documented in
:mod:`neuralhash.files.pathnames` and must give each file's exact bytes
(``os.fsencode``) with the hash the library computes for that file.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import neuralhash
from neuralhash.files import pathnames
from neuralhash.cli import main
from neuralhash.cli.output import Progress, Writer
from neuralhash.hashing.hash import Hash, HashResult

from conftest import draw_image

WARNING = "neuralhash: warning: the demo model has synthetic weights; its hashes carry no perceptual meaning"

#: Names as bytes: each breaks a naive text, CSV or JSON Lines record, or a naive reader.
HOSTILE = [
    b"new\nline.png",
    b"carriage\rreturn.png",
    b"back\\slash.png",
    b"\\n-not-a-newline.png",
    b"  leading spaces.png",
    b"trailing spaces.png  ",
    "line\u2028separator.png".encode(),
    "next\u0085line.png".encode(),
    b"invalid \xff\xfe utf-8.png",
    b"latin1 caf\xe9.png",
    b"0123456789abcdef01234567",  # looks like a hash
    b"8e9e19dfd9e82fbce596ad08  other.png",  # looks like a whole text line
    b"-",  # standard input's name
    b'quote",comma.png',
    b"tab\tand esc\x1b[31m.png",
]


@pytest.fixture(autouse=True)
def _env(module_env):
    yield


@pytest.fixture(scope="module")
def nh(module_env):
    from neuralhash.hashing import NeuralHash

    return NeuralHash.from_source("demo")


@pytest.fixture(scope="module")
def hostile_dir(tmp_path_factory, module_env) -> bytes:
    """A folder holding one distinct picture under each hostile name (as bytes: the names are not all str-safe)."""
    root = os.fsencode(tmp_path_factory.mktemp("hostile"))
    for i, name in enumerate(HOSTILE):
        tmp = Path(os.fsdecode(root)) / f"tmp{i}.png"
        draw_image(tmp, i)
        os.rename(os.fsencode(tmp), os.path.join(root, name))
    return root


@pytest.fixture(scope="module")
def expected(nh, hostile_dir) -> dict[bytes, str]:
    """name bytes (as passed on the command line) -> hash, by the library, file by file."""
    return {_arg(name): nh.hash(os.fsdecode(os.path.join(hostile_dir, name))).hex for name in HOSTILE}


def _arg(name: bytes) -> bytes:
    return b"./-" if name == b"-" else name  # "-" alone means standard input


def _env_here() -> dict:
    """The environment, with this package importable from another working directory."""
    src = str(Path(neuralhash.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}


def _run(args: list[bytes], cwd: bytes, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable.encode(), b"-m", b"neuralhash.cli", *args], cwd=cwd,
                          capture_output=True, env=_env_here(), timeout=180, **kw)


# -- parsing the output back, by the documented rule -----------------------------------------


def parse_text(out: bytes) -> list[tuple[str, bytes]]:
    """``HEX  PATH`` lines -> [(hex, name bytes)], by pathnames.split_text_line."""
    assert out.endswith(b"\n") or out == b""
    rows = []
    for line in out.split(b"\n")[:-1]:
        hex_text, name = pathnames.split_text_line(os.fsdecode(line))
        rows.append((hex_text, pathnames.to_bytes(name)))
    return rows


def parse_jsonl(out: bytes) -> list[tuple[dict, bytes]]:
    """JSON Lines (valid UTF-8, split at ``\\n`` only) -> [(record, name bytes)]."""
    rows = []
    for line in out.split(b"\n")[:-1]:
        obj = json.loads(line.decode("utf-8"))  # strict: the bytes must be UTF-8
        rows.append((obj, pathnames.to_bytes(pathnames.name_from_json(obj))))
    return rows


def parse_csv(out: bytes) -> list[dict]:
    """CSV (UTF-8, the name's undecodable bytes as they are) -> rows, with "path" as bytes."""
    reader = csv.DictReader(io.StringIO(out.decode("utf-8", "surrogateescape"), newline=""))
    return [{**row, "path": pathnames.to_bytes(row["path"])} for row in reader]


# -- real files, every format ------------------------------------------------------------------


def test_text_output_gives_every_name_back(hostile_dir, expected):
    proc = _run([b"hash", b"--model", b"demo", b"--workers", b"0", *map(_arg, HOSTILE)], hostile_dir)
    assert proc.returncode == 0, proc.stderr
    assert parse_text(proc.stdout) == [(h, n) for n, h in expected.items()]  # input order, exact bytes
    # The names that need it are escaped like GNU sha256sum's: a leading backslash.
    escaped = [line.startswith(b"\\") for line in proc.stdout.split(b"\n")[:-1]]
    assert escaped == [any(c in n for c in (b"\\", b"\n", b"\r")) for n in HOSTILE]


def test_jsonl_output_gives_every_name_back(hostile_dir, expected):
    missing = b"gone\nfile\xff.png"
    proc = _run([b"hash", b"--model", b"demo", b"--workers", b"0", b"--jsonl", b"--margins",
                 *map(_arg, HOSTILE), missing], hostile_dir)
    assert proc.returncode == 1
    rows = parse_jsonl(proc.stdout)
    assert [(name, obj.get("hash")) for obj, name in rows] == [*expected.items(), (missing, None)]
    for obj, name in rows:
        assert ("path_b64" in obj) == (not _is_utf8(name))  # path_b64 only when needed
    assert rows[-1][0]["error"] == "no such file"
    # The failure is one line on standard error, its name's control characters escaped.
    err = proc.stderr.split(b"\n")
    assert err[:-1] == [WARNING.encode(), b"neuralhash: gone\\nfile\xff.png: no such file"] and err[-1] == b""


def test_csv_output_gives_every_name_back(hostile_dir, expected):
    proc = _run([b"hash", b"--model", b"demo", b"--workers", b"0", b"--csv", *map(_arg, HOSTILE)], hostile_dir)
    assert proc.returncode == 0, proc.stderr
    rows = parse_csv(proc.stdout)
    assert [(r["path"], r["hash"], r["error"]) for r in rows] == [(n, h, "") for n, h in expected.items()]


def test_directory_walk_with_hostile_names(hostile_dir, expected):
    """Walked names (``DIR/NAME``) come back exact too: the rule does not depend on how a path was found."""
    proc = _run([b"hash", b"--model", b"demo", b"--workers", b"0", b"--jsonl", b"."], hostile_dir)
    assert proc.returncode == 0, proc.stderr
    got = {name: obj["hash"] for obj, name in parse_jsonl(proc.stdout)}
    images = {b"./" + n: expected[_arg(n)] for n in HOSTILE if n.lower().endswith(b".png")}
    assert got == images


def test_paths_from_standard_input(hostile_dir, expected):
    """Names read from ``-`` (one per line) keep their bytes, invalid UTF-8 included."""
    names = [n for n in HOSTILE if b"\n" not in n and b"\r" not in n]
    proc = _run([b"hash", b"--model", b"demo", b"--workers", b"0", b"--csv", b"-"], hostile_dir,
                input=b"".join(_arg(n) + b"\n" for n in names))
    assert proc.returncode == 0, proc.stderr
    assert [(r["path"], r["hash"]) for r in parse_csv(proc.stdout)] == [(_arg(n), expected[_arg(n)]) for n in names]


@pytest.mark.parametrize("jsonl", [False, True], ids=["text", "jsonl"])
def test_compare_carries_both_names(hostile_dir, expected, jsonl):
    a, b = b"invalid \xff\xfe utf-8.png", b"new\nline.png"
    proc = _run([b"compare", b"--model", b"demo", *([b"--jsonl"] if jsonl else []), a, b], hostile_dir)
    assert proc.returncode == 0, proc.stderr
    distance = Hash.from_hex(expected[a]).hamming(Hash.from_hex(expected[b]))
    if jsonl:
        obj = json.loads(proc.stdout.decode("utf-8"))
        assert pathnames.to_bytes(pathnames.name_from_json(obj, "a")) == a
        assert pathnames.to_bytes(pathnames.name_from_json(obj, "b")) == b
        assert (obj["hash_a"], obj["hash_b"], obj["distance"]) == (expected[a], expected[b], distance)
    else:
        *pairs, last = proc.stdout.split(b"\n")[:-1]
        assert parse_text(b"\n".join(pairs) + b"\n") == [(expected[a], a), (expected[b], b)]
        assert last == f"distance {distance}".encode()


def test_compare_error_naming_a_hostile_file_is_one_line(hostile_dir):
    proc = _run([b"compare", b"--model", b"demo", b"no\nsuch\xff", b"0" * 24], hostile_dir)
    assert proc.returncode == 1 and proc.stdout == b""
    assert proc.stderr == b"neuralhash: error: no\\nsuch\xff: no such file, and not a hash of 24 hex digits\n"


# -- unreadable folders (item 14) ---------------------------------------------------------------


def _unreadable(monkeypatch, folder: str) -> None:
    """os.scandir refuses ``folder`` as it does without read permission (root reads everything)."""
    real = os.scandir

    def scandir(path="."):
        if not isinstance(path, int) and os.fsdecode(path) == folder:
            raise PermissionError(13, "Permission denied", path)
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)


@pytest.fixture
def tree_with_locked_folder(tmp_path, monkeypatch):
    draw_image(tmp_path / "a.png", 1)
    draw_image(tmp_path / "locked\nfolder" / "b.png", 2)
    draw_image(tmp_path / "z.png", 3)
    locked = str(tmp_path / "locked\nfolder")
    _unreadable(monkeypatch, locked)
    return tmp_path, locked


@pytest.mark.parametrize("fmt", ["--jsonl", "--csv"])
def test_unreadable_folder_is_an_error_record(tree_with_locked_folder, nh, fmt, capsysbinary):
    root, locked = tree_with_locked_folder
    code = main(["hash", "--model", "demo", "--workers", "0", fmt, str(root)])
    out, err = capsysbinary.readouterr()
    assert code == 1
    want = [(os.fsencode(root / "a.png"), nh.hash(str(root / "a.png")).hex),
            (os.fsencode(locked), None),
            (os.fsencode(root / "z.png"), nh.hash(str(root / "z.png")).hex)]
    if fmt == "--jsonl":
        rows = parse_jsonl(out)
        assert sorted((name, obj.get("hash")) for obj, name in rows) == sorted(want, key=lambda r: r[0])
        errors = [obj["error"] for obj, name in rows if name == os.fsencode(locked)]
    else:
        rows = parse_csv(out)
        assert sorted((r["path"], r["hash"] or None) for r in rows) == sorted(want, key=lambda r: r[0])
        errors = [r["error"] for r in rows if r["path"] == os.fsencode(locked)]
    assert errors == ["cannot read directory (Permission denied)"]
    # ... and still on standard error, one line.
    assert err.decode().splitlines()[1:] == [
        f"neuralhash: {pathnames.display(locked)}: cannot read directory (Permission denied)"]


def test_unreadable_folder_in_text_output_is_on_stderr_only(tree_with_locked_folder, capsys):
    root, locked = tree_with_locked_folder
    code = main(["hash", "--model", "demo", "--workers", "0", str(root)])
    out, err = capsys.readouterr()
    assert code == 1 and len(out.splitlines()) == 2
    assert f"neuralhash: {pathnames.display(locked)}: cannot read directory" in err


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads every folder")
def test_really_unreadable_folder(tmp_path, capsys):
    draw_image(tmp_path / "locked" / "b.png", 2)
    (tmp_path / "locked").chmod(0)
    try:
        code = main(["hash", "--model", "demo", "--workers", "0", "--jsonl", str(tmp_path)])
    finally:
        (tmp_path / "locked").chmod(0o755)
    out, _ = capsys.readouterr()
    assert code == 1
    assert [json.loads(line) for line in out.splitlines()] == [
        {"path": str(tmp_path / "locked"), "error": "cannot read directory (Permission denied)"}]


# -- standard output that cannot be written (item 6) ------------------------------------------


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("args", [
    [b"hash", b"--model", b"demo", b"--workers", b"0", b"."],
    [b"hash", b"--model", b"demo", b"--workers", b"0", b"--jsonl", b"."],
    [b"compare", b"0" * 24, b"f" * 24],
    [b"robustness", b"--list-edits"],  # plain print(): the same one line
], ids=["hash", "jsonl", "compare", "print"])
def test_full_disk_on_stdout_is_one_line(hostile_dir, args):
    with open("/dev/full", "wb") as full:
        proc = subprocess.run([sys.executable.encode(), b"-m", b"neuralhash.cli", *args], cwd=hostile_dir,
                              stdout=full, stderr=subprocess.PIPE, env=_env_here(), timeout=180)
    assert proc.returncode == 1
    assert proc.stderr.decode().splitlines()[-1] == "neuralhash: standard output: No space left on device"
    assert b"Traceback" not in proc.stderr and b"Exception ignored" not in proc.stderr


def test_closed_pipe_stops_quietly(hostile_dir):
    """Like ``neuralhash hash ... | head -1``: the reader leaves; the command stops without a word."""
    proc = subprocess.Popen([sys.executable.encode(), b"-m", b"neuralhash.cli", b"hash", b"--model", b"demo",
                             b"--workers", b"0", *[b"."] * 300], cwd=hostile_dir, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=_env_here())
    try:
        first = proc.stdout.readline()
        proc.stdout.close()
        err = proc.stderr.read()
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(pathnames.split_text_line(os.fsdecode(first.rstrip(b"\n")))[0]) == 24
    assert proc.returncode == 141
    assert err.decode().splitlines() == [WARNING]


# -- any byte name, through the writer -----------------------------------------------------------

_NAMES = st.binary(min_size=1, max_size=60).filter(lambda b: b"\0" not in b)
_HASH = Hash(np.arange(96) % 3 == 0, np.linspace(-2, 2, 96, dtype=np.float32))


@settings(max_examples=300, deadline=None)
@given(names=st.lists(_NAMES, min_size=1, max_size=5), ok=st.lists(st.booleans(), min_size=5, max_size=5))
def test_any_byte_name_survives_every_format(names, ok):
    results = [HashResult(os.fsdecode(n), _HASH, None) if good else
               HashResult(os.fsdecode(n), None, f"{os.fsdecode(n)}: cannot read\nthis file")
               for n, good in zip(names, ok)]
    encoded = {fmt: b"".join(Writer(fmt, fmt != "text", Progress()).encode(r) for r in results)
               for fmt in ("text", "jsonl", "csv")}
    assert parse_text(encoded["text"]) == [(_HASH.hex, n) for n, good in zip(names, ok) if good]
    rows = parse_jsonl(encoded["jsonl"])
    assert [name for _, name in rows] == names
    assert [obj.get("hash") for obj, _ in rows] == [_HASH.hex if good else None for good in ok[:len(names)]]
    assert all(obj["error"] == "cannot read\\nthis file" for obj, _ in rows if "error" in obj)
    assert [r["path"] for r in parse_csv(b"path,hash,error,unstable_bits,margins\n" + encoded["csv"])] == names


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(name=_NAMES.filter(lambda b: b"/" not in b and b not in (b".", b"..") and len(b) < 200))
def test_any_real_file_name_hashed_end_to_end(nh, name, capsysbinary):
    """A real file under a random byte name, hashed by the command: text and JSON Lines give it back."""
    with tempfile.TemporaryDirectory() as tmp:
        draw_image(Path(tmp) / "x.png", 7)
        path = os.path.join(os.fsencode(tmp), name)
        os.rename(os.path.join(os.fsencode(tmp), b"x.png"), path)
        want = nh.hash(os.fsdecode(path)).hex
        for fmt, parse in (([], parse_text), (["--jsonl"], parse_jsonl)):
            capsysbinary.readouterr()
            assert main(["hash", "--model", "demo", "--workers", "0", *fmt, os.fsdecode(path)]) == 0
            (got, got_name), = parse(capsysbinary.readouterr().out)
            assert got_name == path and (got if isinstance(got, str) else got["hash"]) == want


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_null_separated_stdin_carries_any_name(hostile_dir, expected):
    """``find -print0 | neuralhash hash -0 -``: names with newlines, CRs and invalid UTF-8 arrive whole."""
    listing = b"".join(_arg(name) + b"\0" for name in HOSTILE)
    proc = _run([b"hash", b"--model", b"demo", b"--workers", b"0", b"-0", b"-"], hostile_dir, input=listing)
    assert proc.returncode == 0, proc.stderr
    assert parse_text(proc.stdout) == [(h, n) for n, h in expected.items()]
    # Without a trailing NUL the last name still counts; empty entries are skipped.
    proc = _run([b"hash", b"--model", b"demo", b"--workers", b"0", b"--null", b"-"], hostile_dir,
                input=b"\0" + listing[:-1])
    assert parse_text(proc.stdout) == [(h, n) for n, h in expected.items()]
    # --null means nothing without -: a usage error.
    proc = _run([b"hash", b"--model", b"demo", b"-0", b"."], hostile_dir)
    assert proc.returncode == 2 and b"--null" in proc.stderr
