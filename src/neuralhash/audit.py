"""Auditing a NeuralHash list before trusting it: ``neuralhash audit LIST [--reference DB_OR_LIST]``.

    from neuralhash.audit import audit, read_hash_list, read_reference

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
  two in the reference);
- the **expected false matches per million images** at ``max_distance``:
  ``1e6 * (1 - (1 - p) ** N)``, i.e. the chance that an unrelated image lies within
  ``max_distance`` of some entry, if entries are like reference images; with its
  95% upper bound (Poisson on the pair count: with no pair within the distance,
  ``p`` is below 3 / pairs). Informational: it is never flagged.

``flagged`` is true when any entry is malformed, degenerate, duplicated or broad.
Reports list at most ``limit`` items of each kind (the counts are always complete).

The list is read with the project's hash-list parser (``HEX  PATH`` lines, CSV with
a ``hash`` column, JSONL) through :func:`_parse`; entries are kept as packed arrays
(12 bytes and a line number each) and the labels of reported entries are read in a
second pass, so memory is about 20 bytes an entry beyond the parser's text.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .errors import NeuralHashError
from .matching import HASH_BITS, HASH_BYTES, HashIndex, check_radius, component_groups, connected_components

#: The distance used when none is given (bits of 96): the project's usual near-duplicate radius.
DEFAULT_MAX_DISTANCE = 4
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


def _parse(text: str, name: str) -> Iterator[tuple[int, tuple[str, bytes] | str]]:
    """The project's hash-list parser: (line number, (label, 12 bytes)) or (line number, reason)."""
    from .store import _parse_hash_list

    return _parse_hash_list(text, name)


@dataclass(frozen=True, eq=False)
class HashList:
    """A hash list as packed arrays: ``packed`` uint8 [N, 12] and ``lines`` int64 [N]
    (the line of each entry), plus the rejected lines as (line number, reason)."""

    name: str
    packed: np.ndarray
    lines: np.ndarray
    malformed: list[tuple[int, str]] = field(default_factory=list)
    path: Path | None = None

    def __len__(self) -> int:
        return int(self.packed.shape[0])

    def labels(self, lines) -> dict[int, str]:
        """The label (path or name) of each of ``lines``, read again from the file."""
        wanted = set(int(x) for x in lines)
        if not wanted or self.path is None:
            return {}
        out: dict[int, str] = {}
        for lineno, entry in _parse(_read_text(self.path), self.path.name):
            if lineno in wanted and not isinstance(entry, str):
                out[lineno] = entry[0]
        return out


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise AuditError(f"{path}: cannot read hash list ({getattr(exc, 'strerror', None) or exc})") from None


def read_hash_list(path: str | os.PathLike) -> HashList:
    """Read a hash list file (see :func:`_parse` for the formats)."""
    source = Path(os.fsdecode(path))
    if source.is_dir():
        raise AuditError(f"{source}: is a directory, not a hash list")
    digests = bytearray()
    lines: list[int] = []
    malformed: list[tuple[int, str]] = []
    for lineno, entry in _parse(_read_text(source), source.name):
        if isinstance(entry, str):
            malformed.append((lineno, entry))
        else:
            digests += entry[1]
            lines.append(lineno)
    packed = np.frombuffer(bytes(digests), dtype=np.uint8).reshape(-1, HASH_BYTES)
    return HashList(source.name, packed, np.asarray(lines, dtype=np.int64), malformed, source)


def hash_list_from_hex(hexes, name: str = "<hashes>") -> HashList:
    """A :class:`HashList` from hex strings in memory (line numbers 1..N)."""
    from .matching import pack_hex

    packed = pack_hex(list(hexes))
    return HashList(name, packed, np.arange(1, len(packed) + 1, dtype=np.int64))


