"""index add / import / export / info, match and dupes from the command line, with the demo model."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from neuralhash.cli import main


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cache")
    old = os.environ.get("NEURALHASH_CACHE")
    os.environ["NEURALHASH_CACHE"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("NEURALHASH_CACHE", None)
    else:
        os.environ["NEURALHASH_CACHE"] = old


@pytest.fixture(scope="module")
def demo(cache):
    from neuralhash.hashing import NeuralHash

    return NeuralHash.demo()


def _images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        arr = (rng.random((48 + i, 64, 3)) * 255).astype(np.uint8)
        p = folder / f"img{i:02d}.png"
        Image.fromarray(arr).save(p)
        paths.append(p)
    return paths


def test_index_add_is_incremental_and_exports(tmp_path, demo, capsys):
    files = _images(tmp_path / "imgs", 5)
    db = tmp_path / "db.sqlite"
    assert main(["index", "add", str(db), str(tmp_path / "imgs"), "--model", "demo", "--workers", "0"]) == 0
    assert "5 added, 0 updated, 0 unchanged, 0 failed" in capsys.readouterr().err
    assert main(["index", "add", str(db), str(tmp_path / "imgs"), "--model", "demo", "--workers", "0"]) == 0
    assert "0 added, 0 updated, 5 unchanged" in capsys.readouterr().err
    assert main(["index", "export", str(db), "--jsonl"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(Path(r["path"]).name for r in rows) == [p.name for p in files]
    for r in rows:
        assert r["hash"] == demo.hash(r["path"]).hex and r["model"] == demo.model_id
    assert main(["index", "info", str(db)]) == 0
    assert demo.model_id in capsys.readouterr().out


def test_index_add_killed_and_rerun(tmp_path, demo, cache):
    """kill -9 part way through `neuralhash index add`, run it again: every image exactly once."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    big = (np.random.default_rng(1).random((900, 1200, 3)) * 255).astype(np.uint8)
    Image.fromarray(big).save(folder / "img000.jpg", quality=90)
    data = (folder / "img000.jpg").read_bytes()
    for i in range(1, 150):  # enough decoding work to outlast the first one-second commit
        (folder / f"img{i:03d}.jpg").write_bytes(data)
    files = sorted(folder.iterdir())
    db = tmp_path / "db.sqlite"
    cmd = [sys.executable, "-m", "neuralhash.cli", "index", "add", str(db), str(tmp_path / "imgs"),
           "--model", "demo", "--workers", "0", "--batch-size", "1"]
    env = dict(os.environ, NEURALHASH_CACHE=str(cache))
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
    count, deadline = 0, time.time() + 60
    while count == 0 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
        try:
            count = sqlite3.connect(db, timeout=1).execute("SELECT count(*) FROM images").fetchone()[0]
        except sqlite3.OperationalError:
            pass
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 0 < count < len(files), f"expected a partial run, found {count} rows"
    assert subprocess.run(cmd, env=env, stderr=subprocess.DEVNULL).returncode == 0
    rows = sqlite3.connect(db).execute("SELECT path, hash FROM images").fetchall()
    assert sorted(Path(p).name for p, _ in rows) == [p.name for p in files]  # all there, none twice
    by_name = {Path(p).name: h.hex() for p, h in rows}
    for p in files[::50]:
        assert by_name[p.name] == demo.hash(p).hex


