"""The hash store: named lists of hashes in SQLite, searched through a packed, memory-mapped index.

:class:`HashStore` is assembled from one part per responsibility: the connection and the schema
(here), the packed index's upkeep (:mod:`.upkeep`), lists and models (:mod:`.catalog`), adding
hashes and hashing images (:mod:`.adding`), import and export (:mod:`.transfer`) and search
(:mod:`.search`). Records and helpers shared by them are in :mod:`.records`.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from typing import Any

from ..files.pathnames import display
from . import db as dbmod
from . import packed as pk
from .db import StoreError
from .adding import _Adding
from .catalog import _Catalog
from .records import (  # noqa: F401  (re-exported: the names callers import from here)
    _IN_CHUNK,
    DEFAULT_LIST,
    IMPORTED_MODEL,
    AddReport,
    EmptyImportError,
    ImportReport,
    StoredHash,
    StoredList,
    StoredModel,
    _check_list_name,
    _raw,
    _sorted_unique,
    file_sha256,
    parse_hex,
)
from .search import Match, Matcher, _Searching, duplicate_groups, search  # noqa: F401
from .transfer import _DEDUPE_SLICE, MAX_SKIPPED, _Transfer  # noqa: F401
from .upkeep import _MemoryPacked, _PackedIndex, _Write  # noqa: F401

__all__ = [
    "DEFAULT_LIST", "IMPORTED_MODEL", "MAX_SKIPPED", "AddReport", "EmptyImportError", "HashStore", "ImportReport",
    "Match", "Matcher", "StoredHash", "StoredList", "StoredModel", "duplicate_groups", "file_sha256", "parse_hex",
    "search", "_DEDUPE_SLICE", "_IN_CHUNK", "_MemoryPacked", "_Write", "_check_list_name", "_raw", "_sorted_unique",
]


class HashStore(_PackedIndex, _Catalog, _Adding, _Transfer, _Searching):
    """A neuralhash SQLite database of named hash lists. Use as a context manager, or call :meth:`close`.

    ``create=True`` (writing commands) creates the file and schema when new and
    upgrades a schema-1 database; otherwise the database is opened read-only
    and nothing is written to it. ``timeout``: seconds to wait for a lock.
    """

    def __init__(self, path: str | os.PathLike, *, create: bool = False, timeout: float = 60.0):
        self.path = os.path.expanduser(os.fsdecode(path))
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
