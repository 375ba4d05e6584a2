"""Auditing a NeuralHash list before trusting it: ``neuralhash audit LIST [--reference DB_OR_LIST]``.

    from neuralhash.lists.audit import audit, read_hash_list, read_reference

    report = audit(read_hash_list("list.txt"), read_reference("photos.db"), max_distance=4)
    report.flagged, report.to_dict()

What is checked, per list of N entries:

- **malformed** entries: lines the hash-list parser rejects (not 24 hex digits, an
  error record...), by line number;
- **degenerate** hashes: all-zero, all-one, or extreme bit imbalance (at most
  :data:`IMBALANCE` bits of one value: 7 standard deviations from the 48 of a hash
  whose bits are fair coins, so an ordinary image essentially never gets there;
  such hashes come from blank or broken images and match each other broadly);
- **exact duplicates** (the same hash on several lines) and **near duplicates**
  (distinct hashes within ``max_distance``), found with the multi-index self-join of
  :mod:`neuralhash.matching` on the distinct hashes (degenerate ones left out:
  they are flagged already and would pair with each other by the thousand);
- with a **reference** set (hashes of ordinary, distinct images: a database of your
  own photos, or a list): every entry within ``max_distance`` of more reference
  images than chance allows. Chance is estimated from the reference itself: ``p``,
  the share of pairs of distinct reference hashes within ``max_distance`` (counted
  exactly with a self-join; identical hashes are counted once); an entry's count is
  then about Poisson(``R * p``), and it is flagged at ``broad_limit``, the count whose
  Poisson upper tail is below 1e-9, and never below 3 (an image may have a copy or
  two in the reference). Degenerate entries are not counted again here;
- the **expected false matches per million images** at ``max_distance``:
  ``1e6 * (1 - (1 - p) ** N)``, i.e. the chance that an unrelated image lies within
  ``max_distance`` of some entry, if entries are like reference images; with its
  95% upper bound (Poisson on the pair count: with no pair within the distance,
  ``p`` is below 3 / pairs). Informational: it is never flagged.

``flagged`` is true when any entry is malformed, degenerate, duplicated or broad.
Reports list at most ``limit`` items of each kind (the counts are always complete).

The list is read with the project's hash-list parser (``HEX  PATH`` lines, CSV with
a ``hash`` column, JSONL) through :mod:`neuralhash.lists.hashlists`; entries are kept as packed arrays
(12 bytes, a line number and a label offset each, labels in one UTF-8 blob), about
28 bytes an entry plus its label, beyond the parser's own copy of the text.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import NeuralHashError
from ..matching import HASH_BITS, HASH_BYTES, HashIndex, check_radius, component_groups, connected_components
from ..matching.index import DEFAULT_MAX_DISTANCE  # noqa: F401 - the one default, re-exported for audit's users
#: A hash with at most this many bits of one value is degenerate.
IMBALANCE = 14
#: Poisson upper-tail probability below which a count of reference matches is flagged.
BROAD_TAIL = 1e-9
#: Never flag an entry for fewer reference matches than this.
BROAD_MIN = 3
#: Items listed per kind in a report.
DEFAULT_LIMIT = 20
#: Queries per batch when counting reference matches (bounds the batch's result arrays).
_CHUNK = 1 << 16

SQLITE_MAGIC = b"SQLite format 3\x00"


class AuditError(NeuralHashError):
    """A list or reference cannot be read."""


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True, eq=False)
class HashList:
    """A hash list as packed arrays: ``packed`` uint8 [N, 12], ``lines`` int64 [N] (the line
    of each entry), the rejected lines as (line number, reason), and the entries' labels
    (paths or names) as one UTF-8 blob cut at ``label_ends`` (int64 [N])."""

    name: str
    packed: np.ndarray
    lines: np.ndarray
    malformed: list[tuple[int, str]] = field(default_factory=list)
    label_blob: bytes = b""
    label_ends: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.packed.shape[0])

    def label(self, i: int) -> str | None:
        """The label of entry ``i`` (None when the list has none)."""
        if self.label_ends is None:
            return None
        start = int(self.label_ends[i - 1]) if i else 0
        return self.label_blob[start:int(self.label_ends[i])].decode("utf-8", "surrogatepass")


def read_hash_list(path: str | os.PathLike) -> HashList:
    """Read a hash list file: every format ``neuralhash index import`` reads
    (:mod:`neuralhash.lists.hashlists`: text, CSV, JSON Lines), streamed."""
    from array import array

    from .hashlists import iter_batches

    source = Path(os.fsdecode(path)).expanduser()
    if source.is_dir():
        raise AuditError(f"{source}: is a directory, not a hash list")
    digests, labels = bytearray(), bytearray()
    lines, ends = array("q"), array("q")
    malformed: list[tuple[int, str]] = []
    try:
        for batch in iter_batches(os.fspath(source)):
            malformed += batch.skipped
            digests += batch.digests
            lines.extend(batch.lines)
            for name in batch.names:  # compact: ~20 bytes an entry, not a str object
                labels += name.encode("utf-8", "surrogatepass")
                ends.append(len(labels))
    except OSError as exc:
        raise AuditError(f"{source}: cannot read hash list ({exc.strerror or exc})") from None
    malformed.sort()
    packed = np.frombuffer(bytes(digests), dtype=np.uint8).reshape(-1, HASH_BYTES)
    return HashList(source.name, packed, np.frombuffer(lines, dtype=np.int64).copy(), malformed,
                    bytes(labels), np.frombuffer(ends, dtype=np.int64).copy())


def hash_list_from_hex(hexes, name: str = "<hashes>") -> HashList:
    """A :class:`HashList` from hex strings in memory (line numbers 1..N, no labels)."""
    from ..matching import pack_hex

    packed = pack_hex(list(hexes))
    return HashList(name, packed, np.arange(1, len(packed) + 1, dtype=np.int64))


def read_reference(spec: str | os.PathLike, *, model_id: str | None = None, option: str = "model_id") -> np.ndarray:
    """The hashes (packed uint8 [R, 12]) of a reference set: a neuralhash SQLite
    database (one model's hashes; ``model_id`` when it holds several) or a hash list.
    ``option``: what an error tells the user to set (the command says ``--reference-model-id``)."""
    path = Path(os.fsdecode(spec)).expanduser()
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise AuditError(f"{path}: cannot read reference ({exc.strerror or exc})") from None
    if head == SQLITE_MAGIC:
        from ..store import HashStore

        with HashStore(path, create=False) as store:
            return store.packed_hashes(store.resolve_model(model_id, option=option).model_id)
    ref = read_hash_list(path)
    if ref.malformed:
        line, reason = ref.malformed[0]
        raise AuditError(f"{path}: reference line {line}: {reason} ({len(ref.malformed)} malformed line(s); "
                         "audit the reference first)")
    return ref.packed


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Entry:
    """One list entry: its line, hash and label."""

    line: int
    hash: str
    label: str | None = None


@dataclass(frozen=True)
class Degenerate:
    entry: Entry
    ones: int  # bits set, of 96


@dataclass(frozen=True)
class Group:
    """Entries that are exact duplicates (``distance`` 0) or a near-duplicate group
    (connected within the distance; ``distance`` the largest pair distance found)."""

    entries: list[Entry]
    distance: int


@dataclass(frozen=True)
class Broad:
    entry: Entry
    reference_matches: int
    share: float


@dataclass(frozen=True)
class FalseMatchEstimate:
    """Chance estimates from the reference's pairs of distinct hashes."""

    distinct_hashes: int      # distinct reference hashes
    pairs: int                # pairs among them
    pairs_within: int         # of which within max_distance
    p_pair: float             # pairs_within / pairs
    p_pair_upper95: float     # Poisson 95% upper bound on p_pair
    per_million: float        # expected false matches per million images, against the whole list
    per_million_upper95: float


@dataclass
class AuditReport:
    """What :func:`audit` found. Counts are complete; item lists hold at most ``limit`` items each."""

    name: str
    entries: int
    distinct: int
    max_distance: int
    limit: int
    malformed_count: int = 0
    malformed: list[tuple[int, str]] = field(default_factory=list)
    degenerate_count: int = 0
    degenerate: list[Degenerate] = field(default_factory=list)
    exact_duplicate_entries: int = 0   # entries whose hash appears on another line too
    exact_groups_count: int = 0
    exact_duplicates: list[Group] = field(default_factory=list)
    near_duplicate_entries: int = 0    # entries within max_distance of a different hash in the list
    near_groups_count: int = 0
    near_duplicates: list[Group] = field(default_factory=list)
    reference_size: int | None = None
    reference_matched: int | None = None   # reference hashes within max_distance of some entry
    broad_limit: int | None = None
    broad_expected: float | None = None    # expected reference matches of an ordinary entry
    broad_count: int = 0
    broad: list[Broad] = field(default_factory=list)
    false_matches: FalseMatchEstimate | None = None

    @property
    def flagged(self) -> bool:
        return bool(self.malformed_count or self.degenerate_count or self.exact_groups_count
                    or self.near_groups_count or self.broad_count)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        from dataclasses import asdict

        out = asdict(self)
        out["malformed"] = [{"line": n, "reason": r} for n, r in self.malformed]
        out["flagged"] = self.flagged
        return out


# --------------------------------------------------------------------------- the audit


def _ones(packed: np.ndarray) -> np.ndarray:
    return np.bitwise_count(packed).sum(axis=1, dtype=np.int32)


def _unique(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distinct hashes in sorted order, entries sorted by hash, entries per distinct hash)."""
    from ..matching import to_words

    hi, lo = to_words(packed)
    order = np.argsort(hi)  # one 64-bit key: several times faster than lexsort on two
    hs = hi[order]
    tied = np.flatnonzero(hs[1:] == hs[:-1])
    if tied.size:  # equal first 64 bits (duplicates, mostly): order those runs by the last 32 too
        idx = np.unique(np.concatenate([tied, tied + 1]))
        sub = order[idx]
        order[idx] = sub[np.lexsort((lo[sub], hi[sub]))]
    hs, ls = hi[order], lo[order]
    new = np.ones(len(order), bool)
    new[1:] = (hs[1:] != hs[:-1]) | (ls[1:] != ls[:-1])
    counts = np.diff(np.append(np.flatnonzero(new), len(order)))
    return packed[order[new]], order, counts


def _poisson_sf_limit(lam: float, tail: float) -> int:
    """The smallest k with P(X >= k) < tail for X ~ Poisson(lam)."""
    if lam <= 0:
        return 1
    # Sum the pmf upwards in logs until the remaining tail is below ``tail``.
    k, log_pmf, cdf = 0, -lam, 0.0
    while True:
        cdf += math.exp(log_pmf)
        k += 1
        if 1.0 - cdf < tail or k > lam + 60 * math.sqrt(lam) + 100:
            return k
        log_pmf += math.log(lam) - math.log(k)


def _poisson_upper95(k: int) -> float:
    """The 95% upper confidence bound on a Poisson mean after observing k events."""
    if k == 0:
        return -math.log(0.05)  # 3.0, the rule of three
    lo, hi = float(k), float(k) + 10 * math.sqrt(k) + 10
    for _ in range(100):  # bisection on P(X <= k | mu) = 0.05
        mid = (lo + hi) / 2
        term, cdf = math.exp(-mid), 0.0
        for i in range(k + 1):
            cdf += term
            term *= mid / (i + 1)
        lo, hi = (mid, hi) if cdf > 0.05 else (lo, mid)
    return hi


def _entry(hl: HashList, i: int) -> Entry:
    return Entry(int(hl.lines[i]), bytes(hl.packed[i]).hex(), hl.label(i))


def audit(hash_list: HashList, reference: np.ndarray | None = None, *, max_distance: int = DEFAULT_MAX_DISTANCE,
          limit: int = DEFAULT_LIMIT, imbalance: int = IMBALANCE) -> AuditReport:
    """Audit ``hash_list`` (see the module docstring); ``reference``: packed hashes or None."""
    r = check_radius(max_distance)
    if not isinstance(limit, int) or limit < 0:
        raise AuditError(f"limit must be a non-negative integer, got {limit!r}")
    hl = hash_list
    n = len(hl)
    uniq, order, counts = _unique(hl.packed)
    # Entries of distinct hash u: order[starts[u]:starts[u + 1]].
    starts = np.concatenate([[0], np.cumsum(counts)])

    def members(us) -> np.ndarray:
        return np.sort(np.concatenate([order[starts[u]:starts[u + 1]] for u in us]))

    rep = AuditReport(hl.name, n, len(uniq), r, limit)
    rep.malformed_count = len(hl.malformed)
    rep.malformed = list(hl.malformed[:limit])

    ones = _ones(hl.packed)
    degenerate = np.flatnonzero(np.minimum(ones, HASH_BITS - ones) <= imbalance)
    rep.degenerate_count = int(len(degenerate))
    rep.degenerate = [Degenerate(_entry(hl, int(i)), int(ones[i])) for i in degenerate[:limit]]

    dup = np.flatnonzero(counts > 1)
    rep.exact_groups_count = int(len(dup))
    rep.exact_duplicate_entries = int(counts[dup].sum())
    for u in dup[np.argsort(-counts[dup], kind="stable")][:limit]:
        rep.exact_duplicates.append(Group([_entry(hl, int(i)) for i in members([u])], 0))

    # Near duplicates among distinct, non-degenerate hashes; the same index serves the reference.
    u_ones = _ones(uniq)
    keep = np.flatnonzero(np.minimum(u_ones, HASH_BITS - u_ones) > imbalance)
    index = HashIndex(uniq[keep])
    if r > 0 and len(keep) > 1:
        pairs = index.self_join(r)
        if len(pairs):
            groups = [keep[g] for g in component_groups(connected_components(pairs, len(keep)))]
            sizes = np.array([int(counts[g].sum()) for g in groups])
            rep.near_groups_count = len(groups)
            rep.near_duplicate_entries = int(sizes.sum())
            dmax = np.zeros(len(uniq), np.int64)
            np.maximum.at(dmax, keep[pairs.i], pairs.distance.astype(np.int64))
            np.maximum.at(dmax, keep[pairs.j], pairs.distance.astype(np.int64))
            for k in np.argsort(-sizes, kind="stable")[:limit]:
                g = groups[k]
                rep.near_duplicates.append(Group([_entry(hl, int(i)) for i in members(g)], int(dmax[g].max())))

    if reference is not None:
        broad = _reference_checks(rep, index, keep, counts, np.asarray(reference, dtype=np.uint8), r, len(uniq))
        rep.broad = [Broad(_entry(hl, int(order[starts[u]])), m, m / max(rep.reference_size or 1, 1))
                     for u, m in broad[:limit]]
    return rep


def _reference_checks(rep: AuditReport, index: HashIndex, keep: np.ndarray, counts: np.ndarray,
                      reference: np.ndarray, r: int, n_distinct: int) -> list[tuple[int, int]]:
    """Fill the reference part of ``rep``; return (distinct list hash, reference matches) of the
    broad entries, most matches first. ``index`` holds the list's non-degenerate distinct
    hashes (``keep``); degenerate ones are flagged already and not counted here."""
    from ..matching.packing import check_packed

    reference = check_packed(reference, "reference hashes")
    ref_uniq = _unique(reference)[0] if len(reference) else reference
    R = len(reference)
    rep.reference_size = R

    # Chance: pairs of distinct reference hashes within r.
    m = len(ref_uniq)
    total = m * (m - 1) // 2
    within = len(HashIndex(ref_uniq).self_join(r)) if m > 1 else 0
    lam = 0.0
    if total:
        p = within / total
        p_up = min(1.0, _poisson_upper95(within) / total)
        rep.false_matches = FalseMatchEstimate(
            m, total, within, p, p_up,
            1e6 * -math.expm1(n_distinct * math.log1p(-p)) if p < 1 else 1e6,
            1e6 * -math.expm1(n_distinct * math.log1p(-p_up)) if p_up < 1 else 1e6,
        )
        lam = R * p
    rep.broad_expected = lam
    rep.broad_limit = max(BROAD_MIN, _poisson_sf_limit(lam, BROAD_TAIL))

    # Reference matches of each kept list hash; the smaller side queries the larger.
    per_keep = np.zeros(len(keep), np.int64)
    matched_ref = np.zeros(R, bool)
    if len(keep) and R:
        if len(keep) <= R:
            search, queries, q_is_list = HashIndex(reference), index.packed(), True
        else:
            search, queries, q_is_list = index, reference, False
        for start in range(0, len(queries), _CHUNK):
            found = search.query_many(queries[start:start + _CHUNK], r)
            q = found.query + start
            if q_is_list:
                per_keep += np.bincount(q, minlength=len(keep))
                matched_ref[found.index] = True
            else:
                per_keep += np.bincount(found.index, minlength=len(keep))
                matched_ref[q] = True
    rep.reference_matched = int(matched_ref.sum())
    hit = np.flatnonzero(per_keep >= rep.broad_limit)
    rep.broad_count = int(counts[keep[hit]].sum())
    hit = hit[np.argsort(-per_keep[hit], kind="stable")]
    return [(int(keep[k]), int(per_keep[k])) for k in hit]


# --------------------------------------------------------------------------- text


def format_text(rep: AuditReport) -> list[str]:
    """The report as lines of text (what ``neuralhash audit`` prints)."""
    out = [f"{rep.name}: {rep.entries:,} entries, {rep.distinct:,} distinct hashes; distance {rep.max_distance}"]

    def label(e: Entry) -> str:
        return f"line {e.line}  {e.hash}" + (f"  {e.label}" if e.label else "")

    def more(shown: int, total: int) -> list[str]:
        return [f"  ... and {total - shown:,} more"] if total > shown else []

    out.append(f"malformed entries: {rep.malformed_count:,}")
    out += [f"  line {n}: {reason}" for n, reason in rep.malformed] + more(len(rep.malformed), rep.malformed_count)
    out.append(f"degenerate hashes (all-zero, all-one, or at most {IMBALANCE} bits of one value): "
               f"{rep.degenerate_count:,}")
    out += [f"  {label(d.entry)}  ({d.ones} of 96 bits set)" for d in rep.degenerate]
    out += more(len(rep.degenerate), rep.degenerate_count)
    out.append(f"exact duplicates: {rep.exact_groups_count:,} hash(es) on more than one line "
               f"({rep.exact_duplicate_entries:,} entries)")
    for g in rep.exact_duplicates:
        out.append(f"  {g.entries[0].hash} on {len(g.entries)} lines: " + ", ".join(str(e.line) for e in g.entries[:20])
                   + (" ..." if len(g.entries) > 20 else ""))
    out += more(len(rep.exact_duplicates), rep.exact_groups_count)
    out.append(f"near duplicates within {rep.max_distance} bits: {rep.near_groups_count:,} group(s) "
               f"({rep.near_duplicate_entries:,} entries)")
    for k, g in enumerate(rep.near_duplicates, 1):
        out.append(f"  group {k}: {len(g.entries)} entries, pairs up to {g.distance} bits apart")
        out += [f"    {label(e)}" for e in g.entries[:20]] + (["    ..."] if len(g.entries) > 20 else [])
    out += more(len(rep.near_duplicates), rep.near_groups_count)
    if rep.reference_size is not None:
        fm = rep.false_matches
        out.append(f"reference: {rep.reference_size:,} hashes; {rep.reference_matched:,} within "
                   f"{rep.max_distance} bits of some entry")
        out.append(f"entries within {rep.max_distance} bits of at least {rep.broad_limit} reference hashes "
                   f"(an ordinary entry: {rep.broad_expected:.3g} expected): {rep.broad_count:,}")
        out += [f"  {label(b.entry)}  matches {b.reference_matches:,} reference hashes ({100 * b.share:.3g}%)"
                for b in rep.broad]
        out += more(len(rep.broad), rep.broad_count)
        if fm is not None:
            out.append(f"expected false matches per million images at {rep.max_distance} bits: "
                       f"{fm.per_million:.3g} (95% upper bound {fm.per_million_upper95:.3g}); from "
                       f"{fm.pairs_within:,} of {fm.pairs:,} pairs of distinct reference hashes within the distance")
        else:
            out.append("expected false matches: the reference needs at least two distinct hashes")
    out.append("FLAGGED" if rep.flagged else "nothing flagged")
    return out
