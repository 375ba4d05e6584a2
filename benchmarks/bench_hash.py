"""Hashing throughput benchmark: images per second and peak memory, ours against the usual ways.

Usage: python benchmarks/bench_hash.py [--quick] [--out DIR] [--rounds N] [--ref-images N]

Image sets (drawn offline from scikit-image's bundled sample photos by
bench_hash_images.py, seeded, cached under --out so that reruns are quick):
  A  200 images of 0.3 megapixels (640x480, JPEG quality 90, every fifth PNG)
  B   40 JPEGs of 12 megapixels (4000x3000, quality 90)
(--quick: 30 and 8 images, one round.)

Modes, for each set:
  (a) reference   the community script, one fresh `python -c` process per image
                  (import onnxruntime/numpy/Pillow, InferenceSession, Pillow
                  convert("RGB").resize((360, 360)), /255*2-1, run, project);
                  timed on an evenly spaced subset (--ref-images) and extrapolated
  (b) plain loop  one process, one session, the same preprocessing, batch 1
  (c) exact       NeuralHash.hash_many(paths) with its defaults
  (d) fast        NeuralHash.hash_many(paths, fast=True)
  (e) decode only the exact-mode preprocessing (open, convert RGB, resize 360
                  BICUBIC, to a uint8 array: neuralhash.hashing.image.decode,
                  the very function exact mode runs) on all cores
                  (ProcessPoolExecutor, fork, os.cpu_count() workers, best
                  chunksize of 1/2/4/8 found in the first round), nothing else:
                  the ceiling when inference is free. Its time includes starting
                  and stopping the pool.
All use the built-in synthetic demo model (NeuralHash.demo, Apple's network size,
so the inference cost is the real one); nothing needs Apple's files.

Every measurement runs in a fresh subprocess of this script (--run-one), so peaks
are separable; the rounds interleave the modes (in a rotating order) so that the
noise of a shared machine hits them alike, and each ratio is the median of the
per-round ratios. Timed: the work only, after imports and model loading (for (b)
the session, for (c)/(d) NeuralHash.demo()); (c)/(d) include everything
hash_many does inside, e.g. starting its worker processes.

Columns:
  CPU busy      CPU seconds of the process and its children / (wall x cores)
  mem main      peak RSS of the measuring process above its RSS before the work
  mem child     largest peak RSS (VmHWM, sampled) of one worker child process
                (x the most alive at one time; a forkserver and multiprocessing's
                resource tracker are not counted as workers); forked children
                count pages shared with their parent, so this is an upper bound
  mem total     peak over time of (main RSS above baseline + the private memory,
                USS, of every live child), sampled every 0.1 s: the memory the
                work adds to the machine

After the table: per set, how many of the 96 bits fast=True changes against
exact mode (mean and worst over every image, from the (c) and (d) runs), next
to what a JPEG q90 re-encoding of the exact 360x360 input does on the same
model, for scale (the demo model's random weights make it far more sensitive
than Apple's); whether exact mode gives the same bits as the plain loop and the
reference script; then the goals on set B, PASS or MISS each:
exact >= 1.7x (b), >= 20x (a), >= 0.85 of (e).

Start-up (also alone with --startup): whole processes on the first 16 images of set B,
timed from launch to exit, imports and model loading included, as a user meets them:
  (f) command     `python -m neuralhash hash --model ONNX` (its defaults: worker processes)
  (g) plain loop  a `python -c` script: import onnxruntime/numpy/Pillow, one session, the
                  loop of (b)
Goal: (f) >= 1.7x as fast as (g). Both run once untimed first (the model's id is computed
and cached on the first use of a model, as for any user), then alternate for the rounds.

Linux only (reads /proc for memory and child processes).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_hash_images  # noqa: E402

MODES = ("ref", "loop", "exact", "fast", "decode")
LABELS = {
    "ref": "(a) reference, process per image",
    "loop": "(b) plain loop, batch 1",
    "exact": "(c) hash_many exact",
    "fast": "(d) hash_many fast=True",
    "decode": "(e) decode+resize only, all cores",
}
FULL = {"A": 200, "B": 40}
QUICK = {"A": 30, "B": 8}
GOALS = (  # on set B, exact mode: (against, minimum ratio, text)
    ("loop", 1.7, "exact >= 1.7x the plain loop (b)"),
    ("ref", 20.0, "exact >= 20x the reference, a process per image (a)"),
    ("decode", 0.85, "exact >= 0.85 of the decode-bound limit (e)"),
)

# The community reference script (published with the 2021 ONNX conversion), argv: model, seed file, image.
REFERENCE = r"""
import sys
import onnxruntime
import numpy as np
from PIL import Image

