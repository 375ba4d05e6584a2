"""NeuralHash as a hasher of Thorn's ``perception``: its benchmarks run it beside pHash and PDQ.

    pip install '.[perception]'

    from perception.hashers import PHash, PDQHash
    from neuralhash.integrations.perception import NeuralHashHasher

    hashers = {"NeuralHash": NeuralHashHasher("~/nh"), "pHash": PHash(), "PDQ": PDQHash()}
    hashes = transforms.compute_hashes(hashers)               # perception.benchmarking, unchanged
    hashes.compute_threshold_recall(precision_threshold=99.99)

:class:`NeuralHashHasher` is an ``ImageHasher``: 96 bits (``dtype="bool"``, Hamming
distance as a fraction of the bits, as for perception's pHash), so every tool of
perception that takes a hasher takes it (``compute``, ``compute_parallel``,
``compute_isometric``, deduplication, the benchmarks). Its hex form
(``compute(image, hash_format="hex")``) is the hex ``neuralhash hash`` prints.

perception decodes files itself (OpenCV) and hands the hasher RGB pixels, which are
then hashed exactly as this project hashes pixels (Pillow 360 x 360 bicubic). For PNG
and other lossless files the pixels, and so the hashes, equal ``neuralhash hash``'s;
for JPEG, OpenCV's and Pillow's decoders may differ in the last bit of some pixels,
which can move a bit with a small margin.

Model: a :class:`~neuralhash.hashing.NeuralHash` or anything ``neuralhash hash --model``
takes; None: ``$NEURALHASH_MODEL`` if set, else Apple's model found as ``neuralhash
hash`` finds it (``$NEURALHASH_MODEL_PATH``, macOS's Vision framework).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from . import missing_extra

try:
    from perception.hashers.hasher import ImageHasher
except ImportError:  # pragma: no cover - exercised without the extra
    raise missing_extra("perception", "perception") from None

#: Environment variable naming the model when none is given (as for the threatexchange extension).
MODEL_ENV = "NEURALHASH_MODEL"


class NeuralHashHasher(ImageHasher):
    """Apple's NeuralHash in perception's ``ImageHasher`` interface (96 bits, Hamming)."""

    distance_metric = "hamming"
    dtype = "bool"
    hash_length = 96
    # ONNX Runtime sessions may be run from several threads (perception's compute_parallel).
    allow_parallel = True

    def __init__(self, model: Any = None):
        if model is None or not hasattr(model, "hash_pixels"):
            from ..hashing import NeuralHash

            spec = model if model is not None else (os.environ.get(MODEL_ENV) or None)
            model = NeuralHash.from_source(spec)
        self.model = model

    def _compute(self, image: np.ndarray) -> np.ndarray:
        # perception gives H x W x 3 uint8 RGB; a grayscale array is accepted too.
        return self.model.hash(np.ascontiguousarray(image)).bits.astype(bool)
