"""NeuralHash hashing: images to 96-bit hashes, bit for bit as the community reference pipeline.

    from neuralhash.hashing import NeuralHash
    nh = NeuralHash.from_source("~/nh")           # Apple's Espresso files (converted once, cached)
    h = nh.hash("photo.jpg")                       # Hash: .hex, .bits, .values, .margins
    for r in nh.hash_many(paths):                  # in input order; errors per item
        print(r.path, r.hash if r.ok else r.error)

Modules: ``hash`` (Hash, HashResult, DEFAULT_MARGIN), ``image`` (loading and
preprocessing), ``model`` (NeuralHash, find_system_model), ``model_ids`` (the
id stored with hashes: ``neuralhash-v3b`` for Apple's model, else a digest),
``pipeline`` (worker processes), ``seed`` (the projection matrix).
"""

from .hash import DEFAULT_MARGIN, Hash, HashResult
from .image import IMAGE_EXTENSIONS


def __getattr__(name: str):
    # Lazy: decoding worker processes import this package for ``image`` and
    # ``pipeline`` only, and must not pay for importing onnx and onnxruntime.
    if name in ("NeuralHash", "find_system_model"):
        from . import model

        return getattr(model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["DEFAULT_MARGIN", "IMAGE_EXTENSIONS", "Hash", "HashResult", "NeuralHash", "find_system_model"]
