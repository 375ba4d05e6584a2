"""The SQLite hash store: restartable adds, safe imports, models kept apart."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
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
        with pytest.raises(StoreError, match="several models.*; choose one with model_id$"):  # the API names model_id
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


# -- named lists, the packed index, safety ----------------------------------------------------

import numpy as np  # noqa: E402

from neuralhash.store import StoredList  # noqa: E402
from neuralhash.store import packed as packed_mod  # noqa: E402


def _brute(rows: list[tuple[str, str, str]], query: str, r: int, lists=None) -> list[tuple[int, str]]:
    """(distance, path) of every (list, path, hex) row within r, nearest first then by insertion."""
    hits = [(_hamming(query, h), k, p) for k, (lst, p, h) in enumerate(rows)
            if (lists is None or lst in lists) and _hamming(query, h) <= r]
    return [(d, p) for d, _, p in sorted(hits)]


def _random_rows(n: int, seed: int, lists=("a", "b")) -> list[tuple[str, str, str]]:
    import random

    rng = random.Random(seed)
    base = [f"{rng.getrandbits(96):024x}" for _ in range(n)]
    rows = []
    for k, h in enumerate(base):
        lst = lists[k % len(lists)]
        rows.append((lst, f"{lst}/{k:04d}.jpg", h))
        if k % 4 == 0:  # a near copy 1-6 bits away
            v = int(h, 16)
            for bit in rng.sample(range(96), rng.randint(1, 6)):
                v ^= 1 << bit
            rows.append((lst, f"{lst}/{k:04d}_copy.jpg", f"{v:024x}"))
    return rows


def _fill(store: HashStore, rows, model_id="m") -> None:
    for lst in sorted({r[0] for r in rows}):
        store.add_hashes(lst, [(p, bytes.fromhex(h)) for ls, p, h in rows if ls == lst], model_id=model_id)


def test_named_lists_and_matcher_agree_with_brute_force(tmp_path):
    rows = _random_rows(300, seed=1)
    with HashStore(tmp_path / "db.sqlite", create=True) as store:
        _fill(store, rows)
        assert sorted(store.lists(), key=lambda x: x.name) == [
            StoredList("a", "m", sum(r[0] == "a" for r in rows)), StoredList("b", "m", sum(r[0] == "b" for r in rows))]
        queries = [rows[0][2], rows[5][2], "0" * 24]
        for lists in (None, ["a"], ["b"], ["a", "b"]):
            m = store.matcher("m", lists)
            for r in (0, 3, 8):
                got = m.query([bytes.fromhex(q) for q in queries], r)
                for q, hits in zip(queries, got):
                    assert [(h.distance, h.path) for h in hits] == _brute(rows, q, r, lists)
                    assert all(_hamming(q, h.hex) == h.distance and h.list == h.path.split("/")[0] for h in hits)
        # hashes of another model never mix: a list is one model's
        with pytest.raises(StoreError, match="holds hashes of model m"):
            store.add_hashes("a", [("x.jpg", bytes(12))], model_id="other")
        store.add_hashes("c", [("x.jpg", bytes(12))], model_id="other")
        with pytest.raises(StoreError, match="another model"):
            store.matcher("m", ["a", "c"])
        with pytest.raises(StoreError, match="different models"):
            store.matcher(None, ["a", "c"])
        assert store.delete_list("b") == sum(r[0] == "b" for r in rows)
        assert [x.name for x in store.lists()] == ["a", "c"]
        with pytest.raises(StoreError, match="no list named 'b'"):
            store.delete_list("b")
        assert store.verify_index()


def test_matcher_sees_rows_committed_later_by_another_process(tmp_path):
    db = tmp_path / "db.sqlite"
    rows = _random_rows(200, seed=2, lists=("a",))
    with HashStore(db, create=True) as store:
        _fill(store, rows)
    with HashStore(db) as reader:  # read-only, long-lived, as a service's would be
        m = reader.matcher("m")
        q = bytes.fromhex(rows[3][2])
        before = m.query([q], 4)[0]
        script = textwrap.dedent(f"""
            from neuralhash.store import HashStore
            with HashStore({str(db)!r}, create=True) as s:
                s.add_hashes("a", [("late.jpg", bytes.fromhex({rows[3][2]!r}))], model_id="m")
                s.add_hashes("a", [({rows[3][1]!r}, bytes(12))], model_id="m")  # replaces a row
        """)
        subprocess.run([sys.executable, "-c", script], check=True, env=dict(os.environ))
        after = m.query([q], 4)[0]
        assert "late.jpg" in [h.path for h in after] and "late.jpg" not in [h.path for h in before]
        assert rows[3][1] in [h.path for h in before] and rows[3][1] not in [h.path for h in after]
        assert reader.verify_index()


def _crash_in_write(db: Path, where: str) -> None:
    """A process that dies (os._exit) in the middle of an add, at ``where``."""
    script = textwrap.dedent(f"""
        import os
        from neuralhash.store import HashStore, core
        original = core._Write.finish
        def finish(self):
            if {where!r} == "before-index":
                os._exit(9)
            original(self)
            os._exit(9)  # "after-index": the index is written, the rows never committed
        core._Write.finish = finish
        with HashStore({str(db)!r}, create=True) as s:
            s.delete_list("a") if {where!r} == "after-index" else None
            s.add_hashes("b", [("crash.jpg", bytes(12))], model_id="m")
    """)
    assert subprocess.run([sys.executable, "-c", script], env=dict(os.environ)).returncode == 9


@pytest.mark.parametrize("where", ["before-index", "after-index"])
def test_packed_index_that_disagrees_after_a_crash_is_rebuilt(tmp_path, where):
    db = tmp_path / "db.sqlite"
    rows = _random_rows(100, seed=3, lists=("a",))
    with HashStore(db, create=True) as store:
        _fill(store, rows)
    _crash_in_write(db, where)
    q = bytes.fromhex(rows[0][2])
    with HashStore(db) as reader:  # read-only: rebuilds in memory, writes nothing
        stamp = (db.with_suffix(".sqlite.nhindex")).stat().st_mtime_ns
        hits = reader.matcher("m").query([q], 6)[0]
        assert [(h.distance, h.path) for h in hits] == _brute(rows, rows[0][2], 6)
        assert (db.with_suffix(".sqlite.nhindex")).stat().st_mtime_ns == stamp
    with HashStore(db, create=True) as store:  # a writing open repairs the file
        hits = store.matcher("m").query([q], 6)[0]
        assert [(h.distance, h.path) for h in hits] == _brute(rows, rows[0][2], 6)
        assert store.verify_index()
        assert [x.name for x in store.lists()] == ["a"]


def test_a_stale_copy_of_the_index_is_never_used(tmp_path):
    """An older copy of DB.nhindex put back (a backup restored, a crash after the commit): rebuilt."""
    db = tmp_path / "db.sqlite"
    index = Path(str(db) + ".nhindex")
    with HashStore(db, create=True) as store:
        store.add_hashes("a", [("one.jpg", bytes(12))], model_id="m")
        old = index.read_bytes()
        store.add_hashes("a", [("two.jpg", bytes(11) + b"\x01")], model_id="m")
    index.write_bytes(old)
    with HashStore(db) as reader:
        assert [h.path for h in reader.matcher("m").query([bytes(12)], 1)[0]] == ["one.jpg", "two.jpg"]
    index.write_bytes(b"garbage" * 100)
    with HashStore(db, create=True) as store:
        assert [h.path for h in store.matcher("m").query([bytes(12)], 1)[0]] == ["one.jpg", "two.jpg"]
        assert store.verify_index()
    hdr = packed_mod.read_header(os.open(index, os.O_RDONLY), "x")
    assert hdr.n == 2 and not hdr.dirty


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_foreign_sqlite_files_are_never_touched(tmp_path):
    other = tmp_path / "other.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    con.execute("INSERT INTO notes (text) VALUES ('keep me')")
    con.commit()
    con.close()
    before, listing = _sha(other), sorted(os.listdir(tmp_path))
    for create in (False, True):
        with pytest.raises(StoreError, match="not a neuralhash database .*notes.*untouched"):
            HashStore(other, create=create)
    assert _sha(other) == before and sorted(os.listdir(tmp_path)) == listing
    con = sqlite3.connect(other)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert [n for (n,) in con.execute("SELECT name FROM sqlite_master")] == ["notes"]
    # a read-only open of an empty file creates nothing either
    empty = tmp_path / "empty.db"
    empty.touch()
    with pytest.raises(StoreError, match="no neuralhash data"):
        HashStore(empty)
    assert empty.stat().st_size == 0


def _v1_database(path: Path) -> None:
    con = sqlite3.connect(path)
    con.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE models (id INTEGER PRIMARY KEY, model_id TEXT NOT NULL UNIQUE,
                             description TEXT NOT NULL DEFAULT '');
        CREATE TABLE images (id INTEGER PRIMARY KEY, model INTEGER NOT NULL REFERENCES models(id),
                             path TEXT NOT NULL, hash BLOB NOT NULL CHECK (length(hash) = 12), size INTEGER,
                             mtime_ns INTEGER, sha256 TEXT, UNIQUE (model, path));
        INSERT INTO meta VALUES ('schema', '1');
    """)
    con.execute("INSERT INTO models (model_id, description) VALUES (?, 'demo')", ("ab" * 32,))
    con.execute("INSERT INTO models (model_id, description) VALUES ('imported', '')")
    con.executemany("INSERT INTO images (model, path, hash, size) VALUES (?, ?, ?, ?)",
                    [(1, "/p/a.jpg", bytes(12), 5), (2, "x.jpg", b"\x01" * 12, None), (1, "/p/b.jpg", b"\x02" * 12, 7)])
    con.commit()
    con.close()