def test_import_match_and_dupes(tmp_path, demo, capsys):
    files = _images(tmp_path / "imgs", 3, seed=2)
    copy = tmp_path / "imgs" / "copy_of_img00.png"
    copy.write_bytes(files[0].read_bytes())
    db = str(tmp_path / "db.sqlite")
    assert main(["index", "add", db, str(tmp_path / "imgs"), "--model", "demo", "--workers", "0"]) == 0
    capsys.readouterr()

    # an image query, nearest first; the exact copy is at distance 0
    assert main(["match", db, str(files[0]), "--max-distance", "0", "--model", "demo", "--jsonl"]) == 0
    found = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(Path(m["path"]).name for m in found) == ["copy_of_img00.png", "img00.png"]
    assert all(m["distance"] == 0 and m["query"] == str(files[0]) for m in found)

    # a hex query with a radius that reaches everything: sorted by distance, distances right
    h1 = demo.hash(files[1])
    assert main(["match", db, h1.hex, "--max-distance", "32", "--csv"]) == 0  # 32: the largest distance
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 4 and [int(r["distance"]) for r in rows] == sorted(int(r["distance"]) for r in rows)
    for r in rows:
        assert int(r["distance"]) == h1.hamming(r["hash"])

    assert main(["dupes", db, "--max-distance", "0", "--jsonl"]) == 0
    groups = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [sorted(Path(m["path"]).name for m in g["members"]) for g in groups] == [["copy_of_img00.png", "img00.png"]]

    # imported hashes live under another model: a search must say so, not mix them
    listing = tmp_path / "published.txt"
    listing.write_text(f"{h1.hex}  someone/else.jpg\nzzzz  broken line\n")
    assert main(["index", "import", db, str(listing)]) == 1
    err = capsys.readouterr().err
    assert f"{listing}:2:" in err and "1 imported" in err
    assert main(["match", db, h1.hex, "--max-distance", "0"]) == 1
    assert "--model-id" in capsys.readouterr().err
    assert main(["match", db, h1.hex, "--max-distance", "0", "--model-id", "imported"]) == 0
    assert capsys.readouterr().out.split() == [h1.hex, "0", "published", h1.hex, "someone/else.jpg"]
    assert main(["match", db, str(files[1]), "--max-distance", "0", "--model", "demo"]) == 0  # its own model
    assert Path(capsys.readouterr().out.split()[-1]).name == "img01.png"


def test_match_on_missing_database(tmp_path, capsys):
    assert main(["match", str(tmp_path / "none.sqlite"), "0" * 24, "--max-distance", "2"]) == 1
    assert "no such database" in capsys.readouterr().err


# -- named lists, hostile names, usage errors ---------------------------------------------------

HOSTILE = ["a\nb.jpg", "c\rd.jpg", "back\\slash.jpg", "line\u2028sep.jpg", "nel\u0085.jpg",
           os.fsdecode(b"bad\xff\xfe.jpg"), 'comma, "quote".jpg', " lead space.jpg", "tab\tname.jpg",
           "trailing space.jpg ", "#not a comment.jpg", "{not json}.jpg"]


def _cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    return subprocess.run([sys.executable, "-m", "neuralhash.cli", *args], input=stdin, capture_output=True,
                          env=env, timeout=120)


def test_hostile_names_round_trip_through_every_format(tmp_path):
    from neuralhash.files.pathnames import csv_row, json_fields, text_line
    from neuralhash.store import HashStore

    db = str(tmp_path / "db.sqlite")
    rng = np.random.default_rng(7)
    entries = [(name, rng.integers(0, 256, 12, dtype=np.uint8).tobytes()) for name in HOSTILE]
    with HashStore(db, create=True) as store:
        store.add_hashes("src", entries, model_id="m")
    want = {(os.fsencode(n), d.hex()) for n, d in entries}
    # what `hash` writes (text, --jsonl, --csv) by the documented rule, and what `index export` writes
    written = {
        "hash-text": "".join(text_line(d.hex(), n) for n, d in entries).encode("utf-8", "surrogateescape"),
        "hash-jsonl": "".join(json.dumps({**json_fields(n), "hash": d.hex()}, ensure_ascii=False) + "\n"
                              for n, d in entries).encode("utf-8", "surrogateescape"),
        "hash-csv": (csv_row(["path", "hash", "error"]) + "".join(csv_row([n, d.hex(), ""]) for n, d in entries)
                     ).encode("utf-8", "surrogateescape"),
    }
    for fmt in ("text", "jsonl", "csv"):
        got = _cli("index", "export", db, "--list", "src", *([] if fmt == "text" else [f"--{fmt}"]))
        assert got.returncode == 0, got.stderr
        written[f"export-{fmt}"] = got.stdout
    for name, data in written.items():
        path = tmp_path / f"{name}.list"
        path.write_bytes(data)
        got = _cli("index", "import", db, str(path), "--list", name, "--model-id", "m")
        assert got.returncode == 0, (name, got.stderr)
        with HashStore(db) as store:
            back = {(os.fsencode(h.path), h.hex) for h in store.export(list_name=name)}
        assert back == want, name


