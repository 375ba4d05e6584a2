"""The hash store at scale: `index import`, `match` and `dupes` on N hashes (default 10 million), end to end.

    python benchmarks/bench_store.py [--n 10000000] [--dir DIR]

Writes a list of N random hashes (1% of them near-copies of others, 1-4 bits
away, so that `dupes` has groups to find) with 32-character names to a
temporary folder, then runs each command as its own process (start-up
included) and reports wall time and peak resident memory (the child's
ru_maxrss) beside the targets of issue 12. One table; nothing is kept.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TARGETS = {  # step -> (seconds, MB)
    "index import": (30.0, 600.0),
    "match 1 hex hash (r=8)": (1.0, 400.0),
    "match again (r=8)": (1.0, 400.0),
    "dupes --max-distance 4": (20.0, None),
}


def write_list(path: Path, n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    some = []
    with open(path, "w") as fh:
        chunk = 1 << 20
        for start in range(0, n, chunk):
            k = min(chunk, n - start)
            packed = rng.integers(0, 256, (k, 12), dtype=np.uint8)
            copies = rng.random(k) < 0.01
            src = rng.integers(0, k, int(copies.sum()))
            flips = np.unpackbits(packed[src], axis=1)
            for row in flips:
                row[rng.choice(96, int(rng.integers(1, 5)), replace=False)] ^= 1
            packed[np.flatnonzero(copies)] = np.packbits(flips, axis=1)
            text = packed.tobytes().hex()
            names = rng.integers(0, 2 ** 63, k)
            fh.write("".join(f"{text[24 * j:24 * j + 24]}  photos/{start + j:09d}-{names[j]:016x}.jpg\n"
                             for j in range(k)))
            some.append(text[:24])
    return some


def run(cmd: list[str]) -> tuple[float, float, float, int, str]:
    """(seconds, CPU seconds, peak MB, exit code, last stderr line) of one command in its own process."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    err = proc.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    last = (err.strip().splitlines() or [""])[-1]
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, proc.returncode, last


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--dir", help="work folder (default: a temporary one, removed afterwards)")
    ap.add_argument("--write-list", metavar="PATH", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.write_list:
        print(" ".join(write_list(Path(args.write_list), args.n)))
        return 0
    work = Path(args.dir or tempfile.mkdtemp(prefix="bench_store_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        listing = work / "list.txt"
        t0 = time.perf_counter()
        # In another process: this one stays small, and children's peak memory is their own.
        some = subprocess.run([sys.executable, __file__, "--n", str(args.n), "--write-list", str(listing)],
                              check=True, stdout=subprocess.PIPE, text=True).stdout.split()
        print(f"# {args.n:,} hashes written to {listing} ({listing.stat().st_size / 1e6:.0f} MB) "
              f"in {time.perf_counter() - t0:.0f} s; {os.cpu_count()} CPUs, load average "
              f"{os.getloadavg()[0]:.1f}", flush=True)
        db = work / "db.sqlite"
        cli = [sys.executable, "-m", "neuralhash.cli"]
        steps = [
            ("index import", cli + ["index", "import", str(db), str(listing), "--list", "big"]),
            ("match 1 hex hash (r=8)", cli + ["match", str(db), some[0], "--max-distance", "8"]),
            ("match again (r=8)", cli + ["match", str(db), some[-1], "--max-distance", "8"]),
            ("dupes --max-distance 4", cli + ["dupes", str(db), "--max-distance", "4"]),
        ]
        print(f"| {'step':<24} | {'seconds':>8} | {'CPU s':>7} | {'target s':>8} | {'peak MB':>8} | "
              f"{'target MB':>9} | exit | load | note")
        print(f"|{'-' * 26}|{'-' * 10}|{'-' * 9}|{'-' * 10}|{'-' * 10}|{'-' * 11}|------|------|------")
        for name, cmd in steps:
            seconds, cpu, mb, code, note = run(cmd)
            ts, tm = TARGETS[name]
            ok = seconds <= ts and (tm is None or mb <= tm) and code in (0, 1)
            print(f"| {name:<24} | {seconds:8.2f} | {cpu:7.2f} | {ts:8.0f} | {mb:8.0f} | {tm or '-':>9} | {code:>4} | "
                  f"{os.getloadavg()[0]:4.1f} | {'ok' if ok else 'MISSED'}: {note[:80]}", flush=True)
        sizes = {p.name: p.stat().st_size / 1e6 for p in work.iterdir() if p.name.startswith("db")}
        print("# files (MB): " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(sizes.items())))
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
