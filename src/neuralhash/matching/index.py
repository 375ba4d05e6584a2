"""Exact Hamming-radius search over 96-bit hashes: brute force and multi-index hashing.

See the package docstring (:mod:`neuralhash.matching`) for the API and the design.
"""

from __future__ import annotations

import math
import operator
import sys
from dataclasses import dataclass
from functools import lru_cache
from itertools import combinations

import numpy as np

from ..errors import NeuralHashError
from .packing import HASH_BITS, as_queries, check_packed, from_words, pack_hex, to_words

#: The matching distance used when none is given (match, dupes, audit and the service): a few
#: bits, what resizing and recompression move a hash.
DEFAULT_MAX_DISTANCE = 4
#: The largest matching distance the commands and the service accept (one rule for both).
#: Unrelated NeuralHashes lie about 48 bits apart (41-53 of 96); 32 already reaches 1 in 2,000
#: random hashes, so a wider radius is not a match, only an answer as large as the database.
#: (:class:`HashIndex` itself answers any radius 0..96: :func:`check_radius`.)
MAX_DISTANCE = 32

# Brute force works on tiles of this many (query, hash) cells: the XOR, popcount and
# compare temporaries of one tile (about 2.5 MB) stay in cache.
_TILE = 1 << 18
# Up to this radius a scan reads ``hi`` alone and gathers ``lo`` only for hashes whose
# ``hi`` part is already within the radius (under 1 in 10^6 random hashes at 20).
_HI_FILTER_MAX = 20
# Candidate pairs verified at once by the self-join (bounds its working memory).
_PAIR_BUDGET = 1 << 21
# Hash-block lookups issued at once by indexed queries.
_KEY_BUDGET = 1 << 20
# Above this many flip masks in one block, the index is not used.
_MAX_MASKS = 1 << 20
# Auto block width is log2 N, rounded, clamped to this range.
_AUTO_BITS = (8, 24)

# Rough per-item costs in nanoseconds, measured on one core; only used to choose
# between the index and brute force, which always give identical answers.
_NS_SCAN_HI = 1.0        # per stored hash, radius <= _HI_FILTER_MAX
_NS_SCAN_FULL = 2.0      # per stored hash, larger radius
_NS_PAIR_SCAN = 1.5      # per (hash, hash) cell of a brute-force self-join
_NS_KEY_TABLE = 150.0    # per block lookup through a direct offsets table
_NS_KEY_SORTED = 2000.0  # per block lookup through binary search
_NS_CANDIDATE = 60.0     # per candidate verified
_NS_CALL = 15_000.0      # fixed Python overhead per block per batch
_NS_BUILD = 60.0         # per stored hash per block, building the tables


def check_radius(max_distance) -> int:
    """``max_distance`` as an int in 0..96, or :class:`NeuralHashError`."""
    try:
        if isinstance(max_distance, bool):
            raise TypeError
        r = operator.index(max_distance)
    except TypeError:
        raise NeuralHashError(f"max_distance must be an integer, got {max_distance!r}") from None
    if not 0 <= r <= HASH_BITS:
        raise NeuralHashError(f"max_distance must be between 0 and {HASH_BITS}, got {r}")
    return r


def _check_method(method: str) -> str:
    if method not in ("auto", "index", "brute"):
        raise NeuralHashError(f"method must be 'auto', 'index' or 'brute', got {method!r}")
    return method


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, eq=False)
class Matches:
    """Stored hashes within the radius of one query, nearest first (ties by index).

    ``indices`` (int64) are positions in the index, ``distances`` (uint8) Hamming
    distances, ``ids`` the caller's ids of those hashes (``None`` without ids).
    """

    indices: np.ndarray
    distances: np.ndarray
    ids: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def __iter__(self):
        """``(index, distance)`` pairs as Python ints."""
        return zip(self.indices.tolist(), self.distances.tolist())


@dataclass(frozen=True, eq=False)
class BatchMatches:
    """Matches of many queries as flat parallel arrays, one row per (query, match).

    Rows are sorted by query, then distance, then index. ``query`` (int64) is the
    query's position in the batch, ``index`` (int64) the stored hash's position,
    ``distance`` (uint8); ``ids`` are the stored hashes' ids (``None`` without ids).
    """

    query: np.ndarray
    index: np.ndarray
    distance: np.ndarray
    n_queries: int
    ids: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def for_query(self, k: int) -> Matches:
        """The :class:`Matches` of query ``k``."""
        if not 0 <= k < self.n_queries:
            raise NeuralHashError(f"query {k} out of range (batch of {self.n_queries})")
        a, b = np.searchsorted(self.query, [k, k + 1])
        return Matches(self.index[a:b], self.distance[a:b], None if self.ids is None else self.ids[a:b])

    def split(self) -> list[Matches]:
        """One :class:`Matches` per query, in order."""
        return [self.for_query(k) for k in range(self.n_queries)]


