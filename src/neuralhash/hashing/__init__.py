"""NeuralHash hashing: images to 96-bit hashes, bit for bit as the community reference pipeline.

    from neuralhash.hashing import NeuralHash
    nh = NeuralHash.from_source("~/nh")           # Apple's Espresso files (converted once, cached)
    h = nh.hash("photo.jpg")                       # Hash: .hex, .bits, .values, .margins
    for r in nh.hash_many(paths):                  # in input order; errors per item
        print(r.path, r.hash if r.ok else r.error)

Modules: ``hash`` (Hash, HashResult, DEFAULT_MARGIN), ``image`` (loading and
preprocessing), ``model`` (NeuralHash, find_system_model), ``pipeline``
(worker processes), ``seed`` (the projection matrix).
"""

from .hash import DEFAULT_MARGIN, Hash, HashResult
from .image import IMAGE_EXTENSIONS
from .model import NeuralHash, find_system_model

__all__ = ["DEFAULT_MARGIN", "IMAGE_EXTENSIONS", "Hash", "HashResult", "NeuralHash", "find_system_model"]