session = onnxruntime.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
seed1 = open(sys.argv[2], "rb").read()[128:]
seed1 = np.frombuffer(seed1, dtype=np.float32)
seed1 = seed1.reshape([96, 128])

image = Image.open(sys.argv[3]).convert("RGB")
image = image.resize([360, 360])
arr = np.array(image).astype(np.float32) / 255.0
arr = arr * 2.0 - 1.0
arr = arr.transpose(2, 0, 1).reshape([1, 3, 360, 360])

inputs = {session.get_inputs()[0].name: arr}
outs = session.run(None, inputs)

hash_output = seed1.dot(outs[0].flatten())
hash_bits = "".join(["1" if it >= 0 else "0" for it in hash_output])
hash_hex = "{:0{}x}".format(int(hash_bits, 2), len(hash_bits) // 4)
print(hash_hex)
"""


# ---------------------------------------------------------------------------------------------
# Measuring one mode (in a fresh subprocess)


def _rss(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize()


def _hwm(pid: int | str = "self") -> int:
    """Peak RSS of a process's current address space (VmHWM; unlike ru_maxrss, not inherited across exec)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _uss(pid: int) -> int:
    """Private memory of a process (Private_Clean + Private_Dirty), in bytes."""
    total = 0
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1]) * 1024
    return total


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _descendants(pid: int) -> dict[int, bool]:
    """Every descendant of ``pid``, mapped to True when it is a worker: a leaf of the process
    tree (a forkserver has children) and not multiprocessing's resource tracker."""
    out: dict[int, bool] = {}
    todo = [pid]
    while todo:
        p = todo.pop()
        kids = []
        for f in glob.glob(f"/proc/{p}/task/*/children"):
            try:
                with open(f) as fh:
                    kids += [int(k) for k in fh.read().split()]
            except OSError:
                continue
        if p != pid:
            try:
                with open(f"/proc/{p}/cmdline", "rb") as fh:
                    tracker = b"resource_tracker" in fh.read()
            except OSError:
                tracker = True
            out[p] = not kids and not tracker
        todo += kids
    return out


class Sampler(threading.Thread):
    """Every ``interval`` s: own RSS, every descendant's peak RSS (VmHWM), USS and CPU ticks."""

    def __init__(self, baseline: int, interval: float = 0.1):
        super().__init__(daemon=True)
        self.baseline, self.interval = baseline, interval
        self.stop_event = threading.Event()
        self.peak_total = 0
        self.child_rss: dict[int, int] = {}
        self.child_ticks: dict[int, int] = {}
        self.helpers: set[int] = set()  # a forkserver (once seen with children), the resource tracker
        self.live: list[set[int]] = []  # the children seen at each sample

    def sample(self) -> None:
        total = _rss() - self.baseline
        kids = _descendants(os.getpid())
        self.live.append(set(kids))
        for pid, worker in kids.items():
            try:
                hwm, uss, ticks = _hwm(pid), _uss(pid), _cpu_ticks(pid)
            except (OSError, ValueError, IndexError):
                continue  # exited meanwhile
            if not worker:
                self.helpers.add(pid)
            self.child_rss[pid] = max(self.child_rss.get(pid, 0), hwm)
            self.child_ticks[pid] = ticks
            total += uss
        self.peak_total = max(self.peak_total, total)

    def workers(self) -> dict[int, int]:
        """Peak RSS of each worker child (helpers left out)."""
        return {p: v for p, v in self.child_rss.items() if p not in self.helpers}

    def most_workers(self) -> int:
        """The largest number of worker children alive at one time."""
        return max((len(live - self.helpers) for live in self.live), default=0)

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self.stop_event.set()
        self.join()
        self.sample()


