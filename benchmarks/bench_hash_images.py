"""Image sets for benchmarks/bench_hash.py, built offline from scikit-image's bundled sample photos.

Only photos that ship inside the installed scikit-image package are used (they
load with the network unavailable and without pooch); nothing is downloaded.
Every image is a deterministic function of (set, index): a seeded crop, resize,
colour variation and, for the large set, a mosaic upscaled to 12 megapixels with
film grain so that the JPEG is as costly to decode as a camera photo. Images are
written once into a cache folder and reused; an index that is missing is drawn.

- set A: about 0.3 megapixels (640x480 or 480x640), JPEG quality 90, every fifth one PNG;
- set B: 12 megapixels (4000x3000 or 3000x4000), JPEG quality 90.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

VERSION = 1  # bump when the drawing changes, so that stale caches are not reused
SEED = 20210817

# scikit-image sample data that is bundled in the package itself (checked with the
# network disabled and pooch absent); the others (eagle, lily, kidney, ...) need pooch.
COLOUR = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")
GREY = ("camera", "brick", "grass", "gravel", "moon", "coins", "clock", "cell", "text", "page")

SETS = {
    # name: (size of the landscape image, format rule, description)
    "A": ((640, 480), "0.3 MP, JPEG q90 + every 5th PNG"),
    "B": ((4000, 3000), "12 MP, JPEG q90"),
}

_sources: list[np.ndarray] | None = None


def sources() -> list[np.ndarray]:
    """The sample photos as RGB uint8 arrays (greyscale ones tinted later, per image)."""
    global _sources
    if _sources is None:
        import skimage.data

        out = []
        for name in COLOUR + GREY:
            # Every name above is a file inside skimage/data/; skimage only calls pooch
            # for files that are not there, so this never touches the network.
            arr = np.asarray(getattr(skimage.data, name)())
            if arr.dtype != np.uint8:
                arr = (arr > 0).astype(np.uint8) * 255
            if arr.ndim == 2:
                arr = np.repeat(arr[..., None], 3, axis=2)
            out.append(np.ascontiguousarray(arr[..., :3]))
        _sources = out
    return _sources


def _tint(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A greyscale photo mapped between two random colours (a duotone)."""
    dark = tuple(int(v) for v in rng.integers(0, 90, 3))
    light = tuple(int(v) for v in rng.integers(170, 256, 3))
    return ImageOps.colorize(img.convert("L"), dark, light)


def _crop(src: np.ndarray, rng: np.random.Generator, aspect: float) -> Image.Image:
    """A random crop of ``src`` with the given width/height ratio, 45-100% of the largest such crop."""
    h, w = src.shape[:2]
    cw, ch = (w, int(w / aspect)) if w / h < aspect else (int(h * aspect), h)
    scale = rng.uniform(0.45, 1.0)
    cw, ch = max(8, int(cw * scale)), max(8, int(ch * scale))
    x0 = int(rng.integers(0, w - cw + 1))
    y0 = int(rng.integers(0, h - ch + 1))
    return Image.fromarray(src[y0:y0 + ch, x0:x0 + cw])


def _vary(img: Image.Image, rng: np.random.Generator, grey: bool) -> Image.Image:
    if grey:
        img = _tint(img, rng)
    img = ImageEnhance.Color(img).enhance(rng.uniform(0.6, 1.4))
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.8, 1.2))
    img = ImageEnhance.Contrast(img).enhance(rng.uniform(0.8, 1.25))
    if rng.random() < 0.5:
        img = ImageOps.mirror(img)
    return img


def _pick(rng: np.random.Generator, index: int) -> tuple[np.ndarray, bool]:
    srcs = sources()
    k = index if index < len(srcs) else int(rng.integers(0, len(srcs)))  # each photo once, then at random
    return srcs[k], k >= len(COLOUR)


def draw_a(index: int) -> Image.Image:
    rng = np.random.default_rng([SEED, 0, index])
    w, h = SETS["A"][0]
    if rng.random() < 0.2:
        w, h = h, w
    src, grey = _pick(rng, index)
    img = _crop(src, rng, w / h).resize((w, h), Image.LANCZOS)
    return _vary(img, rng, grey)


def draw_b(index: int) -> Image.Image:
    rng = np.random.default_rng([SEED, 1, index])
    w, h = SETS["B"][0]
    if rng.random() < 0.2:
        w, h = h, w
    cols, rows = [(1, 1), (2, 1), (2, 2), (3, 2)][int(rng.integers(0, 4))]
    if h > w:
        cols, rows = rows, cols
    canvas = Image.new("RGB", (w, h))
    for r in range(rows):
        for c in range(cols):
            x0, x1 = c * w // cols, (c + 1) * w // cols
            y0, y1 = r * h // rows, (r + 1) * h // rows
            src, grey = _pick(rng, index * 7 + r * cols + c)
            tile = _crop(src, rng, (x1 - x0) / (y1 - y0)).resize((x1 - x0, y1 - y0), Image.BICUBIC)
            canvas.paste(_vary(tile, rng, grey), (x0, y0))
    # Film grain: an upscaled photo alone is smooth and decodes faster than a camera JPEG.
    arr = np.asarray(canvas, dtype=np.int16)
    grain = rng.integers(-9, 10, size=arr.shape, dtype=np.int16)
    return Image.fromarray(np.clip(arr + grain, 0, 255).astype(np.uint8))


def file_name(set_name: str, index: int) -> str:
    ext = "png" if set_name == "A" and index % 5 == 4 else "jpg"
    return f"{set_name.lower()}{index:04d}.{ext}"


def _write(job: tuple[str, int, str]) -> str:
    set_name, index, folder = job
    path = Path(folder) / file_name(set_name, index)
    img = (draw_a if set_name == "A" else draw_b)(index)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if path.suffix == ".png":
        img.save(tmp, format="PNG")
    else:
        img.save(tmp, format="JPEG", quality=90)
    os.replace(tmp, path)
    return str(path)


def build_set(root: Path, set_name: str, count: int, log=print) -> list[Path]:
    """The first ``count`` images of set ``set_name`` under ``root``, drawing those not cached yet."""
    folder = Path(root) / f"set{set_name}-v{VERSION}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / file_name(set_name, i) for i in range(count)]
    missing = [(set_name, i, str(folder)) for i, p in enumerate(paths) if not p.is_file()]
    if missing:
        log(f"drawing {len(missing)} images of set {set_name} into {folder} ...")
        sources()  # load once in the parent, so that forked workers share it
        with ProcessPoolExecutor(os.cpu_count()) as pool:
            list(pool.map(_write, missing))
    return paths


if __name__ == "__main__":
    import sys
    import tempfile

    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.gettempdir()) / "neuralhash-bench-hash" / "images"
    for name, n in (("A", 200), ("B", 40)):
        ps = build_set(root, name, n)
        size = sum(p.stat().st_size for p in ps)
        print(f"set {name}: {len(ps)} images, {size / 1e6:.1f} MB in {ps[0].parent}")