def test_schema_1_database_is_upgraded_by_a_writing_open(tmp_path):
    db = tmp_path / "old.sqlite"
    _v1_database(db)
    before = _sha(db)
    with pytest.raises(StoreError, match="older version.*index upgrade"):
        HashStore(db)
    assert _sha(db) == before
    with HashStore(db, create=True) as store:
        assert {(x.name, x.model_id, x.count) for x in store.lists()} == {
            ("images", "ab" * 32, 2), ("imported", "imported", 1)}
        got = {(h.list, h.path, h.hex) for h in store.export()}
        assert got == {("images", "/p/a.jpg", "00" * 12), ("images", "/p/b.jpg", "02" * 12),
                       ("imported", "x.jpg", "01" * 12)}
        assert store.resolve_model("abab").model_id == "ab" * 32  # a unique prefix
        assert store.verify_index()


def test_model_id_prefix_must_be_unique(tmp_path):
    with HashStore(tmp_path / "db.sqlite", create=True) as store:
        store.add_hashes("x", [("a", bytes(12))], model_id="aa" + "0" * 62)
        store.add_hashes("y", [("a", bytes(12))], model_id="ab" + "0" * 62)
        assert store.resolve_model("aa").model_id.startswith("aa")
        with pytest.raises(StoreError, match="start of several model ids"):
            store.resolve_model("a")


