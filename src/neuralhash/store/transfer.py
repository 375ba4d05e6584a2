"""Import and export: hash-list files in and out, streamed, all or nothing per file."""

from __future__ import annotations

import contextlib
import json
import os
from typing import Iterator

import numpy as np

from ..lists import hashlists
from ..files.pathnames import from_sql
from . import db as dbmod
from .db import StoreError
from .records import IMPORTED_MODEL, StoredHash, ImportReport, EmptyImportError, _sorted_unique
from .upkeep import _Write


MAX_SKIPPED = 10_000  # malformed lines an import report lists one by one
_DEDUPE_SLICE = 1 << 21  # entries sorted at once when looking for names imported twice


class _Transfer:
    """HashStore: importing and exporting hash lists."""

    def import_file(self, source, *, list_name: str | None = None, model_id: str = IMPORTED_MODEL,
                    description: str = "", format: str | None = None, label: str | None = None,
                    require_entries: bool = False) -> ImportReport:
        """Import a hash list (a path or a binary file object) in any of :data:`neuralhash.lists.hashlists.FORMATS`
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
        (the columns of a CSV export). At most :data:`neuralhash.lists.hashlists.MAX_EXTRA_COLUMNS`."""
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
