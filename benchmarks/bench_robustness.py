"""Benchmark of `neuralhash robustness` on scikit-image's bundled sample photos.

Usage: pip install '.[bench,robustness]' && python benchmarks/bench_robustness.py [--model SRC] [--quick]

Prints three tables:
1. speed: the whole measurement (every edit, every hash) on the 17 sample photos
   with the edits done in this process and in worker processes, side by side in
   one run, and a check that both give the same numbers;
2. cost per edit family on one 12-megapixel photo (the edits dominate on camera
   images), slowest first;
3. the robustness figures themselves: per hash, the distinct-pair range, the
   threshold and the match rate at it, and the median distance for the edits
   of the published table. With the demo model (the default) the NeuralHash
   column carries no meaning: run with --model pointing at Apple's files.
The HTML report of the run is written to --out.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_hash_images  # noqa: E402  (the benchmarks' shared photo sets)

from neuralhash.hashing import NeuralHash  # noqa: E402
from neuralhash.robustness import default_edits, measure, write_report  # noqa: E402
from neuralhash.robustness.hashers import CLASSIC_HASHERS  # noqa: E402
from neuralhash.robustness.report import summarise  # noqa: E402
from neuralhash.robustness.measuring import image_key, shrink  # noqa: E402
from neuralhash.robustness.edits import apply_edit  # noqa: E402
from neuralhash.hashing.image import decode  # noqa: E402

# The published measurements of the real model (a 2026 native reimplementation), as (label, bits).
PUBLISHED = [("downscale 0.5x", "0"), ("upscale 1.5x", "0"), ("upscale 3x", "0"), ("jpeg q35", "0"),
             ("contrast 0.6x", "0"), ("brightness 1.45x", "5"), ("hflip", "27")]


def photos(root: Path) -> list[str]:
    """The bundled sample photos as PNG files (written once)."""
    root.mkdir(parents=True, exist_ok=True)
    names = bench_hash_images.COLOUR + bench_hash_images.GREY
    out = []
    for name, arr in zip(names, bench_hash_images.sources()):
        path = root / f"{name}.png"
        if not path.exists():
            Image.fromarray(arr).save(path)
        out.append(str(path))
    return out


def timed(func):
    start = time.perf_counter()
    value = func()
    return value, time.perf_counter() - start


def speed_table(paths: list[str], nh: NeuralHash, edits, workers: int):
    rows, results = [], {}
    for label, w in (("in this process", 0), (f"{workers} worker processes", workers)):
        result, seconds = timed(lambda: measure(paths, nh, edits=edits, workers=w))
        results[w] = result
        copies = len(paths) * len(edits)
        rows.append((label, seconds, len(paths) / seconds, copies / seconds))
    same = all(np.array_equal(results[0].distances[n], results[workers].distances[n]) for n in results[0].distances)
    print(f"\n1. Speed: {len(paths)} photos x {len(edits)} edits x {len(results[0].hashers)} hashes")
    print(f"{'mode':<24}{'seconds':>9}{'images/s':>10}{'copies/s':>10}{'vs 1 process':>14}")
    for label, seconds, ips, cps in rows:
        print(f"{label:<24}{seconds:>9.1f}{ips:>10.2f}{cps:>10.1f}{rows[0][1] / seconds:>13.2f}x")
    print(f"same numbers both ways: {'yes' if same else 'NO'}")
    return results[workers]


def family_costs(nh: NeuralHash, edits, original: Image.Image) -> dict[str, list[float]]:
    """Per family: seconds editing, seconds hashing (all four hashes), number of edits."""
    key = image_key(original)
    per_family: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    for edit in edits:
        copy, t_edit = timed(lambda: apply_edit(edit, original, seed=0, image_key=key))
        start = time.perf_counter()
        pixels = decode(copy)
        for h in CLASSIC_HASHERS:
            h.func(copy)
        nh.hash_pixels([pixels])
        cost = per_family[edit.family]
        cost[0] += t_edit
        cost[1] += time.perf_counter() - start
        cost[2] += 1
    return per_family


def cost_table(nh: NeuralHash, edits, big: Path, max_side: int = 1024) -> None:
    original = Image.open(big).convert("RGB")
    per_family = family_costs(nh, edits, original)
    total = sum(c[0] + c[1] for c in per_family.values())
    shrunk = family_costs(nh, edits, shrink(original, max_side))
    total_shrunk = sum(c[0] + c[1] for c in shrunk.values())
    print(f"\n2. Cost per edit family on one {original.width}x{original.height} photo "
          f"({len(edits)} copies, {total:.1f} s in one process), slowest first")
    print(f"{'family':<16}{'edits':>6}{'edit s':>9}{'hash s':>9}{'share':>8}")
    for family, (t_edit, t_hash, n) in sorted(per_family.items(), key=lambda kv: -(kv[1][0] + kv[1][1]))[:12]:
        print(f"{family:<16}{n:>6}{t_edit:>9.2f}{t_hash:>9.2f}{(t_edit + t_hash) / total:>7.0%}")
    print(f"the same photo with --max-side {max_side}: {total_shrunk:.1f} s ({total / total_shrunk:.0f}x faster)")


def figures_table(result) -> None:
    names = [h.name for h in result.hashers]
    print(f"\n3. Figures ({result.model}{'; SYNTHETIC WEIGHTS: NeuralHash means nothing' if result.synthetic else ''})")
    print(f"{'':<22}" + "".join(f"{n:>14}" for n in names) + f"{'published NH':>14}")
    line = f"{'distinct pairs':<22}"
    for n in names:
        d = result.distinct[n]
        line += f"{f'{d.min()}-{d.max()}':>14}"
    print(line + f"{'41-53':>14}")
    print(f"{'threshold':<22}" + "".join(f"{result.threshold(n):>14}" for n in names))
    # The share of all measured copies (not the mean of per-edit rates, which weighs edits with missing copies up).
    print(f"{'copies matched':<22}" + "".join(f"{h.match_rate:>14.0%}" for h in summarise(result)))
    labels = result.edit_labels
    for label, published in PUBLISHED:
        if label not in labels:
            continue
        j = labels.index(label)
        cells = "".join(f"{int(result.edit_stats(n)['median'][j]):>14}" for n in names)
        print(f"{label + ' (median)':<22}{cells}{published:>14}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo", help="the NeuralHash model (default: the synthetic demo)")
    parser.add_argument("--quick", action="store_true", help="6 photos, no 12 MP cost table: a smoke run")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "neuralhash-bench-robustness")
    args = parser.parse_args()

    nh = NeuralHash.from_source(args.model)
    paths = photos(args.out / "photos")
    if args.quick:
        paths = paths[:6]
    edits = default_edits()
    workers = os.cpu_count() or 1
    result = speed_table(paths, nh, edits, workers)
    if not args.quick:
        big = bench_hash_images.build_set(args.out / "large", "B", 1, log=lambda *a: None)[0]
        cost_table(nh, edits, big)
    figures_table(result)
    write_report(result, args.out / "report")
    print(f"\nreport: {args.out / 'report' / 'index.html'}")


if __name__ == "__main__":
    main()
