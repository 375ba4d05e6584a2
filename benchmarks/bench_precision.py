"""How far apart are the hashes of NeuralHash's float32 and float16 files? (one command, one table)

Apple ships NeuralHash v3b twice: ``NeuralHashv3b-current`` (float32 weights) and
``NeuralHashv3b_fp16-current`` (float16 kernels), and both get the one model id
``neuralhash-v3b``. Without Apple's weights, this measures the same question on
the synthetic network: the demo's calibrated float32 weights are written in both
layouts (the float16 file holding exactly the float32 weights rounded to float16,
as a float16 export of the same network would), both are converted, and every
image is hashed by both. The table gives the bits that differ per image.

Usage: python benchmarks/bench_precision.py [--images N] [--out DIR]

Images: the package's sample images and N natural photos of bench_hash.py's set A
(scikit-image's bundled photos, cropped and recoloured; drawn once into --out).
The synthetic network's random weights make it more sensitive than Apple's trained
one (see bench_hash.py), so these figures are an upper bound for the real pair.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_hash_images  # noqa: E402

from neuralhash.convert import convert  # noqa: E402
from neuralhash.espresso import EspressoModel  # noqa: E402
from neuralhash.hashing import NeuralHash  # noqa: E402
from neuralhash.demo.synthetic import (TRANSFORM_PARAMS, _synthetic_parts, neuralhash_v3b_layers,  # noqa: E402
                                  sample_image_paths)

_F16_KEYS = ("blob_weights_f16", "w_f16_t")
_BLOB_KEYS = ("blob_weights", "blob_weights_f16", "w_f16_t", "blob_biases", "b_f32", "blob_batchnorm_params")


def float16_blobs(blobs32: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """The float32 network's weights in the float16 file's layout (blob ids are shared by both)."""
    out = {}
    for layer in neuralhash_v3b_layers("float16"):
        for key in _BLOB_KEYS:
            if key in layer:
                blob_id = int(layer[key])
                values = blobs32[blob_id]
                if key == "w_f16_t":  # stored transposed, [nB, nC]
                    values = values.T.copy()
                out[blob_id] = values.astype(np.float16) if key in _F16_KEYS else values
    return out


def hasher(layers, blobs, shapes) -> NeuralHash:
    model = EspressoModel.from_layers(layers, blobs, shapes, TRANSFORM_PARAMS)
    return NeuralHash(None, onnx_bytes=convert(model).SerializeToString(deterministic=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100, help="natural photos of set A (default 100)")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "neuralhash-bench-hash",
                        help="cache folder of the image sets (shared with bench_hash.py)")
    args = parser.parse_args()

    layers32, shapes, blobs32 = _synthetic_parts("float32", 0, True)
    fp32 = hasher(layers32, blobs32, shapes)
    fp16 = hasher(neuralhash_v3b_layers("float16"), float16_blobs(blobs32), shapes)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    sets = {
        "sample images (package)": list(sample_image_paths()),
        f"natural photos (set A, {args.images})": bench_hash_images.build_set(args.out / "images", "A", args.images,
                                                                               log),
    }
    print("bits that differ between the float32 and the float16 file's hashes, per image (of 96);")
    print("synthetic v3b network, the same weights in both files (float16 = float32 rounded once)")
    header = ("images", "n", "mean", "max", "identical")
    rows = []
    every = []
    for name, paths in sets.items():
        d = [a.hash.hamming(b.hash) for a, b in zip(fp32.hash_many(paths, workers=0), fp16.hash_many(paths, workers=0))
             if a.ok and b.ok]
        every += d
        rows.append((name, len(d), f"{statistics.mean(d):.2f}", max(d), f"{sum(x == 0 for x in d)}/{len(d)}"))
    rows.append(("all", len(every), f"{statistics.mean(every):.2f}", max(every),
                 f"{sum(x == 0 for x in every)}/{len(every)}"))
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    print("  ".join(str(h).ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))


if __name__ == "__main__":
    main()
