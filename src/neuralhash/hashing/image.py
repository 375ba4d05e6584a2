"""Image loading and preprocessing exactly as the community reference pipeline does it.

See NEURALHASH.md. The default path is, per image::

    image = Image.open(path).convert("RGB")      # no EXIF rotation
    image = image.resize((360, 360))             # Pillow's default filter: BICUBIC
    arr = np.array(image).astype(np.float32) / 255.0
    arr = arr * 2.0 - 1.0                        # float32 throughout
    arr = arr.transpose(2, 0, 1)                 # 3 x 360 x 360, RGB

:func:`decode` does the first two lines and returns the 360 x 360 x 3 uint8
pixels (what worker processes send back: a quarter of the float32 size);
:func:`to_input` does the rest with the same operations in the same order, so
the floats are bit for bit the reference's.

Options, both off by default:

- ``exif_transpose``: apply ``PIL.ImageOps.exif_transpose`` before ``convert``
  (photos shot in portrait then hash as they are displayed);
- ``fast``: JPEGs decode at a reduced DCT scale (``Image.draft``, never below
  360 pixels on either side) and other large images are shrunk by an integer
  box ``Image.reduce`` to no less than twice 360 before the final BICUBIC resize.
  This is several times faster on camera-sized images but **changes the
  pixels, and so can change bits** (usually a few, on bits with small margins):
  fast hashes are not comparable bit for bit with published NeuralHash values.

Unreadable inputs raise :class:`~neuralhash.errors.ImageError` whose message
starts with the path (or ``<bytes>``, ``<image>``, ``<array>``) and gives the
reason. Truncated files are errors (``ImageFile.LOAD_TRUNCATED_IMAGES`` is
left alone), and so are images of more than ``max_pixels`` pixels, refused
from their header before anything is decoded (decompression bombs: a 236 KB
PNG can claim 81 megapixels). ``max_pixels`` None means Pillow's limit,
``PIL.Image.MAX_IMAGE_PIXELS`` (89,478,485 unless the program changed it);
Pillow itself only warns between that and twice that, here both are errors.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import sys
import threading
import warnings
from typing import Any, Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError, features

from ..errors import ImageError, NeuralHashError, install_hint

SIZE = 360

#: Lowercase file extensions (with the dot) of the image formats Pillow reads
#: (HEIC/HEIF with the ``heif`` extra): what the CLI collects when it walks folders.
IMAGE_EXTENSIONS = frozenset(
    {
        ".jpg", ".jpeg", ".jpe", ".jfif",
        ".png", ".apng",
        ".gif",
        ".bmp", ".dib",
        ".tif", ".tiff",
        ".webp",
        ".heic", ".heif", ".hif",
        ".avif",
        ".jp2", ".j2k", ".jpx", ".jpf",
        ".ppm", ".pgm", ".pbm", ".pnm",
        ".tga", ".ico", ".pcx", ".qoi", ".dds", ".psd",
    }
)

HEIF_EXTRA_MESSAGE = f"HEIC/HEIF support needs the optional extra: {install_hint('heif')}"
AVIF_MESSAGE = "AVIF support needs a Pillow built with libavif (pip install -U Pillow, 11.3 or later)"

_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"}
_AVIF_BRANDS = {b"avif", b"avis"}
_GENERIC_BRANDS = {b"mif1", b"msf1", b"mif2", b"miaf"}
_HEIF_EXTENSIONS = {".heic", ".heif", ".hif"}
_SNIFF_BYTES = 256

# -- sniffing and optional formats ---------------------------------------------------------


def sniff_container(header: bytes) -> str | None:
    """``"heif"`` or ``"avif"`` for an ISO-BMFF image (by its ``ftyp`` brands), else None."""
    if len(header) < 16 or header[4:8] != b"ftyp":
        return None
    size = int.from_bytes(header[0:4], "big")
    end = min(len(header), size if size >= 16 else len(header))
    major = header[8:12]
    brands = {major} | {header[i : i + 4] for i in range(16, end - 3, 4)}
    if major in _AVIF_BRANDS:
        return "avif"
    if major in _HEIF_BRANDS:
        return "heif"
    if brands & _AVIF_BRANDS and not brands & _HEIF_BRANDS:
        return "avif"
    if brands & (_HEIF_BRANDS | _GENERIC_BRANDS):
        return "heif"
    return None


_heif_lock = threading.Lock()
_HEIF_STATE: bool | None = None  # None: not tried yet; True: registered; False: unavailable


def heif_available() -> bool:
    """Register pillow-heif's opener once (lazily); False when the extra is not installed."""
    global _HEIF_STATE
    if _HEIF_STATE is None:
        with _heif_lock:
            if _HEIF_STATE is None:
                try:
                    import pillow_heif  # noqa: PLC0415 (optional dependency)

                    pillow_heif.register_heif_opener()
                    _HEIF_STATE = True
                except Exception:  # ImportError, or a broken install
                    _HEIF_STATE = False
    return bool(_HEIF_STATE)