def _decode(path: str):
    """Exact mode's preprocessing up to the uint8 array: the library's own decode (open, convert
    RGB, resize 360 BICUBIC), so that (e) follows whatever exact mode does and isolates the rest."""
    from neuralhash.hashing.image import decode

    return decode(path)


def _decode_all(paths: list[str], chunksize: int) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # fork: this process holds no ONNX Runtime threads, and fork starts workers fastest
    with ProcessPoolExecutor(os.cpu_count(), mp_context=multiprocessing.get_context("fork")) as pool:
        for _ in pool.map(_decode, paths, chunksize=chunksize):
            pass


def _scale_task(path: str) -> tuple[float, float, bytes]:
    """Mean |pixel difference| against the exact 360x360 input of fast=True and of a JPEG q90
    re-encoding of that input, and the re-encoded bytes."""
    import io

    import numpy as np
    from PIL import Image

    from neuralhash.hashing.image import decode

    exact = decode(path)
    fast = decode(path, fast=True)
    buf = io.BytesIO()
    Image.fromarray(exact).save(buf, format="JPEG", quality=90)
    again = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    mad = lambda a: float(np.abs(a.astype(np.int16) - exact).mean())  # noqa: E731
    return mad(fast), mad(again), buf.getvalue()


def run_scale(args: argparse.Namespace, paths: list[str]) -> dict:
    """Not timed: how far fast=True moves the pixels, and what a JPEG re-encoding does to the bits."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # fork, before any ONNX Runtime thread exists in this process
    with ProcessPoolExecutor(os.cpu_count(), mp_context=multiprocessing.get_context("fork")) as pool:
        rows = list(pool.map(_scale_task, paths))
    from neuralhash.hashing import NeuralHash

    nh = NeuralHash.demo(cache_dir=Path(args.out) / "model")
    hexes = [r.hash.hex if r.ok else None for r in nh.hash_many([b for _, _, b in rows])]
    return {"mad_fast": [r[0] for r in rows], "mad_jpeg": [r[1] for r in rows], "jpeg_hashes": hexes}


# The plain ONNX Runtime loop as a whole process (start-up section), argv: model, seed file, images...
LOOP_SCRIPT = r"""
import sys
import numpy as np
import onnxruntime
from PIL import Image

session = onnxruntime.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
seed = np.frombuffer(open(sys.argv[2], "rb").read()[128:], dtype=np.float32).reshape(96, 128)
name = session.get_inputs()[0].name
for path in sys.argv[3:]:
    arr = np.asarray(Image.open(path).convert("RGB").resize((360, 360)), dtype=np.float32) / 255.0
    arr = (arr * 2.0 - 1.0).transpose(2, 0, 1)[None]
    v = seed.dot(session.run(None, {name: np.ascontiguousarray(arr)})[0].flatten())
    print(np.packbits(v >= 0).tobytes().hex() + "  " + path)
