"""The hash store: named lists of hashes in SQLite, searched through a packed, memory-mapped index."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Iterable, Iterator, Sequence

import numpy as np

from .. import hashlists
from ..matching import HashIndex, component_groups
from ..matching.index import check_radius
from ..matching.packing import from_words, to_words
from ..pathnames import display, from_sql, sql_value, to_bytes
from . import db as dbmod
from . import packed as pk
from .db import StoreError
from .search import Match, Matcher

IMPORTED_MODEL = "imported"
DEFAULT_LIST = "images"
_IN_CHUNK = 900  # SQLite's bound-parameter limit is 999
MAX_SKIPPED = 10_000  # malformed lines an import report lists one by one
_DEDUPE_SLICE = 1 << 21  # entries sorted at once when looking for names imported twice


@dataclass(frozen=True)
class StoredModel:
    key: int  # row id in the models table
    model_id: str
    description: str
    count: int


@dataclass(frozen=True)
class StoredList:
    name: str
    model_id: str
    count: int


@dataclass(frozen=True)
class StoredHash:
    row: int
    path: str
    hex: str
    model_id: str
    list: str = ""
    extra_json: str | None = None  # the entry's extra fields (a JSON object's text), see neuralhash.hashlists

    @property
    def extra(self) -> dict[str, Any] | None:
        return None if self.extra_json is None else json.loads(self.extra_json)


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
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason), the first MAX_SKIPPED
    list: str = ""
    skipped_total: int = 0  # malformed lines in all (a file of garbage must not fill memory with reasons)
    model_id: str = ""


class EmptyImportError(StoreError):
    """An import that was asked to bring entries brought none (every line malformed, or none)."""


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


parse_hex = hashlists.parse_hex


def _raw(name: str) -> bytes:
    return to_bytes(name)


class _Write:
    """One write transaction's rows: appended to SQLite and the packed index, deletions tombstoned."""

    def __init__(self, store: "HashStore", packed: pk.PackedFile):
        self.store = store
        self.db = store._db
        self.packed = packed
        self.next_id = int(store._meta("next_id"))
        self.generation = int(store._meta("generation"))
        self.n0 = packed.header.n  # committed entries
        self.pending = 0  # entries written past n0
        self.counts: dict[int, int] = {}  # list key -> change in count

    # -- packed file growth

    def _ensure(self, extra: int) -> None:
        need = self.n0 + self.pending + extra
        if need <= self.packed.header.capacity:
            return
        capacity = max(need, int(self.packed.header.capacity * 1.5), 1 << 16)
        self.store._regrow(self.packed, capacity, self.n0 + self.pending)
        self.packed = self.store._packed

    def append(self, list_key: int, names: Sequence[str], digests: bytes | bytearray,
               extra: Sequence[tuple] | None = None, raw_names: Sequence[bytes] | None = None,
               utf8: bool = False, extras: Sequence[str | None] | None = None) -> range:
        """Insert rows (names[k], digests[12k:12k+12][, size, mtime_ns, sha256]); their ids.
        ``raw_names``: the names' bytes when at hand; ``utf8``: every name is known to be UTF-8;
        ``extras``: per row the extra fields' JSON text (the column must exist)."""
        k = len(names)
        if k == 0:
            return range(0)
        ids = range(self.next_id, self.next_id + k)
        if extra is None:
            joined = "".join(names)
            # SQLite's JSON text ends at a NUL: such names (and non-UTF-8 ones) are bound row by row.
            plain = "\x00" not in joined
            if plain and not utf8:
                try:
                    joined.encode("utf-8")
                    utf8 = True
                except UnicodeEncodeError:
                    pass
            utf8 = utf8 and plain
            del joined
        if extras is not None:
            blobs = np.frombuffer(bytes(digests), dtype="V12").tolist()
            self.db.executemany("INSERT INTO images (id, list, path, hash, extra) VALUES (?, ?, ?, ?, ?)",
                                zip(ids, [list_key] * k, map(sql_value, names), blobs, extras))
        elif extra is None and utf8:
            # One statement a batch: SQLite walks a JSON array of the names and slices the
            # hashes from one blob, twice as fast as binding every row from Python.
            self.db.execute("INSERT INTO images (id, list, path, hash) "
                            "SELECT ? + key, ?, value, substr(?, 12 * key + 1, 12) FROM json_each(?)",
                            (ids.start, list_key, bytes(digests), json.dumps(list(names), ensure_ascii=False)))
        elif extra is None:
            blobs = np.frombuffer(bytes(digests), dtype="V12").tolist()  # 12-byte bytes objects, made in C
            self.db.executemany("INSERT INTO images (id, list, path, hash) VALUES (?, ?, ?, ?)",
                                zip(ids, [list_key] * k, map(sql_value, names), blobs))
        else:
            blobs = np.frombuffer(bytes(digests), dtype="V12").tolist()
            values = map(sql_value, names)
            self.db.executemany(
                "INSERT INTO images (id, list, path, hash, size, mtime_ns, sha256) VALUES (?, ?, ?, ?, ?, ?, ?)",
                ((i, list_key, v, b, *e) for i, v, b, e in zip(ids, values, blobs, extra)))
        packed = np.frombuffer(bytes(digests), np.uint8).reshape(k, 12)
        hi, lo = to_words(packed)
        raws = raw_names if raw_names is not None else [_raw(n) for n in names]
        self._ensure(k)
        start = self.n0 + self.pending
        self.store._pwrite_cols(self.packed, start, {
            "rowid": np.arange(ids.start, ids.stop, dtype=np.int64), "pkey": pk.name_keys(raws),
            "hi": hi, "lo": lo, "list": np.full(k, list_key, np.int32)})
        self.pending += k
        self.next_id += k
        self.counts[list_key] = self.counts.get(list_key, 0) + k
        return ids

    def delete(self, rowids: np.ndarray) -> int:
        """Delete rows by id (rows of this transaction too); how many were live."""
        rowids = _sorted_unique(np.asarray(rowids, dtype=np.int64))
        if rowids.size == 0:
            return 0
        total = self.n0 + self.pending
        col = self.packed.columns["rowid"][:total]
        pos = np.searchsorted(col, rowids)
        ok = pos < total
        pos, rowids = pos[ok], rowids[ok]
        hit = col[pos] == rowids
        pos, rowids = pos[hit], rowids[hit]
        lists = self.packed.columns["list"][pos]
        live = lists != pk.DELETED
        pos, rowids, lists = pos[live], rowids[live], lists[live]
        if pos.size == 0:
            return 0
        # Runs of consecutive ids (a replaced list is mostly one run) go as one range each.
        cut = np.flatnonzero(np.diff(rowids) != 1) + 1
        firsts = np.concatenate(([0], cut))
        lasts = np.concatenate((cut, [rowids.size])) - 1
        self.db.executemany("DELETE FROM images WHERE id BETWEEN ? AND ?",
                            zip(rowids[firsts].tolist(), rowids[lasts].tolist()))
        if np.any(pos < self.n0):
            self.packed.mark_dirty()  # before any committed entry changes in place
        self.store._tombstone(self.packed, pos)
        counts = np.bincount(lists)
        for key in np.flatnonzero(counts).tolist():
            self.counts[key] = self.counts.get(key, 0) - int(counts[key])
        return int(pos.size)

    def positions_of(self, list_key: int, pkeys: np.ndarray, upto: int | None = None) -> np.ndarray:
        """Positions of live entries of the list whose name key is in ``pkeys``."""
        total = self.n0 + self.pending if upto is None else upto
        pos = self.store._key_positions(self.packed, np.asarray(pkeys, np.int64), total)
        return pos[self.packed.columns["list"][pos] == list_key]

    def finish(self) -> None:
        self.generation += 1
        self.db.executemany("UPDATE meta SET value=? WHERE key=?",
                            [(str(self.generation), "generation"), (str(self.next_id), "next_id")])
        for key, delta in self.counts.items():
            if delta:
                self.db.execute("UPDATE lists SET count = count + ? WHERE id=?", (delta, key))
        h = self.packed.header
        self.packed.write_header(pk.Header(h.uuid, self.generation, self.n0 + self.pending, h.capacity, False),
                                 sync=True)


