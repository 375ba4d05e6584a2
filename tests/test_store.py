"""The SQLite hash store: restartable adds, safe imports, models kept apart."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from neuralhash.store import IMPORTED_MODEL, HashStore, StoreError


@dataclass
class _Result:
    item: str
    hash: object
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class _Hash:
    bytes: bytes


class FakeHasher:
    """Hashes a file to the first 12 bytes of its sha256; files named *.bad fail."""

    model_id = "fake-model"
    description = "a fake model for store tests"

    def __init__(self):
        self.seen: list[str] = []

    def hash_many(self, items, batch_size=16, workers=None):
        for item in items:
            self.seen.append(str(item))
            if str(item).endswith(".bad") or not os.path.isfile(item):
                yield _Result(item, None, "cannot read image")
            else:
                yield _Result(item, _Hash(hashlib.sha256(Path(item).read_bytes()).digest()[:12]), None)


def _files(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"img{i:03d}.png"
        p.write_bytes(f"image {i}".encode())
        paths.append(p)
    return paths


def test_add_skips_unchanged_and_rehashes_changed(tmp_path):
    files = _files(tmp_path / "imgs", 5)
    with HashStore(tmp_path / "db.sqlite", create=True) as store:
        hasher = FakeHasher()
        report = store.add_images(hasher, files)
        assert (report.added, report.updated, report.unchanged, report.failed) == (5, 0, 0, [])
        again = FakeHasher()
        report = store.add_images(again, files)
        assert (report.added, report.unchanged) == (0, 5) and again.seen == []  # nothing re-read
        files[2].write_bytes(b"changed content, changed size")
        third = FakeHasher()
        report = store.add_images(third, files)
        assert (report.updated, report.unchanged) == (1, 4) and third.seen == [str(files[2].resolve())]
        rows = list(store.export())
        assert len(rows) == 5 and len({r.path for r in rows}) == 5
        changed = next(r for r in rows if r.path.endswith("img002.png"))
        assert changed.hex == hashlib.sha256(b"changed content, changed size").hexdigest()[:24]
        db = sqlite3.connect(tmp_path / "db.sqlite")
        size, sha = db.execute("SELECT size, sha256 FROM images WHERE path LIKE '%img002.png'").fetchone()
        assert size == files[2].stat().st_size and sha == hashlib.sha256(files[2].read_bytes()).hexdigest()
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_add_reports_failures_and_carries_on(tmp_path):
    files = _files(tmp_path / "imgs", 3)
    bad = tmp_path / "imgs" / "broken.bad"
    bad.write_bytes(b"x")
    with HashStore(tmp_path / "db.sqlite", create=True) as store:
        report = store.add_images(FakeHasher(), [files[0], bad, tmp_path / "missing.png", files[1]])
        assert report.added == 2
        assert [Path(p).name for p, _ in report.failed] == ["broken.bad", "missing.png"]


def test_interrupted_add_loses_and_duplicates_nothing(tmp_path):
    """kill -9 in the middle of an add, then add again: every file exactly once."""
    files = _files(tmp_path / "imgs", 40)
    db = tmp_path / "db.sqlite"
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_store import FakeHasher
        from neuralhash.store import HashStore

        class Slow(FakeHasher):
            def hash_many(self, items, **kw):
                for r in super().hash_many(items, **kw):
                    time.sleep(0.05)
                    yield r

        with HashStore({str(db)!r}, create=True) as store:
            store.add_images(Slow(), sorted(__import__("glob").glob({str(tmp_path / "imgs" / "*.png")!r})),
                             commit_every=4)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.time() + 30
    count = 0
    while time.time() < deadline and count < 8:
        time.sleep(0.05)
        if db.exists():
            try:
                count = sqlite3.connect(db).execute("SELECT count(*) FROM images").fetchone()[0]
            except sqlite3.OperationalError:
                count = 0
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 8 <= count < 40, "the add should have been killed part way"
    with HashStore(db, create=True) as store:
        done_before = len(list(store.export()))
        hasher = FakeHasher()
        report = store.add_images(hasher, files)
        assert report.unchanged == done_before and report.added == 40 - done_before
        rows = list(store.export())
    assert sorted(Path(r.path).name for r in rows) == sorted(p.name for p in files)
    for r in rows:
        assert r.hex == hashlib.sha256(Path(r.path).read_bytes()).hexdigest()[:24]


def test_import_formats_and_malformed_lines(tmp_path):
    h1, h2, h3 = "59a34eabe31910abfb06f308", "32dac883f7b91bbf45a48296", "0123456789abcdef01234567"
    text = tmp_path / "list.txt"
    text.write_text(f"{h1}  a photo.jpg\n\n{h2.upper()}  b.jpg\nnot-a-hash  c.jpg\n{h3[:-1]}  d.jpg\n{h3}\n")
    jsonl = tmp_path / "list.jsonl"
    jsonl.write_text(json.dumps({"path": "x.jpg", "hash": h1}) + "\n{broken\n"
                     + json.dumps({"path": "y.jpg", "error": "cannot read"}) + "\n")
    csv_file = tmp_path / "list.csv"
    csv_file.write_text(f"path,hash,error\n\"with, comma.jpg\",{h2},\nz.jpg,,cannot read\nw.jpg,zz,\n")
    with HashStore(tmp_path / "db.sqlite", create=True) as store:
        report = store.import_file(text)
        assert report.imported == 3
        assert [n for n, _ in report.skipped] == [4, 5]
        assert "24 hex digits" in report.skipped[0][1]
        rows = {r.path: r.hex for r in store.export()}
        assert rows == {"a photo.jpg": h1, "b.jpg": h2, "list.txt:6": h3}
        report = store.import_file(jsonl, list_name="other", model_id="other")
        assert report.imported == 1 and [n for n, _ in report.skipped] == [2, 3]
        report = store.import_file(csv_file, list_name="other", model_id="other")
        assert report.imported == 1 and [n for n, _ in report.skipped] == [3, 4]
        assert {r.path for r in store.export(model_id="other")} == {"x.jpg", "with, comma.jpg"}
        # re-importing replaces, never duplicates
        again = store.import_file(text)
        assert (again.imported, again.replaced) == (3, 3)
        assert len(list(store.export(model_id=IMPORTED_MODEL))) == 3


def test_models_never_mix_silently(tmp_path):
    files = _files(tmp_path / "imgs", 2)
    listing = tmp_path / "list.txt"
    listing.write_text("59a34eabe31910abfb06f308  a.jpg\n")
    with HashStore(tmp_path / "db.sqlite", create=True) as store:
        with pytest.raises(StoreError, match="no hashes yet"):
            store.resolve_model(None)
        store.add_images(FakeHasher(), files)
        assert store.resolve_model(None).model_id == "fake-model"
        store.import_file(listing)
        with pytest.raises(StoreError, match="several models.*--model-id"):
            store.resolve_model(None)
        with pytest.raises(StoreError, match="no hashes of model 'nope'"):
            store.resolve_model("nope")
        hits = store.matcher(IMPORTED_MODEL).query([bytes(12)], 96)[0]
        assert [h.hex for h in hits] == ["59a34eabe31910abfb06f308"]


def test_not_a_database(tmp_path):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="corrupted"):
        HashStore(junk, create=True)
    with pytest.raises(StoreError, match="no such database"):
        HashStore(tmp_path / "absent.sqlite", create=False)


def _hamming(a: str, b: str) -> int:
    return bin(int(a, 16) ^ int(b, 16)).count("1")


def test_search_and_duplicate_groups_match_brute_force(tmp_path):
    import random

    from neuralhash.store import duplicate_groups, search

    rng = random.Random(4)
    base = [f"{rng.getrandbits(96):024x}" for _ in range(30)]
    rows = []
    for k, h in enumerate(base):
        rows.append((f"orig{k:02d}.jpg", h))
        for copy in range(k % 3):  # planted near-duplicates, 1..4 bits away
            flipped = int(h, 16)
            for bit in rng.sample(range(96), rng.randint(1, 4)):
                flipped ^= 1 << bit
            rows.append((f"orig{k:02d}_copy{copy}.jpg", f"{flipped:024x}"))
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{h}  {p}\n" for p, h in rows))
    with HashStore(tmp_path / "db.sqlite", create=True) as store:
        store.import_file(listing)
        model = store.resolve_model(None)
        queries = [base[1], base[2], f"{rng.getrandbits(96):024x}"]
        found = search(store, model, [bytes.fromhex(q) for q in queries], 5)
        expected = sorted(
            ((qi, _hamming(q, h), p) for qi, q in enumerate(queries) for p, h in rows if _hamming(q, h) <= 5),
        )
        assert [(m.query, m.distance, m.path) for m in found] == expected
        assert all(_hamming(queries[m.query], m.hex) == m.distance for m in found)

        groups = duplicate_groups(store, model, 5)
        # brute-force components over the same graph
        parent = {p: p for p, _ in rows}

        def root(p):
            while parent[p] != p:
                p = parent[p]
            return p

        for i, (p1, h1) in enumerate(rows):
            for p2, h2 in rows[i + 1:]:
                if _hamming(h1, h2) <= 5:
                    parent[root(p1)] = root(p2)
        clusters = {}
        for p, _ in rows:
            clusters.setdefault(root(p), []).append(p)
        expected_groups = sorted((sorted(c) for c in clusters.values() if len(c) > 1), key=lambda g: (-len(g), g[0]))
        assert [[h.path for h in g] for g in groups] == expected_groups
        assert len(groups[0]) >= len(groups[-1])