"""

STARTUP_IMAGES = 16
STARTUP_GOAL = 1.7


def startup_rounds(onnx: Path, seed: Path, paths: list[Path], rounds: int, log) -> dict:
    """Wall seconds of (f) the command and (g) the plain loop process, alternating, after one untimed
    run of each; and whether their hashes agree."""
    images = [str(p) for p in paths[:STARTUP_IMAGES]]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}
    commands = {
        "command": [sys.executable, "-m", "neuralhash", "hash", "--model", str(onnx), *images],
        "loop": [sys.executable, "-c", LOOP_SCRIPT, str(onnx), str(seed), *images],
    }
    times: dict[str, list[float]] = {k: [] for k in commands}
    outputs: dict[str, str] = {}
    load = [os.getloadavg()[0]]
    for r in range(rounds + 1):
        for name in (list(commands) if r % 2 else list(reversed(commands))):
            t = time.perf_counter()
            res = subprocess.run(commands[name], capture_output=True, text=True, env=env)
            seconds = time.perf_counter() - t
            if res.returncode:
                raise SystemExit(f"start-up {name} failed:\n{res.stderr}")
            outputs[name] = res.stdout
            if r:  # round 0 warms the caches (and computes the model's id once)
                times[name].append(seconds)
                log(f"start-up round {r}/{rounds} {name}: {seconds:.2f} s for {len(images)} images")
    ratios = [g / f for f, g in zip(times["command"], times["loop"])]
    load.append(os.getloadavg()[0])
    return {"images": len(images), "times": times, "ratio": statistics.median(ratios),
            "same_hashes": outputs["command"] == outputs["loop"], "load": load}


def print_startup(result: dict) -> None:
    f, g = (statistics.median(result["times"][k]) for k in ("command", "loop"))
    n = result["images"]
    print(f"start-up, whole processes on {n} images of set B (median of {len(result['times']['loop'])} rounds):")
    print(f"  (f) neuralhash hash --model ONNX   {f:.2f} s")
    print(f"  (g) plain ONNX Runtime loop         {g:.2f} s")
    print(f"  same hashes: {'yes' if result['same_hashes'] else 'NO'}")
    goal = result["ratio"] >= STARTUP_GOAL
    print(f"  {'PASS' if goal else 'MISS'}  command >= {STARTUP_GOAL}x the plain loop on {n} images: "
          f"{result['ratio']:.2f}x (median of per-round ratios)")
    before, after = result["load"]
    cores = os.cpu_count() or 1
    print(f"  load average {before:.1f} before, {after:.1f} after, on {cores} cores" + (
        ": other processes were using the cores the command's decoding workers need; rerun on an idle machine"
        if max(before, after) > cores / 2 else ""))


def run_one(args: argparse.Namespace) -> dict:
    mode, set_name = args.run_one
    paths = [str(p) for p in bench_hash_images.build_set(Path(args.out) / "images", set_name, args.n)]
    if mode == "scale":
        return run_scale(args, paths)
    if mode == "ref":
        paths = subset(paths, args.ref_images)
    hexes: list[str | None] = []
    extra: dict = {}

    if mode == "loop":
        import numpy as np
        import onnxruntime
        from PIL import Image

        from neuralhash.hashing.seed import default_seed_matrix

        session = onnxruntime.InferenceSession(args.onnx, providers=["CPUExecutionProvider"])
        seed = default_seed_matrix()
        name = session.get_inputs()[0].name

        def work() -> None:
            for p in paths:
                image = Image.open(p).convert("RGB").resize((360, 360))
                arr = np.asarray(image, dtype=np.float32) / 255.0
                arr = (arr * 2.0 - 1.0).transpose(2, 0, 1)[None]
                logits = session.run(None, {name: np.ascontiguousarray(arr)})[0]
                v = seed @ logits.reshape(128)
                hexes.append(np.packbits(v >= 0).tobytes().hex())
    elif mode in ("exact", "fast"):
        from neuralhash.hashing import NeuralHash

        nh = NeuralHash.demo(cache_dir=Path(args.out) / "model")

        def work() -> None:
            for r in nh.hash_many(paths, fast=mode == "fast"):
                hexes.append(r.hash.hex if r.ok else None)
                if not r.ok:
                    extra.setdefault("errors", []).append(f"{r.path}: {r.error}")
    elif mode == "ref":
        def work() -> None:
            for p in paths:
                res = subprocess.run([sys.executable, "-c", REFERENCE, args.onnx, args.seed, p],
                                     capture_output=True, text=True)
                if res.returncode:
                    raise SystemExit(f"reference script failed on {p}:\n{res.stderr}")
                hexes.append(res.stdout.strip())
    elif mode == "decode":
        import neuralhash.hashing.image  # noqa: F401  (imports before the baseline, as for the other modes)

        n_workers = os.cpu_count() or 1
        sizes = [args.chunksize] if args.chunksize else [c for c in (1, 2, 4, 8) if c == 1 or c * n_workers * 2 <= len(paths)]
        trials: dict[int, float] = {}

        def work() -> None:
            for c in sizes:
                t = time.perf_counter()
                _decode_all(paths, c)
                trials[c] = time.perf_counter() - t
    else:
        raise SystemExit(f"unknown mode {mode}")

    baseline = _rss()
    sampler = Sampler(baseline)
    sampler.start()
    self0 = resource.getrusage(resource.RUSAGE_SELF)
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    work()
    seconds = time.perf_counter() - start
    self1 = resource.getrusage(resource.RUSAGE_SELF)
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    sampler.stop()

    cpu_self = (self1.ru_utime + self1.ru_stime) - (self0.ru_utime + self0.ru_stime)
    cpu_kids_waited = (kids1.ru_utime + kids1.ru_stime) - (kids0.ru_utime + kids0.ru_stime)
    cpu_kids_sampled = sum(sampler.child_ticks.values()) / os.sysconf("SC_CLK_TCK")
    if mode == "decode":  # report the best chunksize; CPU and memory over all trials
        best = min(trials, key=trials.get)
        extra["chunksize"] = best
        extra["trials"] = trials
        scale = trials[best] / seconds
        seconds = trials[best]
        cpu_self *= scale
        cpu_kids_waited *= scale
        cpu_kids_sampled *= scale
    return {
        "mode": mode,
        "set": set_name,
        "images": len(paths),
        "seconds": seconds,
        "cpu": cpu_self + max(cpu_kids_waited, cpu_kids_sampled),
        "cpu_kids_waited": cpu_kids_waited,
        "cpu_kids_sampled": cpu_kids_sampled,
        "main_peak": _hwm() - baseline,
        "child_peak": max(sampler.workers().values(), default=0),
        "children": sampler.most_workers(),
        "total_peak": sampler.peak_total,
        "hashes": hexes,
        **extra,
    }


def subset(paths: list, k: int) -> list:
    """``k`` evenly spaced items of ``paths`` (all of them when k >= len)."""
    if k >= len(paths):
        return list(paths)
    return [paths[round(i * (len(paths) - 1) / max(1, k - 1))] for i in range(k)]


# ---------------------------------------------------------------------------------------------
# The parent: sets, rounds, table


def child(args: argparse.Namespace, mode: str, set_name: str, n: int, onnx: Path, seed: Path,
          chunksize: int | None) -> dict:
    cmd = [sys.executable, __file__, "--run-one", mode, set_name, "--n", str(n), "--out", str(args.out),
           "--onnx", str(onnx), "--seed", str(seed), "--ref-images", str(args.ref_images)]
    if chunksize:
        cmd += ["--chunksize", str(chunksize)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"measurement {mode} on set {set_name} failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def write_seed_file(path: Path) -> None:
    """The seed matrix in Apple's file layout (128-byte header + 96x128 float32), for the reference script."""
    from neuralhash.hashing.seed import default_seed_matrix

    path.write_bytes(bytes(128) + default_seed_matrix().astype("<f4").tobytes())