def read_reference(spec: str | os.PathLike, *, model_id: str | None = None) -> np.ndarray:
    """The hashes (packed uint8 [R, 12]) of a reference set: a neuralhash SQLite
    database (one model's hashes; ``model_id`` when it holds several) or a hash list."""
    path = Path(os.fsdecode(spec))
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise AuditError(f"{path}: cannot read reference ({exc.strerror or exc})") from None
    if head == SQLITE_MAGIC:
        from .store import HashStore

        with HashStore(path, create=False) as store:
            _, packed = store.packed(store.resolve_model(model_id))
        return packed
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
    """(distinct hashes in sorted order, first entry of each, entry -> distinct position)."""
    from .matching import to_words

    hi, lo = to_words(packed)
    order = np.lexsort((lo, hi))
    hs, ls = hi[order], lo[order]
    new = np.ones(len(order), bool)
    new[1:] = (hs[1:] != hs[:-1]) | (ls[1:] != ls[:-1])
    group = np.cumsum(new) - 1
    inverse = np.empty(len(order), np.int64)
    inverse[order] = group
    first = order[new]
    return packed[first], first, inverse


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


def _entry(hl: HashList, i: int, labels: dict[int, str]) -> Entry:
    line = int(hl.lines[i])
    return Entry(line, bytes(hl.packed[i]).hex(), labels.get(line))


def _groups_of(members: list[np.ndarray], inverse_order: np.ndarray, inverse_starts: np.ndarray) -> list[np.ndarray]:
    """Entry positions for groups of distinct-hash positions."""
    return [np.concatenate([inverse_order[inverse_starts[u]:inverse_starts[u + 1]] for u in m]) for m in members]


def audit(hash_list: HashList, reference: np.ndarray | None = None, *, max_distance: int = DEFAULT_MAX_DISTANCE,
          limit: int = DEFAULT_LIMIT, imbalance: int = IMBALANCE) -> AuditReport:
    """Audit ``hash_list`` (see the module docstring); ``reference``: packed hashes or None."""
    r = check_radius(max_distance)
    if not isinstance(limit, int) or limit < 0:
        raise AuditError(f"limit must be a non-negative integer, got {limit!r}")
    hl = hash_list
    n = len(hl)
    uniq, first, inverse = _unique(hl.packed) if n else (hl.packed, np.zeros(0, np.int64), np.zeros(0, np.int64))
    rep = AuditReport(hl.name, n, len(uniq), r, limit)
    rep.malformed_count = len(hl.malformed)
    rep.malformed = list(hl.malformed[:limit])

    # Entries of each distinct hash, in line order: inverse_order[starts[u]:starts[u+1]].
    inverse_order = np.argsort(inverse, kind="stable")
    counts = np.bincount(inverse, minlength=len(uniq))
    starts = np.concatenate([[0], np.cumsum(counts)])

    ones = _ones(hl.packed)
    degenerate = np.flatnonzero(np.minimum(ones, HASH_BITS - ones) <= imbalance)
    rep.degenerate_count = int(len(degenerate))

    dup_u = np.flatnonzero(counts > 1)
    rep.exact_groups_count = int(len(dup_u))
    rep.exact_duplicate_entries = int(counts[dup_u].sum())
    dup_u = dup_u[np.argsort(-counts[dup_u], kind="stable")][:limit]
    exact = _groups_of([[u] for u in dup_u], inverse_order, starts)

    # Near duplicates among distinct, non-degenerate hashes.
    u_ones = _ones(uniq)
    keep = np.flatnonzero(np.minimum(u_ones, HASH_BITS - u_ones) > imbalance)
    near: list[np.ndarray] = []
    near_d: list[int] = []
    if r > 0 and len(keep) > 1:
        pairs = HashIndex(uniq[keep]).self_join(r)
        if len(pairs):
            labels_cc = connected_components(pairs, len(keep))
            groups = component_groups(labels_cc)
            rep.near_groups_count = len(groups)
            members_u = [keep[g] for g in groups]
            rep.near_duplicate_entries = int(sum(counts[m].sum() for m in members_u))
            members_u.sort(key=lambda m: -int(counts[m].sum()))
            members_u = members_u[:limit]
            dmax = np.zeros(len(keep), np.int64)
            np.maximum.at(dmax, pairs.i, pairs.distance.astype(np.int64))
            np.maximum.at(dmax, pairs.j, pairs.distance.astype(np.int64))
            pos = np.full(len(uniq), -1, np.int64)
            pos[keep] = np.arange(len(keep))
            near = _groups_of(members_u, inverse_order, starts)
            near_d = [int(dmax[pos[m]].max()) for m in members_u]

    broad_rows: list[tuple[int, int]] = []
    if reference is not None:
        broad_rows = _reference_checks(rep, uniq, counts, np.asarray(reference, dtype=np.uint8), r)

    # Labels of everything reported, in one second pass over the file.
    shown_degenerate = degenerate[:limit]
    shown_broad = [(int(inverse_order[starts[u]]), m) for u, m in broad_rows[:limit]]
    wanted = [hl.lines[i] for i in shown_degenerate] + [hl.lines[i] for g in exact + near for i in g] + \
             [hl.lines[i] for i, _ in shown_broad]
    labels = hl.labels(wanted)
    rep.degenerate = [Degenerate(_entry(hl, int(i), labels), int(ones[i])) for i in shown_degenerate]
    rep.exact_duplicates = [Group([_entry(hl, int(i), labels) for i in np.sort(g)], 0) for g in exact]
    rep.near_duplicates = [Group([_entry(hl, int(i), labels) for i in np.sort(g)], d) for g, d in zip(near, near_d)]
    rep.broad = [Broad(_entry(hl, i, labels), m, m / max(rep.reference_size or 1, 1)) for i, m in shown_broad]
    return rep


