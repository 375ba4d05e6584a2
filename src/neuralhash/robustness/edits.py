"""The catalogue of everyday edits that ``neuralhash robustness`` applies to every image.

An :class:`Edit` is one edit at one strength (``"jpeg q35"``, ``"crop left 10%"``).
:func:`default_edits` returns the fixed catalogue, grouped into families
(``downscale``, ``jpeg``, ``rotate``...) with strengths ascending. Each edit is a
pure function of ``(image, strength, rng)``: RGB in, a new RGB image out. The
few edits that draw random numbers (noise, the text and logo positions, the logo
colours) take them from :func:`edit_rng`, which depends only on the run's seed,
the edit's label and the image's key, so results do not depend on the order (or
the process) in which images and edits are handled.

Conventions, chosen once for every edit:

- sizes are rounded half up (``floor(x + 0.5)``) and never below 1 pixel, so
  tiny images (even 1 x 1) never give an empty result; crops always keep at
  least one row and column;
- resizing uses ``LANCZOS`` (what photo tools use to shrink), small rotations
  ``BICUBIC``; rotations and right-angle turns are counter-clockwise, as in
  Pillow and ``numpy.rot90``;
- blur and sharpening radii are relative to the image: ``strength * min(w, h) /
  360`` pixels, so their effect on the 360 x 360 NeuralHash input (and on the
  other hashes' small inputs) is the same whatever the original size;
- fills: black for rotation corners and letterbox bars, white for padding;
- JPEG and WebP edits return the image decoded from the re-encoded bytes (its
  ``format`` is ``"JPEG"`` / ``"WEBP"``).

Edits are module-level functions or :func:`functools.partial` of them, so an
:class:`Edit` pickles (the measurement runs edits in worker processes).
"""

from __future__ import annotations

import io
import math
import zlib
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Iterable

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont

from ..errors import ImageError

EditFunc = Callable[[Image.Image, float, np.random.Generator], Image.Image]
#: (width, height, strength) -> the edited copy's (width, height), computed before any pixel is touched.
SizeFunc = Callable[[int, int, float], tuple[int, int]]

#: Blur and sharpening radii are given at this image size (the NeuralHash input side).
REFERENCE_SIDE = 360

_BLACK = (0, 0, 0)
_WHITE = (255, 255, 255)
_NOISE_CHUNK = 1 << 20  # pixels per block of Gaussian noise: bounds the float32 scratch to 12 MB


