"""Adding to a list: hashes given, or images hashed (restartable: committed in batches, unchanged
files skipped unread)."""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from ..files.pathnames import display, from_sql
from . import packed as pk
from .db import StoreError
from .records import DEFAULT_LIST, _IN_CHUNK, AddReport, file_sha256, _raw
from .upkeep import _Write


class _Adding:
    """HashStore: adding hashes and hashing images into lists."""

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