class HashStore:
    """A neuralhash SQLite database of named hash lists. Use as a context manager, or call :meth:`close`.

    ``create=True`` (writing commands) creates the file and schema when new and
    upgrades a schema-1 database; otherwise the database is opened read-only
    and nothing is written to it. ``timeout``: seconds to wait for a lock.
    """

    def __init__(self, path: str | os.PathLike, *, create: bool = False, timeout: float = 60.0):
        self.path = os.fsdecode(path)
        self.where = display(self.path)
        self.writable = create
        self.timeout = timeout
        self.index_path = self.path + ".nhindex"
        self._lock = threading.RLock()
        self._packed: pk.PackedFile | None = None
        self._memory: pk.PackedFile | None = None  # an in-memory rebuild (read-only opens)
        self._keys_sorted: tuple | None = None  # (packed file, entries covered, sorted keys, their positions)
        self._writes = 0  # commits made through this connection
        if not create and not os.path.isfile(self.path):
            raise StoreError(f"{self.where}: no such database")
        if os.path.exists(self.path) and not os.path.isfile(self.path):
            raise StoreError(f"{self.where}: not a file")
        try:
            self._db = dbmod.connect(self.path, create=create, timeout=timeout)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.where}: {dbmod.cause(exc, timeout)}") from None
        try:
            self._open_schema()
        except BaseException:
            self._db.close()
            raise

    def _open_schema(self) -> None:
        with self._sql():
            kind = dbmod.recognise(self._db, self.where)
            if kind == "v2":
                return
            if not self.writable:
                if kind == "empty":
                    raise StoreError(f"{self.where}: holds no neuralhash data (an empty database)")
                raise StoreError(f"{self.where}: written by an older version (schema 1); a writing command "
                                 f"(index add, index import, index upgrade) upgrades it")
            self._db.execute("BEGIN IMMEDIATE")
            try:
                kind = dbmod.recognise(self._db, self.where)  # again, under the lock
                if kind == "empty":
                    dbmod.create_schema(self._db)
                elif kind == "v1":
                    dbmod.upgrade_v1(self._db)
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
            self._db.execute("PRAGMA journal_mode=WAL")
        if self.writable:
            with self._sql():
                self._db.execute("PRAGMA synchronous=NORMAL")
            # A big import is one transaction: a larger cache spills fewer pages to the WAL mid-way.
            self._db.execute("PRAGMA cache_size=-65536")

    # -- plumbing -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _sql(self, doing: str = ""):
        """SQLite's and the OS's errors as one StoreError line naming the database."""
        try:
            yield
        except sqlite3.Error as exc:
            what = f"{doing}: " if doing else ""
            raise StoreError(f"{self.where}: {what}{dbmod.cause(exc, self.timeout)}") from None
        except OSError as exc:
            what = f"{doing}: " if doing else ""
            raise StoreError(f"{self.where}: {what}{dbmod.cause(exc)}") from None

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def _meta(self, key: str) -> str:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else ""

    def interrupt(self) -> None:
        """Abort the SQL statement another thread is running on this store (it then fails with a
        StoreError and its transaction rolls back); nothing happens when none is running. Safe from
        any thread: a server shutting down stops a long write this way."""
        try:
            self._db.interrupt()
        except sqlite3.ProgrammingError:  # closed meanwhile: nothing left to stop
            pass

    def close(self) -> None:
        with self._lock:
            if self._packed is not None:
                self._packed.close()
                self._packed = None
            self._db.close()

    def __enter__(self) -> "HashStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _require_writable(self) -> None:
        if not self.writable:
            raise StoreError(f"{self.where}: opened read-only (HashStore(..., create=True) to write)")

    @contextlib.contextmanager
    def _writing(self, doing: str):
        """One write transaction, rows and packed index together (see :mod:`.packed`)."""
        self._require_writable()
        with self._lock, self._sql(doing):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                tx = _Write(self, self._packed_for_write())
                yield tx
                tx.finish()
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                # The packed file may now be ahead of the rows: it is re-verified on next use.
                if self._packed is not None:
                    self._packed.close()
                    self._packed = None
                raise
            self._writes += 1

    # -- the packed index -----------------------------------------------------------------

    def _uuid(self) -> bytes:
        return bytes.fromhex(self._meta("uuid"))

    def _valid(self, packed: pk.PackedFile, generation: int) -> bool:
        h = packed.header
        return h.uuid == self._uuid() and h.generation == generation and not h.dirty

    def _packed_for_write(self) -> pk.PackedFile:
        """The packed index, verified against the rows (rebuilt if it disagrees); caller holds the write lock."""
        generation = int(self._meta("generation"))
        packed = self._packed
        if packed is not None:
            try:
                if not packed.same_file():
                    raise pk.PackedError("replaced")
                packed.refresh_header()
            except pk.PackedError:
                packed.close()
                packed = self._packed = None
        if packed is None:
            try:
                packed = pk.PackedFile(self.index_path, writable=True)
            except pk.PackedError:
                packed = None
        if packed is None or not self._valid(packed, generation):
            if packed is not None:
                packed.close()
            self._rebuild_file(generation)
            packed = pk.PackedFile(self.index_path, writable=True)
        self._packed = packed
        return packed

    def _rows_as_columns(self) -> Iterator[dict[str, np.ndarray]]:
        cur = self._db.execute("SELECT id, list, path, hash FROM images ORDER BY id")
        while True:
            rows = cur.fetchmany(1 << 16)
            if not rows:
                return
            ids, lists, paths, hashes = zip(*rows)
            packed = np.frombuffer(b"".join(hashes), np.uint8).reshape(len(rows), 12)
            hi, lo = to_words(packed)
            yield {"rowid": np.array(ids, np.int64), "list": np.array(lists, np.int32),
                   "pkey": pk.name_keys([_raw(from_sql(p)) for p in paths]), "hi": hi, "lo": lo}

    def _rebuild_file(self, generation: int) -> None:
        """Write the packed index anew from the rows (the caller holds the write lock)."""
        (count,) = self._db.execute("SELECT count(*) FROM images").fetchone()
        capacity = max(1 << 16, int(count * 1.25))
        header = pk.Header(self._uuid(), generation, 0, capacity, True)
        pk.write_new(self.index_path, header, None)
        packed = pk.PackedFile(self.index_path, writable=True)
        try:
            n = 0
            for cols in self._rows_as_columns():
                self._pwrite_cols(packed, n, cols)
                n += len(cols["rowid"])
            packed.write_header(pk.Header(header.uuid, generation, n, capacity, False), sync=True)
        finally:
            packed.close()

    def _regrow(self, packed: pk.PackedFile, capacity: int, count: int) -> None:
        """Copy the first ``count`` entries into a bigger file renamed over the old one."""
        h = packed.header
        cols = {name: packed.columns[name][:count] for name in pk.column_names()}
        # Dirty until the copy is complete (a reader must not use the empty columns), then the
        # committed count and generation again: entries past the count stay pending.
        pk.write_new(self.index_path, pk.Header(h.uuid, h.generation, h.n, capacity, True), None)
        new = pk.PackedFile(self.index_path, writable=True)
        for start in range(0, count, 1 << 20):
            self._pwrite_cols(new, start, {k: v[start:start + (1 << 20)] for k, v in cols.items()})
        del cols
        new.write_header(pk.Header(h.uuid, h.generation, h.n, capacity, h.dirty), sync=True)
        packed.close()
        self._packed = new

    @staticmethod
    def _pwrite_cols(packed: pk.PackedFile, start: int, cols: dict[str, np.ndarray]) -> None:
        # pwrite, not the map: written pages are not counted in this process's resident memory.
        offsets = pk._offsets(packed.header.capacity)
        for name, dtype in pk._COLUMNS:
            arr = np.ascontiguousarray(cols[name], dtype=dtype)
            os.pwrite(packed.fd, arr.tobytes(), offsets[name] + start * arr.itemsize)

    @staticmethod
    def _tombstone(packed: pk.PackedFile, positions: np.ndarray) -> None:
        offset = pk._offsets(packed.header.capacity)["list"]
        positions = np.sort(positions)
        span = 1 << 20  # rewrite the list column a window at a time
        col = packed.columns["list"]
        for a in _sorted_unique(positions // span).tolist():
            lo, hi = a * span, min((a + 1) * span, col.shape[0])
            window = col[lo:hi].copy()
            sel = positions[(positions >= lo) & (positions < hi)]
            window[sel - lo] = pk.DELETED
            os.pwrite(packed.fd, window.tobytes(), offset + 4 * lo)

    _KEYS_SCAN = 1 << 20  # up to this many entries, finding names by key is a plain scan

    def _key_positions(self, packed: pk.PackedFile, pkeys: np.ndarray, upto: int) -> np.ndarray:
        """Positions below ``upto`` whose name key is one of ``pkeys``.

        A long-lived store (a service adding one hash at a time, an ``index add``
        committing every second) keeps the keys sorted once instead of scanning
        millions of them per call; entries appended since are scanned.
        """
        keys = packed.columns["pkey"]
        cache = self._keys_sorted
        if cache is None or cache[0] is not packed or cache[1] > upto or upto - cache[1] > self._KEYS_SCAN:
            if upto <= self._KEYS_SCAN:
                return np.flatnonzero(np.isin(keys[:upto], pkeys))
            order = np.argsort(keys[:upto], kind="stable")
            cache = self._keys_sorted = (packed, upto, keys[:upto][order], order)
        _, covered, sorted_keys, order = cache
        lo = np.searchsorted(sorted_keys, pkeys, "left")
        counts = np.searchsorted(sorted_keys, pkeys, "right") - lo
        found = order[np.repeat(lo - np.cumsum(counts) + counts, counts) + np.arange(int(counts.sum()))]
        delta = covered + np.flatnonzero(np.isin(keys[covered:upto], pkeys))
        return np.concatenate([found, delta])

    def _packed_for_read(self, wait: bool = True) -> pk.PackedFile | None:
        """The packed index as of the rows now committed: the file when it agrees with them, else
        (after waiting for a writer that may be finishing) a rebuild: on disk when this store may
        write, in memory otherwise. Never a copy that disagrees with the rows. ``wait=False``: None
        instead of waiting for a writer between its two writes (the caller's earlier view holds)."""
        with self._lock, self._sql("reading the packed index"):
            deadline = time.monotonic() + min(self.timeout, 2.0)
            while True:
                generation = int(self._meta("generation"))
                packed = self._packed
                try:
                    if packed is None or not packed.same_file():
                        if packed is not None:
                            packed.close()
                        packed = self._packed = pk.PackedFile(self.index_path, writable=self.writable)
                    else:
                        packed.refresh_header()
                    if self._valid(packed, generation):
                        return packed
                    # Ahead of the rows or dirty: maybe a writer between its two writes.
                    in_flight = packed.header.dirty or packed.header.generation > generation
                except pk.PackedError:
                    in_flight = False
                if self._memory is not None and self._memory.header.generation == generation:
                    return self._memory
                if in_flight and not wait:
                    return None
                if not in_flight or time.monotonic() > deadline:
                    break
                time.sleep(0.05)  # a writer between its two writes finishes in milliseconds
            if self.writable:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    packed = self._packed_for_write()
                    self._db.execute("COMMIT")
                except BaseException:
                    self._rollback()
                    raise
                return packed
            self._memory = _MemoryPacked.from_rows(self, generation)
            return self._memory

    def rebuild_index(self) -> None:
        """Write the packed index anew from the rows (what an open does by itself when they disagree)."""
        self._require_writable()
        with self._lock, self._sql("rebuilding the packed index"):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if self._packed is not None:
                    self._packed.close()
                    self._packed = None
                self._rebuild_file(int(self._meta("generation")))
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise

    def verify_index(self) -> bool:
        """Whether the packed index holds exactly the stored rows (a full comparison; for tests and repair)."""
        with self._lock, self._sql("verifying the packed index"):
            packed = self._packed_for_read()
            n = packed.header.n
            cols = {k: packed.columns[k][:n] for k in pk.column_names()}
            live = cols["list"] != pk.DELETED
            got = {k: v[live] for k, v in cols.items()}
            want = [c for c in self._rows_as_columns()]
            if not want:
                return not live.any()
            for k in pk.column_names():
                if not np.array_equal(np.concatenate([c[k] for c in want]), got[k]):
                    return False
            return True

    # -- models and lists -----------------------------------------------------------------

    def models(self) -> list[StoredModel]:
        with self._lock, self._sql():
            rows = self._db.execute(
                "SELECT m.id, m.model_id, m.description, coalesce(sum(l.count), 0) FROM models m "
                "LEFT JOIN lists l ON l.model = m.id GROUP BY m.id ORDER BY m.id").fetchall()
        return [StoredModel(*row) for row in rows]

    def lists(self) -> list[StoredList]:
        with self._lock, self._sql():
            rows = self._db.execute(
                "SELECT l.name, m.model_id, l.count FROM lists l JOIN models m ON m.id = l.model "
                "ORDER BY l.name").fetchall()
        return [StoredList(*row) for row in rows]

    def _list_row(self, name: str) -> tuple[int, str] | None:
        row = self._db.execute("SELECT l.id, m.model_id FROM lists l JOIN models m ON m.id = l.model "
                               "WHERE l.name=?", (name,)).fetchone()
        return (row[0], row[1]) if row else None

    def _model_key(self, model_id: str, description: str = "") -> int:
        row = self._db.execute("SELECT id FROM models WHERE model_id=?", (model_id,)).fetchone()
        if row is not None:
            if description:
                self._db.execute("UPDATE models SET description=? WHERE id=? AND description=''",
                                 (description, row[0]))
            return row[0]
        return self._db.execute("INSERT INTO models (model_id, description) VALUES (?, ?)",
                                (model_id, description)).lastrowid

    def _list_key(self, name: str, model_id: str, description: str = "") -> int:
        """The list's key, created when absent; StoreError if it holds another model's hashes."""
        _check_list_name(name, self.where)
        found = self._list_row(name)
        if found is not None:
            key, holds = found
            if holds != model_id:
                raise StoreError(f"{self.where}: list {name!r} holds hashes of model {holds[:12]}, not "
                                 f"{model_id[:12]}; hashes of different models do not mix (choose another list)")
            return key
        model = self._model_key(model_id, description)
        return self._db.execute("INSERT INTO lists (name, model) VALUES (?, ?)", (name, model)).lastrowid

    def create_list(self, name: str, model_id: str, *, description: str = "") -> StoredList:
        """A new empty list (or the existing one of that model); StoreError if the name holds another model."""
        with self._writing(f"list {name!r}") as tx:
            key = self._list_key(name, model_id, description)
        (count,) = self._db.execute("SELECT count FROM lists WHERE id=?", (key,)).fetchone()
        return StoredList(name, model_id, count)

    def delete_list(self, name: str) -> int:
        """Remove a list and its hashes; the number of hashes removed."""
        with self._writing(f"removing list {name!r}") as tx:
            found = self._list_row(name)
            if found is None:
                raise StoreError(f"{self.where}: no list named {name!r} (lists: {self._list_names()})")
            key = found[0]
            total = tx.n0 + tx.pending
            pos = np.flatnonzero(tx.packed.columns["list"][:total] == key)
            removed = tx.delete(tx.packed.columns["rowid"][pos])
            self._db.execute("DELETE FROM images WHERE list=?", (key,))  # rows the index did not list
            self._db.execute("DELETE FROM lists WHERE id=?", (key,))
            tx.counts.pop(key, None)
        return removed

    def _list_names(self) -> str:
        names = [n for (n,) in self._db.execute("SELECT name FROM lists ORDER BY name")]
        return ", ".join(repr(n) for n in names) or "none"

    def resolve_model(self, model_id: str | None) -> StoredModel:
        """The stored model with this id or unique id prefix, or the only one when ``model_id`` is None."""
        models = self.models()
        if model_id is not None:
            exact = [m for m in models if m.model_id == model_id]
            found = exact or [m for m in models if m.model_id.startswith(model_id)]
            if len(found) == 1:
                return found[0]
            known = ", ".join(f"{m.model_id[:12]} ({m.description or 'no description'})" for m in models) or "none"
            if found:
                raise StoreError(f"{self.where}: {model_id!r} is the start of several model ids ({known}); "
                                 f"give more digits")
            raise StoreError(f"{self.where}: no hashes of model {model_id!r} (stored models: {known})")
        live = [m for m in models if m.count] or models
        if len(live) == 1:
            return live[0]
        if not live:
            raise StoreError(f"{self.where}: the database holds no hashes yet")
        listed = "; ".join(f"{m.model_id[:12]} ({m.count} hashes, {m.description or 'no description'})"
                           for m in live)
        raise StoreError(f"{self.where}: hashes of several models are stored ({listed}); choose one with --model-id")

    # -- adding ---------------------------------------------------------------------------

    def add_hashes(self, list_name: str, entries: Iterable[tuple[str, bytes]], *, model_id: str,
                   description: str = "") -> int:
        """Add ``(label, 12-byte digest)`` entries to a list (created if absent), replacing an entry
        of the same label; committed when it returns. The number of entries added."""
        names: list[str] = []
        digests = bytearray()
        for label, digest in entries:
            if not isinstance(label, str) or not label:
                raise StoreError(f"{self.where}: an entry's label must be a non-empty string, got {label!r}")
            if not isinstance(digest, (bytes, bytearray)) or len(digest) != 12:
                raise StoreError(f"{self.where}: {display(label)}: a hash is 12 bytes, got {digest!r:.40}")
            names.append(label)
            digests += digest
        with self._writing(f"adding to list {list_name!r}") as tx:
            key = self._list_key(list_name, model_id, description)
            self._replace_append(tx, key, names, digests)
        return len(names)

    def _replace_append(self, tx: _Write, key: int, names: list[str], digests: bytes | bytearray,
                        extra: Sequence[tuple] | None = None) -> int:
        """Append rows, deleting earlier rows of the list with the same name (a later one wins); replaced count."""
        if not names:
            return 0
        raws = [_raw(n) for n in names]
        keys = pk.name_keys(raws)
        start = tx.n0 + tx.pending
        replaced = self._drop_same_names(tx, key, names, keys, upto=start)
        tx.append(key, names, digests, extra, raws)
        # Several entries of one name in this batch: the last one wins.
        if len(set(names)) != len(names):
            last = {n: k for k, n in enumerate(names)}
            ids = [tx.next_id - len(names) + k for k, n in enumerate(names) if last[n] != k]
            tx.delete(np.array(ids, np.int64))
        return replaced

    def _drop_same_names(self, tx: _Write, key: int, names: Sequence[str], keys: np.ndarray, *, upto: int) -> int:
        """Delete the list's rows (entries below ``upto``) named like one of ``names``; how many."""
        pos = tx.positions_of(key, keys, upto=upto)
        if pos.size == 0:
            return 0
        rowids = tx.packed.columns["rowid"][pos]
        wanted = set(names)
        doomed = [r for r, p in self._paths_of(rowids.tolist()).items() if p in wanted]
        return tx.delete(np.array(doomed, np.int64))

    def _paths_of(self, rowids: Sequence[int]) -> dict[int, str]:
        out: dict[int, str] = {}
        for start in range(0, len(rowids), _IN_CHUNK):
            chunk = list(rowids[start:start + _IN_CHUNK])
            for rid, path in self._db.execute(
                    f"SELECT id, path FROM images WHERE id IN ({','.join('?' * len(chunk))})", chunk):
                out[rid] = from_sql(path)
        return out

    def add_images(
        self,
        hasher: Any,
        paths: Iterable[str | os.PathLike],
        *,
        list_name: str = DEFAULT_LIST,
        batch_size: int = 4,
        workers: int | None = None,
        commit_every: int = 256,
        commit_seconds: float = 1.0,
        on_result: Callable[[str, str | None], None] | None = None,
    ) -> AddReport:
        """Hash ``paths`` with ``hasher`` (a :class:`~neuralhash.hashing.NeuralHash`) into a list.

        Files already in the list with the same size and mtime are skipped
        unread. Rows are committed every ``commit_every`` hashes or
        ``commit_seconds``, whichever comes first, so an interruption costs
        little work. ``on_result(path, error)`` is called for every path hashed
        or failed (error None on success); unchanged files are only counted.
        """
        self._require_writable()
        report = AddReport()
        with self._writing(f"list {list_name!r}"):
            key = self._list_key(list_name, hasher.model_id, hasher.description)
        known = self._known_files(key)
        stats: dict[str, os.stat_result] = {}

        def todo() -> Iterator[str]:
            for raw in paths:
                path = os.path.abspath(os.fsdecode(raw))
                try:
                    st = os.stat(path)
                except OSError:
                    yield path  # hashing reports the reason as a per-item error
                    continue
                if known.get(path, (None, None, None))[1:] == (st.st_size, st.st_mtime_ns):
                    report.unchanged += 1
                    continue
                stats[path] = st
                yield path

        pending: list[tuple[str, bytes, tuple]] = []
        last_commit = time.monotonic()

        def flush() -> None:
            if not pending:
                return
            with self._writing(f"adding to list {list_name!r}") as tx:
                # By name, not by what this run saw: another process may have added the same file.
                first = tx.next_id
                self._replace_append(tx, key, [p for p, _, _ in pending], b"".join(d for _, d, _ in pending),
                                     [e for _, _, e in pending])
                ids = range(first, first + len(pending))
            for rid, (p, _, e) in zip(ids, pending):
                known[p] = (rid, e[0], e[1])
            pending.clear()

        try:
            for result in hasher.hash_many(todo(), batch_size=batch_size, workers=workers):
                path = os.fsdecode(result.item)
                st = stats.pop(path, None)
                if not result.ok:
                    report.failed.append((path, result.error))
                    if on_result:
                        on_result(path, result.error)
                    continue
                try:
                    digest = file_sha256(path)
                except OSError as exc:
                    reason = f"cannot read it after hashing ({exc.strerror or exc})"
                    report.failed.append((path, reason))
                    if on_result:
                        on_result(path, reason)
                    continue
                if path in known:
                    report.updated += 1
                else:
                    report.added += 1
                pending.append((path, result.hash.bytes,
                                (st.st_size if st else None, st.st_mtime_ns if st else None, digest)))
                if on_result:
                    on_result(path, None)
                if len(pending) >= commit_every or time.monotonic() - last_commit >= commit_seconds:
                    flush()
                    last_commit = time.monotonic()
        finally:
            flush()  # what was hashed before an interruption is kept
        return report

    def _known_files(self, key: int) -> dict[str, tuple[int, int | None, int | None]]:
        """path -> (row id, size, mtime_ns) of the list's rows."""
        packed = self._packed_for_read()
        n = packed.header.n
        rowids = packed.columns["rowid"][:n][packed.columns["list"][:n] == key].tolist()
        out: dict[str, tuple[int, int | None, int | None]] = {}
        with self._lock, self._sql():
            for start in range(0, len(rowids), _IN_CHUNK):
                chunk = rowids[start:start + _IN_CHUNK]
                for rid, path, size, mtime in self._db.execute(
                        f"SELECT id, path, size, mtime_ns FROM images WHERE id IN ({','.join('?' * len(chunk))})",
                        chunk):
                    out[from_sql(path)] = (rid, size, mtime)
        return out

    # -- import / export ------------------------------------------------------------------

    def import_file(self, source, *, list_name: str | None = None, model_id: str = IMPORTED_MODEL,
                    description: str = "", format: str | None = None, label: str | None = None,
                    require_entries: bool = False) -> ImportReport:
        """Import a hash list (a path or a binary file object) in any of :data:`neuralhash.hashlists.FORMATS`
        (``format``; default: detected). Entries' extra fields (CSV columns, JSON keys, threatexchange
        opinions) are kept per entry and come back from :meth:`export`.

        All or nothing: the valid entries go in one transaction; malformed lines
        are in ``report.skipped``. An entry replaces the list's entry of the same
        name; within the file a later line wins. The list (default: the file's
        name without its extension) is created when absent. ``label`` names the entries the file
        leaves unnamed (``LABEL:LINE``; default: the file's name). ``require_entries``: a file
        without one valid entry is an :class:`EmptyImportError` and changes nothing (no empty list).
        """
        if label is None and hasattr(source, "read"):
            label = os.path.basename(os.fsdecode(getattr(source, "name", "-") if isinstance(
                getattr(source, "name", None), (str, bytes)) else "-"))
        elif label is None:
            label = os.path.basename(os.fsdecode(source))
        if list_name is None:
            list_name = os.path.splitext(label)[0] or "imported"
        report = ImportReport(list=list_name, model_id=model_id)
        with self._writing(f"importing into list {list_name!r}") as tx:
            key = self._list_key(list_name, model_id, description or f"imported from {label}")
            start = tx.n0 + tx.pending
            if not hasattr(source, "read"):
                with contextlib.suppress(OSError):  # room for the lines the file's size suggests
                    tx._ensure(min(os.path.getsize(source) // 40, 1 << 28))
            with_extra = False
            try:
                for batch in hashlists.iter_batches(source, label=label, format=format):
                    report.skipped_total += len(batch.skipped)
                    room = MAX_SKIPPED - len(report.skipped)
                    if room > 0:
                        report.skipped += batch.skipped[:room]
                    if batch.extras is not None and not with_extra:
                        dbmod.add_extra_column(self._db)
                        with_extra = True
                    if batch.names:
                        tx.append(key, batch.names, batch.digests, raw_names=batch.raw, utf8=batch.utf8,
                                  extras=batch.extras)
            except hashlists.HashListError as exc:
                raise StoreError(str(exc)) from None
            added = tx.n0 + tx.pending - start
            if require_entries and added == 0:
                first = f"; line {report.skipped[0][0]}: {report.skipped[0][1]}" if report.skipped else ""
                raise EmptyImportError(f"{label}: no valid entry to import ({report.skipped_total} malformed "
                                       f"line(s){first}); nothing was stored")
            report.replaced, dropped = self._dedupe_import(tx, key, start, added)
            report.imported = added - dropped
        report.skipped.sort()
        return report

    def _dedupe_import(self, tx: _Write, key: int, start: int, added: int) -> tuple[int, int]:
        """After appending ``added`` entries at ``start``: of the list's entries that share a
        name, only the last stays (an imported name replaces the list's older entry; within the
        file a later line wins). (replaced, duplicate lines dropped).

        Entries whose name keys collide are the candidates (found in NumPy); their names are
        compared in SQLite through a temporary table, so a re-import of millions of names
        holds no name in Python and no index is kept on the names.
        """
        if added == 0:
            return 0, 0
        cols = tx.packed.columns
        old = np.flatnonzero(cols["list"][:start] == key) if start else np.zeros(0, np.int64)
        if 0 < added <= old.size // 16:  # a few names into a big list: only its entries of those keys
            old = old[np.isin(cols["pkey"][old], cols["pkey"][start:start + added])]
        # Key ranges (by the key's top bits) a pass at a time, so that the sort behind the
        # search for equal keys holds a slice of the entries, not all of them.
        passes = 1
        while passes * _DEDUPE_SLICE < old.size + added:
            passes *= 2
        shift = np.uint64(64 - max(passes.bit_length() - 1, 0)) if passes > 1 else None
        db = self._db
        db.execute("CREATE TEMP TABLE IF NOT EXISTS nh_candidates (id INTEGER PRIMARY KEY, pkey INTEGER NOT NULL)")
        db.execute("DELETE FROM temp.nh_candidates")
        found = 0
        for part in range(passes):
            if shift is None:
                pos = np.concatenate([old, np.arange(start, start + added)])
            else:
                top = np.uint64(part)
                pos = np.concatenate([
                    old[(cols["pkey"][old].view(np.uint64) >> shift) == top],
                    start + np.flatnonzero((cols["pkey"][start:start + added].view(np.uint64) >> shift) == top)])
            keys = cols["pkey"][pos]
            order = np.argsort(keys, kind="stable")
            sk = keys[order]
            same = np.flatnonzero(sk[1:] == sk[:-1])
            del keys, sk
            if same.size == 0:
                continue
            cand = pos[_sorted_unique(np.concatenate([order[same], order[same + 1]]))]
            del pos, order, same
            found += cand.size
            for a in range(0, cand.size, 1 << 17):
                chunk = cand[a:a + (1 << 17)]
                pairs = np.column_stack([cols["rowid"][chunk], cols["pkey"][chunk]]).tolist()
                db.execute("INSERT INTO temp.nh_candidates SELECT value ->> 0, value ->> 1 FROM json_each(?)",
                           (json.dumps(pairs),))
        replaced = dropped = 0
        if found:
            # Every candidate but the last of its (key, name) group goes. Grouping sorts the candidates
            # once; a pairwise self-join was quadratic in the entries sharing one name (a list of one
            # line repeated 80,000 times took minutes).
            cursor = db.execute(
                "SELECT c.id FROM temp.nh_candidates c WHERE c.id NOT IN ("
                "SELECT max(k.id) FROM temp.nh_candidates k JOIN images i ON i.id = k.id GROUP BY k.pkey, i.path)")
            doomed = np.fromiter((rid for (rid,) in cursor), np.int64)
            first_new = int(cols["rowid"][start])
            for a in range(0, doomed.size, 1 << 20):  # in slices: the deletion's arrays stay small
                chunk = doomed[a:a + (1 << 20)]
                replaced += tx.delete(chunk[chunk < first_new])
                dropped += tx.delete(chunk[chunk >= first_new])
        db.execute("DROP TABLE temp.nh_candidates")
        return replaced, dropped

    def _export_keys(self, list_name: str | None, model_id: str | None) -> tuple[list[int], dict[int, tuple]]:
        with self._lock, self._sql():
            lists = {key: (name, mid) for key, name, mid in self._db.execute(
                "SELECT l.id, l.name, m.model_id FROM lists l JOIN models m ON m.id = l.model")}
        if list_name is not None:
            keys = [k for k, (name, _) in lists.items() if name == list_name]
            if not keys:
                raise StoreError(f"{self.where}: no list named {list_name!r} (lists: {self._list_names()})")
        elif model_id is not None:
            model = self.resolve_model(model_id)
            keys = [k for k, (_, mid) in lists.items() if mid == model.model_id]
        else:
            keys = list(lists)
        return keys, lists

    def export(self, *, list_name: str | None = None, model_id: str | None = None) -> Iterator[StoredHash]:
        """Every stored hash (of one list, of one model's lists, or all), in the order added, with
        its extra fields (``StoredHash.extra``)."""
        keys, lists = self._export_keys(list_name, model_id)
        if not keys:
            return
        marks = ",".join("?" * len(keys))
        with self._lock, self._sql():
            extra = "extra" if dbmod.has_extra_column(self._db) else "NULL"
        last = 0
        while True:  # in pages, so that no read transaction stays open between yields
            with self._lock, self._sql("exporting"):
                rows = self._db.execute(
                    f"SELECT id, list, path, hash, {extra} FROM images WHERE id > ? AND list IN ({marks}) "
                    f"ORDER BY id LIMIT 10000", [last, *keys]).fetchall()
            if not rows:
                return
            for rid, key, path, digest, fields in rows:
                name, mid = lists[key]
                yield StoredHash(rid, from_sql(path), bytes(digest).hex(), mid, name, fields)
            last = rows[-1][0]

    def extra_fields(self, *, list_name: str | None = None, model_id: str | None = None) -> list[str]:
        """The extra fields the entries :meth:`export` yields hold, in the order they first appear
        (the columns of a CSV export). At most :data:`neuralhash.hashlists.MAX_EXTRA_COLUMNS`."""
        keys, _ = self._export_keys(list_name, model_id)
        with self._lock, self._sql("listing extra fields"):
            if not keys or not dbmod.has_extra_column(self._db):
                return []
            marks = ",".join("?" * len(keys))
            # SQLite finds each field's first row; the rows themselves, parsed here, give the order.
            firsts = [rid for (rid,) in self._db.execute(
                f"SELECT min(i.id) FROM images i, json_each(i.extra) j WHERE i.extra IS NOT NULL "
                f"AND i.list IN ({marks}) GROUP BY j.key LIMIT ?", [*keys, hashlists.MAX_EXTRA_COLUMNS + 1])]
            if len(firsts) > hashlists.MAX_EXTRA_COLUMNS:
                raise StoreError(f"{self.where}: the entries hold more than {hashlists.MAX_EXTRA_COLUMNS} "
                                 f"distinct extra fields, too many for CSV columns; export JSON Lines")
            out: dict[str, None] = {}
            for rid in sorted(set(firsts)):
                (text,) = self._db.execute("SELECT extra FROM images WHERE id=?", (rid,)).fetchone()
                out.update((k, None) for k in json.loads(text))
        return list(out)

    # -- searching ------------------------------------------------------------------------

    def _list_keys(self, model: StoredModel, lists: Sequence[str] | None) -> dict[int, str]:
        with self._lock, self._sql():
            rows = self._db.execute("SELECT id, name, model FROM lists").fetchall()
        if lists is None:
            return {k: n for k, n, m in rows if m == model.key}
        by_name = {n: (k, m) for k, n, m in rows}
        out = {}
        for name in lists:
            if name not in by_name:
                raise StoreError(f"{self.where}: no list named {name!r} (lists: {self._list_names()})")
            k, m = by_name[name]
            if m != model.key:
                raise StoreError(f"{self.where}: list {name!r} holds hashes of another model than "
                                 f"{model.model_id[:12]}; hashes of different models do not compare")
            out[k] = name
        return out

    def matcher(self, model_id: str | None = None, lists: Sequence[str] | None = None) -> "Matcher":
        """A :class:`Matcher` over the lists (default: every list) of one model (default: the
        model of the lists named, else the only one)."""
        if model_id is None and lists:
            mids = {lst.model_id for lst in self.lists() if lst.name in set(lists)}
            if len(mids) > 1:
                raise StoreError(f"{self.where}: the lists {', '.join(map(repr, lists))} hold hashes of "
                                 f"different models; hashes of different models do not compare")
            model_id = next(iter(mids), None)
        model = self.resolve_model(model_id)
        return Matcher(self, model, self._list_keys(model, lists), follow=lists is None)

    def _live_positions(self, packed: pk.PackedFile, keys: Sequence[int]) -> np.ndarray:
        n = packed.header.n
        return np.flatnonzero(np.isin(packed.columns["list"][:n], np.array(list(keys), np.int32)))

    def packed_hashes(self, model_id: str | None = None, lists: Sequence[str] | None = None) -> np.ndarray:
        """The stored hashes of one model (of these lists, or all its lists) as packed uint8 [N, 12],
        straight from the packed index (no row-by-row read)."""
        model = self.resolve_model(model_id)
        packed = self._packed_for_read()
        pos = self._live_positions(packed, self._list_keys(model, lists))
        return from_words(packed.columns["hi"][pos], packed.columns["lo"][pos])

    def duplicate_groups(self, model_id: str | None, max_distance: int, *,
                         lists: Sequence[str] | None = None) -> list[list[StoredHash]]:
        """Groups of near-duplicates (connected components of the within-``max_distance`` graph).

        Largest group first (ties by first path); members sorted by path. Pairs
        are folded into the components as they are found, so memory stays
        proportional to the hashes, not to the pairs.
        """
        r = check_radius(max_distance)
        model = self.resolve_model(model_id)
        names = self._list_keys(model, lists)
        packed = self._packed_for_read()
        pos = self._live_positions(packed, names)
        if pos.size < 2:
            return []
        hi, lo = packed.columns["hi"][pos], packed.columns["lo"][pos]
        labels = HashIndex.from_words(hi, lo).components(r)
        groups = component_groups(labels)
        if not groups:
            return []
        members = np.concatenate(groups)
        rowids = packed.columns["rowid"][pos]
        listcol = packed.columns["list"][pos]
        with self._lock, self._sql():
            paths = self._paths_of(rowids[members].tolist())
        hexes = from_words(hi[members], lo[members]).tobytes().hex()
        rows, lkeys = rowids[members].tolist(), listcol[members].tolist()
        out, k = [], 0
        for g in groups:
            group = []
            for _ in range(g.size):
                rid = rows[k]
                if rid in paths:  # a row deleted since the index was read is left out
                    group.append(StoredHash(rid, paths[rid], hexes[24 * k:24 * k + 24], model.model_id,
                                            names.get(lkeys[k], "")))
                k += 1
            if len(group) >= 2:
                group.sort(key=lambda h: (h.path, h.row))
                out.append(group)
        out.sort(key=lambda g: (-len(g), g[0].path))
        return out


def _sorted_unique(a: np.ndarray) -> np.ndarray:
    """np.unique by sorting (numpy's default hash-based unique is several times slower on millions)."""
    a = np.sort(a)
    return a[np.concatenate(([True], a[1:] != a[:-1]))] if a.size else a


def _check_list_name(name: str, where: str) -> None:
    if not isinstance(name, str) or not name or name != name.strip() or "," in name or not name.isprintable():
        raise StoreError(f"{where}: {name!r} is not a list name (printable, no comma, no surrounding blanks)")


class _MemoryPacked:
    """The packed index rebuilt in memory from the rows (a read-only open whose file disagrees)."""

    def __init__(self, cols: dict[str, np.ndarray], generation: int):
        n = len(cols["rowid"])
        self.columns = cols
        self.header = pk.Header(b"", generation, n, n, False)

    @classmethod
    def from_rows(cls, store: HashStore, generation: int) -> "_MemoryPacked":
        chunks = list(store._rows_as_columns())
        if chunks:
            cols = {k: np.concatenate([c[k] for c in chunks]) for k in pk.column_names()}
        else:
            cols = {name: np.zeros(0, dtype) for name, dtype in pk._COLUMNS}
        return cls(cols, generation)

    def same_file(self) -> bool:
        return False

    def close(self) -> None:
        pass


# -- the functions the command line used before named lists ------------------------------


def search(store: HashStore, model: StoredModel, queries: list[bytes], max_distance: int,
           lists: Sequence[str] | None = None) -> list[Match]:
    """Every stored hash of ``model`` within ``max_distance`` of each query: by query, nearest first."""
    m = store.matcher(model.model_id, lists)
    return [hit for per_query in m.query(queries, max_distance) for hit in per_query]


def duplicate_groups(store: HashStore, model: StoredModel, max_distance: int,
                     lists: Sequence[str] | None = None) -> list[list[StoredHash]]:
    return store.duplicate_groups(model.model_id, max_distance, lists=lists)
