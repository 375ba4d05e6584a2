"""Hamming search benchmark: neuralhash.matching against faiss (or plain NumPy).

Usage: python benchmarks/bench_match.py [--quick] [--n N] [--join-n N] [--queries Q]

Prints one table. Everything runs on one core (thread variables are set before
NumPy loads; faiss gets omp_set_num_threads(1)), and every comparison is measured
side by side in one run, interleaved query by query, so machine noise hits both
alike. Data: N random hashes (default 10 million) of which 1% are planted
near-duplicates, copies of other hashes with 0 to 8 bits flipped; the self-join
uses its own such set of --join-n hashes (default 1 million).

Rows:
- build: block tables (time, bytes a hash, peak memory above the hashes);
- one query by brute force, radius 4 and 24 (the scan paths with and without the
  hi-word filter): median over --queries queries; goal under 50 ms;
- one query through the index, radius 4: goal at least 10x faster than our brute
  force (the results of every query are asserted equal to brute force and to the
  alternative);
- a batch of --queries queries through the index, time per query;
- self-join at radius 4: goal under 60 s. The alternatives' self-join is a range
  search of every hash; when that would take long it is timed on a sample of rows
  and extrapolated (marked "est."), and the sample's pairs are asserted equal.

The alternative is what a user would reach for: faiss IndexBinaryFlat (96 bits =
12 bytes) for brute force, and faiss IndexBinaryMultiHash (exact settings: the same
pigeonhole bound) for indexed search, if faiss is installed; else a NumPy loop
(popcount of the XOR of the packed bytes, summed per row).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from neuralhash.matching import HashIndex  # noqa: E402

try:
    import faiss  # noqa: E402

    faiss.omp_set_num_threads(1)
except ImportError:  # pragma: no cover - optional
    faiss = None

RADIUS = 4
WIDE_RADIUS = 24
MiB = 1 << 20


# ----------------------------------------------------------------------------- helpers


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def make_data(n: int, seed: int, fraction: float = 0.01, max_flip: int = 8) -> np.ndarray:
    """n hashes, ``fraction`` of them copies of others with 0..max_flip bits flipped."""
    rng = np.random.default_rng(seed)
    n_copies = int(n * fraction)
    base = rng.integers(0, 256, (n - n_copies, 12), dtype=np.uint8)
    src = base[rng.integers(0, base.shape[0], n_copies)]
    k = rng.integers(0, max_flip + 1, n_copies)
    ranks = np.argsort(rng.random((n_copies, 96), dtype=np.float32), axis=1)
    flip = np.packbits(ranks < k[:, None], axis=1)  # k distinct random bits a row
    data = np.vstack([base, src ^ flip])
    return data[rng.permutation(n)]


def pick_queries(data: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Queries that have near neighbours: half stored hashes, half with 1-2 bits flipped."""
    rng = np.random.default_rng(seed)
    q = data[rng.integers(0, data.shape[0], count)].copy()
    for row in q[: count // 2]:
        for bit in rng.choice(96, int(rng.integers(1, 3)), replace=False):
            row[bit // 8] ^= 0x80 >> (bit % 8)
    return q


def as_sorted(idx, dist):
    """(index, distance) arrays in our order: distance, then index."""
    idx = np.asarray(idx, dtype=np.int64)
    dist = np.asarray(dist).astype(np.int64)
    order = np.lexsort((idx, dist))
    return idx[order], dist[order]


def same(ours, alt_idx, alt_dist) -> bool:
    a_i, a_d = as_sorted(alt_idx, alt_dist)
    return np.array_equal(ours.indices, a_i) and np.array_equal(ours.distances.astype(np.int64), a_d)


# ----------------------------------------------------------------------------- alternatives


class NumpyFlat:
    name = "numpy loop"

    def __init__(self, packed):
        self.packed = packed

    def query(self, q, r):
        d = np.bitwise_count(self.packed ^ q).sum(axis=1, dtype=np.uint16)
        idx = np.flatnonzero(d <= r)
        return idx, d[idx]

    def batch(self, qs, r):
        return [self.query(q, r) for q in qs]


class FaissIndex:
    def __init__(self, index, name):
        self.index, self.name = index, name

    def query(self, q, r):
        lims, dist, idx = self.index.range_search(q.reshape(1, 12), r + 1)  # faiss: d < radius
        return idx, dist

    def batch(self, qs, r):
        lims, dist, idx = self.index.range_search(qs, r + 1)
        return [(idx[lims[k]:lims[k + 1]], dist[lims[k]:lims[k + 1]]) for k in range(qs.shape[0])]


def faiss_flat(packed):
    index = faiss.IndexBinaryFlat(96)
    index.add(packed)
    return FaissIndex(index, "faiss IndexBinaryFlat")


def faiss_multihash(packed, r, nhash):
    """IndexBinaryMultiHash set up to be exact at radius r: nhash blocks of
    b = 96 // nhash bits (the same number of blocks as ours) and nflip = r // nhash
    flipped bits per block lookup (pigeonhole over the nhash*b bits it covers)."""
    b = 96 // nhash
    index = faiss.IndexBinaryMultiHash(96, nhash, b)
    index.nflip = r // nhash
    index.add(packed)
    return FaissIndex(index, f"faiss IndexBinaryMultiHash({nhash}x{b}, nflip={index.nflip})")


# ----------------------------------------------------------------------------- measurements


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def measure_build(data):
    base = rss_bytes()
    tracked = reset_peak()
    index = HashIndex(data)
    seconds, _ = timed(index.build)
    peak = (peak_bytes() - base) if tracked else None
    return index, seconds, peak


def measure_alt_build(make):
    base = rss_bytes()
    tracked = reset_peak()
    seconds, alt = timed(make)
    return alt, seconds, (peak_bytes() - base) if tracked else None, rss_bytes() - base


def interleave(queries, ours, alt):
    """Median seconds of ours(q) and alt(q), alternating which goes first; also
    checks that both give the same answer for every query."""
    t_ours, t_alt = [], []
    for k, q in enumerate(queries):
        pair = [("o", ours), ("a", alt)] if k % 2 == 0 else [("a", alt), ("o", ours)]
        res = {}
        for tag, fn in pair:
            seconds, res[tag] = timed(lambda: fn(q))
            (t_ours if tag == "o" else t_alt).append(seconds)
        if res["a"] is not None and not same(res["o"], *res["a"]):
            raise SystemExit(f"MISMATCH between neuralhash and the alternative on query {k}")
    return statistics.median(t_ours), statistics.median(t_alt) if res["a"] is not None else None


def join_pairs_from_rows(alt, data, rows, r):
    """Pairs (i < j) within r of the sampled rows, found by the alternative."""
    res = alt.batch(data[rows], r)
    out = set()
    for row, (idx, dist) in zip(rows.tolist(), res):
        for j, d in zip(np.asarray(idx).tolist(), np.asarray(dist).astype(int).tolist()):
            if j != row:
                out.add((min(row, j), max(row, j), d))
    return out


# ----------------------------------------------------------------------------- table


def fmt_time(s):
    if s is None:
        return "-"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.0f} us"


class Table:
    def __init__(self):
        self.rows = []  # (operation, ours, alternative, alt/ours, goal, result)

    def add(self, op, ours, alt=None, ratio=None, goal="", ok=None):
        self.rows.append((op, ours, alt or "-", ratio or "-", goal,
                          "" if ok is None else ("PASS" if ok else "MISS")))

    def print(self):
        head = ("operation", "neuralhash.matching", "alternative", "alt/ours", "goal", "")
        widths = [max(len(str(r[c])) for r in self.rows + [head]) for c in range(6)]
        line = "  ".join("{:<%d}" % w for w in widths)
        print(line.format(*head).rstrip())
        print("  ".join("-" * w for w in widths).rstrip())
        for r in self.rows:
            print(line.format(*r).rstrip())


def bench_queries(table: Table, n: int, nq: int, n_batch: int, use_faiss: bool) -> None:
    data = make_data(n, seed=1)
    queries = pick_queries(data, nq, seed=2)

    # -- build
    index, build_s, build_peak = measure_build(data)
    tables = index.nbytes - 12 * n
    if use_faiss:
        flat = faiss_flat(data)
        mh, mh_s, _, mh_kept = measure_alt_build(lambda: faiss_multihash(data, RADIUS, len(index.blocks)))
    else:
        flat, mh = NumpyFlat(data), None
    blocks = f"{len(index.blocks)} blocks of {max(w for _, w in index.blocks)} bits"
    table.add(f"build index, {n:,} hashes ({blocks})", fmt_time(build_s),
              f"{fmt_time(mh_s)} ({mh.name.split('(')[0]})" if mh else None,
              f"{mh_s / build_s:.1f}x" if mh else None)
    peak_txt = f", build peak +{build_peak / MiB:.0f} MiB" if build_peak is not None else ""
    table.add("index memory", f"{index.nbytes / MiB:.0f} MiB ({index.nbytes / n:.1f} B/hash: 12 hashes + "
              f"{tables / n:.1f} tables){peak_txt}",
              f"{mh_kept / MiB:.0f} MiB ({mh_kept / n:.1f} B/hash, RSS growth)" if mh else None)

    # -- brute force, one query
    brute = {}
    for r in (RADIUS, WIDE_RADIUS):
        ours_s, alt_s = interleave(queries, lambda q, r=r: index.query(q, r, method="brute"),
                                   lambda q, r=r: flat.query(q, r))
        brute[r] = ours_s
        table.add(f"1 query, brute force, r={r} (median of {nq})", fmt_time(ours_s),
                  f"{fmt_time(alt_s)} ({flat.name})", f"{alt_s / ours_s:.1f}x", "< 50 ms", ours_s < 0.050)

    # -- index, one query (answers equal to brute force and to the alternative)
    alt_idx = mh if mh is not None else flat
    ours_s, alt_s = interleave(queries, lambda q: index.query(q, RADIUS, method="index"),
                               lambda q: alt_idx.query(q, RADIUS))
    for q in queries:
        a, b = index.query(q, RADIUS, method="index"), index.query(q, RADIUS, method="brute")
        if not (np.array_equal(a.indices, b.indices) and np.array_equal(a.distances, b.distances)):
            raise SystemExit("MISMATCH between index and brute force")
    speedup = brute[RADIUS] / ours_s
    table.add(f"1 query, index, r={RADIUS} (median of {nq})", f"{fmt_time(ours_s)} ({speedup:.0f}x brute)",
              f"{fmt_time(alt_s)} ({alt_idx.name})", f"{alt_s / ours_s:.1f}x", ">= 10x brute", speedup >= 10)
    table.add(f"  auto method for 1 query at r={RADIUS} / r={WIDE_RADIUS}",
              f"{index.choose_method(RADIUS, 1)} / {index.choose_method(WIDE_RADIUS, 1)}")

    # -- index, batch
    batch_q = pick_queries(data, n_batch, seed=3)
    ours_b, res_b = timed(lambda: index.query_many(batch_q, RADIUS, method="index"))
    alt_b, res_a = timed(lambda: alt_idx.batch(batch_q, RADIUS))
    for k, (ai, ad) in enumerate(res_a):
        if not same(res_b.for_query(k), ai, ad):
            raise SystemExit(f"MISMATCH in batch query {k}")
    table.add(f"{n_batch} queries, index, r={RADIUS} (per query)",
              f"{fmt_time(ours_b / n_batch)} ({len(res_b)} matches)",
              f"{fmt_time(alt_b / n_batch)} ({alt_idx.name.split('(')[0]})", f"{alt_b / ours_b:.1f}x")


def bench_join(table: Table, n: int, use_faiss: bool, affordable: float) -> None:
    data = make_data(n, seed=4)
    index = HashIndex(data)
    join_s, pairs = timed(lambda: index.self_join(RADIUS))
    # exactness on a sample of rows (random ones and ones in pairs), against brute force
    rng = np.random.default_rng(5)
    sample = np.unique(np.concatenate([rng.integers(0, n, 300), pairs.i[:: max(1, len(pairs) // 300)]]))
    in_sample = np.isin(pairs.i, sample) | np.isin(pairs.j, sample)
    ours_sample = set(zip(pairs.i[in_sample].tolist(), pairs.j[in_sample].tolist(),
                          pairs.distance[in_sample].astype(int).tolist()))
    brute_sample = set()
    for s in sample.tolist():
        for j, d in index.query(data[s], RADIUS, method="brute"):
            if j != s:
                brute_sample.add((min(s, j), max(s, j), d))
    if ours_sample != brute_sample:
        raise SystemExit("MISMATCH between self-join and brute force on the sample")
    in_pairs = len(np.unique(np.concatenate([pairs.i, pairs.j])))
    table.add(f"self-join, {n:,} hashes, r={RADIUS}", f"{fmt_time(join_s)} ({len(pairs):,} pairs, "
              f"{in_pairs:,} hashes in pairs)", None, None, "< 60 s", join_s < 60)

    alts = [faiss_multihash(data, RADIUS, len(index.blocks)), faiss_flat(data)] if use_faiss else [NumpyFlat(data)]
    for alt in alts:
        # time a sample of rows; all rows if that is affordable, else extrapolate
        probe = np.arange(0, n, max(1, n // 2000))
        t_probe, _ = timed(lambda: alt.batch(data[probe], RADIUS))
        est = t_probe * n / probe.size
        if est < affordable:
            t_all, res = timed(lambda: alt.batch(data, RADIUS))
            alt_pairs = set()
            for row_i, (idx, dist) in enumerate(res):
                for j, d in zip(np.asarray(idx).tolist(), np.asarray(dist).astype(int).tolist()):
                    if j > row_i:
                        alt_pairs.add((row_i, j, d))
            ours_all = set(zip(pairs.i.tolist(), pairs.j.tolist(), pairs.distance.astype(int).tolist()))
            if alt_pairs != ours_all:
                raise SystemExit(f"MISMATCH between self-join and {alt.name}")
            alt_txt, alt_t = fmt_time(t_all), t_all
        else:
            if join_pairs_from_rows(alt, data, sample, RADIUS) != brute_sample:
                raise SystemExit(f"MISMATCH between the sample pairs and {alt.name}")
            alt_txt, alt_t = f"{fmt_time(est)} est. ({probe.size} rows timed)", est
        table.add("  same, alternative: range search of every hash", "",
                  f"{alt_txt} ({alt.name.split('(')[0]})", f"{alt_t / join_s:.0f}x")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small smoke run (200k hashes, 100k self-join)")
    ap.add_argument("--n", type=int, default=None, help="hashes searched by queries (default 10,000,000)")
    ap.add_argument("--join-n", type=int, default=None, help="hashes in the self-join (default 1,000,000)")
    ap.add_argument("--queries", type=int, default=None, help="queries per measurement (default 41)")
    ap.add_argument("--no-faiss", action="store_true", help="compare with a NumPy loop even if faiss is installed")
    args = ap.parse_args(argv)
    n = args.n or (200_000 if args.quick else 10_000_000)
    join_n = args.join_n or (100_000 if args.quick else 1_000_000)
    nq = args.queries or (11 if args.quick else 41)
    use_faiss = faiss is not None and not args.no_faiss

    print(f"generating {n:,} hashes (+ {join_n:,} for the self-join), 1% planted near-duplicates ...",
          file=sys.stderr)
    table = Table()
    bench_queries(table, n, nq, 100 if args.quick else 1000, use_faiss)
    bench_join(table, join_n, use_faiss, affordable=5 if args.quick else 20)
    print(f"one core; numpy {np.__version__}; faiss {faiss.__version__ if use_faiss else 'not used'}; "
          f"{n:,} hashes, 1% planted near-duplicates at distances 0-8")
    table.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
