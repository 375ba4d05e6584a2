"""A hash store that needs no server: one SQLite database of named hash lists, and a packed index beside it.

A database holds several named **lists** (a published list, a partner's list,
one's own photos); every list belongs to one model, so hashes of different
models never mix silently. Per entry it keeps the label or path (file names
as bytes, :mod:`neuralhash.files.pathnames`), the 96-bit hash and, for images
hashed here, the file's size, mtime and sha256.

Beside ``DB`` lies ``DB.nhindex``, the hashes packed and memory-mapped
(:mod:`.packed`): a search opens it in milliseconds instead of reading every
row. It is written in the same transaction as the rows and checked against
them on open; a copy that disagrees (a crash between the two writes) is
rebuilt, never used.

Adding is restartable: rows are committed in batches, each one transaction,
and an entry replaces the list's entry of the same name, so an interrupted
run (Ctrl-C, kill -9) loses at most the batch in flight and a rerun neither
duplicates nor rehashes. Imports are all or nothing per file and streamed;
malformed lines are reported with their numbers. Read-only opens never write
(see :mod:`.db`). Every failure is a :class:`StoreError` naming the database.

::

    with HashStore("photos.db", create=True) as store:
        store.import_file("published.txt", list_name="published", model_id=mid)
        store.add_hashes("mine", [("a.jpg", digest)], model_id=mid)
        hits = store.matcher(mid, ["published"]).query([digest], max_distance=4)
"""

from .core import (
    DEFAULT_LIST,
    IMPORTED_MODEL,
    AddReport,
    HashStore,
    ImportReport,
    StoredHash,
    StoredList,
    StoredModel,
    duplicate_groups,
    file_sha256,
    parse_hex,
    search,
)
from .db import SCHEMA_VERSION, StoreError
from .search import Match, Matcher

__all__ = [
    "DEFAULT_LIST", "IMPORTED_MODEL", "SCHEMA_VERSION", "AddReport", "HashStore", "ImportReport", "Match",
    "Matcher", "StoreError", "StoredHash", "StoredList", "StoredModel", "duplicate_groups", "file_sha256",
    "parse_hex", "search",
]
