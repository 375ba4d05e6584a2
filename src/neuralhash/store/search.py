"""Searching a store: :class:`Matcher`, exact Hamming search over one model's lists.

The packed index (:mod:`.packed`) is append-only between rebuilds: an entry's
position, hash and row id never change once committed, only its list (a
deletion writes a tombstone there). So a matcher keeps a **main** multi-index
over the first ``base`` entries and searches the entries committed since as a
**delta** by brute force, reading every entry's list at query time. When the
delta grows past :data:`Matcher.DELTA_MAX`, a new main index over everything is
built in a background thread and swapped in when ready: a lookup never waits
for a rebuild, whatever is being imported, created or deleted beside it.

A list created or deleted changes no index either: the matcher follows the
model's lists (its list keys are read again after every commit), and the lists
a query may match are a filter on the entries found.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Collection, Sequence

import numpy as np

from ..matching import HashIndex, component_groups
from ..matching.index import _HI_FILTER_MAX, _NS_SCAN_FULL, _NS_SCAN_HI, check_radius
from ..matching.packing import from_words
from . import packed as pk
from .db import StoreError
from .records import StoredHash

if TYPE_CHECKING:
    from .core import HashStore, StoredModel


#: How much less favoured by the scheduler (nice steps) a background rebuild is than the lookups.
MERGE_NICE = 10


def lower_priority(nice: int) -> None:
    """Make the calling thread ``nice`` steps less favoured by the scheduler (Linux: per thread).
    Its numpy work runs without the GIL, so on busy cores the threads answering lookups go first."""
    if nice:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
        except (AttributeError, OSError):  # not Linux, or not allowed: the same priority, as before
            pass


@dataclass(frozen=True)
class Match:
    query: int  # position of the query in the batch
    row: int
    path: str
    hex: str
    distance: int
    list: str = ""


@dataclass
class _Main:
    """A main index over the packed file's first ``n`` entries (``last_rowid``: the row id of
    entry n-1, to notice a packed file rebuilt from the rows, whose positions differ)."""

    index: HashIndex
    n: int
    last_rowid: int


class Matcher:
    """Exact Hamming search over one model's lists, on the packed index (see the module docs).

    :meth:`query` first checks (cheaply: SQLite's ``data_version`` and the
    store's own commits) whether rows were committed since, by any process.
    After many queries the multi-index tables are built (or call :meth:`build`).

    Queries from several threads are safe. A store's connection serves one
    transaction at a time: a service that imports while it answers should
    match through a read-only ``HashStore`` of its own, so that lookups never
    wait for an import to commit.
    """

    DELTA_MAX = 1 << 16  # entries searched by brute force beside the main index before it is rebuilt
    _BUILD_AFTER = 64  # queries before the multi-index tables pay for themselves

    def __init__(self, store: "HashStore", model: "StoredModel", lists: dict[int, str], *, follow: bool = False):
        self.store = store
        self.model = model
        self.lists = lists  # list key -> name
        self._follow = follow  # every list of the model, as lists come and go
        self._keys = np.array(sorted(lists), np.int32)
        self._packed: Any = None
        self._n = 0  # entries committed as this matcher last saw them
        self._main: _Main | None = None
        self._delta: tuple[int, int, HashIndex] | None = None  # (start, stop, index) cached
        self._seen: tuple | None = None
        self._queries = 0
        self._want_build = False
        self._merging: threading.Thread | None = None
        self._merged: _Main | None = None
        self._guard = threading.Lock()  # the matcher's own state (the store's lock guards its connection)
        self.scope: Any = None  # the SearchScope HashStore.matcher() found: the lists searched and skipped

    def __len__(self) -> int:
        packed, n, _, _ = self._refresh()
        return int(np.isin(packed.columns["list"][:n], self._keys).sum())

    def build(self) -> "Matcher":
        """Build the multi-index tables now (a service does this once, then answers in milliseconds)."""
        self._want_build = True
        self._refresh()
        with self._guard:
            main = self._main
        if main is not None and not main.index.built:
            main.index.build()
        return self

    def cost(self, max_distance: int, n_queries: int) -> float:
        """Estimated nanoseconds :meth:`query` takes for ``n_queries`` at ``max_distance``: the main
        index by its cheaper method, and the delta by brute force (0 before the first query)."""
        main = self._main
        if main is None:
            return 0.0
        r = check_radius(max_distance)
        index = main.index
        per_hash = _NS_SCAN_HI if r <= _HI_FILTER_MAX else _NS_SCAN_FULL
        return (min(index._brute_cost(r, n_queries), index._index_cost(r, n_queries))
                + max(self._n - main.n, 0) * n_queries * per_hash)

    @property
    def merging(self) -> bool:
        """Whether a new main index is being built in the background."""
        return self._merging is not None

    def wait_merged(self, timeout: float | None = None) -> None:
        """Wait for a background rebuild to finish (tests, benchmarks)."""
        thread = self._merging
        if thread is not None:
            thread.join(timeout)
        self._refresh()

    def _consistent(self, packed: Any, main: _Main) -> bool:
        return packed.header.n >= main.n and (main.n == 0 or int(packed.columns["rowid"][main.n - 1]) == main.last_rowid)

    def _new_main(self, packed: Any, n: int, build: bool) -> _Main:
        index = HashIndex.from_words(packed.columns["hi"][:n], packed.columns["lo"][:n])
        if build:
            index.build()
        return _Main(index, n, int(packed.columns["rowid"][n - 1]) if n else 0)

    def _refresh(self) -> tuple[Any, int, _Main, list[int]]:
        """(packed index, entries committed, main index, list keys), as of the rows committed now.

        A writer between its two writes (the packed file ahead of the rows) is not waited for:
        the view of the last commit stays valid (entries are only appended past it)."""
        store = self.store
        with store._lock:
            with store._sql():
                version = store._db.execute("PRAGMA data_version").fetchone()[0]
            seen = (version, store._writes)
            first = self._packed is None
            if first or seen != self._seen:
                packed = store._packed_for_read(wait=first)
                if packed is not None:
                    if self._follow:
                        self.lists = store._list_keys(self.model, None)
                        self._keys = np.array(sorted(self.lists), np.int32)
                    with self._guard:
                        self._packed, self._n = packed, packed.header.n
                    self._seen = seen
            packed, n = self._packed, self._n
        with self._guard:
            merged = self._merged
            if merged is not None and self._merging is None:
                self._merged = None
                if self._consistent(packed, merged) and (self._main is None or merged.n >= self._main.n):
                    self._main = merged
            if self._main is None or not self._consistent(packed, self._main):
                # First use, or a packed file rebuilt from the rows (positions moved): built now, once.
                self._main = self._new_main(packed, n, self._want_build)
            main = self._main
            if n - main.n > self.DELTA_MAX and self._merging is None:
                self._start_merge(packed, n)
            keys = self._keys
        return packed, n, main, keys

    def _start_merge(self, packed: Any, n: int) -> None:
        """A new main index over the first ``n`` entries, built in a thread; the caller holds _guard."""
        build = self._want_build

        def work() -> None:
            try:
                lower_priority(MERGE_NICE)
                merged = self._new_main(packed, n, build)
            except BaseException:  # the old main index and the delta still answer every query
                merged = None
            with self._guard:
                self._merged = merged
                self._merging = None

        self._merging = threading.Thread(target=work, name="nh-index-merge", daemon=True)
        self._merging.start()

    def _delta_index(self, packed: Any, start: int, stop: int) -> HashIndex:
        with self._guard:
            cached = self._delta
        if cached is not None and cached[0] == start and cached[1] == stop:
            return cached[2]
        # Views of the map, no copy: committed entries never change but for their list (maps stay open).
        delta = HashIndex.from_words(packed.columns["hi"][start:stop], packed.columns["lo"][start:stop])
        with self._guard:
            self._delta = (start, stop, delta)
        return delta

    def query(self, queries: Sequence[bytes], max_distance: int, *, limit: int | None = None,
              only_lists: Collection[str] | None = None, labels_from: "HashStore | None" = None
              ) -> list[list[Match]]:
        """Per query (12-byte digests), the stored hashes within ``max_distance``: nearest first,
        ties by row; at most ``limit`` a query when given; of the lists ``only_lists`` (names) when
        given. Safe to call from several threads; ``labels_from``: a store of the same database
        whose connection reads the labels (a thread of its own then never waits on this store's)."""
        r = check_radius(max_distance)
        q = _as_packed(queries, self.store.where)
        out: list[list[Match]] = [[] for _ in range(q.shape[0])]
        if q.shape[0] == 0:
            return out
        self._queries += q.shape[0]
        if self._queries >= self._BUILD_AFTER and not self._want_build:
            self._want_build = True  # enough queries to pay for the tables
            if self._main is not None and not self._main.index.built and self._merging is None:
                with self._guard:
                    self._start_merge(self._packed, self._n)  # built in the background, not by this query
        packed, n, main, keys = self._refresh()
        base = main.n
        qi, idx, d = main.index._run(q, r, "auto") if base else (np.zeros(0, np.int64),) * 3
        if n > base:
            dq, di, dd = self._delta_index(packed, base, n)._run(q, r, "brute")
            qi, idx, d = np.concatenate([qi, dq]), np.concatenate([idx, di + base]), np.concatenate([d, dd])
        lists = packed.columns["list"][idx]
        names = self.lists
        if only_lists is not None:
            wanted = set(only_lists)
            keys = np.array([k for k, name in names.items() if name in wanted], np.int32)
        keep = np.isin(lists, keys)
        qi, idx, d, lists = qi[keep], idx[keep], d[keep].astype(np.int64), lists[keep]
        rowids = packed.columns["rowid"][idx]
        order = np.lexsort((rowids, d, qi))
        qi, idx, d, rowids, lists = qi[order], idx[order], d[order], rowids[order], lists[order]
        if limit is not None:
            rank = np.arange(qi.size) - np.searchsorted(qi, qi)
            sel = rank < limit
            qi, idx, d, rowids, lists = qi[sel], idx[sel], d[sel], rowids[sel], lists[sel]
        hexes = from_words(packed.columns["hi"][idx], packed.columns["lo"][idx]).tobytes().hex()
        source = labels_from if labels_from is not None else self.store
        with source._lock, source._sql("matching"):
            paths = source._paths_of(rowids.tolist())
        for k, (a, rid, dist, lk) in enumerate(zip(qi.tolist(), rowids.tolist(), d.tolist(), lists.tolist())):
            if rid in paths:  # a row deleted since the index was read is not reported
                out[a].append(Match(a, rid, paths[rid], hexes[24 * k:24 * k + 24], dist, names.get(lk, "")))
        return out


class _Searching:
    """HashStore: matchers, the packed hashes of a model, groups of near-duplicates."""

    def matcher(self, model_id: str | None = None, lists: Sequence[str] | None = None) -> "Matcher":
        """A :class:`Matcher` over the lists (default: every list) of one model (default: the
        model of the lists named, else the only one). Its ``scope`` (:class:`.scope.SearchScope`)
        names the lists searched and the lists left out, with the reason (another model)."""
        if model_id is None and lists:
            mids = {lst.model_id for lst in self.lists() if lst.name in set(lists)}
            if len(mids) > 1:
                raise StoreError(f"{self.where}: the lists {', '.join(map(repr, lists))} hold hashes of "
                                 f"different models; hashes of different models do not compare")
            model_id = next(iter(mids), None)
        model = self.resolve_model(model_id)
        matcher = Matcher(self, model, self._list_keys(model, lists), follow=lists is None)
        from .scope import search_scope  # (scope imports the store's records through core)

        matcher.scope = search_scope(self.lists(), model.model_id, lists, where=self.where)  # what it skips
        return matcher

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


def _as_packed(queries: Sequence[bytes], where: str) -> np.ndarray:
    raw = bytearray()
    for k, digest in enumerate(queries):
        if not isinstance(digest, (bytes, bytearray, memoryview)) or len(digest) != 12:
            raise StoreError(f"query {k}: a hash is 12 bytes, got {digest!r:.40}")
        raw += digest
    return np.frombuffer(bytes(raw), np.uint8).reshape(-1, 12)


# -- the functions the command line used before named lists ------------------------------


def search(store: HashStore, model: StoredModel, queries: list[bytes], max_distance: int,
           lists: Sequence[str] | None = None) -> list[Match]:
    """Every stored hash of ``model`` within ``max_distance`` of each query: by query, nearest first."""
    m = store.matcher(model.model_id, lists)
    return [hit for per_query in m.query(queries, max_distance) for hit in per_query]


def duplicate_groups(store: HashStore, model: StoredModel, max_distance: int,
                     lists: Sequence[str] | None = None) -> list[list[StoredHash]]:
    return store.duplicate_groups(model.model_id, max_distance, lists=lists)