def test_lists_from_the_command_line(tmp_path):
    db = str(tmp_path / "db.sqlite")
    h = ["59a34eabe31910abfb06f308", "32dac883f7b91bbf45a48296", "59a34eabe31910abfb06f309"]
    (tmp_path / "published.txt").write_text(f"{h[0]}  pub/one.jpg\n{h[1]}  pub/two.jpg\n")
    (tmp_path / "partner.csv").write_text(f"path,hash\npartner/x.jpg,{h[2]}\n")
    assert _cli("index", "import", db, str(tmp_path / "published.txt")).returncode == 0  # list 'published'
    got = _cli("index", "import", db, str(tmp_path / "partner.csv"), "--list", "partner")
    assert got.returncode == 0 and b"list 'partner': 1 imported" in got.stderr
    got = _cli("index", "lists", db)
    assert got.stdout.decode().split() == ["1", "imported", "partner", "2", "imported", "published"]
    got = _cli("match", db, h[0], "--max-distance", "1", "--list", "published,partner", "--jsonl")
    rows = [json.loads(x) for x in got.stdout.decode().splitlines()]
    assert [(r["path"], r["distance"], r["list"]) for r in rows] == [
        ("pub/one.jpg", 0, "published"), ("partner/x.jpg", 1, "partner")]
    got = _cli("match", db, h[0], "--max-distance", "1", "--list", "partner")
    assert got.stdout.decode().split() == [h[0], "1", "partner", h[2], "partner/x.jpg"]  # QUERY DISTANCE LIST
    got = _cli("index", "export", db, "--list", "published")
    assert got.stdout.decode() == f"{h[0]}  pub/one.jpg\n{h[1]}  pub/two.jpg\n"
    # no hit: said on standard error, exit 0
    got = _cli("match", db, "0" * 24, "--max-distance", "2")
    assert got.returncode == 0 and got.stdout == b"" and b"no match within 2 bits" in got.stderr
    got = _cli("index", "remove-list", db, "partner")
    assert got.returncode == 0 and b"(1 hash)" in got.stderr
    assert _cli("index", "lists", db).stdout.decode().split() == ["2", "imported", "published"]
    got = _cli("match", db, h[0], "--max-distance", "1", "--list", "partner")
    assert got.returncode == 1 and b"no list named 'partner'" in got.stderr


def test_match_and_dupes_argument_errors_exit_2(tmp_path):
    db = str(tmp_path / "db.sqlite")
    (tmp_path / "l.txt").write_text("59a34eabe31910abfb06f308  a.jpg\n")
    assert _cli("index", "import", db, str(tmp_path / "l.txt")).returncode == 0
    got = _cli("match", db, "59a34eabe31910abfb06f30", "--max-distance", "4")
    assert got.returncode == 2 and b"not a hash of 24 hex digits, nor a file" in got.stderr
    assert b"model" not in got.stderr.splitlines()[-1]
    for cmd in (["match", db, "0" * 24], ["dupes", db]):
        for bad in ("97", "-1", "x"):
            got = _cli(*cmd, "--max-distance", bad)
            assert got.returncode == 2 and b"--max-distance" in got.stderr.splitlines()[-1], got.stderr
    got = _cli("match", db, "0" * 24, "--max-distance", "2", "--list", "a,,b")
    assert got.returncode == 2 and b"--list" in got.stderr


def test_same_model_id_from_espresso_and_onnx_with_or_without_hash_head(tmp_path, demo, cache):
    from neuralhash.demo import demo_model_dir
    from neuralhash.hashing import NeuralHash

    folder = demo_model_dir()
    for name, extra in (("plain.onnx", []), ("head.onnx", ["--hash-head"])):
        assert main(["convert", str(folder), "-o", str(tmp_path / name), *extra]) == 0
        assert NeuralHash.from_onnx(tmp_path / name).model_id == demo.model_id
    files = _images(tmp_path / "imgs", 2, seed=5)
    db = str(tmp_path / "db.sqlite")
    assert main(["index", "add", db, str(tmp_path / "imgs"), "--model", str(tmp_path / "head.onnx"),
                 "--workers", "0"]) == 0
    h = demo.hash(files[0]).hex
    # the model id as printed (12 digits) is accepted
    assert main(["match", db, h, "--max-distance", "0", "--model-id", demo.model_id[:12]]) == 0
    assert main(["match", db, str(files[0]), "--max-distance", "0", "--model", "demo"]) == 0