def test_non_utf8_file_names_are_stored_losslessly(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    raw = os.fsencode(str(folder)) + b"/caf\xe9 \xff.png"
    with open(raw, "wb") as fh:
        fh.write(b"image bytes")
    name = os.fsdecode(raw)
    with HashStore(tmp_path / "db.sqlite", create=True) as store:
        report = store.add_images(FakeHasher(), [name])
        assert (report.added, report.failed) == (1, [])
        again = store.add_images(FakeHasher(), [name])
        assert again.unchanged == 1  # found by its bytes, not rehashed
        (row,) = store.export()
        assert os.fsencode(row.path) == raw
        (hit,) = store.matcher(None).query([bytes.fromhex(row.hex)], 0)[0]
        assert os.fsencode(hit.path) == raw
    con = sqlite3.connect(tmp_path / "db.sqlite")
    assert con.execute("SELECT typeof(path), path FROM images").fetchone() == ("blob", raw)


def test_a_file_that_vanishes_after_hashing_is_named(tmp_path):
    files = _files(tmp_path / "imgs", 3)

    class Vanishing(FakeHasher):
        def hash_many(self, items, **kw):
            for r in super().hash_many(items, **kw):
                if str(r.item).endswith("img001.png"):
                    os.remove(r.item)
                yield r

    seen = []
    with HashStore(tmp_path / "db.sqlite", create=True) as store:
        report = store.add_images(Vanishing(), files, on_result=lambda p, e: seen.append((Path(p).name, e)))
    assert report.added == 2 and [Path(p).name for p, _ in report.failed] == ["img001.png"]
    assert ("img001.png", report.failed[0][1]) in seen and "cannot read" in report.failed[0][1]


def test_a_locked_database_is_waited_for_then_named(tmp_path):
    import threading

    db = tmp_path / "db.sqlite"
    with HashStore(db, create=True) as store:
        store.add_hashes("a", [("x", bytes(12))], model_id="m")
    blocker = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    with HashStore(db, create=True, timeout=0.3) as store:
        with pytest.raises(StoreError) as info:
            store.add_hashes("a", [("y", bytes(12))], model_id="m")
        assert str(info.value).startswith(str(db)) and "locked by another process" in str(info.value)
        assert "\n" not in str(info.value)
    threading.Timer(0.5, lambda: blocker.execute("COMMIT")).start()
    with HashStore(db, create=True, timeout=20) as store:  # waits for the lock, then writes
        store.add_hashes("a", [("y", bytes(12))], model_id="m")
        assert {h.path for h in store.export()} == {"x", "y"}
        assert store.verify_index()


def test_disk_full_and_corruption_are_one_line_errors(tmp_path):
    db = tmp_path / "db.sqlite"
    with HashStore(db, create=True) as store:
        store.add_hashes("a", [("x", bytes(12))], model_id="m")
        store._db.execute("PRAGMA max_page_count=12")  # SQLite's own way to run out of room
        with pytest.raises(StoreError, match="the disk is full"):
            store.add_hashes("a", [(f"long name {'x' * 200} {k}", bytes(12)) for k in range(2000)], model_id="m")
        assert [h.path for h in store.export()] == ["x"]  # what was committed stays, nothing half done
        assert store.verify_index()
    data = bytearray(db.read_bytes())
    for k in range(4096, len(data), 7):
        data[k] ^= 0x5A
    db.write_bytes(bytes(data))
    with pytest.raises(StoreError) as info:
        with HashStore(db) as store:
            list(store.export())
    assert str(info.value).startswith(str(db)) and "\n" not in str(info.value)


def test_undecodable_text_written_by_another_tool_does_not_crash(tmp_path):
    db = tmp_path / "db.sqlite"
    with HashStore(db, create=True) as store:
        store.add_hashes("a", [("x", bytes(12))], model_id="m")
    con = sqlite3.connect(db)
    con.execute("UPDATE images SET path = CAST(x'66ff2e6a7067' AS TEXT)")
    con.commit()
    con.close()
    with HashStore(db) as store:
        (row,) = store.export()
        assert os.fsencode(row.path) == b"f\xff.jpg"


# -- hash lists: hostile and random input gives only skipped lines or the project's own errors -------

import io  # noqa: E402

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from neuralhash.lists import hashlists  # noqa: E402

_PIECES = [b"59a34eabe31910abfb06f308  a\x00b", b"59A34EABE31910ABFB06F308", b"59a34eabe31910abfb06f30", b"zz" * 12,
           b"  ", b" *", b"\t", b" ", b"\\", b"\\n", b"\\q", b"\r", b"\n", b",", b'"', b"{", b"}", b"[1]",
           b'{"hash": "59a34eabe31910abfb06f308", "path": "a"}', b'{"hash": 5}', b'{"path_b64": "!!"}',
           b"path,hash,error", b"hash", b"#", "\u2028".encode(), "\u0085".encode(), b"\xff\xfe", b"\xef\xbb\xbf",
           b"a.jpg", b"\x00"]


def _check_entries(data: bytes) -> None:
    try:
        entries = list(hashlists.iter_entries(io.BytesIO(data), label="fuzz"))
    except hashlists.HashListError as exc:
        assert "\n" not in str(exc)
        return
    lines = [ln for ln, _ in entries]
    assert lines == sorted(lines) and all(isinstance(ln, int) and ln >= 1 for ln in lines)
    for _, e in entries:
        if isinstance(e, str):
            assert e and "\n" not in e
        else:
            name, digest = e
            assert isinstance(name, str) and name and isinstance(digest, bytes) and len(digest) == 12


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=3000))
def test_fuzz_hash_list_random_bytes(data):
    _check_entries(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(st.sampled_from(_PIECES), max_size=8).map(b"".join), max_size=30))
