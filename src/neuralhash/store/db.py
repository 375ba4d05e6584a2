"""Opening a hash database: recognising it, creating or upgrading its schema, naming SQLite's errors.

Read-only opens use SQLite's ``mode=ro``: they never create a file, a table
or switch the journal mode. Only a writing open (``create=True``) creates the
schema, and only in a new (empty) file or a database this project wrote;
any other SQLite file is refused untouched.

Schema 2 (this version)::

    meta    key, value      schema=2, app=neuralhash, uuid, generation, next_id
    models  id, model_id UNIQUE, description
    lists   id, name UNIQUE, model -> models.id, count
    images  id, list, path, hash BLOB(12), size, mtime_ns, sha256

``images.extra`` (nullable TEXT, added by the first import that carries extra
fields, so older databases and older readers are unaffected) holds an entry's
extra fields as a JSON object (:mod:`neuralhash.lists.hashlists`).

``images`` has no index besides its row id: names are found through the
packed index's name keys (see :mod:`.packed`), which keeps a bulk import a
plain append. ``path`` is TEXT for a UTF-8 name and a BLOB of its bytes
otherwise (:func:`neuralhash.files.pathnames.sql_value`). Row ids are handed out
by the store (``next_id``), so they only grow.

Schema 1 (one ``images`` table keyed by model) is upgraded in one
transaction by the first writing open: each model's hashes become one list.
"""

from __future__ import annotations

import os
import re
import sqlite3
import urllib.parse
import uuid as uuidlib

from ..errors import NeuralHashError

SCHEMA_VERSION = "2"
APP = "neuralhash"


class StoreError(NeuralHashError):
    """The database cannot be opened, is not a neuralhash store, or a database operation failed."""


SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE models (
    id INTEGER PRIMARY KEY,
    model_id TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT ''
);
CREATE TABLE lists (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    model INTEGER NOT NULL REFERENCES models(id),
    count INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE images (
    id INTEGER PRIMARY KEY,
    list INTEGER NOT NULL,
    path NOT NULL,
    hash BLOB NOT NULL CHECK (length(hash) = 12),
    size INTEGER,
    mtime_ns INTEGER,
    sha256 TEXT
);
"""


def cause(exc: BaseException, timeout: float | None = None) -> str:
    """SQLite's (or the OS's) error as a short reason a user can act on."""
    text = str(exc)
    low = text.lower()
    if "locked" in low or "busy" in low:
        waited = f" (waited {timeout:g} s)" if timeout is not None else ""
        return f"locked by another process{waited}; try again when it is done"
    if "disk is full" in low or "no space" in low or getattr(exc, "errno", None) == 28:
        return "the disk is full"
    if "readonly" in low or "read-only" in low or getattr(exc, "errno", None) in (13, 30):
        return "cannot write: the file or its folder is read-only"
    if "malformed" in low or "not a database" in low or "corrupt" in low:
        return f"the database file is corrupted ({text})"
    if "decode" in low:
        return f"undecodable text ({text})"
    if "unable to open" in low:
        return "cannot open it (a missing folder, or no permission)"
    if isinstance(exc, OSError):
        return exc.strerror or text
    return text


def connect(path: str, *, create: bool, timeout: float) -> sqlite3.Connection:
    """A connection: read-write (creating the file) when ``create``, else read-only."""
    if create:
        if _read_only_medium(path):  # SQLite would say "unable to open database file"
            raise sqlite3.OperationalError("attempt to write a readonly database (a read-only file system)")
        db = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    else:
        uri = "file:" + urllib.parse.quote(os.fsencode(path)) + "?mode=ro"
        # A WAL database needs its -shm file, which cannot be created on a read-only medium (a
        # read-only mount, a snapshot, a DVD): SQLite then refuses to open it at all. Nothing can
        # change a file there, which is exactly what immutable=1 promises SQLite.
        if _read_only_medium(path):
            uri += "&immutable=1"
        db = sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None, check_same_thread=False)
    # Text that is not UTF-8 (written by another tool, or damaged) must not crash a read.
    db.text_factory = lambda raw: raw.decode("utf-8", "surrogateescape")
    return db


def _read_only_medium(path: str) -> bool:
    """Whether the file system holding ``path`` is mounted read-only (False when that cannot be told)."""
    try:
        return bool(os.statvfs(os.path.dirname(os.path.abspath(path)) or ".").f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # no statvfs (Windows), or a missing folder: open as usual
        return False


def recognise(db: sqlite3.Connection, where: str) -> str:
    """``"empty"``, ``"v1"`` or ``"v2"``; StoreError for any other database."""
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not tables:
        return "empty"
    meta: dict[str, str] = {}
    if "meta" in tables:
        try:
            meta = {str(k): str(v) for k, v in db.execute("SELECT key, value FROM meta")}
        except sqlite3.Error:
            meta = {}
    if meta.get("app") == APP:
        if meta.get("schema") == SCHEMA_VERSION and {"models", "lists", "images"} <= tables:
            return "v2"
        raise StoreError(f"{where}: a neuralhash database of schema {meta.get('schema')!r}; "
                         f"this version reads schema {SCHEMA_VERSION}")
    if meta.get("schema") == "1" and {"models", "images"} <= tables:
        return "v1"
    shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
    raise StoreError(f"{where}: not a neuralhash database (it holds other tables: {shown}); left untouched")


def has_extra_column(db: sqlite3.Connection) -> bool:
    return any(row[1] == "extra" for row in db.execute("PRAGMA table_info(images)"))


def add_extra_column(db: sqlite3.Connection) -> None:
    """Add ``images.extra`` when absent (the caller holds a write transaction; SQLite rewrites no row)."""
    if not has_extra_column(db):
        db.execute("ALTER TABLE images ADD COLUMN extra TEXT")


def create_schema(db: sqlite3.Connection) -> None:
    """The schema in an empty database (the caller holds a write transaction)."""
    for statement in SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)
    db.executemany("INSERT INTO meta VALUES (?, ?)", [
        ("app", APP), ("schema", SCHEMA_VERSION), ("uuid", uuidlib.uuid4().hex), ("generation", "0"),
        ("next_id", "1"),
    ])


_FULL_ID = re.compile(r"[0-9a-f]{64}")


def upgrade_v1(db: sqlite3.Connection) -> None:
    """Schema 1 -> 2 (the caller holds a write transaction): each model's hashes become one list.

    The list of a model is named after it when the id is a name (``imported``,
    ``apple-v3b``), else ``images`` (the first such model) or ``images-`` and
    the id's first 12 digits.
    """
    db.execute("ALTER TABLE images RENAME TO images_v1")
    for statement in SCHEMA.split(";"):
        if "CREATE TABLE lists" in statement or "CREATE TABLE images" in statement:
            db.execute(statement)
    used: set[str] = set()
    for key, model_id in db.execute("SELECT id, model_id FROM models ORDER BY id").fetchall():
        if not _FULL_ID.fullmatch(model_id):
            name = model_id
        elif "images" not in used:
            name = "images"
        else:
            name = f"images-{model_id[:12]}"
        while name in used:
            name += "+"
        used.add(name)
        db.execute("INSERT INTO lists (name, model) VALUES (?, ?)", (name, key))
    db.execute("INSERT INTO images (id, list, path, hash, size, mtime_ns, sha256) "
               "SELECT i.id, l.id, i.path, i.hash, i.size, i.mtime_ns, i.sha256 "
               "FROM images_v1 i JOIN lists l ON l.model = i.model ORDER BY i.id")
    db.execute("UPDATE lists SET count = (SELECT count(*) FROM images WHERE images.list = lists.id)")
    db.execute("DROP TABLE images_v1")
    (top,) = db.execute("SELECT coalesce(max(id), 0) FROM images").fetchone()
    db.execute("DELETE FROM meta")
    db.executemany("INSERT INTO meta VALUES (?, ?)", [
        ("app", APP), ("schema", SCHEMA_VERSION), ("uuid", uuidlib.uuid4().hex), ("generation", "1"),
        ("next_id", str(top + 1)),
    ])