@dataclass(frozen=True)
class Edit:
    """One edit at one strength, e.g. family ``"jpeg"``, strength 35, label ``"jpeg q35"``."""

    family: str       # group shown in tables and plots: "downscale", "jpeg", "crop-left"...
    strength: float   # x-axis value within the family: scale factor, quality, fraction, degrees...
    unit: str         # what strength measures: "scale", "quality", "fraction", "degrees"...
    label: str        # unique short name, an identifier in CSV files and tables
    description: str  # one line: what is done exactly
    func: EditFunc = field(compare=False, repr=False)
    #: The copy's size from the original's (at most that: crops are smaller); None: the original's
    #: size or smaller. Lets a run refuse an edit whose copy would be too large before allocating
    #: it (a 3x upscale of 81 MP is 729 MP); a copy larger than this says is an error.
    size: SizeFunc | None = field(default=None, compare=False, repr=False)

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """The size of this edit's copy of a ``width`` x ``height`` image."""
        return (width, height) if self.size is None else self.size(width, height, self.strength)

    def apply(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        """RGB image in, a new RGB image out (mode ``"RGB"``); never modifies the input."""
        source = image if image.mode == "RGB" else image.convert("RGB")
        out = self.func(source, self.strength, rng)
        if out.mode != "RGB":
            out = out.convert("RGB")
        if out is image:  # an edit that found nothing to do still hands back a copy
            out = image.copy()
        return out


# -- helpers -------------------------------------------------------------------------------


def _round(x: float) -> int:
    """Round half up; the epsilon absorbs float error (0.1 * 5 is 0.5, not 0.49999...)."""
    return int(math.floor(x + 0.5 + 1e-9))


def _size(x: float) -> int:
    """A rounded size of at least one pixel."""
    return max(1, _round(x))


def _relative_radius(image: Image.Image, strength: float) -> float:
    """``strength`` pixels at the 360-pixel reference side, scaled to this image."""
    return strength * min(image.size) / REFERENCE_SIDE


# -- geometry ------------------------------------------------------------------------------


def _scale_size(w: int, h: int, strength: float) -> tuple[int, int]:
    return _size(w * strength), _size(h * strength)


def _scale(image: Image.Image, strength: float, rng: np.random.Generator) -> Image.Image:
    return image.resize(_scale_size(*image.size, strength), Image.Resampling.LANCZOS)


def _aspect_size(w: int, h: int, strength: float) -> tuple[int, int]:
    return _size(w * strength), h


def _aspect(image: Image.Image, strength: float, rng: np.random.Generator) -> Image.Image:
    return image.resize(_aspect_size(*image.size, strength), Image.Resampling.LANCZOS)


def _crop(image: Image.Image, strength: float, rng: np.random.Generator, *, edge: str) -> Image.Image:
    w, h = image.size
    if edge == "center":
        dx = min(_round(w * strength), (w - 1) // 2)
        dy = min(_round(h * strength), (h - 1) // 2)
        return image.crop((dx, dy, w - dx, h - dy))
    if edge in ("left", "right"):
        n = min(_round(w * strength), w - 1)
        return image.crop((n, 0, w, h) if edge == "left" else (0, 0, w - n, h))
    n = min(_round(h * strength), h - 1)
    return image.crop((0, n, w, h) if edge == "top" else (0, 0, w, h - n))


def _pad_size(w: int, h: int, strength: float) -> tuple[int, int]:
    b = _size(min(w, h) * strength)
    return w + 2 * b, h + 2 * b


def _pad(image: Image.Image, strength: float, rng: np.random.Generator) -> Image.Image:
    w, h = image.size
    out = Image.new("RGB", _pad_size(w, h, strength), _WHITE)
    b = (out.width - w) // 2
    out.paste(image, (b, b))
    return out


def _letterbox_size(w: int, h: int, strength: float, *, num: int, den: int) -> tuple[int, int]:
    # Integer arithmetic: the frame aspect is exactly num:den, rounded half up.
    if w * den < h * num:  # narrower than the frame: bars left and right
        fw, fh = (2 * h * num + den) // (2 * den), h
    else:  # wider (or equal): bars top and bottom
        fw, fh = w, (2 * w * den + num) // (2 * num)
    return max(fw, w), max(fh, h)


def _letterbox(image: Image.Image, strength: float, rng: np.random.Generator, *, num: int, den: int) -> Image.Image:
    w, h = image.size
    fw, fh = _letterbox_size(w, h, strength, num=num, den=den)
    out = Image.new("RGB", (fw, fh), _BLACK)
    out.paste(image, ((fw - w) // 2, (fh - h) // 2))
    return out


def _rotate(image: Image.Image, strength: float, rng: np.random.Generator) -> Image.Image:
    return image.rotate(strength, resample=Image.Resampling.BICUBIC, expand=False, fillcolor=_BLACK)


_TRANSPOSES = {
    90: Image.Transpose.ROTATE_90,
    180: Image.Transpose.ROTATE_180,
    270: Image.Transpose.ROTATE_270,
}


def _right_angle_size(w: int, h: int, strength: float) -> tuple[int, int]:
    return (h, w) if int(strength) in (90, 270) else (w, h)


def _rotate_right_angle(image: Image.Image, strength: float, rng: np.random.Generator) -> Image.Image:
    return image.transpose(_TRANSPOSES[int(strength)])


def _hflip(image: Image.Image, strength: float, rng: np.random.Generator) -> Image.Image:
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


def _vflip(image: Image.Image, strength: float, rng: np.random.Generator) -> Image.Image:
    return image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)


# -- re-encoding ---------------------------------------------------------------------------


def _reencode(image: Image.Image, fmt: str, **params) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, fmt, **params)
    buf.seek(0)
    out = Image.open(buf)
    out.load()  # decode now: the result keeps .format, and no lazy decoding happens later
    return out


def _jpeg(image: Image.Image, strength: float, rng: np.random.Generator) -> Image.Image:
    return _reencode(image, "JPEG", quality=int(strength), subsampling="4:2:0", optimize=False, progressive=False)


def _webp(image: Image.Image, strength: float, rng: np.random.Generator) -> Image.Image:
    return _reencode(image, "WEBP", quality=int(strength), method=4, lossless=False)


# -- colour and tone -----------------------------------------------------------------------


def _grayscale(image: Image.Image, strength: float, rng: np.random.Generator) -> Image.Image:
    return image.convert("L").convert("RGB")


def _brightness(image: Image.Image, strength: float, rng: np.random.Generator) -> Image.Image:
    return ImageEnhance.Brightness(image).enhance(strength)


def _contrast(image: Image.Image, strength: float, rng: np.random.Generator) -> Image.Image:
    return ImageEnhance.Contrast(image).enhance(strength)


def _gamma(image: Image.Image, strength: float, rng: np.random.Generator) -> Image.Image:
    # Levels convention: gamma > 1 lifts the mid-tones (brighter), < 1 darkens them.
    levels = np.arange(256, dtype=np.float64) / 255.0
    lut = np.clip(np.floor(255.0 * levels ** (1.0 / strength) + 0.5), 0, 255).astype(np.uint8)
    return image.point(lut.tolist() * 3)


def _hue(image: Image.Image, strength: float, rng: np.random.Generator) -> Image.Image:
    # Pillow's HSV stores hue as 0..255 for 0..360 degrees; the lookup table wraps it around.
    shift = _round(strength * 256 / 360) % 256
    h, s, v = image.convert("HSV").split()
    h = h.point([(i + shift) % 256 for i in range(256)])
    return Image.merge("HSV", (h, s, v)).convert("RGB")


# -- filters and noise ---------------------------------------------------------------------


def _blur(image: Image.Image, strength: float, rng: np.random.Generator) -> Image.Image:
    # Pillow's GaussianBlur radius is the standard deviation.
    return image.filter(ImageFilter.GaussianBlur(_relative_radius(image, strength)))


def _sharpen(image: Image.Image, strength: float, rng: np.random.Generator) -> Image.Image:
    radius = _relative_radius(image, 2.0)
    return image.filter(ImageFilter.UnsharpMask(radius=radius, percent=int(strength), threshold=3))


def _noise(image: Image.Image, strength: float, rng: np.random.Generator) -> Image.Image:
    arr = np.asarray(image)  # uint8 [h, w, 3]
    out = np.empty_like(arr)
    h, w = arr.shape[:2]
    rows = max(1, _NOISE_CHUNK // max(1, w))
    # Blocks of rows keep the float32 scratch small on camera-sized images; the
    # block size depends only on the width, so the numbers are deterministic.
    for y in range(0, h, rows):
        block = arr[y : y + rows]
        noisy = rng.standard_normal(block.shape, dtype=np.float32)
        noisy *= np.float32(strength)
        noisy += block
        np.rint(noisy, out=noisy)
        np.clip(noisy, 0, 255, out=noisy)
        out[y : y + rows] = noisy
    return Image.fromarray(out)


# -- overlays ------------------------------------------------------------------------------

OVERLAY_TEXT = "Summer 2021"


def _font(size: int) -> tuple[ImageFont.ImageFont | ImageFont.FreeTypeFont, bool]:
    """Pillow's built-in font at ``size`` pixels (no font file needed); False when not scalable."""
    try:
        font = ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType
    except TypeError:  # Pillow 10.0: no size argument, a fixed bitmap font
        return ImageFont.load_default(), False
    # Without FreeType, Pillow >= 10.1 silently returns the bitmap font.
    return font, isinstance(font, ImageFont.FreeTypeFont)


def _text_masks(size: int, max_width: int) -> tuple[Image.Image, Image.Image]:
    """Masks (outline, fill) of :data:`OVERLAY_TEXT` about ``size`` pixels tall, at most ~``max_width`` wide."""
    font, scalable = _font(size)
    if scalable:
        width = ImageDraw.Draw(Image.new("L", (1, 1))).textlength(OVERLAY_TEXT, font=font)
        if width > max_width:  # too wide for the image: shrink the font to fit
            font, _ = _font(max(1, int(size * max_width / width)))
    stroke = max(1, font.size // 12) if scalable else 1
    left, top, right, bottom = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox(
        (0, 0), OVERLAY_TEXT, font=font, stroke_width=stroke
    )
    box = (max(1, right - left), max(1, bottom - top))
    outline, fill = Image.new("L", box, 0), Image.new("L", box, 0)
    ImageDraw.Draw(outline).text((-left, -top), OVERLAY_TEXT, font=font, fill=255, stroke_width=stroke, stroke_fill=255)
    ImageDraw.Draw(fill).text((-left, -top), OVERLAY_TEXT, font=font, fill=255)
    if not scalable:  # the fixed bitmap font: scale the rendered masks instead
        factor = min(size / box[1], max_width / box[0])
        target = (_size(box[0] * factor), _size(box[1] * factor))
        outline = outline.resize(target, Image.Resampling.BILINEAR)
        fill = fill.resize(target, Image.Resampling.BILINEAR)
    return outline, fill


def _text(image: Image.Image, strength: float, rng: np.random.Generator) -> Image.Image:
    w, h = image.size
    outline, fill = _text_masks(_size(h * strength), max(1, _round(0.9 * w)))
    tw, th = outline.size
    x = int(rng.integers(0, max(0, w - tw) + 1))
    y = int(rng.integers(0, max(0, h - th) + 1))
    out = image.copy()
    out.paste(_BLACK, (x, y, x + tw, y + th), outline)  # white text, black outline: readable anywhere
    out.paste(_WHITE, (x, y, x + tw, y + th), fill)
    return out


def _logo(image: Image.Image, strength: float, rng: np.random.Generator) -> Image.Image:
    w, h = image.size
    side = min(_size(math.sqrt(strength * w * h)), w, h)
    margin = max(0, min(_round(0.02 * min(w, h)), w - side, h - side))
    corner = int(rng.integers(0, 4))  # 0 top left, 1 top right, 2 bottom left, 3 bottom right
    colours = [tuple(int(c) for c in rgb) for rgb in rng.integers(0, 256, size=(3, 3))]
    shape = int(rng.integers(0, 3))  # the emblem inside the disc: square, triangle or diamond

    logo = Image.new("RGB", (side, side), colours[0])
    draw = ImageDraw.Draw(logo)
    s = side - 1
    draw.ellipse((0.1 * s, 0.1 * s, 0.9 * s, 0.9 * s), fill=colours[1])
    lo, mid, hi = 0.3 * s, 0.5 * s, 0.7 * s
    if shape == 0:
        draw.rectangle((lo, lo, hi, hi), fill=colours[2])
    elif shape == 1:
        draw.polygon([(mid, lo), (hi, hi), (lo, hi)], fill=colours[2])
    else:
        draw.polygon([(mid, lo), (hi, mid), (mid, hi), (lo, mid)], fill=colours[2])

    x = margin if corner in (0, 2) else w - side - margin
    y = margin if corner in (0, 1) else h - side - margin
    out = image.copy()
    out.paste(logo, (x, y))
    return out


_TITLE_BAR = (232, 232, 232)
_FRAME = (160, 160, 160)
_DOTS = ((255, 95, 86), (255, 189, 46), (39, 201, 63))  # close, minimise, zoom


def screenshot_frame(width: int, height: int, strength: float) -> tuple[int, int, int]:
    """(border, title, extra) of the screenshot frame around a ``width`` x ``height`` image.

    ``extra = max(2, round(strength * height))`` rows are added: a one-pixel or
    thicker bottom border (a tenth of ``extra``), the rest is the title bar;
    the left and right borders are as thick as the bottom one.
    """
    extra = max(2, _round(strength * height))
    border = max(1, _round(extra / 10))
    return border, extra - border, extra


def _screenshot_size(w: int, h: int, strength: float) -> tuple[int, int]:
    border, _title, extra = screenshot_frame(w, h, strength)
    return w + 2 * border, h + extra


def _screenshot(image: Image.Image, strength: float, rng: np.random.Generator) -> Image.Image:
    w, h = image.size
    border, title, extra = screenshot_frame(w, h, strength)
    out = Image.new("RGB", _screenshot_size(w, h, strength), _FRAME)
    draw = ImageDraw.Draw(out)
    draw.rectangle((0, 0, out.width - 1, title - 1), fill=_TITLE_BAR)
    d = max(1, _round(0.45 * title))  # dot diameter
    y0 = (title - d) // 2
    for i, colour in enumerate(_DOTS):
        x0 = border + _round(0.5 * title) + i * _round(1.6 * d)
        draw.ellipse((x0, y0, x0 + d - 1, y0 + d - 1), fill=colour)
    out.paste(image, (border, title))
    return out


# -- the catalogue -------------------------------------------------------------------------


def _num(x: float) -> str:
    return f"{x:g}"


def _pct(x: float) -> str:
    return f"{x * 100:g}%"


def default_edits() -> list[Edit]:
    """The fixed catalogue: stable order, unique labels, families contiguous, strengths ascending."""
    edits: list[Edit] = []

    def add(family: str, strength: float, unit: str, label: str, description: str, func: EditFunc,
            size: SizeFunc | None = None) -> None:
        edits.append(Edit(family, float(strength), unit, label, description, func, size))

    for s in (0.25, 0.5, 0.75):
        add("downscale", s, "scale", f"downscale {_num(s)}x",
            f"both sides scaled by {_num(s)} (LANCZOS, sizes rounded half up, at least 1 px)", _scale, _scale_size)
    for s in (1.5, 2, 3):
        add("upscale", s, "scale", f"upscale {_num(s)}x",
            f"both sides scaled by {_num(s)} (LANCZOS, sizes rounded half up)", _scale, _scale_size)
    for s in (0.75, 0.9, 1.1, 1.33):
        add("aspect", s, "scale", f"aspect {_num(s)}x",
            f"width alone scaled by {_num(s)}, height kept (LANCZOS, rounded half up)", _aspect, _aspect_size)
    for q in (10, 20, 35, 50, 75, 95):
        add("jpeg", q, "quality", f"jpeg q{q}",
            f"JPEG at quality {q} (Pillow, 4:2:0, baseline), decoded again", _jpeg)
    for q in (25, 50, 75, 90):
        add("webp", q, "quality", f"webp q{q}",
            f"lossy WebP at quality {q} (Pillow, method 4), decoded again", _webp)
    for edge in ("left", "right", "top", "bottom"):
        side = "width" if edge in ("left", "right") else "height"
        for f in (0.01, 0.05, 0.1, 0.2, 0.3):
            add(f"crop-{edge}", f, "fraction", f"crop {edge} {_pct(f)}",
                f"{_pct(f)} of the {side} cut from the {edge} edge (rounded half up, at least 1 px kept)",
                partial(_crop, edge=edge))
    for f in (0.01, 0.05, 0.1, 0.2, 0.3):
        add("crop-center", f, "fraction", f"crop center {_pct(f)}",
            f"centre kept: {_pct(f)} of the width cut from left and right each, of the height from top and bottom",
            partial(_crop, edge="center"))
    for f in (0.05, 0.1, 0.2):
        add("pad", f, "fraction", f"pad {_pct(f)}",
            f"white border on every side, {_pct(f)} of the shorter side thick (at least 1 px)", _pad, _pad_size)
    for num, den in ((9, 16), (1, 1), (4, 3), (16, 9)):
        add("letterbox", num / den, "aspect", f"letterbox {num}:{den}",
            f"image unscaled, centred in the smallest {num}:{den} frame holding it, black bars",
            partial(_letterbox, num=num, den=den), partial(_letterbox_size, num=num, den=den))
    for deg in (1, 2, 5, 10, 15):
        add("rotate", deg, "degrees", f"rotate {deg} deg",
            f"rotated {deg} degrees counter-clockwise about the centre, same canvas, corners black (BICUBIC)",
            _rotate)
    for deg in (90, 180, 270):
        add("rotate-right-angle", deg, "degrees", f"rotate {deg} deg",
            f"exact {deg}-degree counter-clockwise turn (Image.transpose)", _rotate_right_angle, _right_angle_size)
    add("hflip", 1, "none", "hflip", "mirrored left to right (exact)", _hflip)
    add("vflip", 1, "none", "vflip", "mirrored top to bottom (exact)", _vflip)
    add("grayscale", 1, "none", "grayscale", "converted to Pillow's L (ITU-R 601-2 luma) and back to RGB", _grayscale)
    for f in (0.5, 0.6, 0.8, 1.2, 1.45):
        add("brightness", f, "factor", f"brightness {_num(f)}x",
            f"ImageEnhance.Brightness factor {_num(f)} (pixels times {_num(f)}, clipped)", _brightness)
    for f in (0.5, 0.6, 0.8, 1.2, 1.5):
        add("contrast", f, "factor", f"contrast {_num(f)}x",
            f"ImageEnhance.Contrast factor {_num(f)} (about the mean grey level, clipped)", _contrast)
    for g in (0.5, 0.8, 1.25, 2.0):
        add("gamma", g, "gamma", f"gamma {_num(g)}",
            f"levels gamma {_num(g)}: out = 255 * (in / 255) ** (1 / {_num(g)}), a 256-entry table"
            + (" (brighter)" if g > 1 else " (darker)"), _gamma)
    for deg in (10, 30, 60, 90, 180):
        add("hue", deg, "degrees", f"hue +{deg} deg",
            f"hue rotated {deg} degrees in Pillow's HSV (hue stored 0..255, shift {_round(deg * 256 / 360) % 256}, "
            "wraps around)", _hue)
    for s in (0.5, 1, 2, 4):
        add("blur", s, "sigma", f"blur sigma {_num(s)}",
            f"Gaussian blur, sigma {_num(s)} px at a 360 px shorter side (sigma = {_num(s)} * min(w, h) / 360)",
            _blur)
    for p in (50, 100, 200, 400):
        add("sharpen", p, "percent", f"sharpen {p}%",
            f"UnsharpMask {p}%, threshold 3, radius 2 px at a 360 px shorter side (2 * min(w, h) / 360)",
            _sharpen)
    for sd in (5, 10, 20, 40):
        add("noise", sd, "std", f"noise std {sd}",
            f"Gaussian noise, std {sd} on 0..255, independent per pixel and channel, rounded and clipped",
            _noise)
    for f in (0.05, 0.1, 0.2):
        add("text", f, "fraction", f"text {_pct(f)}",
            f"caption {OVERLAY_TEXT!r}, white with black outline, font {_pct(f)} of the height "
            "(smaller if wider than 90% of the width), at a random position", _text)
    for f in (0.02, 0.05, 0.1):
        add("logo", f, "fraction", f"logo {_pct(f)}",
            f"opaque square emblem (random colours and shape) over {_pct(f)} of the area "
            "(at most the shorter side), in a random corner, 2% margin", _logo)
    for f in (0.05, 0.1, 0.2):
        add("screenshot", f, "fraction", f"screenshot {_pct(f)}",
            f"window frame: title bar with three dots plus thin side and bottom borders, "
            f"{_pct(f)} extra height, image unscaled inside", _screenshot, _screenshot_size)
    return edits


def edit_rng(seed: int, label: str, image_key: str) -> np.random.Generator:
    """The random generator of one (edit, image) pair: a function of its arguments alone.

    CRC-32 of the UTF-8 strings rather than ``hash()``, which is salted per process.
    """
    if seed < 0:
        raise ValueError(f"the seed must be a non-negative integer, not {seed}")
    return np.random.default_rng(
        [int(seed), zlib.crc32(label.encode("utf-8")), zlib.crc32(image_key.encode("utf-8"))]
    )


def apply_edit(edit: Edit, image: Image.Image, *, seed: int, image_key: str) -> Image.Image:
    """``edit`` applied to ``image`` (converted to RGB first) with its own generator.

    Any failure is raised as :class:`~neuralhash.errors.ImageError` naming the
    image and the edit.
    """
    try:
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        return edit.apply(rgb, edit_rng(seed, edit.label, image_key))
    except Exception as exc:
        reason = str(exc) or type(exc).__name__
        raise ImageError(f"{image_key}: edit {edit.label!r} failed ({reason})") from exc


def edit_families(edits: Iterable[Edit]) -> list[str]:
    """The families of ``edits`` in order of first appearance."""
    return list(dict.fromkeys(e.family for e in edits))
