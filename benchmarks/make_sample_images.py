"""Draw the sample images shipped in src/neuralhash/data/ (run once; the outputs are committed).

Usage: python benchmarks/make_sample_images.py [output folder]

Every image is procedural (Pillow + NumPy, fixed seeds), small, and visually
different from the others, so that a calibrated synthetic model gives them
clearly different hashes. Not part of the package.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

OUT = Path(__file__).resolve().parents[1] / "src" / "neuralhash" / "data"


def landscape(w: int = 320, h: int = 240) -> Image.Image:
    """A sky gradient, a sun with a halo, two ranges of hills and a lake."""
    y = np.linspace(0.0, 1.0, h)[:, None, None]
    top, bottom = np.array([40, 90, 190.0]), np.array([250, 190, 140.0])
    sky = np.broadcast_to(top * (1 - y) + bottom * y, (h, w, 3)).astype(np.uint8)
    img = Image.fromarray(sky)
    d = ImageDraw.Draw(img)
    for r, c in ((46, (255, 230, 160)), (38, (255, 215, 120)), (30, (255, 200, 60))):
        d.ellipse((230 - r, 70 - r, 230 + r, 70 + r), fill=c)
    xs = np.arange(w + 1)
    far = 150 - 25 * np.sin(xs / 37.0) - 12 * np.sin(xs / 13.0 + 1)
    near = 185 - 20 * np.sin(xs / 51.0 + 2) - 6 * np.sin(xs / 7.0)
    d.polygon([(0, h)] + [(int(x), int(v)) for x, v in zip(xs, far)] + [(w, h)], fill=(90, 110, 140))
    d.polygon([(0, h)] + [(int(x), int(v)) for x, v in zip(xs, near)] + [(w, h)], fill=(40, 110, 50))
    d.rectangle((0, 210, w, h), fill=(60, 120, 180))
    return img.filter(ImageFilter.SMOOTH)


def checkerboard(w: int = 288, h: int = 216, cell: int = 24) -> Image.Image:
    yy, xx = np.mgrid[0:h, 0:w]
    board = ((yy // cell + xx // cell) % 2).astype(bool)
    rgb = np.where(board[..., None], np.array([235, 235, 225]), np.array([30, 30, 45])).astype(np.uint8)
    return Image.fromarray(rgb)


def circles(w: int = 300, h: int = 300) -> Image.Image:
    """Concentric rings whose hue turns with the radius."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    r = np.hypot(xx - w * 0.45, yy - h * 0.55)
    ring = (r // 14) % 6
    palette = np.array([[220, 40, 40], [240, 160, 30], [240, 230, 60], [60, 170, 80], [40, 110, 220], [140, 60, 180]])
    return Image.fromarray(palette[ring.astype(int)].astype(np.uint8))


def stripes(w: int = 320, h: int = 200) -> Image.Image:
    """Diagonal stripes of varying width and colour."""
    yy, xx = np.mgrid[0:h, 0:w]
    t = xx + 0.6 * yy
    band = (np.sqrt(t) * 2.2).astype(int) % 5
    palette = np.array([[20, 160, 160], [250, 250, 250], [230, 80, 120], [30, 40, 90], [250, 200, 40]])
    return Image.fromarray(palette[band].astype(np.uint8))


def noise(w: int = 256, h: int = 256) -> Image.Image:
    """A smooth colour noise texture (value noise at three scales)."""
    rng = np.random.default_rng(7)
    acc = np.zeros((h, w, 3))
    for cells, weight in ((4, 0.55), (16, 0.3), (64, 0.15)):
        small = rng.uniform(0, 255, (cells, cells, 3)).astype(np.uint8)
        acc += weight * np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC), dtype=np.float64)
    return Image.fromarray(np.clip(acc, 0, 255).astype(np.uint8))


def shapes(w: int = 320, h: int = 240) -> Image.Image:
    """A few flat shapes on a pale background."""
    img = Image.new("RGB", (w, h), (236, 232, 220))
    d = ImageDraw.Draw(img)
    d.rectangle((20, 30, 120, 130), fill=(200, 40, 40))
    d.ellipse((150, 20, 290, 160), fill=(40, 90, 200))
    d.polygon([(60, 220), (130, 140), (200, 220)], fill=(240, 180, 20))
    d.line((210, 200, 310, 170), fill=(20, 20, 20), width=6)
    d.regular_polygon((255, 205, 28), 6, fill=(40, 150, 70))
    return img


IMAGES = {
    "landscape.png": landscape,
    "checkerboard.png": checkerboard,
    "circles.png": circles,
    "stripes.png": stripes,
    "noise.jpg": noise,
    "shapes.png": shapes,
}


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    out.mkdir(parents=True, exist_ok=True)
    for name, draw in IMAGES.items():
        img = draw()
        path = out / name
        if name.endswith(".jpg"):
            img.save(path, quality=88, optimize=True)
        else:
            img.save(path, optimize=True)
        print(f"{path}: {img.size[0]}x{img.size[1]}, {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
