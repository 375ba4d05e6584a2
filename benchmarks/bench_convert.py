"""Conversion and inference benchmark for the NeuralHash-size model.

Usage: python benchmarks/bench_convert.py [--repeats N] [--images N]

Prints one table:
- convert: load + convert + save of the synthetic NeuralHash v3b Espresso files
  (float32 and float16), as `neuralhash convert` does it, in a fresh subprocess
  each time: wall time, and peak RSS above a baseline taken after a warm-up
  conversion of a one-layer model (so that it counts data, not library code);
  goals: under 1 s, peak under 3x the weights file;
- convert of the real compiled models in ../shared/fixtures/coreml-wild
  (FindFour, UxModel, SSDOcr, MNISTClassifier; skipped when absent), the same way;
- inference: ONNX Runtime time per image, tidied graph against --no-optimize,
  interleaved in one run so machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
import numpy as np
import neuralhash.convert, neuralhash.espresso

def rss_bytes():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize()

# Warm-up on a one-layer model: loads the code of every stage (onnx's checker and
# shape inference are large C++ extensions), so the baseline holds code, not data.
tiny = neuralhash.espresso.EspressoModel.from_layers(
    [{"type": "convolution", "name": "c", "bottom": "x", "top": "y", "C": 2, "K": 3, "Nx": 3, "Ny": 3,
      "blob_weights": 1, "pad_mode": 1}], {1: np.ones((2, 3, 3, 3), "f4")}, {"x": (1, 3, 8, 8)})
neuralhash.convert.convert(tiny).SerializeToString()

src, out, optimize = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
base = rss_bytes()
start = time.perf_counter()
model = neuralhash.espresso.load_model(src)
proto = neuralhash.convert.convert(model, optimize=optimize)
del model  # as the CLI does: the proto holds its own copy of the weights
neuralhash.convert.save_model(proto, out)
seconds = time.perf_counter() - start
# VmHWM, not ru_maxrss: the latter survives exec and so starts at the parent's size.
with open("/proc/self/status") as fh:
    peak = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM:"))
print(json.dumps({"seconds": seconds, "peak_above_baseline": peak - base}))
"""


def measure_convert(src: Path, out: Path, optimize: bool, repeats: int) -> tuple[float, int]:
    times, peaks = [], []
    for _ in range(repeats):
        res = subprocess.run([sys.executable, "-c", CHILD, str(src), str(out), "1" if optimize else "0"],
                             check=True, capture_output=True, text=True)
        row = json.loads(res.stdout)
        times.append(row["seconds"])
        peaks.append(row["peak_above_baseline"])
    return statistics.median(times), max(peaks)


WILD = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "coreml-wild"
WILD_MODELS = ("FindFour", "UxModel", "SSDOcr", "MNISTClassifier")


def wild_rows(tmp: Path, repeats: int) -> list[tuple[str, str, str, str]]:
    """Convert time and peak memory of each real model present, tidied and --no-optimize."""
    rows = []
    for name in WILD_MODELS:
        net = WILD / f"{name}.mlmodelc" / "model.espresso.net"
        weights = net.with_name("model.espresso.weights")
        if not net.is_file() or not weights.is_file():
            rows.append((f"convert {name}", "skipped", "", f"not in {WILD}"))
            continue
        size = weights.stat().st_size
        for optimize in (True, False):
            seconds, peak = measure_convert(net, tmp / f"{name}.onnx", optimize, repeats)
            rows.append((f"convert {name} {'tidied' if optimize else '--no-optimize'}", f"{seconds * 1000:.0f} ms",
                         f"{peak / 1e6:.1f} MB", f"{peak / size:.2f}x weights ({size / 1e6:.1f} MB)"))
    return rows


def measure_inference(paths: dict[str, Path], images: int) -> dict[str, float]:
    import numpy as np

    from neuralhash.hashing.runtime import make_session

    sessions = {k: make_session(p) for k, p in paths.items()}
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 360, 360)).astype(np.float32)
    for s in sessions.values():  # warm-up
        s.run(None, {"image": x})
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(images):
        for k, s in sessions.items():
            t = time.perf_counter()
            s.run(None, {"image": x})
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="conversions per variant (median time, max peak)")
    parser.add_argument("--images", type=int, default=30, help="inference runs per graph")
    args = parser.parse_args()

    from neuralhash.demo.synthetic import write_neuralhash_v3b

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        onnx_paths = {}
        for precision in ("float32", "float16"):
            src = tmp / precision
            sources = write_neuralhash_v3b(src, precision=precision, calibrate=False)
            weights_size = sources.weights.stat().st_size
            for optimize in (True, False):
                out = tmp / f"{precision}-{'opt' if optimize else 'literal'}.onnx"
                seconds, peak = measure_convert(src, out, optimize, args.repeats)
                rows.append((f"convert {precision} {'tidied' if optimize else '--no-optimize'}",
                             f"{seconds * 1000:.0f} ms", f"{peak / 1e6:.1f} MB",
                             f"{peak / weights_size:.2f}x weights ({weights_size / 1e6:.1f} MB)"))
                if precision == "float32":
                    onnx_paths["tidied" if optimize else "--no-optimize"] = out
        rows += wild_rows(tmp, args.repeats)
        per_image = measure_inference(onnx_paths, args.images)
    base = per_image["--no-optimize"]
    for name, seconds in per_image.items():
        rows.append((f"onnxruntime per image, {name}", f"{seconds * 1000:.2f} ms", "", f"{base / seconds:.2f}x vs --no-optimize"))

    header = ("measurement", "time", "peak mem", "ratio")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(4)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))


if __name__ == "__main__":
    main()
