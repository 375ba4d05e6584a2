"""The hashes NeuralHash is compared against: pHash and dHash (imagehash) and PDQ (pdqhash).

Each is a function of an RGB Pillow image returning its bits as a bool array.
They run in the worker processes next to the edits; NeuralHash itself runs in
the main process, which holds the ONNX Runtime session.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image

from ..errors import install_hint
from .results import HasherInfo

NEURALHASH = "NeuralHash"
INSTALL_HINT = install_hint("robustness")


def _phash(image: Image.Image) -> np.ndarray:
    import imagehash

    return np.asarray(imagehash.phash(image).hash, dtype=bool).ravel()


def _dhash(image: Image.Image) -> np.ndarray:
    import imagehash

    return np.asarray(imagehash.dhash(image).hash, dtype=bool).ravel()


def _pdq(image: Image.Image) -> np.ndarray:
    import pdqhash

    bits, _quality = pdqhash.compute(np.asarray(image))
    return np.asarray(bits, dtype=bool)


@dataclass(frozen=True)
class ClassicHasher:
    info: HasherInfo
    module: str                                   # the package it needs
    func: Callable[[Image.Image], np.ndarray]


CLASSIC_HASHERS: tuple[ClassicHasher, ...] = (
    ClassicHasher(HasherInfo("pHash", 64, "imagehash.phash: 32x32 greyscale DCT, 8x8 low frequencies vs median"),
                  "imagehash", _phash),
    ClassicHasher(HasherInfo("dHash", 64, "imagehash.dhash: 9x8 greyscale, horizontal gradient signs"),
                  "imagehash", _dhash),
    ClassicHasher(HasherInfo("PDQ", 256, "pdqhash.compute: Meta's PDQ, 64x64 luminance DCT, 16x16 vs median"),
                  "pdqhash", _pdq),
)

HASHER_NAMES = (NEURALHASH,) + tuple(h.info.name for h in CLASSIC_HASHERS)


def neuralhash_info(description: str) -> HasherInfo:
    return HasherInfo(NEURALHASH, 96, description)


def available_classic(names) -> tuple[list[ClassicHasher], list[str]]:
    """The classic hashers among ``names`` whose package is installed, and a note per one left out."""
    chosen, notes = [], []
    for hasher in CLASSIC_HASHERS:
        if hasher.info.name not in names:
            continue
        if importlib.util.find_spec(hasher.module) is None:
            notes.append(f"{hasher.info.name} left out: the package {hasher.module!r} is not installed ({INSTALL_HINT})")
        else:
            chosen.append(hasher)
    return chosen, notes


def classic_by_name(name: str) -> ClassicHasher:
    for hasher in CLASSIC_HASHERS:
        if hasher.info.name == name:
            return hasher
    raise KeyError(name)
