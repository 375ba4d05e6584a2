"""A hash store that needs no server: one SQLite database in WAL mode.

Per image it holds the path, the 96-bit hash, the file's size, mtime and
sha256, and the model that produced the hash. Hashes of different models are
kept apart: every row names its model, and searches run over one model's
hashes at a time, so they never mix silently.

Adding is restartable: rows are committed in batches, each batch one
transaction, and ``(model, path)`` is unique, so an interrupted run (Ctrl-C or
kill -9) loses at most the batch in flight and a rerun neither duplicates nor
rehashes what is stored. A file whose size and mtime are unchanged is skipped
without being read.

Imports take ``HEX  PATH`` lines, CSV (with ``hash`` and ``path`` columns) or
JSONL (``{"hash": ..., "path": ...}``), from this tool or others. A malformed
line is reported with its number and skipped; the valid lines go in one
transaction, so an import is never half done.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from .errors import NeuralHashError

SCHEMA_VERSION = "1"
HEX_DIGITS = 24
IMPORTED_MODEL = "imported"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS models (
    id INTEGER PRIMARY KEY,
    model_id TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY,
    model INTEGER NOT NULL REFERENCES models(id),
    path TEXT NOT NULL,
    hash BLOB NOT NULL CHECK (length(hash) = 12),
    size INTEGER,
    mtime_ns INTEGER,
    sha256 TEXT,
    UNIQUE (model, path)
);
"""


class StoreError(NeuralHashError):
    """The database cannot be opened, or is not a neuralhash store."""


@dataclass(frozen=True)
class StoredModel:
    key: int  # row id in the models table
    model_id: str
    description: str
    count: int


@dataclass(frozen=True)
class StoredHash:
    row: int
    path: str
    hex: str
    model_id: str


@dataclass
class AddReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


@dataclass
class ImportReport:
    imported: int = 0
    replaced: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def parse_hex(text: str) -> bytes | None:
    """12 bytes from 24 hex digits (any case), or None when ``text`` is not that."""
    text = text.strip()
    if len(text) != HEX_DIGITS:
        return None
    try:
        return bytes.fromhex(text)
    except ValueError:
        return None