@functools.lru_cache(maxsize=None)
def avif_available() -> bool:
    """True when this Pillow decodes AVIF natively."""
    try:
        return bool(features.check("avif"))
    except Exception:
        return False


# -- loading -------------------------------------------------------------------------------

# warnings.catch_warnings saves and restores process-wide state: two threads
# interleaving it could leave the filters changed for good. The lock keeps our
# uses apart; it covers only Image.open (header parsing) and the conversion of
# already decoded pixels, never the decoding itself.
_WARNINGS_LOCK = threading.Lock()


@contextlib.contextmanager
def _captured_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """Collect Pillow's warnings instead of showing them (a library does not print)."""
    with _WARNINGS_LOCK, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


@contextlib.contextmanager
def _opening() -> Iterator[list[warnings.WarningMessage]]:
    """Around ``Image.open``: warnings captured, and Pillow's own size check off (``check_size``
    applies ``max_pixels`` instead, with one message whatever the size). The global is restored
    before the lock is released; the lock keeps our own threads from seeing it changed."""
    with _captured_warnings() as caught:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield caught
        finally:
            Image.MAX_IMAGE_PIXELS = saved


#: ``max_pixels`` resolved to "no limit" (Pillow's MAX_IMAGE_PIXELS was set to None).
NO_LIMIT = sys.maxsize


def resolve_max_pixels(max_pixels: int | None) -> int:
    """The pixel limit to apply: ``max_pixels``, or with None Pillow's current
    ``PIL.Image.MAX_IMAGE_PIXELS`` (:data:`NO_LIMIT` when that is None).

    Resolve once in the calling process and pass the number on: worker
    processes started with ``spawn`` have Pillow's default, not the caller's.
    """
    if max_pixels is None:
        limit = Image.MAX_IMAGE_PIXELS
        return NO_LIMIT if limit is None else int(limit)
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise NeuralHashError(f"max_pixels must be a positive integer (or None for Pillow's limit), got {max_pixels!r}")
    return max_pixels


def too_large(width: int, height: int, limit: int) -> str | None:
    """``"W x H = N pixels, above the limit of M"`` when that image exceeds ``limit`` pixels, else None."""
    pixels = max(1, width) * max(1, height)
    if pixels <= limit:
        return None
    return f"{width} x {height} = {pixels:,} pixels, above the limit of {limit:,}"


def check_size(img: Image.Image, limit: int) -> None:
    """Raise ``_TooLarge`` (its message the reason) when ``img`` has more than ``limit`` pixels."""
    reason = too_large(img.width, img.height, limit)
    if reason is not None:
        raise _TooLarge(f"image too large: {reason}; refused as a possible decompression bomb "
                        "(raise the limit with --max-pixels N, or max_pixels= in Python)")


class _TooLarge(Exception):
    """Internal: an image above the pixel limit (its message is the reason)."""


