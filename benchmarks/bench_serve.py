"""`neuralhash serve` under load: lookups, batched lookups, image hashing, memory.

Usage: pip install '.[serve,bench]'; python benchmarks/bench_serve.py [--quick] [--hashes N] [--seconds S] [--db PATH]

Prints one table. The server runs as its own process on loopback (`neuralhash
serve DB --model demo --port 0`) over a database of --hashes random hashes
(default 10 million; 1% planted near-duplicates so that lookups find
something), built once and kept at --db for the next run. A real HTTP client
(aiohttp, asynchronous, keep-alive) in this process drives it with bounded
concurrency for a bounded time per phase:

- single-hash lookups at radius 8 (POST /lookup, one hash): requests/s, p50 and
  p99 latency; goal 1,000/s with p99 under 50 ms;
- batched lookups (100 hashes a request): hashes/s; goal 4,000/s or more;
- image hashing: POST /hash of --images pictures against `neuralhash hash` on
  the same files in the same run (both with the demo model, both decoding in
  one worker process per CPU); the command's rate is its steady rate (the time
  for all images less the time for one, so its start-up is left out); goal 0.8x;
- the server's memory (RSS of the server process, and of its decoding workers)
  after 16 warm-up uploads and after all the load: goal flat;
- lookups while lists change (``--runs writes``): single-hash lookups, 4 in flight,
  while one client imports a --import-lines-line list over HTTP (default 5 million)
  and another creates, fills and deletes lists one after another: p99 under 50 ms,
  worst lookup under 250 ms;
- lookups beside the heaviest request (``--runs heavy``): single-hash lookups, 4 in
  flight, while one client sends, back to back, the heaviest /lookup the limits
  allow (10,000 hashes at distance 32, limit 1,000, then limit 1: the most
  matches, then the most searching): p99 under 50 ms, the server's peak memory
  (VmHWM, mapped index pages included) under 1 GB.

``--runs`` picks the phases (default: all of them, in that order).

The client shares the machine's cores with the server: on 2 cores the figures
are the server's under that handicap.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RADIUS = 8
BATCH = 100
LIST = "bench"


def build_db(db: Path, n: int, model_id: str) -> None:
    """N random hashes, 1% of them copies of others with 0-8 bits flipped (built once, kept)."""
    from neuralhash.store import HashStore

    if db.exists():
        with HashStore(db, create=False) as store:
            if any(s.name == LIST and s.count == n and s.model_id == model_id for s in store.lists()):
                return
        db.unlink()
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    with HashStore(db, create=True) as store:
        step = 1_000_000
        for start in range(0, n, step):
            m = min(step, n - start)
            block = rng.integers(0, 256, (m, 12), dtype=np.uint8)
            planted = rng.choice(m, m // 100, replace=False)
            sources = rng.integers(0, m, len(planted))
            bits = np.unpackbits(block[sources], axis=1)
            for row, k in enumerate(rng.integers(0, 9, len(planted))):
                bits[row, rng.choice(96, k, replace=False)] ^= 1
            block[planted] = np.packbits(bits, axis=1)
            raw = block.tobytes()
            store.add_hashes(LIST, ((f"h{start + i:09d}", raw[12 * i:12 * i + 12]) for i in range(m)),
                             model_id=model_id)
            print(f"  built {start + m:,} of {n:,} hashes ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)


class Server:
    def __init__(self, db: Path, workers: int) -> None:
        cmd = [sys.executable, "-m", "neuralhash.cli", "serve", str(db), "--model", "demo", "--port", "0",
               "--workers", str(workers)]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                                     start_new_session=True)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x) for x in self.proc.stderr] + [lines.put(None)],
                         daemon=True).start()
        while True:
            line = lines.get(timeout=600)
            if line is None:
                raise SystemExit("the server did not start")
            if " on http://" in line:
                self.url = line.split(" on ", 1)[1].split(" ", 1)[0]
                return

    def memory(self) -> tuple[float, float, float]:
        """MiB: the server's private memory (RssAnon), its file pages in memory (RssFile: the
        memory-mapped index, shared with the page cache), and its decoding workers' RSS."""
        def status(pid: int) -> dict[str, float]:
            try:
                lines = Path(f"/proc/{pid}/status").read_text().splitlines()
            except OSError:
                return {}
            return {k: int(v.split()[0]) / 1024 for k, _, v in (line.partition(":") for line in lines)
                    if k in ("VmRSS", "RssAnon", "RssFile")}

        def children(pid: int) -> list[int]:
            out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
            return [int(p) for p in out]

        mine = status(self.proc.pid)
        kids = [g for c in children(self.proc.pid) for g in [c, *children(c)]]
        return (mine.get("RssAnon", 0.0), mine.get("RssFile", 0.0),
                sum(status(k).get("VmRSS", 0.0) for k in kids))

    def rss(self) -> float:
        """MiB: the server process's resident memory now (VmRSS)."""
        return self._status().get("VmRSS", 0.0)

    def peak(self) -> float:
        """MiB: the server process's peak resident memory since it started (VmHWM)."""
        return self._status().get("VmHWM", 0.0)

    def _status(self) -> dict[str, float]:
        try:
            lines = Path(f"/proc/{self.proc.pid}/status").read_text().splitlines()
        except OSError:
            return {}
        return {k: int(v.split()[0]) / 1024 for k, _, v in (line.partition(":") for line in lines)
                if k in ("VmRSS", "VmHWM")}

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=120)