def hamming(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def mb(n: float) -> str:
    return f"{n / 1e6:.0f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="30 + 8 images, one round: a smoke run")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "neuralhash-bench-hash",
                        help="cache folder for the image sets and the demo model (default: %(default)s)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3, --quick 1)")
    parser.add_argument("--ref-images", type=int, help="images timed for the reference mode (default 12, --quick 4)")
    parser.add_argument("--startup", action="store_true",
                        help=f"only the start-up section: {STARTUP_IMAGES} images of set B, (f) against (g)")
    parser.add_argument("--run-one", nargs=2, metavar=("MODE", "SET"), help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--onnx", help=argparse.SUPPRESS)
    parser.add_argument("--seed", help=argparse.SUPPRESS)
    parser.add_argument("--chunksize", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ref_images is None:
        args.ref_images = 4 if args.quick else 12
    if args.run_one:
        print(json.dumps(run_one(args)))
        return
    rounds = args.rounds or (1 if args.quick else 3)
    counts = QUICK if args.quick else FULL
    args.out.mkdir(parents=True, exist_ok=True)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731

    if args.startup:
        counts = {"B": STARTUP_IMAGES}
    sets = {s: bench_hash_images.build_set(args.out / "images", s, n, log) for s, n in counts.items()}
    for paths in sets.values():  # into the page cache, for every mode alike
        for p in paths:
            p.read_bytes()
    from neuralhash.hashing import NeuralHash

    t = time.perf_counter()
    onnx = Path(NeuralHash.demo(cache_dir=args.out / "model").onnx_path)
    log(f"demo model ready in {time.perf_counter() - t:.1f} s: {onnx}")
    seed = args.out / "neuralhash_128x96_seed1.dat"
    write_seed_file(seed)

    startup = startup_rounds(onnx, seed, sets["B"], max(rounds, 3), log)
    if args.startup:
        print_startup(startup)
        return

    load_before = os.getloadavg()[0]
    runs: dict[tuple[str, str], list[dict]] = {}
    chunks: dict[str, int | None] = {s: None for s in sets}
    for r in range(rounds):
        order = MODES[r % len(MODES):] + MODES[:r % len(MODES)]
        for s in sets:
            for mode in order:
                t = time.perf_counter()
                row = child(args, mode, s, counts[s], onnx, seed, chunks[s] if mode == "decode" else None)
                if mode == "decode":
                    chunks[s] = row["chunksize"]
                runs.setdefault((s, mode), []).append(row)
                log(f"round {r + 1}/{rounds} set {s} {mode}: {row['images'] / row['seconds']:.2f} images/s "
                    f"({time.perf_counter() - t:.1f} s with start-up)")

    load_after = os.getloadavg()[0]
    scale = {s: child(args, "scale", s, counts[s], onnx, seed, None) for s in sets}
    raw = args.out / "last-run.json"
    raw.write_text(json.dumps({"runs": [row for rows in runs.values() for row in rows], "scale": scale}))

    cores = os.cpu_count() or 1
    rate = {k: [row["images"] / row["seconds"] for row in v] for k, v in runs.items()}

    def ratio(s: str, mode: str, against: str) -> float:
        return statistics.median(a / b for a, b in zip(rate[(s, mode)], rate[(s, against)]))

    header = ("set", "mode", "images", "images/s", "vs (b)", "vs (a)", "of (e)", "CPU busy",
              "mem main", "mem child", "mem total")
    rows = []
    for s in sets:
        for mode in MODES:
            rs = runs[(s, mode)]
            n = rs[0]["images"]
            images = f"{n} of {counts[s]}, extrapolated" if mode == "ref" and n < counts[s] else str(n)
            if mode == "decode":
                images += f", chunksize {chunks[s]}"
            busy = statistics.median(row["cpu"] / (row["seconds"] * cores) for row in rs)
            kids = max(row["children"] for row in rs)
            rows.append((
                s, LABELS[mode], images, f"{statistics.median(rate[(s, mode)]):.2f}",
                f"{ratio(s, mode, 'loop'):.2f}x", f"{ratio(s, mode, 'ref'):.1f}x", f"{ratio(s, mode, 'decode'):.2f}",
                f"{busy:.0%}", mb(max(row["main_peak"] for row in rs)),
                f"{mb(max(row['child_peak'] for row in rs))} x{kids}" if kids else "-",
                mb(max(row["total_peak"] for row in rs)),
            ))
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    print(f"{cores} cores, {rounds} round(s), median of per-round ratios; sets: "
          + "; ".join(f"{s} = {bench_hash_images.SETS[s][1]}" for s in sets))
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))
    print()

    ok = True
    print("bits changed by fast=True against exact mode, per image (of 96), hashing every image both ways:")
    for s in sets:
        exact = runs[(s, "exact")][0]["hashes"]
        fast = runs[(s, "fast")][0]["hashes"]
        d = [hamming(e, f) for e, f in zip(exact, fast) if e and f]
        sc = scale[s]
        j = [hamming(e, q) for e, q in zip(exact, sc["jpeg_hashes"]) if e and q]
        print(f"  set {s}: mean {statistics.mean(d):.2f}, worst {max(d)}, {sum(x > 0 for x in d)} of {len(d)} images "
              f"differ; the 360x360 input moves by {statistics.mean(sc['mad_fast']):.2f}/255 per value on average")
        print(f"         for scale, a JPEG q90 re-encoding of exact mode's 360x360 input "
              f"({statistics.mean(sc['mad_jpeg']):.2f}/255 per value): mean {statistics.mean(j):.2f}, worst {max(j)}")
    print("  these are bits of the synthetic demo model (random weights): it is far more sensitive than Apple's,")
    print("  on which recompression moves a few bits; compare fast=True with the JPEG line, not with zero.")
    print("bit-exactness of exact mode (batched, worker processes) against the reference pipeline:")
    for s in sets:
        exact = runs[(s, "exact")][0]["hashes"]
        fast = runs[(s, "fast")][0]["hashes"]
        loop = runs[(s, "loop")][0]["hashes"]
        ref_paths = subset(list(range(counts[s])), runs[(s, "ref")][0]["images"])
        ref = runs[(s, "ref")][0]["hashes"]
        same_loop = sum(a == b for a, b in zip(exact, loop))
        same_ref = sum(exact[i] == h for i, h in zip(ref_paths, ref))
        stable = all(row["hashes"] == exact for row in runs[(s, "exact")])
        failed = sum(h is None for h in exact) + sum(h is None for h in fast)
        worst_loop = max((hamming(a, b) for a, b in zip(exact, loop) if a and b), default=0)
        print(f"  set {s}: same as the plain loop on {same_loop}/{len(loop)} images (worst {worst_loop} bits), "
              f"as the reference script on {same_ref}/{len(ref)}; same bits every round: {'yes' if stable else 'NO'}; "
              f"failed images: {failed}")
        ok &= same_loop == len(loop) and same_ref == len(ref) and stable and not failed
    print()
    print("goals on set B (12 MP JPEGs), exact mode:")
    for against, need, text in GOALS:
        got = ratio("B", "exact", against)
        print(f"  {'PASS' if got >= need else 'MISS'}  {text}: {got:.2f}{'' if against == 'decode' else 'x'}")
    e_b, e_a = ratio("B", "decode", "loop"), ratio("B", "decode", "ref")
    print(f"  (the decode-bound limit (e) itself is {e_b:.2f}x the plain loop and {e_a:.1f}x the reference on set B"
          + ("; no exact-mode pipeline can reach 20x the reference on this machine" if e_a < 20 else "") + ")")
    if not ok:
        print("  MISS  exact mode is not bit-identical to the reference pipeline on every image (see above)")
    busy_e = statistics.median(row["cpu"] / (row["seconds"] * cores) for row in runs[("B", "decode")])
    print(f"load average {load_before:.1f} before the rounds, {load_after:.1f} after; (e) kept {busy_e:.0%} of the "
          f"{cores} cores busy on set B" + (
              ": other processes were using the machine, which compresses every ratio against the single-threaded"
              " plain loop (b); rerun on an idle machine for the goals" if busy_e < 0.85 else ""))
    print()
    print_startup(startup)
    print(f"raw measurements: {raw}")


if __name__ == "__main__":
    main()
