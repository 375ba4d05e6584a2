"""Model ids: the name stored with every hash, so that hashes of different models are never compared.

A hash means something only beside the model and seed that computed it. Two
kinds of id:

- **A well-known name** for a model people exchange hash lists of. One today:
  ``neuralhash-v3b``, Apple's NeuralHash v3b. A model gets it when (1) the
  network that computes its 128 features has exactly the structure of Apple's
  v3b graph as this package converts it (layer for layer, every attribute and
  every weight's shape, the weights' *values* left out), whether it came from
  the float32 or the float16 Espresso files or from an ONNX file converted from
  either; (2) its seed matrix is Apple's; and (3) its weights are not synthetic:
  every synthetic model this package writes (the demo included) carries a mark
  in its first convolution (:data:`SYNTHETIC_MARK`), which trained weights do
  not hold.

  Why not the weights' digest: nobody can know the digest of Apple's weights
  without Apple's files (which never enter this project), and the float32 and
  float16 files differ in every weight anyway, so a digest would split one
  algorithm into two ids. The structure is public (the same graph is in every
  copy of macOS) and is identical in both variants. What the name cannot rule
  out is a network of Apple's structure with someone else's *trained* weights;
  no such model is in circulation, and one would have to be built on purpose.

- **A digest** for every other model (the demo, custom seeds, other networks):
  sha256 (hex) of the feature network (nodes, attributes and weights) and of
  the float32 seed matrix, so that the same network and seed get the same id
  however they were loaded.

Computing an id parses the ONNX model with the ``onnx`` package, which takes
about a second to import; :func:`cached_model_id` keeps the answer in the
cache folder beside converted models, so that hashing does not import it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

#: The well-known id of Apple's NeuralHash v3b (float32 or float16 files, Espresso or ONNX).
NEURALHASH_V3B = "neuralhash-v3b"

#: Well-known ids and what they stand for.
WELL_KNOWN_MODELS = {
    NEURALHASH_V3B: "Apple's NeuralHash v3b (Vision.framework, macOS 11.4+ / iOS 14.7+; "
                    "the float32 or float16 files, Espresso or converted ONNX) with Apple's seed",
}

#: sha256 of the structure of Apple's v3b feature network as this package converts it: the
#: graph of ``NeuralHashv3b-current`` (and of ``NeuralHashv3b_fp16-current``, which converts to
#: the same structure). tests/test_model_ids.py derives it from Apple's real graph file.
V3B_STRUCTURE = "7be5e8d9af1cc591ab4626745f0e317e60025eb4bb81d115737bf02caa12d1b4"

#: The first output channel of the first convolution of every synthetic model this package writes
#: (3 x 3 x 3 values, exact in float16): trained weights never equal it, so no synthetic model can
#: be taken for Apple's.
SYNTHETIC_MARK = (np.array([(-1) ** i * (i + 1) / 64 for i in range(27)], dtype=np.float32)
                  .reshape(3, 3, 3))

_ID_VERSION = b"neuralhash model id 2\0"


def short_model_id(model_id: str) -> str:
    """A model id for messages: a sha256 digest shortened to its first 12 digits, a name in full."""
    return model_id[:12] if _is_digest(model_id) else model_id


def well_known_description(model_id: str) -> str | None:
    """What a well-known id stands for (None for a digest or any other name)."""
    return WELL_KNOWN_MODELS.get(model_id)


def model_id_of(onnx_bytes: bytes, seed: np.ndarray) -> str:
    """The model id of an ONNX model (serialised) with a seed matrix: a well-known name when the model
    is one (see the module's documentation), else the sha256 (hex) of its feature network and seed.

    Only what computes the first output (the 128 features) counts: not the file's
    other outputs (a ``--hash-head``) nor its producer, version or doc strings.
    Bytes that are not an ONNX model are identified by their sha256.
    """
    from .seed import is_apple_seed

    seed = np.asarray(seed)
    digest = hashlib.sha256(_ID_VERSION)
    try:
        import onnx

        model = onnx.load_model_from_string(onnx_bytes)
        graph = model.graph
        first = graph.output[0].name
    except Exception:  # noqa: BLE001 - not an ONNX model: identify the bytes as they are
        digest.update(onnx_bytes)
    else:
        structure, needed = _feature_network(model, first)
        if structure.hexdigest() == V3B_STRUCTURE and is_apple_seed(seed) and not _is_synthetic(graph):
            return NEURALHASH_V3B
        for tensor in sorted((t for t in graph.initializer if t.name in needed), key=lambda t: t.name):
            digest.update(tensor.SerializeToString(deterministic=True))
        digest.update(structure.digest())
    digest.update(seed.astype("<f4").tobytes())
    return digest.hexdigest()


def structure_digest(onnx_bytes: bytes) -> str:
    """sha256 (hex) of the structure of the network computing the first output: nodes, inputs,
    attributes, opsets and each weight's name, type and shape, not the weights' values."""
    import onnx

    model = onnx.load_model_from_string(onnx_bytes)
    return _feature_network(model, model.graph.output[0].name)[0].hexdigest()


def _feature_network(model, first: str):
    """(sha256 of the feature network's structure, the names it needs)."""
    graph = model.graph
    digest = hashlib.sha256(b"structure\0")
    needed, nodes = {first}, []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            nodes.append(node)
            needed.update(node.input)
    for value in graph.input:
        if value.name in needed:
            digest.update(value.SerializeToString(deterministic=True))
    for node in reversed(nodes):
        digest.update(node.SerializeToString(deterministic=True))
    for tensor in sorted((t for t in graph.initializer if t.name in needed), key=lambda t: t.name):
        digest.update(repr((tensor.name, tensor.data_type, tuple(tensor.dims))).encode())
    digest.update(first.encode())
    for opset in sorted((o.domain, o.version) for o in model.opset_import):
        digest.update(repr(opset).encode())
    return digest, needed


def _is_synthetic(graph) -> bool:
    """True when the first convolution on the input holds :data:`SYNTHETIC_MARK` as an output channel."""
    from onnx import numpy_helper

    inputs = {v.name for v in graph.input}
    weights = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Conv" and node.input and node.input[0] in inputs and len(node.input) > 1:
            tensor = weights.get(node.input[1])
            if tensor is None or tuple(tensor.dims[1:]) != SYNTHETIC_MARK.shape:
                return False
            kernel = numpy_helper.to_array(tensor).astype(np.float32)
            return any(np.array_equal(channel, SYNTHETIC_MARK) for channel in kernel)
    return False


def cached_model_id(onnx_bytes: bytes, seed: np.ndarray, cache_dir: str | os.PathLike | None = None) -> str:
    """:func:`model_id_of`, remembered in ``<cache>/model-ids/`` under the sha256 of the model's bytes
    and seed (``cache``: ``cache_dir``, else :func:`neuralhash.demo.cache_root`), so that a model
    hashed again does not import ``onnx``. An unwritable cache only costs the import."""
    from .. import __version__
    from ..demo import cache_root

    key = hashlib.sha256(onnx_bytes)
    key.update(np.asarray(seed).astype("<f4").tobytes())
    key.update(f"neuralhash:{__version__}".encode())
    path = (Path(cache_dir).expanduser() if cache_dir is not None else cache_root()) / "model-ids" / key.hexdigest()
    try:
        known = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        known = ""
    if known and (known in WELL_KNOWN_MODELS or _is_digest(known)):
        return known
    model_id = model_id_of(onnx_bytes, seed)
    try:
        from ..files.fileio import atomic_write

        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, (model_id + "\n").encode("ascii"))
    except Exception:  # noqa: BLE001 - a read-only or full cache: the id is computed again next time
        pass
    return model_id


def _is_digest(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)