async def drive(url: str, make_request, concurrency: int, seconds: float) -> tuple[list[float], int, float]:
    """Latencies (s) of every request, the count of failed ones, and the elapsed time."""
    import aiohttp

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(url, connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as client:
        for _ in range(concurrency):  # warm-up: connections, the server's index
            method, path, kwargs = make_request()
            async with client.request(method, path, **kwargs) as r:
                await r.read()
        start = time.perf_counter()
        done = asyncio.Event()
        asyncio.get_running_loop().call_later(seconds, done.set)
        latencies, failed = await drive_until(client, make_request, concurrency, done)
        return latencies, failed, time.perf_counter() - start


async def drive_until(client, make_request, concurrency: int, done: asyncio.Event) -> tuple[list[float], int]:
    """Latencies (s) of requests sent ``concurrency`` at a time until ``done`` is set, and the failures."""
    latencies: list[float] = []
    failed = 0

    async def worker() -> None:
        nonlocal failed
        while not done.is_set():
            method, path, kwargs = make_request()
            t0 = time.perf_counter()
            async with client.request(method, path, **kwargs) as r:
                await r.read()
                ok = r.status == 200
            latencies.append(time.perf_counter() - t0)
            failed += not ok

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, failed


async def alone(client, make_request, seconds: float) -> list[float]:
    """Latencies of the same lookups (4 in flight) for ``seconds`` with nothing beside them: what
    the loaded figures compare with, measured in the same run (the machine is shared)."""
    done = asyncio.Event()
    task = asyncio.create_task(drive_until(client, make_request, 4, done))
    await asyncio.sleep(seconds)
    done.set()
    return (await task)[0]


def latency_rows(title: str, lat: list[float], seconds: float, goal: str = "") -> list[tuple[str, str, str]]:
    return [(title, f"{len(lat) / seconds:,.0f}", ""),
            ("  p50 / p99 / worst latency (ms)",
             f"{percentile(lat, 50) * 1e3:.1f} / {percentile(lat, 99) * 1e3:.1f} / {max(lat) * 1e3:.0f}", goal)]


def write_import_file(path: Path, lines: int) -> None:
    """``HEX  NAME`` lines of random hashes, written once and kept."""
    if path.exists() and path.stat().st_size > 0:
        return
    rng = np.random.default_rng(5)
    with open(path, "w", encoding="ascii") as fh:
        for start in range(0, lines, 500_000):
            m = min(500_000, lines - start)
            hexes = rng.integers(0, 256, (m, 12), dtype=np.uint8).tobytes().hex()
            fh.write("".join(f"{hexes[24 * i:24 * i + 24]}  imp{start + i:09d}\n" for i in range(m)))


def lookups_while_lists_change(server: "Server", import_file: Path, lines: int, seconds: float,
                               rng) -> list[tuple[str, str, str]]:
    """Single lookups (4 in flight) while a big import and list creates/deletes run beside them."""
    import aiohttp

    async def run() -> tuple[list[float], int, float, int, int, int, list[float]]:
        timeout = aiohttp.ClientTimeout(total=3600)
        async with aiohttp.ClientSession(server.url, timeout=timeout) as lookups, \
                aiohttp.ClientSession(server.url, timeout=timeout) as writers:
            done = asyncio.Event()
            churned = churn_failed = 0

            async def do_import() -> int:
                with open(import_file, "rb") as fh:
                    async with writers.post("/lists/bench-import/import", data=fh,
                                            headers={"Content-Type": "text/plain"}) as r:
                        body = await r.json()
                        return body.get("imported", -1) if r.status == 200 else -r.status

            async def churn() -> None:
                nonlocal churned, churn_failed
                k = 0
                while not done.is_set():
                    name = f"bench-churn-{k}"
                    k += 1
                    ok = True
                    async with writers.post("/lists", json={"name": name}) as r:
                        ok &= r.status in (200, 201)
                    async with writers.post(f"/lists/{name}/hashes", json={"hashes": [
                            {"hash": rng.bytes(12).hex(), "path": f"c{i}"} for i in range(10)]}) as r:
                        ok &= r.status == 200
                    async with writers.delete(f"/lists/{name}") as r:
                        ok &= r.status == 200
                    churned += 1
                    churn_failed += not ok
                    await asyncio.sleep(0.2)

            def one() -> tuple:
                return "POST", "/lookup", {"json": {"hashes": [rng.bytes(12).hex()], "max_distance": RADIUS}}

            base_lat = await alone(lookups, one, seconds)
            t0 = time.perf_counter()
            importing = asyncio.create_task(do_import())
            churning = asyncio.create_task(churn())
            driving = asyncio.create_task(drive_until(lookups, one, 4, done))
            imported = await importing
            import_s = time.perf_counter() - t0
            await asyncio.sleep(2.0)  # and a moment after it: the index catches up in the background
            done.set()
            await churning
            lat, failed = await driving
            async with writers.delete("/lists/bench-import") as r:
                await r.read()
            return lat, failed, import_s, imported, churned, churn_failed, base_lat

    lat, failed, import_s, imported, churned, churn_failed, base_lat = asyncio.run(run())
    return [
        *latency_rows("lookups, 4 in flight, alone just before (req/s)", base_lat, seconds),
        *latency_rows(f"lookups, 4 in flight, during a {lines:,}-line import and list churn (req/s)", lat,
                      max(import_s, 1e-9), "p99 < 50, worst < 250"),
        ("  failed lookups", str(failed), "0"),
        ("  the import: lines imported, seconds", f"{imported:,}, {import_s:.1f} s", f"{lines:,}"),
        ("  lists created, filled and deleted beside it (failed)", f"{churned} ({churn_failed})", "0 failed"),
    ]


def lookups_beside_the_heaviest_request(server: "Server", seconds: float, rng) -> list[tuple[str, str, str]]:
    """Single lookups (4 in flight) while one client sends the heaviest /lookup the limits allow."""
    import aiohttp

    from neuralhash.service.app import MAX_DISTANCE, MAX_LIMIT, MAX_QUERIES

    async def run() -> tuple[list[float], int, int, int, float, int, list[float]]:
        timeout = aiohttp.ClientTimeout(total=3600)
        async with aiohttp.ClientSession(server.url, timeout=timeout) as lookups, \
                aiohttp.ClientSession(server.url, timeout=timeout) as heavy:
            done = asyncio.Event()
            sent = cut = 0
            biggest = 0

            async def heaviest() -> None:
                nonlocal sent, cut, biggest
                limits = [MAX_LIMIT, 1]
                while not done.is_set():
                    body = {"hashes": [rng.bytes(12).hex() for _ in range(MAX_QUERIES)],
                            "max_distance": MAX_DISTANCE, "limit": limits[sent % 2]}
                    async with heavy.post("/lookup", json=body) as r:
                        data = await r.read()
                    biggest = max(biggest, len(data))
                    sent += 1
                    cut += b'"complete": false, "note"' in data[-2000:]

            def one() -> tuple:
                return "POST", "/lookup", {"json": {"hashes": [rng.bytes(12).hex()], "max_distance": RADIUS}}

            peak = 0.0

            async def sample() -> None:
                nonlocal peak
                while not done.is_set():
                    peak = max(peak, server.rss())
                    await asyncio.sleep(0.1)

            base_lat = await alone(lookups, one, seconds)
            tasks = [asyncio.create_task(heaviest()), asyncio.create_task(sample())]
            await asyncio.sleep(1.0)  # the heavy request is under way
            driving = asyncio.create_task(drive_until(lookups, one, 4, done))
            await asyncio.sleep(seconds)
            done.set()
            lat, failed = await driving
            await asyncio.gather(*tasks)
            return lat, failed, sent, cut, peak, biggest, base_lat

    lat, failed, sent, cut, peak, biggest, base_lat = asyncio.run(run())
    return [
        *latency_rows("lookups, 4 in flight, alone just before (req/s)", base_lat, seconds),
        *latency_rows("lookups, 4 in flight, beside the heaviest /lookup back to back (req/s)", lat, seconds,
                      "p99 < 50"),
        ("  failed lookups", str(failed), "0"),
        ("  heaviest requests answered (cut by the bounds, said so)", f"{sent} ({cut})", ""),
        ("  largest answer (MB)", f"{biggest / 1e6:.1f}", ""),
        ("  server peak memory, VmHWM since start / sampled RSS (MiB)", f"{server.peak():.0f} / {peak:.0f}", "< 1,024"),
    ]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def cli_hash_seconds(paths: list[Path], workers: int) -> float:
    cmd = [sys.executable, "-m", "neuralhash.cli", "hash", "--model", "demo", "--workers", str(workers),
           *map(str, paths)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100,000 hashes, 3 s phases, 24 images: a smoke run")
    parser.add_argument("--hashes", type=int, default=None, help="hashes in the database (default 10 million)")
    parser.add_argument("--seconds", type=float, default=None, help="length of each load phase (default 15)")
    parser.add_argument("--images", type=int, default=None, help="images for the hashing phase (default 120)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[4, 16],
                        help="requests in flight for single lookups, one phase each (default 4 16)")
    parser.add_argument("--runs", nargs="+", default=["lookups", "hash", "writes", "heavy"],
                        choices=["lookups", "hash", "writes", "heavy"],
                        help="phases to run: lookups (single and batched), hash (POST /hash vs the command), "
                             "writes (lookups during an import and list churn), heavy (lookups beside the "
                             "heaviest request); default: all")
    parser.add_argument("--import-lines", type=int, default=None,
                        help="lines of the list imported during the writes phase (default 5 million)")
    parser.add_argument("--db", type=Path, default=None,
                        help="where the database is built and kept (default: the temp folder)")
    args = parser.parse_args()
    n = args.hashes or (100_000 if args.quick else 10_000_000)
    seconds = args.seconds or (3.0 if args.quick else 15.0)
    n_images = args.images or (24 if args.quick else 120)
    workers = os.cpu_count() or 1
    db = args.db or Path(tempfile.gettempdir()) / f"neuralhash-bench-serve-{n}.db"
    import_lines = args.import_lines or (200_000 if args.quick else 5_000_000)

    from neuralhash.hashing import NeuralHash

    nh = NeuralHash.demo()
    build_db(db, n, nh.model_id)
    image_dir = Path(tempfile.mkdtemp(prefix="neuralhash-bench-serve-"))
    paths = make_images(image_dir, n_images)
    rng = np.random.default_rng(1)

    server = Server(db, workers)
    rows: list[tuple[str, str, str]] = []
    try:
        async def warm_up() -> None:
            import aiohttp

            async with aiohttp.ClientSession(server.url) as client:
                async def one(path: Path) -> None:
                    async with client.post("/hash", data=path.read_bytes()) as r:
                        assert r.status == 200, await r.text()

                await asyncio.gather(*(one(p) for p in paths[:16]))

        # The decoding workers start, and the network's buffers grow to a full batch, on the first uploads.
        asyncio.run(warm_up())
        mem_before = server.memory()

        if "lookups" in args.runs:
            def one_lookup():
                return "POST", "/lookup", {"json": {"hashes": [rng.bytes(12).hex()], "max_distance": RADIUS}}

            for concurrency in args.concurrency:
                lat, failed, elapsed = asyncio.run(drive(server.url, one_lookup, concurrency, seconds))
                rows.append((f"single-hash lookups, radius 8, {concurrency} in flight (req/s)",
                             f"{len(lat) / elapsed:,.0f}", "1,000"))
                rows.append(("  p50 / p99 latency (ms)",
                             f"{percentile(lat, 50) * 1e3:.1f} / {percentile(lat, 99) * 1e3:.1f}", "p99 < 50"))
                rows.append(("  failed requests", str(failed), "0"))

            def batch_lookup():
                return "POST", "/lookup", {"json": {"hashes": [rng.bytes(12).hex() for _ in range(BATCH)],
                                                    "max_distance": RADIUS}}

            lat, failed, elapsed = asyncio.run(drive(server.url, batch_lookup, 4, seconds))
            rows.append((f"batched lookups, {BATCH} a request, radius 8 (hashes/s)", f"{len(lat) * BATCH / elapsed:,.0f}",
                         "4,000"))
            rows.append(("  p50 / p99 latency of a batch (ms)",
                         f"{percentile(lat, 50) * 1e3:.1f} / {percentile(lat, 99) * 1e3:.1f}", ""))
            rows.append(("  failed requests", str(failed), "0"))

        if "hash" in args.runs:
            # Image hashing: the server, then the command, on the same files.
            blobs = [p.read_bytes() for p in paths]

            async def hash_all() -> tuple[float, int]:
                import aiohttp

                sem = asyncio.Semaphore(2 * workers)
                async with aiohttp.ClientSession(server.url, timeout=aiohttp.ClientTimeout(total=600)) as client:
                    async with client.post("/hash", data=blobs[0]) as r:  # warm-up
                        await r.read()
                    t0 = time.perf_counter()

                    async def one(blob: bytes) -> int:
                        async with sem, client.post("/hash", data=blob) as r:
                            await r.read()
                            return r.status

                    codes = await asyncio.gather(*(one(b) for b in blobs))
                    return time.perf_counter() - t0, sum(c != 200 for c in codes)

            served_s, hash_failed = asyncio.run(hash_all())
            cli_all = cli_hash_seconds(paths, workers)
            cli_one = cli_hash_seconds(paths[:1], workers)
            server_rate = len(paths) / served_s
            cli_rate = (len(paths) - 1) / max(cli_all - cli_one, 1e-9)
            rows.append((f"POST /hash, {len(paths)} images (images/s)", f"{server_rate:.1f}", ""))
            rows.append(("`neuralhash hash`, same images, steady (images/s)",
                         f"{cli_rate:.1f} (whole run {cli_all:.1f} s)", ""))
            rows.append(("  ratio server / command", f"{server_rate / cli_rate:.2f}x", ">= 0.8x"))
            rows.append(("  failed uploads", str(hash_failed), "0"))
        if "writes" in args.runs:
            import_file = Path(tempfile.gettempdir()) / f"neuralhash-bench-serve-import-{import_lines}.txt"
            write_import_file(import_file, import_lines)
            rows += lookups_while_lists_change(server, import_file, import_lines, seconds, rng)
        if "heavy" in args.runs:
            rows += lookups_beside_the_heaviest_request(server, seconds, rng)
        mem_after = server.memory()
        rows.append(("server private memory (RssAnon) before / after (MiB)",
                     f"{mem_before[0]:.0f} / {mem_after[0]:.0f}", "flat"))
        rows.append(("  index pages mapped in (RssFile) before / after (MiB)",
                     f"{mem_before[1]:.0f} / {mem_after[1]:.0f}", ""))
        rows.append(("decoding workers' RSS before / after (MiB)", f"{mem_before[2]:.0f} / {mem_after[2]:.0f}", "flat"))
    finally:
        code = server.stop()
        rows.append(("server exit code after SIGTERM", str(code), "0"))

    load = os.getloadavg()
    print(f"\nneuralhash serve: {n:,} hashes, {seconds:.0f} s a phase, {os.cpu_count()} CPUs, "
          f"client in the same machine, load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}\n")
    width = max(len(r[0]) for r in rows)
    print(f"| {'measure'.ljust(width)} | result | goal |")
    print(f"|{'-' * (width + 2)}|--------|------|")
    for name, value, goal in rows:
        print(f"| {name.ljust(width)} | {value} | {goal} |")


def make_images(folder: Path, count: int) -> list[Path]:
    """Camera-like JPEGs (1024 x 768, shapes and noise), as users upload."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(2)
    paths = []
    for i in range(count):
        img = Image.new("RGB", (1024, 768), tuple(int(c) for c in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(img)
        for _ in range(20):
            x0, x1 = sorted(rng.integers(0, 1024, 2).tolist())
            y0, y1 = sorted(rng.integers(0, 768, 2).tolist())
            draw.ellipse((x0, y0, x1, y1), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        arr = np.clip(np.asarray(img, dtype=np.int16) + rng.integers(-12, 13, (768, 1024, 3)), 0, 255)
        path = folder / f"img{i:04d}.jpg"
        Image.fromarray(arr.astype(np.uint8)).save(path, quality=88)
        paths.append(path)
    return paths


if __name__ == "__main__":
    main()
