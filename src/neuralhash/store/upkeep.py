"""The packed index's upkeep: written in the same transaction as the rows, verified against
them on open, rebuilt when they disagree (see :mod:`.packed`)."""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from ..matching.packing import to_words
from ..files.pathnames import from_sql, sql_value
from . import packed as pk
from .records import _raw, _sorted_unique

if TYPE_CHECKING:
    from .core import HashStore


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


class _PackedIndex:
    """HashStore: the packed index kept in step with the rows."""

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
