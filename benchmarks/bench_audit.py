"""neuralhash audit on a large hash list: goal, 10 million entries in under a minute.

Usage: python benchmarks/bench_audit.py [--n N] [--reference R] [--max-distance D] [--keep DIR]

Stage times are wall-clock seconds in this process; the end-to-end row also gives
the command's CPU seconds (user + system), which shared machines disturb less.

Writes a list of N random hashes as ``HEX  PATH`` lines (with 0.1% planted problems:
exact duplicates, near-duplicates at 1-4 bits, all-zero hashes, malformed lines) and a
reference list of R random hashes, then times, in one process, each stage of what
``neuralhash audit LIST --reference REF`` does, and the command itself end to end
(a subprocess, so its peak memory is its own). Prints one table. The planted counts
are asserted, so a fast wrong answer fails.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from neuralhash.lists.audit import audit, read_hash_list, read_reference


def write_list(path: Path, n: int, seed: int) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    packed = rng.integers(0, 256, (n, 12), dtype=np.uint8)
    k = max(n // 4000, 1)  # each kind of plant: 0.025% of the entries
    pos = rng.choice(n, 4 * k, replace=False)
    dup, near, zero, _ = np.split(pos, 4)
    src = rng.choice(np.setdiff1d(np.arange(n), pos), 2 * k, replace=False)
    packed[dup] = packed[src[:k]]
    near_src = src[k:]
    packed[near] = packed[near_src]
    for row, bits in zip(near, rng.integers(1, 5, k)):
        for b in rng.choice(96, bits, replace=False):
            packed[row, b // 8] ^= 1 << (7 - b % 8)
    packed[zero] = 0
    hexes = packed.tobytes().hex()
    bad = set(rng.choice(n, k, replace=False).tolist())
    with open(path, "w", encoding="utf-8", buffering=1 << 22) as fh:
        step = 1 << 18
        for start in range(0, n, step):
            stop = min(n, start + step)
            fh.write("".join(
                (f"{hexes[24 * i:24 * i + 24]}  images/{i:09d}.jpg\n" if i not in bad else f"zz{i}  bad\n")
                for i in range(start, stop)))
    return {"dup": k, "near": k, "zero": k, "bad": len(bad)}


def write_reference(path: Path, r: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    hexes = rng.integers(0, 256, (r, 12), dtype=np.uint8).tobytes().hex()
    with open(path, "w", encoding="ascii", buffering=1 << 22) as fh:
        for start in range(0, r, 1 << 18):
            fh.write("".join(hexes[24 * i:24 * i + 24] + "\n" for i in range(start, min(r, start + (1 << 18)))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--reference", type=int, default=1_000_000)
    ap.add_argument("--max-distance", type=int, default=4)
    ap.add_argument("--keep", help="write the files here and keep them")
    args = ap.parse_args()
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-audit-"))
    folder.mkdir(parents=True, exist_ok=True)
    lst, ref = folder / "list.txt", folder / "reference.txt"
    t = time.perf_counter()
    plants = write_list(lst, args.n, 0)
    write_reference(ref, args.reference, 1)
    made = time.perf_counter() - t
    rows = []

    t = time.perf_counter()
    hl = read_hash_list(lst)
    rows.append(("read + parse the list", time.perf_counter() - t))
    t = time.perf_counter()
    reference = read_reference(ref)
    rows.append(("read + parse the reference", time.perf_counter() - t))
    t = time.perf_counter()
    rep = audit(hl, max_distance=args.max_distance)
    rows.append(("audit, list only (degenerate, duplicates, near-duplicates, labels)", time.perf_counter() - t))
    t = time.perf_counter()
    rep_ref = audit(hl, reference, max_distance=args.max_distance)
    rows.append(("audit with the reference (+ broad entries, false-match estimate)", time.perf_counter() - t))

    assert rep.malformed_count == plants["bad"], (rep.malformed_count, plants)
    assert rep.degenerate_count >= plants["zero"] - plants["bad"]
    assert rep.near_groups_count >= plants["near"] * 0.95, (rep.near_groups_count, plants)
    assert rep_ref.broad_count == 0 and rep_ref.reference_size == args.reference

    cmd = [sys.executable, "-m", "neuralhash.cli", "audit", str(lst), "--reference", str(ref),
           "--max-distance", str(args.max_distance), "--json"]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak = usage.ru_maxrss / 1024  # KiB on Linux
    cpu = usage.ru_utime + usage.ru_stime  # on a shared machine, CPU time is the steadier figure
    assert proc.returncode == 1 and '"flagged": true' in proc.stdout, proc.stderr[-500:]

    size = lst.stat().st_size / 1e6
    print(f"neuralhash audit, {args.n:,} entries ({size:,.0f} MB), reference {args.reference:,}, "
          f"distance {args.max_distance}; {os.cpu_count()} CPUs (files written in {made:.0f} s)")
    print()
    print("| stage | seconds |")
    print("|---|---|")
    for label, s in rows:
        print(f"| {label} | {s:.1f} |")
    print(f"| **`neuralhash audit LIST --reference REF --json`, end to end** | **{wall:.1f}** wall, "
          f"{cpu:.1f} CPU (goal < 60) |")
    print(f"| its peak memory | {peak:,.0f} MiB |")
    print()
    print(f"found: {rep_ref.malformed_count:,} malformed, {rep_ref.degenerate_count:,} degenerate, "
          f"{rep_ref.exact_groups_count:,} exact-duplicate hashes, {rep_ref.near_groups_count:,} near-duplicate "
          f"groups; {rep_ref.false_matches.per_million:.3g} false matches per million images expected")
    if not args.keep:
        lst.unlink()
        ref.unlink()
        folder.rmdir()


if __name__ == "__main__":
    main()
