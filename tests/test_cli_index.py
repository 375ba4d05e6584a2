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
    assert main(["match", db, h1.hex, "--max-distance", "96", "--csv"]) == 0
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
    assert capsys.readouterr().out.split() == [h1.hex, "0", h1.hex, "someone/else.jpg"]
    assert main(["match", db, str(files[1]), "--max-distance", "0", "--model", "demo"]) == 0  # its own model
    assert Path(capsys.readouterr().out.split()[-1]).name == "img01.png"


def test_match_on_missing_database(tmp_path, capsys):
    assert main(["match", str(tmp_path / "none.sqlite"), "0" * 24, "--max-distance", "2"]) == 1
    assert "no such database" in capsys.readouterr().err