def describe(source: Any) -> str:
    """How messages and results name an input: the path, or a placeholder for in-memory inputs."""
    if isinstance(source, (str, os.PathLike)):
        return os.fsdecode(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<bytes>"
    if isinstance(source, Image.Image):
        return "<image>"
    if isinstance(source, np.ndarray):
        return "<array>"
    return "<object>"


def _fail(name: str, reason: str) -> ImageError:
    return ImageError(f"{name}: {reason}")


def _reason(exc: BaseException) -> str:
    """A readable reason for an exception raised while opening or decoding."""
    if isinstance(exc, _TooLarge):
        return str(exc)
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        # Raised by a Pillow plugin of its own accord (our check runs first, with Pillow's off).
        detail = str(exc).split(", could be")[0].rstrip(".")
        return f"image too large, refused as a possible decompression bomb ({detail}); raise the limit with --max-pixels N"
    if isinstance(exc, UnidentifiedImageError):
        return "not an image, or a format Pillow cannot read"
    text = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and "truncated" in text:
        return f"truncated image data ({text})"
    if isinstance(exc, (OSError, EOFError, SyntaxError, ValueError)):
        return f"corrupt or unreadable image data ({text})"
    if isinstance(exc, MemoryError):
        return "out of memory while decoding"
    return f"cannot decode image ({type(exc).__name__}: {text})"


def _open_file(path: str, name: str):
    """Open ``path`` for reading with clear reasons for the usual failures."""
    try:
        if os.path.isdir(path):
            raise _fail(name, "is a directory, not an image file")
        fh = open(path, "rb")
    except ImageError:
        raise
    except FileNotFoundError:
        raise _fail(name, "no such file") from None
    except PermissionError:
        raise _fail(name, "permission denied") from None
    except OSError as exc:
        raise _fail(name, f"cannot open ({exc.strerror or exc})") from None
    return fh


def _check_container(header: bytes, name: str, ext: str) -> None:
    """Fail early, with the fix, on HEIF/AVIF files this installation cannot decode."""
    kind = sniff_container(header)
    if kind == "heif" and not heif_available():
        raise _fail(name, HEIF_EXTRA_MESSAGE)
    if kind == "avif" and not avif_available():
        raise _fail(name, AVIF_MESSAGE)
    if kind is None and ext in _HEIF_EXTENSIONS:
        heif_available()  # an unrecognised header under a HEIF name: let pillow-heif try too


def _prepared(img: Image.Image, *, exif_transpose: bool, fast: bool, may_draft: bool,
              resize: bool = True) -> np.ndarray:
    """The reference steps on an opened image: convert("RGB"), resize((360, 360)), uint8 pixels.

    ``resize=False`` stops before the resize: the full-size RGB pixels."""
    if fast and may_draft and img.format == "JPEG":
        # DCT scaling to no less than twice the target: half the pixel error (and
        # about half the changed bits) of drafting to 360, for ~16% more decode time.
        img.draft("RGB", (2 * SIZE, 2 * SIZE))
    img.load()  # what convert() would do first; outside the lock, so threads decode in parallel
    with _captured_warnings():  # e.g. "Palette images with Transparency expressed in bytes..."
        if exif_transpose:
            img = ImageOps.exif_transpose(img)
        if img.mode != "RGB":  # convert("RGB") of an RGB image is an identical 36 MB copy at 12 MP
            img = img.convert("RGB")
    if not resize:
        return np.array(img)
    if fast:
        factor = min(img.width // (2 * SIZE), img.height // (2 * SIZE))
        if factor >= 2:
            img = img.reduce(factor)
    img = img.resize((SIZE, SIZE))
    return np.array(img)


def decode(
    source: Any,
    *,
    exif_transpose: bool = False,
    fast: bool = False,
    max_pixels: int | None = None,
    resize: bool = True,
) -> np.ndarray:
    """``source`` opened, converted to RGB and resized as the reference does: uint8 [360, 360, 3].

    ``resize=False`` returns the full-size RGB pixels instead, uint8 [H, W, 3], with
    the same checks and the same decoding (``fast`` is then refused: it drafts for the resize).

    ``source``: a path (str or PathLike), encoded image bytes, a Pillow image
    or a NumPy array (H x W x 3 uint8 RGB, or H x W uint8 grayscale).
    ``max_pixels``: files, bytes and Pillow images larger than this are refused
    before decoding (None: Pillow's ``PIL.Image.MAX_IMAGE_PIXELS``).
    Raises :class:`ImageError` naming the input and the reason.
    """
    name = describe(source)
    limit = resolve_max_pixels(max_pixels)
    if fast and not resize:
        raise NeuralHashError("fast decoding drafts for the 360 x 360 resize; it cannot go with resize=False")
    if isinstance(source, Image.Image):
        try:
            check_size(source, limit)  # may be opened but not decoded yet
            return _prepared(source, exif_transpose=exif_transpose, fast=fast, may_draft=False, resize=resize)
        except Exception as exc:
            raise _fail(name, _reason(exc)) from None
    if isinstance(source, np.ndarray):
        img = _array_image(source)
        try:
            return _prepared(img, exif_transpose=False, fast=fast, may_draft=False, resize=resize)
        except Exception as exc:
            raise _fail(name, _reason(exc)) from None
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise _fail(name, "empty (0 bytes)")
        _check_container(data[:_SNIFF_BYTES], name, "")
        return _decode_stream(io.BytesIO(data), name, "", exif_transpose, fast, limit, resize)
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        ext = os.path.splitext(os.fsdecode(path))[1].lower()
        with _open_file(path, name) as fh:
            try:
                header = fh.read(_SNIFF_BYTES)
                fh.seek(0)
            except OSError as exc:
                raise _fail(name, f"cannot read ({exc.strerror or exc})") from None
            if not header:
                raise _fail(name, "empty file (0 bytes)")
            _check_container(header, name, ext)
            return _decode_stream(fh, name, ext, exif_transpose, fast, limit, resize)
    raise _fail(name, f"unsupported input type {type(source).__name__} (expected a path, bytes, a PIL image or an array)")


def _decode_stream(fh, name: str, ext: str, exif_transpose: bool, fast: bool, limit: int,
                   resize: bool = True) -> np.ndarray:
    try:
        with _opening():
            img = Image.open(fh)
        with img:
            check_size(img, limit)
            return _prepared(img, exif_transpose=exif_transpose, fast=fast, may_draft=True, resize=resize)
    except UnidentifiedImageError:
        if ext in _HEIF_EXTENSIONS and not heif_available():
            raise _fail(name, f"not readable without HEIF support; {HEIF_EXTRA_MESSAGE}") from None
        if ext == ".avif" and not avif_available():
            raise _fail(name, f"not readable: {AVIF_MESSAGE}") from None
        raise _fail(name, "not an image, or a format Pillow cannot read") from None
    except ImageError:
        raise
    except Exception as exc:
        raise _fail(name, _reason(exc)) from None


def _array_image(arr: np.ndarray) -> Image.Image:
    if arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3 and arr.shape[0] > 0 and arr.shape[1] > 0:
        return Image.fromarray(np.ascontiguousarray(arr), "RGB")
    if arr.dtype == np.uint8 and arr.ndim == 2 and arr.shape[0] > 0 and arr.shape[1] > 0:
        return Image.fromarray(np.ascontiguousarray(arr), "L")
    raise _fail(
        "<array>",
        f"expected an H x W x 3 uint8 RGB or H x W uint8 grayscale array, got {arr.dtype} of shape {list(arr.shape)}",
    )


def to_input(pixels: np.ndarray) -> np.ndarray:
    """uint8 [360, 360, 3] -> the network input float32 [3, 360, 360], as the reference computes it."""
    arr = np.asarray(pixels).astype(np.float32) / 255.0
    arr = arr * 2.0 - 1.0
    return arr.transpose(2, 0, 1)


# -- the original helpers (used by verify, the demo and calibration) ------------------------


def load_image(source: str | os.PathLike | bytes | Image.Image, *, max_pixels: int | None = None) -> Image.Image:
    """Open ``source`` (a path, encoded bytes or a Pillow image) as RGB (not resized).

    ``max_pixels`` as in :func:`decode` (files and bytes only: a Pillow image is in memory already).
    """
    if isinstance(source, Image.Image):
        return source.convert("RGB")
    name = describe(source)
    limit = resolve_max_pixels(max_pixels)
    try:
        with _opening():
            img = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        with img:
            check_size(img, limit)
            img.load()
            with _captured_warnings():
                return img.convert("RGB")
    except FileNotFoundError:
        raise _fail(name, "no such file") from None
    except Exception as exc:
        raise _fail(name, _reason(exc)) from None


def preprocess(source: str | os.PathLike | bytes | Image.Image) -> np.ndarray:
    """The network input for one image: float32 [3, 360, 360] in [-1, 1], RGB (contiguous)."""
    return np.ascontiguousarray(to_input(decode(source)))


def bits_to_hex(bits: np.ndarray) -> str:
    """96 bits (bit 0 first, most significant) as 24 lowercase hex digits."""
    bits = np.asarray(bits).astype(bool).ravel()
    return np.packbits(bits).tobytes().hex()


__all__ = [
    "AVIF_MESSAGE",
    "HEIF_EXTRA_MESSAGE",
    "IMAGE_EXTENSIONS",
    "SIZE",
    "bits_to_hex",
    "decode",
    "describe",
    "load_image",
    "preprocess",
    "resolve_max_pixels",
    "sniff_container",
    "to_input",
]