def _reference_checks(rep: AuditReport, uniq: np.ndarray, counts: np.ndarray, reference: np.ndarray,
                      r: int) -> list[tuple[int, int]]:
    """Fill the reference part of ``rep``; return (distinct list hash, reference matches) of broad
    entries, most matches first."""
    from .matching.packing import check_packed

    reference = check_packed(reference, "reference hashes")
    ref_uniq = _unique(reference)[0] if len(reference) else reference
    R = len(reference)
    rep.reference_size = R

    # Chance: pairs of distinct reference hashes within r.
    m = len(ref_uniq)
    total = m * (m - 1) // 2
    within = len(HashIndex(ref_uniq).self_join(r)) if m > 1 else 0
    if total:
        p = within / total
        p_up = min(1.0, _poisson_upper95(within) / total)
        n_distinct = len(uniq)
        rep.false_matches = FalseMatchEstimate(
            m, total, within, p, p_up,
            1e6 * -math.expm1(n_distinct * math.log1p(-p)) if p < 1 else 1e6,
            1e6 * -math.expm1(n_distinct * math.log1p(-p_up)) if p_up < 1 else 1e6,
        )
        lam = R * p
    else:
        lam = 0.0
    rep.broad_expected = lam
    rep.broad_limit = max(BROAD_MIN, _poisson_sf_limit(lam, BROAD_TAIL))

    # Reference matches of each distinct list hash; the smaller side queries the larger.
    per_uniq = np.zeros(len(uniq), np.int64)
    matched_ref = np.zeros(R, bool)
    if len(uniq) and R:
        if len(uniq) <= R:
            index, queries, q_is_list = HashIndex(reference), uniq, True
        else:
            index, queries, q_is_list = HashIndex(uniq), reference, False
        for start in range(0, len(queries), _CHUNK):
            found = index.query_many(queries[start:start + _CHUNK], r)
            q = found.query + start
            if q_is_list:
                per_uniq += np.bincount(q, minlength=len(uniq))
                matched_ref[found.index] = True
            else:
                per_uniq += np.bincount(found.index, minlength=len(uniq))
                matched_ref[q] = True
    rep.reference_matched = int(matched_ref.sum())
    broad_u = np.flatnonzero(per_uniq >= rep.broad_limit)
    rep.broad_count = int(counts[broad_u].sum())
    broad_u = broad_u[np.argsort(-per_uniq[broad_u], kind="stable")]
    return [(int(u), int(per_uniq[u])) for u in broad_u]


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
