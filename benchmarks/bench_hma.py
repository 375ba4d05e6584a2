"""NeuralHash's index in Hasher-Matcher-Actioner at scale, beside HMA's PDQ index, in one run.

For each signal type and size N (default 1M and 10M):

- **build**: ``index_cls.build(signals)`` on the list HMA's indexer makes (``_prepare_index``:
  ``[(signal_str, bank_content_id), ...]``), in a fresh process; time and peak memory above that
  input list (Linux VmHWM, reset after the list is made), and the list's own size;
- **serialized** size (``index.serialize``, what HMA writes to a PostgreSQL large object), and the
  time of HMA's own ``store_signal_type_index`` (serialize + large-object import);
- **load**: ``SignalTypeIndex.deserialize`` of it (what a matcher runs on what it downloads), then a
  matcher (HMA under gunicorn, matcher role only, 1 worker x 4 threads, refreshing every second)
  from its start to its first answer holding a match (HMA's own log of the load is no help: it
  prints any duration of a second or more as "0 seconds"), and the worker's memory after;
- **lookup** latency through ``GET /m/raw_lookup`` at 1 and 4 concurrent clients (stored signals
  with 0-3 bits flipped, so every lookup finds its signal), p50 / p99 and requests per second.

Run with HMA's environment (scripts/hma-venv.sh) and PostgreSQL (scripts/hma-postgres.sh)::

    .venv-hma/bin/python benchmarks/bench_hma.py                      # 1M and 10M, both types
    .venv-hma/bin/python benchmarks/bench_hma.py --sizes 1000000 --types neuralhash

Goal at 10M NeuralHash signals: build < 60 s and < 2 GB, lookup p99 < 50 ms.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import json
import random
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from neuralhash.integrations.hma.local import Database, LocalHMA, find_venv  # noqa: E402

BITS = {"neuralhash": 96, "pdq": 256}
N_SAMPLES = 400


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def make_signals(signal_type: str, n: int, seed: int) -> list:
    """(hex, content id) pairs as HMA's indexer lists them: random hashes, ids 1..n."""
    width = BITS[signal_type] // 4
    rng = random.Random(seed)
    out = []
    step = 1 << 20
    for start in range(0, n, step):
        k = min(step, n - start)
        text = rng.randbytes(k * width // 2).hex()
        out.extend((text[i * width:(i + 1) * width], start + i + 1) for i in range(k))
    return out


def signal_class(signal_type: str):
    if signal_type == "neuralhash":
        from neuralhash.integrations.threatexchange import NeuralHashSignal

        return NeuralHashSignal
    from threatexchange.signal_type.pdq.signal import PdqSignal

    return PdqSignal


def phase_build(signal_type: str, n: int, seed: int) -> dict:
    """In a fresh process: build, measure, serialize, and store in PostgreSQL through HMA."""
    from OpenMediaMatch.app import create_app
    from OpenMediaMatch.persistence import get_storage
    from threatexchange.signal_type.index import SignalTypeIndex
    from threatexchange.storage.interfaces import SignalTypeIndexBuildCheckpoint

    cls = signal_class(signal_type)
    before_list = _status_kb("VmRSS")
    signals = make_signals(signal_type, n, seed)
    rss_input = _status_kb("VmRSS")
    samples = signals[:: max(1, n // N_SAMPLES)][:N_SAMPLES]
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    t0 = time.perf_counter()
    index = cls.get_index_cls().build(signals)
    build_s = time.perf_counter() - t0
    peak_kb = _status_kb("VmHWM") - rss_input
    del signals
    with tempfile.TemporaryFile() as f:
        t0 = time.perf_counter()
        index.serialize(f)
        serialize_s = time.perf_counter() - t0
        size = f.tell()
        app = create_app()
        with app.app_context():
            t0 = time.perf_counter()
            get_storage().store_signal_type_index(
                cls, index, SignalTypeIndexBuildCheckpoint(last_item_timestamp=int(time.time()), last_item_id=n,
                                                           total_hash_count=n))
            store_s = time.perf_counter() - t0
        del index
        f.seek(0)
        t0 = time.perf_counter()
        SignalTypeIndex.deserialize(f)  # as HMA's matchers load it (the base class's, see docs/hma.md)
        deserialize_s = time.perf_counter() - t0
    return {"build_s": build_s, "build_peak_mb": peak_kb / 1024, "input_mb": (rss_input - before_list) / 1024,
            "serialized_mb": size / 2**20, "serialize_s": serialize_s, "deserialize_s": deserialize_s, "store_s": store_s, "samples": samples}


def _flip(hex_text: str, bits: int, rng: random.Random) -> str:
    value = int(hex_text, 16)
    for b in rng.sample(range(len(hex_text) * 4), bits):
        value ^= 1 << b
    return f"{value:0{len(hex_text)}x}"


def _lookups(port: int, signal_type: str, queries: list, clients: int) -> tuple[list, float]:
    """Latencies (s) of GET /m/raw_lookup, ``clients`` at a time, each on its own keep-alive connection."""
    per = [queries[k::clients] for k in range(clients)]

    def run(batch):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        times = []
        for signal, want in batch:
            path = "/m/raw_lookup?" + urllib.parse.urlencode({"signal_type": signal_type, "signal": signal})
            t0 = time.perf_counter()
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            times.append(time.perf_counter() - t0)
            if resp.status != 200 or want not in json.loads(body)["matches"]:
                raise RuntimeError(f"lookup of {signal} did not find {want}: {resp.status} {body[:200]!r}")
            if resp.getheader("Connection", "").lower() == "close":
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        conn.close()
        return times

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        times = [x for part in pool.map(run, per) for x in part]
    return times, time.perf_counter() - t0


def _pct(values: list, q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def _worker_rss_mb(master_pid: int) -> float:
    total = 0
    for child in Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split():
        for line in Path(f"/proc/{child}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def bench_one(venv: Path, signal_type: str, n: int, requests: int, log_dir: Path) -> dict:
    with Database.create(prefix="neuralhash_bench") as db:
        server = LocalHMA(venv, db.uri, env={
            "PYTHONPATH": str(ROOT / "src"), "OMM_ROLE_HASHER": "false", "OMM_ROLE_CURATOR": "false",
            "OMM_UI_ENABLED": "false", "OMM_TASK_FETCHER": "false", "OMM_TASK_INDEXER": "false",
            "OMM_TASK_INDEX_CACHE": "true", "OMM_TASK_INDEX_CACHE_INTERVAL_SECONDS": "1",
            "OMM_INDEX_CACHE_MAX_STALE_SEC": "0"},
            workers=1, threads=4, log=log_dir / f"{signal_type}-{n}.log")
        server.migrate()
        done = subprocess.run([sys.executable, __file__, "--phase-build", signal_type, str(n)],
                              capture_output=True, text=True, env=server.env, timeout=3600)
        if done.returncode:
            raise RuntimeError(f"build {signal_type} {n}: {done.stderr[-3000:]}")
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rng = random.Random(7)
        queries = [(_flip(h, rng.randint(0, 3), rng), cid) for h, cid in row.pop("samples")]
        with server:
            t0 = time.perf_counter()
            while True:  # the matcher refreshes every second; the first answer with a match means loaded
                status, body = server.request("GET", "/m/raw_lookup", params={"signal_type": signal_type,
                                                                               "signal": queries[0][0]})
                if status == 200 and body["matches"]:
                    break
                if time.perf_counter() - t0 > 1800:
                    raise RuntimeError(f"the matcher never loaded the index: {server.log_tail()}")
                time.sleep(0.2)
            row["load_wall_s"] = time.perf_counter() - t0
            row["matcher_rss_mb"] = _worker_rss_mb(server._proc.pid)
            _lookups(server.port, signal_type, queries[:20], 1)  # warm up
            for clients in (1, 4):
                batch = (queries * (requests // len(queries) + 1))[:requests]
                times, wall = _lookups(server.port, signal_type, batch, clients)
                row[f"c{clients}"] = (_pct(times, 0.5) * 1e3, _pct(times, 0.99) * 1e3, len(times) / wall)
        print(json.dumps(row), file=sys.stderr, flush=True)  # before the database is dropped
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000000,10000000")
    parser.add_argument("--types", default="neuralhash,pdq")
    parser.add_argument("--requests", type=int, default=400, help="lookups per concurrency level")
    parser.add_argument("--phase-build", nargs=2, metavar=("TYPE", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase_build:
        print(json.dumps(phase_build(args.phase_build[0], int(args.phase_build[1]), seed=1)))
        return
    venv = find_venv(ROOT)
    log_dir = Path(tempfile.mkdtemp(prefix="bench-hma-"))
    print(f"HMA logs in {log_dir}", file=sys.stderr)
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        for signal_type in args.types.split(","):
            print(f"... {signal_type} {n:,}", file=sys.stderr)
            row = bench_one(venv, signal_type, n, args.requests, log_dir)
            rows.append((signal_type, n, row))
    print("| signals | index | build | build peak (input list) | serialized | store in PostgreSQL | deserialize "
          "| matcher: start to first match | matcher RSS | raw lookup p50 / p99, 1 client | 4 clients "
          "| req/s at 4 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for signal_type, n, r in rows:
        print(f"| {n:,} | {signal_type} | {r['build_s']:.1f} s | {r['build_peak_mb']:,.0f} MB ({r['input_mb']:,.0f} MB) "
              f"| {r['serialized_mb']:,.0f} MB | {r['store_s']:.1f} s | {r['deserialize_s']:.1f} s "
              f"| {r['load_wall_s']:.1f} s "
              f"| {r['matcher_rss_mb']:,.0f} MB | {r['c1'][0]:.1f} / {r['c1'][1]:.1f} ms "
              f"| {r['c4'][0]:.1f} / {r['c4'][1]:.1f} ms | {r['c4'][2]:,.0f} |")


if __name__ == "__main__":
    main()