def _limited(script: str, limit_mb: int) -> subprocess.CompletedProcess:
    """Run ``script`` in a Python process whose address space is capped at ``limit_mb``."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"),
               OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    prelude = (f"import resource; resource.setrlimit(resource.RLIMIT_AS, ({limit_mb << 20}, {limit_mb << 20}))\n")
    return subprocess.run([sys.executable, "-c", prelude + script], capture_output=True, env=env, timeout=300)


def test_dupes_at_a_large_radius_stays_within_bounded_memory(tmp_path):
    """20,000 hashes all within 32 bits (the largest distance) of one another: 200 million pairs (3 GB as
    arrays), one group."""
    db = str(tmp_path / "db.sqlite")
    rng = np.random.default_rng(3)
    center = rng.integers(0, 2, 96, dtype=np.uint8)
    bits = np.repeat(center[None], 20000, axis=0)
    for row in bits:
        row[rng.choice(96, 16, replace=False)] ^= 1
    packed = np.packbits(bits, axis=1)
    (tmp_path / "l.txt").write_text("".join(f"{bytes(p).hex()}  img{k:05d}.jpg\n" for k, p in enumerate(packed)))
    assert _cli("index", "import", db, str(tmp_path / "l.txt")).returncode == 0
    got = _limited(f"import sys; from neuralhash.cli import main; "
                   f"sys.exit(main(['dupes', {db!r}, '--max-distance', '32', '--csv']))", 1024)
    assert got.returncode == 0, got.stderr[-2000:]
    assert b"1 group(s) of near-duplicates within 32 bits (20000 images)" in got.stderr


def test_import_streams_under_a_memory_limit(tmp_path):
    """A list larger than the memory the importing process may use goes in, and reads back exactly."""
    n = 1_500_000
    path = tmp_path / "big.txt"
    rng = np.random.default_rng(9)
    with open(path, "w") as fh:
        for start in range(0, n, 250_000):
            text = rng.integers(0, 256, (250_000, 12), dtype=np.uint8).tobytes().hex()
            fh.write("".join(f"{text[24 * j:24 * j + 24]}  {'d' * 150}/{start + j:08d}.jpg\n"
                             for j in range(250_000)))
    size_mb = path.stat().st_size >> 20
    db = str(tmp_path / "db.sqlite")
    got = _limited(f"import sys; from neuralhash.cli import main; "
                   f"sys.exit(main(['index', 'import', {db!r}, {str(path)!r}]))", 900)
    assert got.returncode == 0, got.stderr[-2000:]
    assert size_mb > 250 and f"{n} imported".encode() in got.stderr
    from neuralhash.store import HashStore

    with HashStore(db) as store:
        assert store.lists()[0].count == n
        assert store.verify_index()


def test_index_add_with_a_non_utf8_file_name_completes(tmp_path, demo):
    folder = tmp_path / "imgs"
    files = _images(folder, 2, seed=8)
    raw = os.fsencode(str(folder)) + b"/photo \xff\xfe.png"
    os.rename(files[1], raw)
    db = str(tmp_path / "db.sqlite")
    got = _cli("index", "add", db, str(folder), "--model", "demo", "--workers", "0")
    assert got.returncode == 0, got.stderr
    assert b"2 added" in got.stderr
    got = _cli("index", "export", db, "--jsonl")
    rows = [json.loads(line) for line in got.stdout.splitlines()]
    by_bytes = {(__import__("base64").b64decode(r["path_b64"]) if "path_b64" in r else os.fsencode(r["path"])): r
                for r in rows}
    assert raw in by_bytes and by_bytes[raw]["hash"] == demo.hash(os.fsdecode(raw)).hex
    got = _cli("index", "export", db)  # text: the name's bytes as they are
    assert raw in got.stdout
