"""Hashing on Dask against the single-process pipeline: images per second, and Dask's cost per task.

Usage: python benchmarks/bench_distributed.py [--quick] [--n N] [--rounds R] [--out DIR]

On the same files (set A of bench_hash_images.py: 0.3-megapixel photos drawn
from scikit-image's bundled samples, JPEG q90 and every fifth PNG, cached
under --out; 200 images, --quick 40) and the built-in synthetic demo model
(Apple's network size, so the inference cost is the real one):

  single       NeuralHash.hash_many(paths) with its defaults (decoding worker
               processes, one per CPU, and ONNX Runtime in this process)
  dask 1       neuralhash.hashing.distributed.hash_paths(...).compute() on a LocalCluster
               of 1 worker process x 1 thread
  dask 2       the same on 2 worker processes x 1 thread
  dask 2 (CLI) iter_batches on the 2-worker cluster: what `neuralhash hash
               --scheduler` runs (results streamed back in order)

Both clusters start once, before the rounds, and every mode is run once to
warm up (the workers build their model then), so the figures are steady-state
throughput. The rounds interleave the modes (rotating order) and each figure is
the median over the rounds. "worker RSS" is the largest resident memory of a
worker process after the mode's runs; it is also shown after the warm-up, to
see that it does not grow with the number of images hashed.

Per-task overhead: empty tasks (no paths) through the very task function and
model key the hashing tasks use, on the 1-worker cluster, one after the other:
the scheduling, transfer and result-frame cost Dask adds per task, shown
against the time of a task of MAX_PATHS_PER_TASK images at the measured
single-thread rate (dask 1).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_hash_images  # noqa: E402

MODES = ("single", "dask1", "dask2", "dask2-cli")
LABELS = {
    "single": "single process, hash_many (defaults)",
    "dask1": "Dask LocalCluster, 1 worker x 1 thread",
    "dask2": "Dask LocalCluster, 2 workers x 1 thread",
    "dask2-cli": "Dask 2 workers, iter_batches (the CLI)",
}


def _worker_rss(client) -> float:
    import psutil

    return max(client.run(lambda: psutil.Process().memory_info().rss).values()) / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 images, one round: a smoke run")
    parser.add_argument("--n", type=int, help="images (default 200, --quick 40)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3, --quick 1)")
    parser.add_argument("--tasks", type=int, default=300, help="empty tasks timed for the per-task overhead")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "neuralhash-bench-hash",
                        help="where the images are cached (shared with bench_hash.py)")
    args = parser.parse_args()
    n = args.n or (40 if args.quick else 200)
    rounds = args.rounds or (1 if args.quick else 3)

    from distributed import Client, LocalCluster

    from neuralhash.hashing import distributed as nhd

    logging.getLogger("distributed").setLevel(logging.ERROR)  # the in-process scheduler's INFO lines
    from neuralhash.hashing import NeuralHash

    paths = [str(p) for p in bench_hash_images.build_set(args.out / "images", "A", n, print)]
    nh = NeuralHash.demo()
    ref = {r.path: r.hash.hex for r in nh.hash_many(paths)}

    def cluster(workers: int):
        c = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                         silence_logs=logging.ERROR)
        return c, Client(c, set_as_default=False)

    t0 = time.perf_counter()
    cluster1, client1 = cluster(1)
    cluster2, client2 = cluster(2)
    start_s = time.perf_counter() - t0

    def run(mode: str) -> tuple[float, float | None]:
        """(seconds, worker RSS in MB) for one pass over the files; the hashes are checked."""
        t = time.perf_counter()
        if mode == "single":
            got = [(r.path, r.hash.hex) for r in nh.hash_many(paths)]
        elif mode == "dask2-cli":
            got = [(r.path, r.hash.hex) for frame in nhd.iter_batches(paths, model=nh, client=client2)
                   for r in nhd.to_results(frame)]
        else:
            client = client1 if mode == "dask1" else client2
            frame = client.compute(nhd.hash_paths(paths, model=nh, client=client)).result()
            got = list(zip(frame["path"], frame["hash"]))
        seconds = time.perf_counter() - t
        assert got == list(ref.items()), f"{mode}: hashes differ from the single-process run"
        rss = None if mode == "single" else _worker_rss(client1 if mode == "dask1" else client2)
        return seconds, rss

    try:
        for mode in MODES:  # warm-up: worker processes import, build their model, fill caches
            run(mode)
        warm_rss = {"dask1": _worker_rss(client1), "dask2": _worker_rss(client2)}
        times: dict[str, list[float]] = {m: [] for m in MODES}
        rss: dict[str, float] = {}
        for r in range(rounds):
            order = MODES[r % len(MODES):] + MODES[:r % len(MODES)]
            for mode in order:
                seconds, mem = run(mode)
                times[mode].append(seconds)
                if mem is not None:
                    rss[mode] = max(rss.get(mode, 0.0), mem)

        # Per-task overhead: empty tasks through the same function and model key, one at a time.
        model_ref = nhd.share_model(client1, nh)
        options = dict(batch_size=4, exif_transpose=False, fast=False, storage_options={})
        client1.submit(nhd._hash_task, 0, [], model_ref, pure=False, **options).result()
        t = time.perf_counter()
        futures = [client1.submit(nhd._hash_task, 0, [], model_ref, pure=False, **options)
                   for _ in range(args.tasks)]
        client1.gather(futures)
        per_task = (time.perf_counter() - t) / args.tasks
    finally:
        client1.close(), cluster1.close(), client2.close(), cluster2.close()

    rate = {m: n / statistics.median(times[m]) for m in MODES}
    print()
    print(f"{n} images of set A (0.3 MP), demo model, {os.cpu_count()} CPUs, median of {rounds} round(s); "
          f"both clusters started in {start_s:.1f} s")
    print(f"{'mode':<42} {'images/s':>9} {'vs single':>10} {'worker RSS':>11}")
    for mode in MODES:
        mem = f"{rss[mode]:.0f} MB" if mode in rss else "-"
        print(f"{LABELS[mode]:<42} {rate[mode]:>9.1f} {rate[mode] / rate['single']:>9.2f}x {mem:>11}")
    task_s = nhd.MAX_PATHS_PER_TASK / rate["dask1"]
    print(f"per-task overhead: {per_task * 1e3:.1f} ms a task ({args.tasks} empty tasks on 1 worker), "
          f"{per_task / task_s:.2%} of a {nhd.MAX_PATHS_PER_TASK}-image task ({task_s:.2f} s at the dask 1 rate)")
    more = {"dask1": rounds * n, "dask2": 2 * rounds * n}
    print("worker RSS after the warm-up, then after more images: "
          + "; ".join(f"{LABELS[m].split(', ')[1]}: {warm_rss[m]:.0f} MB, then {rss[m]:.0f} MB after {more[m]} more"
                      for m in ("dask1", "dask2")))
    print("hashes: identical to the single-process run in every mode")
    return 0


if __name__ == "__main__":
    sys.exit(main())
