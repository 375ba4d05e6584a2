"""``neuralhash extract`` on large sparse images: bytes read, time and peak memory.

Usage: python benchmarks/bench_extract.py [--gib 2.2] [--keep DIR]

Builds (with the test suite's writers, tests/apfs_writer.py) an APFS container
of ``--gib`` GiB holding the synthetic demo model's files at iOS's paths, its
metadata at the start and the files' data near the end (as far apart as the
disk allows), wrapped in GPT and saved three ways: a raw sparse disk image, an
LZFSE UDIF .dmg (empty runs as zero-fill chunks, as hdiutil writes them), and
an IPSW zip holding that .dmg stored. Each is then extracted by
``neuralhash.firmware.extract`` in a fresh subprocess, which reports the bytes
read from the file, the wall time and its peak resident memory (the whole
process: Python, NumPy, dissect.apfs included). Goals: under 1% of the bytes,
under 10 s, under 300 MB. Prints one table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

CHILD = r"""
import json, sys, time
src, out = sys.argv[1], sys.argv[2]
start = time.perf_counter()
from neuralhash.firmware import find_neuralhash, open_firmware, write_files
with open_firmware(src) as fw:
    files = find_neuralhash(fw)
    write_files(fw, files, out)
    read, size = fw.bytes_read, fw.size
seconds = time.perf_counter() - start
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forking parent (the image builder here).
with open("/proc/self/status") as fh:
    peak = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM:"))
print(json.dumps({"seconds": seconds, "bytes_read": read, "size": size, "peak": peak, "files": len(files)}))
"""


def build(folder: Path, gib: float) -> dict[str, Path]:
    import os

    import apfs_writer as W
    import extract_images as X

    os.environ.setdefault("NEURALHASH_CACHE", str(folder / "cache"))
    files = X.demo_files(folder / "cache")
    total_blocks = int(gib * (1 << 30)) // W.BLOCK
    data_blocks = sum(-(-len(d) // W.BLOCK) for d in files.values()) + 8
    container = X.ios_container(files, block_count=total_blocks, data_block=total_blocks - data_blocks)
    disk = W.wrap_gpt(container)
    raw = disk.save(folder / "disk.img")
    dmg = folder / "root.dmg"
    dmg.write_bytes(W.udif(disk))
    ipsw = W.ipsw(folder / "iPhone_15.0_19A346_Restore.ipsw", dmg.read_bytes())
    return {"raw GPT disk (sparse)": raw, "UDIF .dmg (LZFSE)": dmg, "IPSW (stored .dmg)": ipsw}


def measure(src: Path, out: Path) -> dict:
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(src), str(out)], capture_output=True, text=True,
                          env=env, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"{src}: {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=2.2, help="the disk's size in GiB (default 2.2)")
    parser.add_argument("--keep", type=Path, help="build the images in this folder and keep them")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        images = build(folder, args.gib)
        disk_bytes = images["raw GPT disk (sparse)"].stat().st_size
        rows = []
        for label, path in images.items():
            r = measure(path, folder / f"out-{path.stem}")
            rows.append((label, r))
    print(f"disk: {disk_bytes / 2**30:.2f} GiB; the files found: {rows[0][1]['files']} (7.3 MB)")
    print("| input | file size | bytes read | of the disk | time | peak memory |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, r in rows:
        print(f"| {label} | {r['size'] / 1e6:,.1f} MB | {r['bytes_read'] / 1e6:,.2f} MB | "
              f"{r['bytes_read'] / disk_bytes:.3%} | {r['seconds']:.2f} s | {r['peak'] / 1e6:.0f} MB |")
    print("goals: under 1% of the disk's bytes read, under 10 s, under 300 MB (peak RSS of the whole process)")


if __name__ == "__main__":
    main()
