"""Measuring: every image edited every way, hashed by every hash, compared with its original.

Worker processes open an image, apply each edit and compute the classic
hashes and NeuralHash's 360 x 360 input of every copy (the expensive, pure
Python/Pillow part); this process runs the ONNX model on those inputs and
turns bits into distances as the images come back, so only the originals'
hashes are kept for the distinct-pair baseline and memory stays flat in the
number of images.

Memory per worker is bounded by the pixel limit ``max_pixels`` (Pillow's
89.5 MP by default), not by what a file claims: an original above it is
refused from its header, and an edit whose copy would exceed it (an upscale
of a large photo) is refused, before any pixel is allocated, as a failure of
that copy. The largest buffers then are the original, one copy and PDQ's
float planes (about 21 bytes per pixel): up to ~35 bytes per pixel of the
limit (measured: 2.8 GB on an 81-megapixel image with PDQ, 0.68 GB without).
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from ..errors import NeuralHashError
from ..hashing.image import decode, load_image, resolve_max_pixels, too_large
from ..hashing.pipeline import ordered_map
from ..hashing.seed import HASH_BITS
from .edits import Edit, apply_edit, default_edits
from .hashers import HASHER_NAMES, NEURALHASH, available_classic, classic_by_name, neuralhash_info
from .results import MISSING, Failure, RobustnessResult

#: Distinct pairs beyond this are sampled (seeded): 2 million pairs pin every rate to < 0.1%.
MAX_PAIRS = 2_000_000

#: Edited copies run through the network at a time.
BATCH = 8


@dataclass
class ImageWork:
    """What a worker returns for one image: row 0 is the original, row 1 + j edit j."""

    size: tuple[int, int] = (0, 0)
    error: str | None = None                                    # the original could not be read
    pixels: np.ndarray | None = None                            # uint8 [1 + edits, 360, 360, 3]
    pixels_ok: np.ndarray | None = None                         # bool [1 + edits]
    classic: dict[str, np.ndarray] = field(default_factory=dict)     # name -> bool [1 + edits, bits]
    classic_ok: dict[str, np.ndarray] = field(default_factory=dict)  # name -> bool [1 + edits]
    failures: list[tuple[str | None, str]] = field(default_factory=list)  # (edit label, reason)


#: Rows of pixels hashed at a time by image_key (bounds its copy of a huge image).
_KEY_ROWS_BYTES = 16 << 20


def image_key(image: Image.Image) -> str:
    """What seeds an image's random edits: its pixels, so neither its name nor the order matters.

    sha256 of the mode, the size and ``image.tobytes()``, computed strip by
    strip (rows are contiguous in ``tobytes``) so that a huge image is not copied whole.
    """
    digest = hashlib.sha256()
    digest.update(f"{image.mode} {image.width}x{image.height}".encode())
    row_bytes = max(1, len(image.mode) * image.width)  # an upper bound for 1-bit and packed modes
    step = max(1, _KEY_ROWS_BYTES // row_bytes)
    if step >= image.height:
        digest.update(image.tobytes())
    else:
        for top in range(0, image.height, step):
            digest.update(image.crop((0, top, image.width, min(image.height, top + step))).tobytes())
    return digest.hexdigest()


def shrink(image: Image.Image, max_side: int) -> Image.Image:
    """``image`` scaled (LANCZOS) so that its longer side is at most ``max_side`` pixels."""
    longest = max(image.size)
    if longest <= max_side:
        return image
    scale = max_side / longest
    return image.resize(tuple(max(1, round(side * scale)) for side in image.size), Image.LANCZOS)


def measure_image(path: Any, *, edits: Sequence[Edit], seed: int, classic: Sequence[str],
                  max_pixels: int | None = None, max_side: int | None = None, neuralhash: bool = True) -> ImageWork:
    """Open ``path``, apply the edits, hash the classic way and prepare NeuralHash's inputs. Never raises.

    ``max_pixels``: the original and every edited copy stay at or below it (None:
    Pillow's limit, resolved in this process; callers pass their resolved number).
    ``neuralhash``: also prepare NeuralHash's 360 x 360 inputs (else ``pixels`` stays None).
    """
    name = os.fsdecode(path) if isinstance(path, (str, os.PathLike)) else str(path)
    work = ImageWork()
    try:
        limit = resolve_max_pixels(max_pixels)
        original = load_image(path, max_pixels=limit)
    except NeuralHashError as exc:
        work.error = str(exc)
        return work
    except Exception as exc:  # a decoder bug must not stop the run
        work.error = f"{name}: cannot decode image ({type(exc).__name__}: {exc})"
        return work
    work.size = original.size
    if max_side is not None:
        original = shrink(original, max_side)
    key = image_key(original)
    rows = 1 + len(edits)
    hashers = [classic_by_name(n) for n in classic]
    if neuralhash:
        work.pixels = np.zeros((rows, 360, 360, 3), np.uint8)
    work.pixels_ok = np.zeros(rows, bool)
    for h in hashers:
        work.classic[h.info.name] = np.zeros((rows, h.info.bits), bool)
        work.classic_ok[h.info.name] = np.zeros(rows, bool)

    for row in range(rows):
        edit = edits[row - 1] if row else None
        if edit is not None:
            predicted = edit.output_size(*original.size)
            refused = too_large(*predicted, limit)
            if refused is not None:  # before a pixel of the copy is allocated
                work.failures.append((edit.label, f"{name}: edit {edit.label!r} not applied: its copy would be "
                                                  f"{refused} (--max-pixels; or shrink the originals with --max-side)"))
                continue
        try:
            copy = apply_edit(edit, original, seed=seed, image_key=key) if edit is not None else original
        except NeuralHashError as exc:
            work.failures.append((edit.label, str(exc)))
            continue
        if edit is not None and copy.width * copy.height > predicted[0] * predicted[1]:
            # The edit's size function is wrong: say so rather than measure an unbounded copy.
            work.failures.append((edit.label, f"{name}: edit {edit.label!r} made a {copy.width} x {copy.height} "
                                              f"copy, larger than its declared {predicted[0]} x {predicted[1]}"))
            continue
        if neuralhash:
            try:
                work.pixels[row] = decode(copy, max_pixels=limit)
                work.pixels_ok[row] = True
            except NeuralHashError as exc:
                work.failures.append((edit.label if edit else None, f"NeuralHash: {exc}"))
        for h in hashers:
            try:
                work.classic[h.info.name][row] = h.func(copy)
                work.classic_ok[h.info.name][row] = True
            except Exception as exc:  # a hash library's failure costs that one number only
                label = edit.label if edit else "original"
                work.failures.append((edit.label if edit else None,
                                      f"{h.info.name} failed on {label} ({type(exc).__name__}: {exc})"))
    return work


def measure(
    images: Sequence[str | os.PathLike],
    model,
    *,
    edits: Sequence[Edit] | None = None,
    seed: int = 0,
    hashers: Sequence[str] = HASHER_NAMES,
    workers: int | None = None,
    max_side: int | None = None,
    max_pixels: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> RobustnessResult:
    """Apply every edit to every image and measure every hash's distance to the original's.

    ``model``: a :class:`~neuralhash.hashing.NeuralHash`. ``edits``: default
    :func:`~neuralhash.robustness.edits.default_edits`. ``hashers``: names among
    ``NeuralHash``, ``pHash``, ``dHash``, ``PDQ``; a classic hash whose package
    is missing is left out with a note. ``workers``: processes that edit and
    decode (None: one per CPU; 0: this process). ``max_side``: shrink each
    original so that its longer side is at most this many pixels before
    editing (a 12 MP photo at 1024: ~13x less work; NeuralHash sees 360 x 360
    anyway, but the originals' hashes are then those of the shrunk images).
    ``max_pixels``: originals and edited copies above this many pixels are
    refused, as failures of that image or copy (None: Pillow's
    ``PIL.Image.MAX_IMAGE_PIXELS``); it bounds the memory of each worker.
    ``progress(done, total)`` is
    called after each image. The same images, edits and ``seed`` give the same
    result, in any order and with any number of workers.
    """
    images = list(images)
    labels = [os.fsdecode(p) for p in images]
    unknown = [n for n in hashers if n not in HASHER_NAMES]
    if unknown:
        raise NeuralHashError(f"unknown hash {unknown[0]!r}; choose among {', '.join(HASHER_NAMES)}")
    edits = list(default_edits() if edits is None else edits)
    if len({e.label for e in edits}) != len(edits):
        raise NeuralHashError("edit labels must be unique")
    classic, notes = available_classic(hashers)
    if NEURALHASH in hashers and model is None:
        raise NeuralHashError("measuring NeuralHash needs a model")
    infos = ([neuralhash_info(model.description)] if NEURALHASH in hashers else []) + [h.info for h in classic]
    names = [i.name for i in infos]
    if workers is None:
        workers = os.cpu_count() or 1

    if max_side is not None and (not isinstance(max_side, int) or max_side < 1):
        raise NeuralHashError(f"max_side must be a positive integer, got {max_side!r}")
    # Edits are module-level functions (or partials of them): they pickle to the workers.
    # Resolved here: a spawned worker's Pillow limit is the default, not this process's.
    local = functools.partial(measure_image, edits=edits, seed=seed, classic=[h.info.name for h in classic],
                              max_side=max_side, max_pixels=resolve_max_pixels(max_pixels),
                              neuralhash=NEURALHASH in hashers)
    task = local

    def crashed(item: Any) -> ImageWork:
        return ImageWork(error=f"{os.fsdecode(item)}: a worker process died on this image (decoder crash or out of memory)")

    n = len(images)
    distances = {name: np.full((n, len(edits)), MISSING, np.int32) for name in names}
    originals = {i.name: np.zeros((n, i.bits), bool) for i in infos}
    # Edited copies, packed, for their distance to the nearest *other* original (recall at a precision).
    copies = {i.name: np.zeros((n, len(edits), (i.bits + 7) // 8), np.uint8) for i in infos}
    hashed = np.zeros(n, bool)  # every hash of the original succeeded: the image joins the baseline
    failures: list[Failure] = []
    sizes: list[tuple[int, int]] = [(0, 0)] * n

    results = ordered_map(task, iter(images), workers=workers, window=2 * max(workers, 1),
                          local=local, crashed=crashed)
    try:
        for i, (_, work) in enumerate(results):
            sizes[i] = work.size
            if work.error is not None:
                failures.append(Failure(labels[i], None, work.error))
            else:
                bits = _bits_of(work, model, names, edits)
                failures.extend(Failure(labels[i], e, r) for e, r in work.failures)
                for name, (rows, ok) in bits.items():
                    if ok[0]:
                        originals[name][i] = rows[0]
                        d = np.count_nonzero(rows[1:] != rows[0], axis=1)
                        distances[name][i] = np.where(ok[1:], d, MISSING)
                        copies[name][i] = np.packbits(rows[1:], axis=1)
                hashed[i] = all(ok[0] for _, ok in bits.values())
            if progress is not None:
                progress(i + 1, n)
    finally:
        results.close()  # stops the workers when the loop ends early (Ctrl-C)

    joined = np.flatnonzero(hashed)
    pairs = _pairs(joined, seed)
    if len(pairs) < len(joined) * (len(joined) - 1) // 2:
        notes.append(f"the distinct-pair baseline is a seeded sample of {len(pairs):,} pairs")
    distinct = {name: _pair_distances(originals[name], pairs) for name in names}
    nearest_other = {name: _nearest_other(copies[name], distances[name], originals[name], joined) for name in names}
    return RobustnessResult(
        model=model.description if model is not None else "none", model_id=getattr(model, "model_id", ""),
        synthetic=bool(getattr(model, "is_synthetic", False)),
        seed=seed, images=labels, sizes=sizes, edits=edits, hashers=infos, distances=distances,
        distinct=distinct, pairs=pairs, failures=failures, notes=notes, max_side=max_side,
        nearest_other=nearest_other,
    )


def _bits_of(work: ImageWork, model, names: Sequence[str],
             edits: Sequence[Edit]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (bits [1 + edits, bits], ok [1 + edits]) for every hash.

    A copy whose network output is not finite is a failure of that copy
    (added to ``work.failures``), never a hash.
    """
    out = {}
    if NEURALHASH in names:
        ok = work.pixels_ok.copy()
        rows = np.zeros((len(ok), HASH_BITS), bool)
        index = np.flatnonzero(ok)
        for start in range(0, len(index), BATCH):
            chunk = index[start:start + BATCH]
            try:
                hashes = model.hash_pixels(list(work.pixels[chunk]))
            except NeuralHashError:  # some copy's output is not finite: find it, one at a time
                hashes = []
                for row in chunk:
                    try:
                        hashes.append(model.hash_pixels([work.pixels[row]])[0])
                    except NeuralHashError as exc:
                        hashes.append(None)
                        ok[row] = False
                        reason = str(exc).removeprefix("image 0 of 1: ")
                        work.failures.append((edits[row - 1].label if row else None, f"NeuralHash: {reason}"))
            for row, h in zip(chunk, hashes):
                if h is not None:
                    rows[row] = h.bits
        out[NEURALHASH] = (rows, ok)
    for name in names:
        if name != NEURALHASH:
            out[name] = (work.classic[name], work.classic_ok[name])
    return out


def _pairs(index: np.ndarray, seed: int) -> np.ndarray:
    """All pairs i < j of ``index`` (row-major), or a seeded sample of MAX_PAIRS of them."""
    n = len(index)
    total = n * (n - 1) // 2
    if total <= MAX_PAIRS:
        i, j = np.triu_indices(n, k=1)
    else:
        rng = np.random.default_rng([seed, n])
        i = rng.integers(0, n, MAX_PAIRS * 2)
        j = rng.integers(0, n, MAX_PAIRS * 2)
        keep = i != j
        i, j = np.minimum(i, j)[keep][:MAX_PAIRS], np.maximum(i, j)[keep][:MAX_PAIRS]
    return np.stack([index[i], index[j]], axis=1).astype(np.int64).reshape(-1, 2)


def _pair_distances(bits: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    packed = np.packbits(bits, axis=1)
    out = np.empty(len(pairs), np.int32)
    step = 1 << 16  # pairs per chunk: bounded temporary memory
    for start in range(0, len(pairs), step):
        p = pairs[start:start + step]
        out[start:start + step] = np.bitwise_count(packed[p[:, 0]] ^ packed[p[:, 1]]).sum(axis=1)
    return out


def _nearest_other(copies: np.ndarray, distances: np.ndarray, originals: np.ndarray, joined: np.ndarray) -> np.ndarray:
    """[images, edits]: each measured copy's distance to the nearest original other than its own
    (among the originals in the baseline); MISSING where unmeasured or there is no other original."""
    out = np.full(distances.shape, MISSING, np.int32)
    if len(joined) < 2:
        return out
    packed = np.packbits(originals[joined], axis=1)
    for i in range(len(copies)):
        measured = distances[i] != MISSING
        if not measured.any():
            continue
        mine = copies[i][measured]
        other = packed[joined != i]
        best = np.full(len(mine), np.iinfo(np.int32).max, np.int64)
        for start in range(0, len(other), 4096):  # bounded temporaries for large runs
            block = other[start:start + 4096]
            d = np.bitwise_count(mine[:, None, :] ^ block[None, :, :]).sum(axis=2, dtype=np.int64)
            np.minimum(best, d.min(axis=1), out=best)
        out[i, measured] = best
    return out