class HashStore:
    """A neuralhash SQLite database. Use as a context manager, or call :meth:`close`."""

    def __init__(self, path: str | os.PathLike, *, create: bool = True):
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise StoreError(f"{self.path}: no such database")
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)  # explicit transactions below
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
            elif row[0] != SCHEMA_VERSION:
                raise StoreError(f"{self.path}: database schema {row[0]}, this version reads {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: not a usable neuralhash database ({exc})") from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "HashStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- models ----------------------------------------------------------------------------

    def models(self) -> list[StoredModel]:
        rows = self._db.execute(
            "SELECT m.id, m.model_id, m.description, count(i.id) FROM models m "
            "LEFT JOIN images i ON i.model = m.id GROUP BY m.id ORDER BY m.id"
        ).fetchall()
        return [StoredModel(*row) for row in rows]

    def model_key(self, model_id: str, description: str = "", *, create: bool = True) -> int | None:
        row = self._db.execute("SELECT id FROM models WHERE model_id=?", (model_id,)).fetchone()
        if row is not None or not create:
            return row[0] if row else None
        return self._db.execute(
            "INSERT INTO models (model_id, description) VALUES (?, ?)", (model_id, description)
        ).lastrowid

    def resolve_model(self, model_id: str | None) -> StoredModel:
        """The stored model named ``model_id``, or the only one when ``model_id`` is None."""
        models = self.models()
        if model_id is not None:
            for m in models:
                if m.model_id == model_id:
                    return m
            known = ", ".join(m.model_id for m in models) or "none"
            raise StoreError(f"{self.path}: no hashes of model {model_id!r} (stored models: {known})")
        if len(models) == 1:
            return models[0]
        if not models:
            raise StoreError(f"{self.path}: the database holds no hashes yet")
        listed = "; ".join(f"{m.model_id} ({m.count} hashes, {m.description or 'no description'})" for m in models)
        raise StoreError(f"{self.path}: hashes of several models are stored ({listed}); choose one with --model-id")

    # -- adding ----------------------------------------------------------------------------

    def add_images(
        self,
        hasher: Any,
        paths: Iterable[str | os.PathLike],
        *,
        batch_size: int = 4,
        workers: int | None = None,
        commit_every: int = 256,
        commit_seconds: float = 1.0,
        on_result: Callable[[str, str | None], None] | None = None,
    ) -> AddReport:
        """Hash ``paths`` with ``hasher`` (a :class:`~neuralhash.hashing.NeuralHash`) into the store.

        Files already stored for this model with the same size and mtime are
        skipped unread. Rows are committed every ``commit_every`` hashes or
        ``commit_seconds``, whichever comes first, so an interruption costs
        little work. ``on_result(path, error)`` is called for every path
        (error None on success, ``"unchanged"`` never: unchanged files are counted only).
        """
        report = AddReport()
        model = self.model_key(hasher.model_id, hasher.description)
        known: dict[str, tuple[int | None, int | None]] = dict(
            ((p, (s, m)) for p, s, m in self._db.execute(
                "SELECT path, size, mtime_ns FROM images WHERE model=?", (model,)))
        )
        stats: dict[str, os.stat_result] = {}

        def todo() -> Iterator[str]:
            for raw in paths:
                path = os.path.abspath(os.fspath(raw))
                try:
                    st = os.stat(path)
                except OSError:
                    yield path  # hashing reports the reason as a per-item error
                    continue
                if known.get(path) == (st.st_size, st.st_mtime_ns):
                    report.unchanged += 1
                    continue
                stats[path] = st
                yield path

        pending: list[tuple] = []
        last_commit = time.monotonic()
        try:
            for result in hasher.hash_many(todo(), batch_size=batch_size, workers=workers):
                path = str(result.item)
                st = stats.pop(path, None)
                if not result.ok:
                    report.failed.append((path, result.error))
                    if on_result:
                        on_result(path, result.error)
                    continue
                try:
                    digest = file_sha256(path)
                except OSError as exc:
                    report.failed.append((path, f"cannot read ({exc.strerror or exc})"))
                    continue
                if path in known:
                    report.updated += 1
                else:
                    report.added += 1
                pending.append((model, path, result.hash.bytes, st.st_size if st else None,
                                st.st_mtime_ns if st else None, digest))
                if on_result:
                    on_result(path, None)
                if len(pending) >= commit_every or time.monotonic() - last_commit >= commit_seconds:
                    self._upsert(pending)
                    last_commit = time.monotonic()
        finally:
            self._upsert(pending)  # what was hashed before an interruption is kept
        return report

    def _upsert(self, rows: list[tuple]) -> None:
        if not rows:
            return
        with self._transaction():
            self._db.executemany(
                "INSERT INTO images (model, path, hash, size, mtime_ns, sha256) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (model, path) DO UPDATE SET hash=excluded.hash, size=excluded.size, "
                "mtime_ns=excluded.mtime_ns, sha256=excluded.sha256",
                rows,
            )
        rows.clear()

    def _transaction(self):
        db = self._db

        class _Tx:
            def __enter__(self):
                db.execute("BEGIN IMMEDIATE")

            def __exit__(self, kind, value, tb):
                db.execute("ROLLBACK" if kind else "COMMIT")

        return _Tx()

    # -- import / export -----------------------------------------------------------------------

    def import_file(self, path: str | os.PathLike, *, model_id: str = IMPORTED_MODEL,
                    description: str = "") -> ImportReport:
        """Import a hash list (``HEX  PATH`` lines, CSV or JSONL); see the module docstring."""
        source = Path(path)
        try:
            text = source.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise StoreError(f"{source}: cannot read hash list ({getattr(exc, 'strerror', None) or exc})") from None
        report = ImportReport()
        rows: dict[str, bytes] = {}
        for lineno, entry in _parse_hash_list(text, source.name):
            if isinstance(entry, str):
                report.skipped.append((lineno, entry))
                continue
            item_path, digest = entry
            rows[item_path] = digest  # a later line for the same path wins
        with self._transaction():
            model = self.model_key(model_id, description or f"imported from {source.name}")
            existing = {p for (p,) in self._db.execute("SELECT path FROM images WHERE model=?", (model,))}
            report.replaced = sum(1 for p in rows if p in existing)
            report.imported = len(rows)
            self._db.executemany(
                "INSERT INTO images (model, path, hash) VALUES (?, ?, ?) "
                "ON CONFLICT (model, path) DO UPDATE SET hash=excluded.hash",
                [(model, p, h) for p, h in rows.items()],
            )
        return report

    def export(self, model_id: str | None = None) -> Iterator[StoredHash]:
        """Every stored hash (of one model, or of all), in insertion order."""
        query = ("SELECT i.id, i.path, i.hash, m.model_id FROM images i JOIN models m ON m.id = i.model")
        args: tuple = ()
        if model_id is not None:
            query += " WHERE m.model_id = ?"
            args = (model_id,)
        for row, path, digest, mid in self._db.execute(query + " ORDER BY i.id", args):
            yield StoredHash(row, path, digest.hex(), mid)

    # -- search support ------------------------------------------------------------------------

    def packed(self, model: StoredModel) -> tuple[np.ndarray, np.ndarray]:
        """(row ids int64 [N], hashes uint8 [N, 12]) of one model, for a search index."""
        rows = self._db.execute("SELECT id, hash FROM images WHERE model=? ORDER BY id", (model.key,)).fetchall()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        packed = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.uint8).reshape(len(rows), 12)
        return ids, packed

    def paths(self, row_ids: Iterable[int]) -> dict[int, str]:
        """path of each row id."""
        out: dict[int, str] = {}
        ids = [int(i) for i in row_ids]
        for start in range(0, len(ids), 900):  # SQLite's bound-parameter limit
            chunk = ids[start : start + 900]
            marks = ",".join("?" * len(chunk))
            out.update(self._db.execute(f"SELECT id, path FROM images WHERE id IN ({marks})", chunk).fetchall())
        return out