def test_fuzz_hash_list_hostile_lines(lines):
    _check_entries(b"\n".join(lines))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(st.sampled_from(_PIECES), max_size=8).map(b"".join), max_size=20))
def test_fuzz_import_keeps_the_store_consistent(tmp_path, lines):
    db = tmp_path / "fuzz.sqlite"
    data = b"\n".join(lines)
    with HashStore(db, create=True) as store:
        try:
            report = store.import_file(io.BytesIO(data), list_name="f", model_id="m")
        except StoreError as exc:
            assert "\n" not in str(exc)
        else:
            expected = {}  # the parser's entries, a later line winning
            for _, e in hashlists.iter_entries(io.BytesIO(data), label="-"):
                if not isinstance(e, str):
                    expected[e[0]] = e[1].hex()
            assert {h.path: h.hex for h in store.export(list_name="f")} == expected
            assert report.imported == len(expected)
        assert store.verify_index()
    for suffix in ("", "-wal", "-shm", ".nhindex"):
        Path(str(db) + suffix).unlink(missing_ok=True)


def test_an_over_long_line_is_skipped_and_reading_goes_on():
    data = b"59a34eabe31910abfb06f308  a.jpg\n" + b"x" * (hashlists.MAX_LINE * 3) + b"\n" + \
        b"32dac883f7b91bbf45a48296  b.jpg\n"
    got = list(hashlists.iter_entries(io.BytesIO(data)))
    assert [(ln, e if isinstance(e, str) else e[0]) for ln, e in got] == [
        (1, "a.jpg"), (2, f"a line longer than {hashlists.MAX_LINE} bytes"), (3, "b.jpg")]