@dataclass(frozen=True, eq=False)
class Pairs:
    """Pairs of stored hashes within a radius: parallel arrays ``i < j`` (int64) and
    ``distance`` (uint8), each unordered pair once, sorted by ``i`` then ``j``."""

    i: np.ndarray
    j: np.ndarray
    distance: np.ndarray

    def __len__(self) -> int:
        return int(self.i.shape[0])

    def __iter__(self):
        """``(i, j, distance)`` triples as Python ints."""
        return zip(self.i.tolist(), self.j.tolist(), self.distance.tolist())


_EMPTY_I = np.zeros(0, dtype=np.int64)
_EMPTY_D = np.zeros(0, dtype=np.uint8)


# --------------------------------------------------------------------------- blocks


def block_layout(block_bits: int) -> list[tuple[int, int]]:
    """``(first bit, width)`` of each block: ``ceil(96 / block_bits)`` blocks of as
    equal width as possible, the wider ones first."""
    try:
        if isinstance(block_bits, bool):
            raise TypeError
        bits = operator.index(block_bits)
    except TypeError:
        bits = 0
    if not 1 <= bits <= 32:
        raise NeuralHashError(f"block_bits must be an integer between 1 and 32, got {block_bits!r}")
    m = -(-HASH_BITS // bits)
    base, extra = divmod(HASH_BITS, m)
    widths = [base + 1] * extra + [base] * (m - extra)
    starts = np.cumsum([0] + widths[:-1]).tolist()
    return list(zip(starts, widths))


def auto_block_bits(n: int) -> int:
    """The block width used when none is given: log2(n) rounded, within 8..24 bits,
    so that a bucket holds a few hashes at most. (1 million and 10 million hashes
    both get 5 blocks of 19-20 bits: at 10 million, 4 blocks of 24 bits join no
    faster, query slower and take twice the memory.)"""
    lo, hi = _AUTO_BITS
    return int(min(hi, max(lo, round(math.log2(max(n, 2))))))


def _extract(hi: np.ndarray, lo: np.ndarray, start: int, width: int) -> np.ndarray:
    """Bits ``start .. start+width-1`` of each hash as a uint32 (bit ``start`` most significant)."""
    end = start + width
    mask = (1 << width) - 1
    if end <= 64:
        out = hi >> (64 - end)
        out &= mask
        return out.astype(np.uint32)
    if start >= 64:
        out = lo >> (96 - end)
        out &= mask
        return out
    nlo = end - 64
    out = hi & ((1 << (64 - start)) - 1)
    out <<= nlo
    out = out.astype(np.uint32)
    out |= lo >> (32 - nlo)
    return out


def _block_masks(start: int, width: int) -> tuple[np.uint64, np.uint32]:
    """The block's bits within the ``hi`` and ``lo`` words."""
    mh = ml = 0
    for p in range(start, start + width):
        if p < 64:
            mh |= 1 << (63 - p)
        else:
            ml |= 1 << (95 - p)
    return np.uint64(mh), np.uint32(ml)


def _n_masks(width: int, radius: int) -> int:
    return sum(math.comb(width, k) for k in range(radius + 1)) if radius >= 0 else 0


@lru_cache(maxsize=64)
def _flip_masks(width: int, radius: int) -> np.ndarray:
    """Every ``width``-bit value with at most ``radius`` bits set, fewest bits first."""
    if _n_masks(width, radius) > _MAX_MASKS:
        raise NeuralHashError(
            f"radius {radius} within a {width}-bit block needs {_n_masks(width, radius)} lookups a "
            f"query; use brute force or narrower blocks")
    out = [0]
    for k in range(1, radius + 1):
        out.extend(sum(1 << b for b in bits) for bits in combinations(range(width), k))
    arr = np.array(out, dtype=np.uint32)
    arr.flags.writeable = False
    return arr


def _expand(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + c)`` for each (s, c), as int64."""
    counts = counts.astype(np.int64, copy=False)
    total = int(counts.sum())
    if total == 0:
        return _EMPTY_I
    shift = starts.astype(np.int64) - (np.cumsum(counts) - counts)
    return np.repeat(shift, counts) + np.arange(total, dtype=np.int64)


class _Tables:
    """The block tables of all blocks, in flat arrays.

    ``order[t*n:(t+1)*n]`` lists hash positions sorted by the value of block ``t``
    (ascending position within a value). A bucket (block ``t``, value ``v``) is the
    slice ``order[start:end]`` with global bounds found either through one direct
    offsets array (``offsets[base[t] + v]`` and ``[... + 1]``), used when the widest
    block has at most 4 values a hash (or 2^16), or else by binary search in each
    block's sorted values. One flat ``order`` and one flat ``offsets`` let a query
    look up every block's keys with a single gather.
    """

    def __init__(self, hi: np.ndarray, lo: np.ndarray, blocks: list[tuple[int, int]]):
        n, m = hi.shape[0], len(blocks)
        self.n = n
        self.widths = [w for _, w in blocks]
        self.direct = (1 << max(self.widths)) <= max(4 * n, 1 << 16)
        small = m * n + m < 2 ** 32
        self.order = np.empty(m * n, dtype=np.uint32 if small else np.int64)
        if self.direct:
            sizes = [(1 << w) + 1 for w in self.widths]
            self.base = np.cumsum([0] + sizes[:-1]).astype(np.int64)
            self.offsets = np.empty(sum(sizes), dtype=np.uint32 if small else np.int64)
            self.sorted_values = None
        else:
            self.base = None
            self.offsets = None
            self.sorted_values = []
        for t, (start, width) in enumerate(blocks):
            values = _extract(hi, lo, start, width)
            dest = self.order[t * n:(t + 1) * n]
            if n < 2 ** 32 and sys.byteorder == "little":
                # Sorting (value << 32 | position) as one uint64 is a stable argsort at
                # the speed of a plain sort; the 32-bit halves are written and read in place.
                key = np.empty(n, np.uint64)
                halves = key.view(np.uint32)
                halves[0::2] = np.arange(n, dtype=np.uint32)
                halves[1::2] = values
                del values
                key.sort()
                dest[:] = halves[0::2]
                svals = halves[1::2]
            else:  # pragma: no cover - over 4 billion hashes, or a big-endian machine
                pos = np.argsort(values, kind="stable")
                dest[:] = pos
                svals = values[pos]
                del values
            if self.direct:
                # offsets[v + 1] = end of bucket v; empty buckets inherit the end before.
                off = self.offsets[self.base[t]:self.base[t] + (1 << width) + 1]
                off[:] = 0
                if n:
                    cut = np.flatnonzero(svals[1:] != svals[:-1])
                    off[svals[cut].astype(np.int64) + 1] = cut + 1
                    off[int(svals[-1]) + 1] = n
                np.maximum.accumulate(off, out=off)
                off += t * n
            else:
                self.sorted_values.append(svals.astype(np.uint16 if width <= 16 else np.uint32))
            del svals
            key = halves = None

    @property
    def nbytes(self) -> int:
        extra = self.offsets.nbytes if self.direct else sum(v.nbytes for v in self.sorted_values)
        return self.order.nbytes + extra

    def lookup(self, t: int, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Global start and end (int64) in ``order`` of each key's bucket in block ``t``."""
        if self.direct:
            k = keys.astype(np.int64) + self.base[t]
            return self.offsets[k].astype(np.int64), self.offsets[k + 1].astype(np.int64)
        sv = self.sorted_values[t]
        k = keys.astype(sv.dtype)
        shift = t * self.n
        return (np.searchsorted(sv, k, "left").astype(np.int64) + shift,
                np.searchsorted(sv, k, "right").astype(np.int64) + shift)

    def runs(self, t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Value, global start and global end of every non-empty bucket of block ``t``."""
        if self.direct:
            off = self.offsets[self.base[t]:self.base[t] + (1 << self.widths[t]) + 1]
            values = np.flatnonzero(np.diff(off))
            return values.astype(np.uint32), off[values].astype(np.int64), off[values + 1].astype(np.int64)
        sv = self.sorted_values[t]
        n = sv.shape[0]
        if n == 0:
            return np.zeros(0, np.uint32), _EMPTY_I, _EMPTY_I
        cut = np.flatnonzero(sv[1:] != sv[:-1]) + 1
        starts = np.concatenate(([0], cut)).astype(np.int64)
        ends = np.concatenate((cut, [n])).astype(np.int64)
        return sv[starts].astype(np.uint32), starts + t * n, ends + t * n


# --------------------------------------------------------------------------- the index


class HashIndex:
    """An in-memory set of 96-bit hashes searched exactly by Hamming distance.

    ``packed`` is ``uint8 [N, 12]`` (see :func:`~neuralhash.matching.pack_hex`);
    ``ids`` optionally gives each hash an id (any array-like of length N, e.g. SQLite
    row ids or file names) returned alongside positions. ``block_bits`` is the widest
    block of the multi-index (the 96 bits are split into ``ceil(96 / block_bits)``
    blocks as evenly as possible); by default about log2(N), within 8..24. The block
    tables are built on first use by an indexed query or the self-join, or by
    :meth:`build`.
    """

    def __init__(self, packed, *, block_bits: int | None = None, ids=None):
        packed = check_packed(packed)
        self._setup(*to_words(packed), block_bits, ids)

    @classmethod
    def from_words(cls, hi, lo, *, block_bits: int | None = None, ids=None) -> "HashIndex":
        """An index over hashes already in the search form (``hi uint64[N]``, ``lo uint32[N]``,
        see :func:`~neuralhash.matching.to_words`), without copying them: read-only or
        memory-mapped arrays are searched where they lie."""
        hi, lo = np.asarray(hi), np.asarray(lo)
        if hi.dtype != np.uint64 or lo.dtype != np.uint32 or hi.ndim != 1 or hi.shape != lo.shape:
            raise NeuralHashError(f"words must be uint64 [N] and uint32 [N], got {hi.dtype} {hi.shape} "
                                  f"and {lo.dtype} {lo.shape}")
        self = cls.__new__(cls)
        self._setup(hi, lo, block_bits, ids)
        return self

    def _setup(self, hi: np.ndarray, lo: np.ndarray, block_bits, ids) -> None:
        self._hi, self._lo = hi, lo
        self._n = int(self._hi.shape[0])
        if ids is not None:
            ids = np.asarray(ids)
            if ids.ndim != 1 or ids.shape[0] != self._n:
                raise NeuralHashError(f"ids must be a sequence of {self._n} values, got shape {ids.shape}")
        self.ids = ids
        self.block_bits = auto_block_bits(self._n) if block_bits is None else int(block_bits)
        self.blocks = block_layout(self.block_bits)
        self._masks = [_block_masks(s, w) for s, w in self.blocks]
        self.widths = [w for _, w in self.blocks]
        self._tables: _Tables | None = None
        self._plans: dict[int, tuple] = {}
        self._indexable: dict[int, bool] = {}

    @classmethod
    def from_hex(cls, hexes, *, block_bits: int | None = None, ids=None) -> "HashIndex":
        """An index of hex hashes (see :func:`~neuralhash.matching.pack_hex`)."""
        return cls(pack_hex(hexes), block_bits=block_bits, ids=ids)

    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        return (f"HashIndex({self._n} hashes, {len(self.blocks)} blocks of "
                f"{'/'.join(str(w) for w in sorted({w for _, w in self.blocks}, reverse=True))} bits, "
                f"tables {'built' if self.built else 'not built'})")

    # -- storage

    @property
    def words(self) -> tuple[np.ndarray, np.ndarray]:
        """The stored hashes as ``(hi uint64[N], lo uint32[N])`` (read-only views)."""
        hi, lo = self._hi.view(), self._lo.view()
        hi.flags.writeable = lo.flags.writeable = False
        return hi, lo

    def packed(self) -> np.ndarray:
        """The stored hashes as a new ``uint8 [N, 12]`` array."""
        return from_words(self._hi, self._lo)

    @property
    def built(self) -> bool:
        return self._tables is not None

    def build(self) -> "HashIndex":
        """Build the block tables now (otherwise done on first need); returns self."""
        if self._tables is None:
            self._tables = _Tables(self._hi, self._lo, self.blocks)
        return self

    @property
    def nbytes(self) -> int:
        """Bytes held: the hashes (12 a hash) plus the block tables if built."""
        tables = self._tables.nbytes if self._tables else 0
        return self._hi.nbytes + self._lo.nbytes + tables

    # -- planning

    def _plan(self, r: int) -> list[tuple[int, int]]:
        """``(block, radius)`` searched for a query radius ``r``.

        Pigeonhole, sharpened: with m blocks, r = m*s + a (0 <= a < m), a hash within r
        differs by at most s bits in one of blocks 0..a, or by at most s-1 bits in one
        of the others (else the distance would be at least (a+1)(s+1) + (m-a-1)s =
        r+1). Blocks with a negative radius are skipped.
        """
        m = len(self.blocks)
        s, a = divmod(r, m)
        plan = [(t, s if t <= a else s - 1) for t in range(m)]
        return [(t, st) for t, st in plan if st >= 0]

    def indexable(self, max_distance: int) -> bool:
        """Whether the index can serve this radius: False when some block would have to
        be searched at a radius covering all its values (every hash is then a
        candidate) or with more than 2^20 lookups; ``method="index"`` then scans."""
        r = check_radius(max_distance)
        got = self._indexable.get(r)
        if got is None:
            got = self._indexable[r] = all(
                st < self.blocks[t][1] and _n_masks(self.blocks[t][1], st) <= _MAX_MASKS
                for t, st in self._plan(r))
        return got

    def _index_cost(self, r: int, n_queries: int) -> float:
        """Estimated ns for ``n_queries`` indexed queries (inf if not indexable)."""
        if not self.indexable(r):
            return math.inf
        cost = 0.0
        for t, st in self._plan(r):
            w = self.blocks[t][1]
            k = _n_masks(w, st)
            direct = (1 << max(self.widths)) <= max(4 * self._n, 1 << 16)
            per_key = (_NS_KEY_TABLE if direct else _NS_KEY_SORTED) + self._n / 2.0 ** w * _NS_CANDIDATE
            cost += n_queries * k * per_key + _NS_CALL
        if not self.built:
            cost += _NS_BUILD * self._n * len(self.blocks)
        return cost

    def _brute_cost(self, r: int, n_queries: int) -> float:
        per = _NS_SCAN_HI if r <= _HI_FILTER_MAX else _NS_SCAN_FULL
        return n_queries * self._n * per + _NS_CALL

    def choose_method(self, max_distance: int, n_queries: int = 1) -> str:
        """``"index"`` or ``"brute"``: what ``method="auto"`` uses for this batch
        (the index when it is estimated cheaper, counting its build if not built)."""
        r = check_radius(max_distance)
        return "index" if self._index_cost(r, n_queries) < self._brute_cost(r, n_queries) else "brute"

    # -- queries

    def distances(self, query) -> np.ndarray:
        """Hamming distance (uint8 [N]) from one query to every stored hash."""
        q = as_queries(query, single=True)
        qh, ql = to_words(q)
        return (np.bitwise_count(self._hi ^ qh[0]) + np.bitwise_count(self._lo ^ ql[0])).astype(np.uint8)

    def query(self, query, max_distance: int, *, method: str = "auto") -> Matches:
        """Stored hashes within ``max_distance`` of one query (hex string, 12 bytes or
        ``uint8 [12]``), nearest first, ties by index.

        ``method``: ``"index"`` (multi-index hashing; it scans instead when the radius
        is too large for the blocks, see :meth:`indexable`), ``"brute"`` (a popcount
        scan of every hash) or ``"auto"`` (whichever is estimated faster). All give
        identical answers.
        """
        q = as_queries(query, single=True)
        qi, idx, d = self._run(q, check_radius(max_distance), _check_method(method))
        order = np.lexsort((idx, d))
        idx = idx[order]
        return Matches(idx, d[order], None if self.ids is None else self.ids[idx])

    def brute_force(self, query, max_distance: int) -> Matches:
        """:meth:`query` by a scan of every stored hash."""
        return self.query(query, max_distance, method="brute")

    def query_many(self, queries, max_distance: int, *, method: str = "auto") -> BatchMatches:
        """Matches of many queries (iterable of hex strings or ``uint8 [Q, 12]``) as one
        flat :class:`BatchMatches`; ``method`` as for :meth:`query`."""
        q = as_queries(queries)
        qi, idx, d = self._run(q, check_radius(max_distance), _check_method(method))
        order = np.lexsort((idx, d, qi))
        idx = idx[order]
        return BatchMatches(qi[order], idx, d[order], q.shape[0], None if self.ids is None else self.ids[idx])

    def _run(self, q: np.ndarray, r: int, method: str):
        """Unsorted (query, index, distance) of packed queries ``q``."""
        nq = q.shape[0]
        if nq == 0 or self._n == 0:
            return _EMPTY_I, _EMPTY_I, _EMPTY_D
        if method == "auto":
            method = self.choose_method(r, nq)
        elif method == "index" and not self.indexable(r):
            method = "brute"
        qh, ql = to_words(q)
        if method == "brute":
            return self._brute(qh, ql, r)
        return self._index_query(qh, ql, r)

    def _brute(self, qh: np.ndarray, ql: np.ndarray, r: int, col_start: int = 0):
        """All (query, stored hash >= col_start) cells within ``r``, by tiles."""
        hi, lo, n = self._hi, self._lo, self._n
        nq = qh.shape[0]
        ncols = n - col_start
        if nq == 0 or ncols <= 0:
            return _EMPTY_I, _EMPTY_I, _EMPTY_D
        cw = min(max(4096, _TILE // nq), ncols)
        qw = max(1, min(nq, _TILE // cw))
        full = r > _HI_FILTER_MAX
        # Flat scratch buffers, viewed as a C-contiguous [qn, cn] tile each time.
        size = qw * cw
        bx = np.empty(size, np.uint64)
        bc = np.empty(size, np.uint8)
        bm = np.empty(size, np.bool_)
        if full:
            bxl = np.empty(size, np.uint32)
            bcl = np.empty(size, np.uint8)
        qcol_h, qcol_l = qh[:, None], ql[:, None]
        out_q, out_i, out_d = [], [], []
        for c0 in range(col_start, n, cw):
            c1 = min(c0 + cw, n)
            cn = c1 - c0
            hrow = hi[None, c0:c1]
            for q0 in range(0, nq, qw):
                q1 = min(q0 + qw, nq)
                qn = q1 - q0
                k = qn * cn
                x, cnt, m = bx[:k].reshape(qn, cn), bc[:k], bm[:k]
                np.bitwise_xor(hrow, qcol_h[q0:q1], out=x)
                np.bitwise_count(x, out=cnt.reshape(qn, cn))
                if full:
                    xl, cl = bxl[:k].reshape(qn, cn), bcl[:k]
                    np.bitwise_xor(lo[None, c0:c1], qcol_l[q0:q1], out=xl)
                    np.bitwise_count(xl, out=cl.reshape(qn, cn))
                    np.add(cnt, cl, out=cnt)
                    np.less_equal(cnt, r, out=m)
                    flat = np.flatnonzero(m)
                    d = cnt[flat]
                    qq, cc = np.divmod(flat, cn)
                else:
                    np.less_equal(cnt, r, out=m)
                    flat = np.flatnonzero(m)
                    if flat.size == 0:
                        continue
                    qq, cc = np.divmod(flat, cn)
                    d = cnt[flat] + np.bitwise_count(lo[cc + c0] ^ ql[qq + q0])
                    keep = d <= r
                    qq, cc, d = qq[keep], cc[keep], d[keep]
                if qq.size:
                    out_q.append(qq + q0)
                    out_i.append(cc + c0)
                    out_d.append(d)
        if not out_q:
            return _EMPTY_I, _EMPTY_I, _EMPTY_D
        return (np.concatenate(out_q).astype(np.int64), np.concatenate(out_i).astype(np.int64),
                np.concatenate(out_d).astype(np.uint8))

    def _earlier_block_hit(self, t: int, plan, xh: np.ndarray, xl: np.ndarray) -> np.ndarray:
        """For XORs of candidate pairs found in block ``t``: True where an earlier block of
        the plan would have found the pair too (so block ``t`` must drop it)."""
        hit = np.zeros(xh.shape[0], dtype=np.bool_)
        for t2, st2 in plan:
            if t2 >= t:
                break
            mh, ml = self._masks[t2]
            bd = np.bitwise_count(xh & mh) + np.bitwise_count(xl & ml)
            hit |= bd <= st2
        return hit

    def _query_plan(self, r: int):
        """Cached per radius: the plan, and for the flat list of lookup keys of one query
        (every planned block's flip masks), each key's block (index into the plan) and
        mask."""
        got = self._plans.get(r)
        if got is None:
            plan = self._plan(r)
            masks = [_flip_masks(self.blocks[t][1], st) for t, st in plan]
            key_block = np.repeat(np.arange(len(plan)), [len(mk) for mk in masks])
            got = self._plans[r] = (plan, key_block, np.concatenate(masks))
        return got

    def _index_query(self, qh: np.ndarray, ql: np.ndarray, r: int):
        """Every planned block's candidates at once, one exact verification; a (query,
        hash) found in several blocks is kept once."""
        self.build()
        tables = self._tables
        plan, key_block, masks = self._query_plan(r)
        nk = masks.shape[0]
        if tables.direct:
            key_base = tables.base[[t for t, _ in plan]][key_block]
        nq = qh.shape[0]
        chunk = max(1, _KEY_BUDGET // nk)
        out_q, out_i, out_d = [], [], []
        for q0 in range(0, nq, chunk):
            q1 = min(q0 + chunk, nq)
            ch, cl = qh[q0:q1], ql[q0:q1]
            if q1 - q0 == 1:  # one query: block values with Python ints
                v = (int(ch[0]) << 32) | int(cl[0])
                values = np.array([[(v >> (96 - self.blocks[t][0] - self.blocks[t][1]))
                                    & ((1 << self.blocks[t][1]) - 1) for t, _ in plan]], dtype=np.uint32)
            else:
                values = np.stack([_extract(ch, cl, *self.blocks[t]) for t, _ in plan], axis=1)
            keys = values[:, key_block] ^ masks  # [q, keys]
            if tables.direct:
                k = (keys + key_base).reshape(-1)
                a, b = tables.offsets[k].astype(np.int64), tables.offsets[k + 1].astype(np.int64)
            else:
                a = np.empty(keys.shape, np.int64)
                b = np.empty(keys.shape, np.int64)
                for p, (t, _) in enumerate(plan):
                    sel = key_block == p
                    a[:, sel], b[:, sel] = tables.lookup(t, keys[:, sel])
                a, b = a.reshape(-1), b.reshape(-1)
            counts = b - a
            pos = _expand(a, counts)
            if pos.size == 0:
                continue
            idx = tables.order[pos].astype(np.int64)
            if q1 - q0 == 1:
                qi = np.zeros(idx.shape[0], np.int64)
                d = np.bitwise_count(self._hi[idx] ^ ch[0]) + np.bitwise_count(self._lo[idx] ^ cl[0])
            else:
                qi = np.repeat(np.arange(q1 - q0, dtype=np.int64).repeat(nk), counts)
                d = np.bitwise_count(self._hi[idx] ^ ch[qi]) + np.bitwise_count(self._lo[idx] ^ cl[qi])
            keep = np.flatnonzero(d <= r)
            if keep.size == 0:
                continue
            qi, idx, d = qi[keep], idx[keep], d[keep]
            if len(plan) > 1:
                _, first = np.unique(qi * self._n + idx if q1 - q0 > 1 else idx, return_index=True)
                qi, idx, d = qi[first], idx[first], d[first]
            out_q.append(qi + q0)
            out_i.append(idx)
            out_d.append(d)
        if not out_q:
            return _EMPTY_I, _EMPTY_I, _EMPTY_D
        return np.concatenate(out_q), np.concatenate(out_i), np.concatenate(out_d).astype(np.uint8)

    # -- self-join

    def self_join(self, max_distance: int, *, method: str = "auto") -> Pairs:
        """Every pair of stored hashes within ``max_distance``: :class:`Pairs` with
        ``i < j``, each pair once, sorted by ``i`` then ``j``.

        ``method="index"`` pairs hashes that share a bucket (or, at a block radius
        s > 0, buckets at most s bits apart) in some block, verifies each candidate
        exactly, and keeps a pair only in the first block of the plan that finds it;
        candidates are generated and verified in chunks of about 2 million, so memory
        beyond the result stays bounded. ``"brute"`` compares all N(N-1)/2 pairs in
        tiles. ``"auto"`` picks the cheaper; all give identical answers.
        """
        chunks = list(self.iter_pairs(max_distance, method=method))
        if not chunks:
            return Pairs(_EMPTY_I, _EMPTY_I, _EMPTY_D)
        i = np.concatenate([c[0] for c in chunks])
        j = np.concatenate([c[1] for c in chunks])
        d = np.concatenate([c[2] for c in chunks]).astype(np.uint8)
        order = np.argsort(i * self._n + j, kind="stable")
        return Pairs(i[order], j[order], d[order])

    def iter_pairs(self, max_distance: int, *, method: str = "auto"):
        """The pairs of :meth:`self_join` as they are found, in chunks ``(i, j, distance)``
        of at most a few million pairs, unsorted (each unordered pair once, ``i < j``).

        Memory stays bounded by a chunk whatever the number of pairs: use it (or
        :meth:`components`) when the pairs may not fit in memory.
        """
        r = check_radius(max_distance)
        method = _check_method(method)
        if self._n < 2:
            return
        if method == "auto":
            method = "index" if self._join_index_cost(r) < self._n ** 2 / 2 * _NS_PAIR_SCAN else "brute"
        elif method == "index" and not self.indexable(r):
            method = "brute"
        chunks = self._join_brute(r) if method == "brute" else self._join_index(r)
        try:
            for i, j, d in chunks:
                if i.size:
                    yield i, j, d
        finally:
            self._words_t = None

    def components(self, max_distance: int, *, method: str = "auto") -> np.ndarray:
        """Component labels (as :func:`~neuralhash.matching.connected_components`) of the
        graph linking hashes within ``max_distance``, folding the pairs in chunk by chunk,
        so memory stays O(N) however many pairs there are."""
        from .components import connected_components

        labels = np.arange(self._n, dtype=np.int64)
        # Pairs are buffered before each fold, as many as there are hashes (at least a chunk's
        # worth): a fold costs passes over all N labels, so this keeps folding O(N + pairs).
        buf_i, buf_j, held = [], [], 0
        budget = max(_PAIR_BUDGET, self._n)

        def fold(labels):
            if not held:
                return labels
            return connected_components((np.concatenate(buf_i), np.concatenate(buf_j)), self._n, parent=labels)

        for i, j, _ in self.iter_pairs(max_distance, method=method):
            buf_i.append(i)
            buf_j.append(j)
            held += i.size
            if held >= budget:
                labels = fold(labels)
                buf_i, buf_j, held = [], [], 0
        return fold(labels)

    def _join_index_cost(self, r: int) -> float:
        if not self.indexable(r):
            return math.inf
        cost = 0.0 if self.built else _NS_BUILD * self._n * len(self.blocks)
        for t, st in self._plan(r):
            w = self.blocks[t][1]
            k = _n_masks(w, st)
            pairs = k * self._n ** 2 / 2.0 ** (w + 1)
            cost += pairs * _NS_CANDIDATE + (k - 1) * min(self._n, 2 ** w) * _NS_KEY_TABLE + _NS_CALL
        return cost

    def _join_brute(self, r: int):
        # Rows a chunk: at most about _PAIR_BUDGET cells, so that a chunk of pairs stays
        # bounded even when every pair is within the radius.
        rows = int(min(2048, max(16, _PAIR_BUDGET // max(self._n, 1))))
        for a in range(0, self._n, rows):
            b = min(a + rows, self._n)
            qi, idx, d = self._brute(self._hi[a:b], self._lo[a:b], r, col_start=a + 1)
            keep = idx > qi + a
            yield qi[keep] + a, idx[keep], d[keep].astype(np.uint8)

    def _join_index(self, r: int):
        self.build()
        plan = self._plan(r)
        for t, st in plan:
            values, starts, ends = self._tables.runs(t)
            sizes = ends - starts
            # Pairs inside one bucket: position p pairs with p+1 .. end-1; buckets a slice
            # of about _PAIR_BUDGET positions at a time, so the position lists stay small.
            big = np.flatnonzero(sizes >= 2)
            cut = np.searchsorted(np.cumsum(sizes[big]), np.arange(_PAIR_BUDGET, int(sizes[big].sum()) + 1,
                                                                   _PAIR_BUDGET), "right")
            for part in np.split(big, np.unique(cut)):
                if part.size == 0:
                    continue
                pos = _expand(starts[part], sizes[part])
                yield from self._verify_pairs(t, plan, r, self._tables.order, pos, pos + 1,
                                              np.repeat(ends[part], sizes[part]) - pos - 1, False)
            del big, cut
            # Pairs of buckets u and u ^ f for each mask f != 0, each unordered pair of
            # buckets once (the one without f's highest bit on the left); as many
            # masks at once as keep the (bucket, mask) grid within budget.
            flips = _flip_masks(self.blocks[t][1], st)[1:]
            if flips.size == 0 or values.size == 0:
                continue
            tops = np.array([1 << (int(f).bit_length() - 1) for f in flips], dtype=np.uint32)
            step = max(1, _PAIR_BUDGET // values.size)
            for f0 in range(0, flips.size, step):
                fm, tp = flips[f0:f0 + step], tops[f0:f0 + step]
                rr, ff = np.nonzero((values[:, None] & tp[None, :]) == 0)
                ts, te = self._tables.lookup(t, values[rr] ^ fm[ff])
                hit = te > ts
                rr, ts, te = rr[hit], ts[hit], te[hit]
                lsizes = sizes[rr]
                pos = _expand(starts[rr], lsizes)
                yield from self._verify_pairs(t, plan, r, self._tables.order, pos, np.repeat(ts, lsizes),
                                              np.repeat(te - ts, lsizes), True)

    def _block_words(self, t: int):
        """(hi, lo) permuted into block ``t``'s bucket order, and the block's offset in ``order``
        (one block's copy is kept at a time)."""
        cached = getattr(self, "_words_t", None)
        if cached is None or cached[0] != t:
            n = self._n
            perm = self._tables.order[t * n:(t + 1) * n]
            self._words_t = cached = (t, self._hi[perm], self._lo[perm], t * n)
        return cached[1], cached[2], cached[3]

    def _verify_pairs(self, t, plan, r, order, pos, pstart, pcount, swap):
        """Expand (position, partner range) lists into candidate pairs, by chunks of
        about ``_PAIR_BUDGET``, and keep the verified ones not found by an earlier block."""
        if pos.size == 0:
            return
        cum = np.cumsum(pcount)
        total = int(cum[-1])
        k0, done = 0, 0
        while done < total:
            k1 = int(np.searchsorted(cum, done + _PAIR_BUDGET, "right"))
            k1 = max(k1, k0 + 1)
            c = pcount[k0:k1]
            left = np.repeat(pos[k0:k1], c)
            right = _expand(pstart[k0:k1], c)
            done = int(cum[k1 - 1])
            k0 = k1
            if left.size == 0:
                continue
            # Words in this block's bucket order: a bucket's hashes lie side by side, so
            # verifying its pairs reads memory in order instead of at random.
            hi_t, lo_t, base = self._block_words(t)
            left -= base
            right -= base
            xh = hi_t[left] ^ hi_t[right]
            xl = lo_t[left] ^ lo_t[right]
            d = np.bitwise_count(xh) + np.bitwise_count(xl)
            keep = np.flatnonzero(d <= r)
            d, xh, xl = d[keep], xh[keep], xl[keep]
            i = order[left[keep] + base].astype(np.int64)
            j = order[right[keep] + base].astype(np.int64)
            if t > plan[0][0] and i.size:
                keep = ~self._earlier_block_hit(t, plan, xh, xl)
                i, j, d = i[keep], j[keep], d[keep]
            if swap:
                i, j = np.minimum(i, j), np.maximum(i, j)
            if i.size:
                yield i, j, d.astype(np.uint8)