@dataclass(frozen=True)
class Match:
    query: int  # position of the query in the list given
    row: int
    path: str
    hex: str
    distance: int


def search(store: HashStore, model: StoredModel, queries: list[bytes], max_distance: int) -> list[Match]:
    """Every stored hash of ``model`` within ``max_distance`` of each query: by query, nearest first."""
    from .matching import HashIndex

    ids, packed = store.packed(model)
    if not queries or not len(ids):
        return []
    index = HashIndex(packed, ids=ids)
    found = index.query_many(np.frombuffer(b"".join(queries), np.uint8).reshape(-1, 12), max_distance)
    paths = store.paths(found.ids)
    return [
        Match(int(q), int(row), paths[int(row)], bytes(packed[i]).hex(), int(d))
        for q, i, row, d in zip(found.query, found.index, found.ids, found.distance)
    ]


def duplicate_groups(store: HashStore, model: StoredModel, max_distance: int) -> list[list[StoredHash]]:
    """Groups of near-duplicates (connected components of the within-``max_distance`` graph).

    Largest group first (ties by first path); members sorted by path.
    """
    from .matching import HashIndex, component_groups, connected_components

    ids, packed = store.packed(model)
    if len(ids) < 2:
        return []
    pairs = HashIndex(packed, ids=ids).self_join(max_distance)
    groups = component_groups(connected_components(pairs, len(ids)))
    paths = store.paths(ids[np.concatenate(groups)] if groups else [])
    out = [
        sorted((StoredHash(int(ids[i]), paths[int(ids[i])], bytes(packed[i]).hex(), model.model_id) for i in g),
               key=lambda h: h.path)
        for g in groups
    ]
    out.sort(key=lambda g: (-len(g), g[0].path))
    return out


def _parse_hash_list(text: str, name: str) -> Iterator[tuple[int, tuple[str, bytes] | str]]:
    """Yield (line number, (path, 12 hash bytes)) or (line number, reason) per non-blank line."""
    lines = text.splitlines()
    first = next((line for line in lines if line.strip()), "")
    if first.lstrip().startswith("{"):
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                yield lineno, f"not a JSON object ({exc.msg})"
                continue
            if not isinstance(obj, dict):
                yield lineno, "not a JSON object"
                continue
            if obj.get("error"):
                yield lineno, f"an error record, not a hash ({obj.get('error')})"
                continue
            yield lineno, _entry(obj.get("hash"), obj.get("path"), name, lineno)
        return
    header = [h.strip().lower() for h in next(csv.reader([first]))] if "," in first else []
    if "hash" in header:
        reader = csv.reader(io.StringIO(text))
        rows = iter(reader)
        columns = None
        for row in rows:
            lineno = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if columns is None:
                columns = {h.strip().lower(): i for i, h in enumerate(row)}
                continue
            get = lambda key: row[columns[key]] if key in columns and columns[key] < len(row) else None  # noqa: E731
            if get("error"):
                yield lineno, f"an error record, not a hash ({get('error')})"
                continue
            yield lineno, _entry(get("hash"), get("path"), name, lineno)
        return
    for lineno, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.strip().split(None, 1)
        yield lineno, _entry(parts[0], parts[1] if len(parts) > 1 else None, name, lineno)


def _entry(hex_text: Any, path: Any, name: str, lineno: int) -> tuple[str, bytes] | str:
    if not isinstance(hex_text, str) or not hex_text.strip():
        return "no hash"
    digest = parse_hex(hex_text)
    if digest is None:
        return f"not a 96-bit hash (24 hex digits): {hex_text.strip()[:40]!r}"
    if path is not None and not isinstance(path, str):
        return "the path is not a string"
    # A bare hash (no path) is named after its place in the list.
    return (path.strip() if path and path.strip() else f"{name}:{lineno}"), digest