def test_concurrent_writers_lose_nothing(tmp_path):
    """Two processes adding to one database at once (a service and an `index add`): every row, a true index."""
    db = tmp_path / "db.sqlite"
    with HashStore(db, create=True) as store:
        store.create_list("p0", "m")
    script = textwrap.dedent(f"""
        import sys
        from neuralhash.store import HashStore
        k = int(sys.argv[1])
        with HashStore({str(db)!r}, create=True) as s:
            for b in range(25):
                s.add_hashes(f"p{{k}}", [(f"{{k}}-{{b}}-{{i}}", bytes([k, b, i]) + bytes(9)) for i in range(40)],
                             model_id="m")
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(k)]) for k in (0, 1)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    with HashStore(db) as store:
        assert {(x.name, x.count) for x in store.lists()} == {("p0", 1000), ("p1", 1000)}
        assert store.verify_index()
        hits = store.matcher("m").query([bytes([1, 24, 39]) + bytes(9)], 0)[0]
        assert [h.path for h in hits] == ["1-24-39"]


def test_the_packed_index_grows_past_its_capacity_under_a_reader(tmp_path):
    db = tmp_path / "db.sqlite"
    rng = np.random.default_rng(11)
    digests = rng.integers(0, 256, (90_000, 12), dtype=np.uint8)
    with HashStore(db, create=True) as store:
        store.add_hashes("a", [("first", bytes(digests[0]))], model_id="m")
        with HashStore(db) as reader:
            m = reader.matcher("m")
            assert len(m) == 1
            for b in range(3):  # past the first file's 65,536 entries: the file is rewritten bigger
                store.add_hashes("a", [(f"{b}-{i}", bytes(digests[30_000 * b + i])) for i in range(30_000)],
                                 model_id="m")
                assert len(m) == 1 + 30_000 * (b + 1)
            q = digests[[5, 45_000, 89_999]]
            hits = m.query([bytes(x) for x in q], 0)
            assert [[h.path for h in hs if h.path != "first"] for hs in hits] == [["0-5"], ["1-15000"], ["2-29999"]]
        assert store.verify_index()


def test_a_file_of_garbage_reports_a_bounded_list_of_lines(tmp_path):
    from neuralhash.store.core import MAX_SKIPPED

    data = b"not a hash\n" * (MAX_SKIPPED + 5000) + b"59a34eabe31910abfb06f308  last.jpg\n"
    with HashStore(tmp_path / "db.sqlite", create=True) as store:
        report = store.import_file(io.BytesIO(data), list_name="g", model_id="m")
    assert report.imported == 1 and report.skipped_total == MAX_SKIPPED + 5000
    assert len(report.skipped) == MAX_SKIPPED and report.skipped[0][0] == 1


def test_a_read_only_database_file_is_a_one_line_error(tmp_path):
    """Read-only even for root: an immutable file (chattr +i); skipped where that is not possible."""
    db = tmp_path / "db.sqlite"
    with HashStore(db, create=True) as store:
        store.add_hashes("a", [("x", bytes(12))], model_id="m")
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(db)], capture_output=True).returncode:
        pytest.skip("cannot make a file immutable here (chattr +i needs root and a supporting file system)")
    try:
        with HashStore(db, create=True) as store:
            with pytest.raises(StoreError) as info:
                store.add_hashes("a", [("y", bytes(12))], model_id="m")
        assert str(info.value).startswith(str(db)) and "read-only" in str(info.value)
        with HashStore(db) as store:  # reading still works
            assert [h.path for h in store.matcher("m").query([bytes(12)], 0)[0]] == ["x"]
    finally:
        subprocess.run(["chattr", "-i", str(db)])


@pytest.mark.parametrize("slice_size", [4, 1 << 21])
def test_reimport_replaces_by_name_in_key_slices(tmp_path, monkeypatch, slice_size):
    """Re-imports and duplicate lines, with the search for equal names cut into many key ranges."""
    from neuralhash.store import transfer

    monkeypatch.setattr(transfer, "_DEDUPE_SLICE", slice_size)
    rng = np.random.default_rng(5)
    names = [f"n{k}" for k in range(300)]
    first = {n: rng.integers(0, 256, 12, dtype=np.uint8).tobytes() for n in names}
    second = {n: rng.integers(0, 256, 12, dtype=np.uint8).tobytes() for n in names[::3]}
    lines1 = "".join(f"{d.hex()}  {n}\n" for n, d in first.items()) + f"{bytes(12).hex()}  n7\n"  # n7 twice
    lines2 = "".join(f"{d.hex()}  {n}\n" for n, d in second.items())
    with HashStore(tmp_path / "db.sqlite", create=True) as store:
        r1 = store.import_file(io.BytesIO(lines1.encode()), list_name="l", model_id="m")
        assert (r1.imported, r1.replaced) == (300, 0)
        r2 = store.import_file(io.BytesIO(lines2.encode()), list_name="l", model_id="m")
        assert (r2.imported, r2.replaced) == (100, 100)
        want = {n: d.hex() for n, d in first.items()}
        want["n7"] = "00" * 12
        want.update({n: d.hex() for n, d in second.items()})
        assert {h.path: h.hex for h in store.export(list_name="l")} == want
        assert store.lists()[0].count == 300 and store.verify_index()
        r3 = store.import_file(io.BytesIO(b"".join(b"%s  n%d\n" % (b"ab" * 12, k) for k in (1, 2, 299, 300, 301))),
                               list_name="l", model_id="m")  # a few names into a bigger list
        assert (r3.imported, r3.replaced) == (5, 3) and store.lists()[0].count == 302
        assert {h.path: h.hex for h in store.export(list_name="l") if h.hex == "ab" * 12} == {
            f"n{k}": "ab" * 12 for k in (1, 2, 299, 300, 301)}


def test_index_upgrade_rebuilds_an_index_altered_behind_its_header(tmp_path):
    """Columns changed with a valid header (no crash can do this; a hand edit can): verify finds it."""
    from neuralhash.cli import main

    db = tmp_path / "db.sqlite"
    with HashStore(db, create=True) as store:
        store.add_hashes("a", [("x", bytes(12)), ("y", b"\x01" * 12)], model_id="m")
    index = Path(str(db) + ".nhindex")
    hi = packed_mod._offsets(packed_mod.read_header(os.open(index, os.O_RDONLY), "x").capacity)["hi"]
    with open(index, "r+b") as fh:
        fh.seek(hi)
        fh.write(b"\xff" * 8)
    with HashStore(db) as store:
        assert not store.verify_index()
    assert main(["index", "upgrade", str(db)]) == 0
    with HashStore(db) as store:
        assert store.verify_index()
        assert [h.path for h in store.matcher("m").query([bytes(12)], 0)[0]] == ["x"]


def test_adding_one_at_a_time_finds_names_through_the_sorted_keys(tmp_path, monkeypatch):
    """A long-lived store keeps the name keys sorted; entries appended since (by it or others) are scanned."""
    monkeypatch.setattr(HashStore, "_KEYS_SCAN", 8)
    db = tmp_path / "db.sqlite"
    want: dict[str, str] = {}
    rng = np.random.default_rng(2)
    with HashStore(db, create=True) as store, HashStore(db, create=True) as other:
        for step in range(120):
            name = f"n{int(rng.integers(0, 40))}"
            digest = rng.integers(0, 256, 12, dtype=np.uint8).tobytes()
            (store if step % 3 else other).add_hashes("a", [(name, digest)], model_id="m")
            want[name] = digest.hex()
        assert {h.path: h.hex for h in store.export()} == want
        assert store.lists()[0].count == len(want) and store.verify_index()


def test_one_name_repeated_many_times_imports_in_one_pass(tmp_path):
    """A list whose lines all share a name: the last line wins (the others are duplicates dropped),
    found by grouping, not by comparing every pair (30,000 lines were 450 million pairs)."""
    n = 30_000
    digests = [f"{i:024x}" for i in range(n)]
    src = tmp_path / "same.txt"
    src.write_text("".join(f"{d}  same name.jpg\n" for d in digests) + f"{'ab' * 12}  other.jpg\n")
    with HashStore(tmp_path / "s.db", create=True) as store:
        report = store.import_file(src, list_name="l", model_id="m")
        assert report.imported == 2
        rows = {(r.path, r.hex) for r in store.export(list_name="l")}
    assert rows == {("same name.jpg", digests[-1]), ("other.jpg", "ab" * 12)}


# -- changes reach the search without a rebuild a lookup waits for (issue 18 item 14) -----------


def test_the_main_index_is_rebuilt_in_the_background_and_answers_stay_exact(tmp_path, monkeypatch):
    import threading

    from neuralhash.store import Matcher

    monkeypatch.setattr(Matcher, "DELTA_MAX", 50)
    built_in: list[str] = []
    real = Matcher._new_main

    def recording(self, packed, n, build):
        built_in.append(threading.current_thread().name)
        return real(self, packed, n, build)

    monkeypatch.setattr(Matcher, "_new_main", recording)
    rows = _random_rows(200, seed=21, lists=("a",))
    db = tmp_path / "db.sqlite"
    with HashStore(db, create=True) as writer, HashStore(db) as reader:
        _fill(writer, rows[:40])
        matcher = reader.matcher("m", None)
        queries = [rows[0][2], rows[-1][2], rows[len(rows) // 2][2]]
        done = 40
        while done < len(rows):  # commits of 30 rows: past DELTA_MAX every other commit
            writer.add_hashes("a", [(p, bytes.fromhex(h)) for _, p, h in rows[done:done + 30]], model_id="m")
            done += 30
            for r in (0, 6):
                got = matcher.query([bytes.fromhex(q) for q in queries], r)
                for q, hits in zip(queries, got):
                    assert [(h.distance, h.path) for h in hits] == _brute(rows[:done], q, r)
        matcher.wait_merged(30)
        assert len(rows) - matcher._main.n <= Matcher.DELTA_MAX
    # The first main index is built by the first query; every later one in the background thread.
    assert built_in[0] == threading.current_thread().name
    assert len(built_in) > 1 and set(built_in[1:]) == {"nh-index-merge"}


def test_lists_created_and_deleted_change_no_index(tmp_path):
    rows = _random_rows(120, seed=22, lists=("a", "b"))
    db = tmp_path / "db.sqlite"
    with HashStore(db, create=True) as writer, HashStore(db) as reader:
        _fill(writer, [r for r in rows if r[0] == "a"])
        matcher = reader.matcher("m", None)
        q = [bytes.fromhex(r[2]) for r in rows[:6]]
        matcher.query(q, 4)
        main = matcher._main
        _fill(writer, [r for r in rows if r[0] == "b"])  # a new list of the model: followed, not rebuilt
        got = matcher.query(q, 4)
        for query, hits in zip(rows[:6], got):
            assert [(h.distance, h.path) for h in hits] == _brute(rows, query[2], 4)
        writer.delete_list("a")
        got = matcher.query(q, 4)
        for query, hits in zip(rows[:6], got):
            assert [(h.distance, h.path) for h in hits] == _brute(rows, query[2], 4, ["b"])
        assert matcher._main is main  # the same main index throughout
        in_b = next(r for r in rows if r[0] == "b")
        assert [h.path for h in matcher.query([bytes.fromhex(in_b[2])], 0, only_lists=["b"])[0]] == [in_b[1]]


def test_a_reader_does_not_wait_for_a_writer_between_its_two_writes(tmp_path, monkeypatch):
    """The packed file is written before the rows commit: a reader in that window keeps its view of
    the last commit (entries are only appended past it) instead of waiting, then rebuilding from rows."""
    import threading

    from neuralhash.store import core

    rows = _random_rows(60, seed=23, lists=("a",))
    db = tmp_path / "db.sqlite"
    with HashStore(db, create=True) as writer, HashStore(db) as reader:
        _fill(writer, rows[:30])
        matcher = reader.matcher("m", None)
        q = [bytes.fromhex(rows[0][2])]
        assert matcher.query(q, 0)[0][0].path == rows[0][1]
        in_window, release = threading.Event(), threading.Event()
        real_finish = core._Write.finish

        def slow_finish(self):
            real_finish(self)  # the packed file now says the new generation...
            in_window.set()
            release.wait(30)  # ...and the rows are not committed yet

        monkeypatch.setattr(core._Write, "finish", slow_finish)
        rebuilt = []
        monkeypatch.setattr(core._MemoryPacked, "from_rows", classmethod(lambda cls, *a: rebuilt.append(a)))
        thread = threading.Thread(target=writer.add_hashes, args=("a", [(p, bytes.fromhex(h)) for _, p, h in rows[30:]]),
                                  kwargs={"model_id": "m"})
        thread.start()
        try:
            assert in_window.wait(30)
            got = matcher.query([bytes.fromhex(rows[0][2]), bytes.fromhex(rows[40][2])], 0)
            assert [h.path for h in got[0]] == [rows[0][1]] and got[1] == []  # the last commit's view
            assert rebuilt == [] and thread.is_alive()
        finally:
            release.set()
            thread.join(30)
        monkeypatch.undo()
        got = matcher.query([bytes.fromhex(rows[40][2])], 0)
        assert [h.path for h in got[0]] == [rows[40][1]]  # committed now: found
