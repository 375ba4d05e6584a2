"""The in-memory Espresso model: graph + shapes + weights, validated together.

``load_model(src)`` accepts a folder (any prefix, an ``.mlmodelc`` bundle, or
Vision.framework's Resources folder), one of the three files, or explicit
paths. The graph is checked for dangling or late ``bottom`` blobs; with a
weights file present, every blob a layer references must exist and hold the
element count the layer implies.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from ..errors import EspressoError, GraphError, WeightsError
from .container import DEFAULT_MAX_DECODED_SIZE, decode_container, is_container
from .layers import BlobRef, Input, Layer, parse_layer
from .weights import WeightsFile

NET_SUFFIX = ".espresso.net"
SHAPE_SUFFIX = ".espresso.shape"
WEIGHTS_SUFFIX = ".espresso.weights"
SEED_FILENAME = "neuralhash_128x96_seed1.dat"

_ITEMSIZE = {"float32": 4, "float16": 2}


@dataclass(frozen=True)
class BlobShape:
    """One entry of the shape file: the blob's Espresso 5-D view and its rank.

    Espresso blobs are 5-D ``[seq, n, k, h, w]`` (n is the batch, k the
    channels). ``rank`` is the entry's ``_rank`` when the file gives one;
    older files give none, and the rank is then inferred the way
    ESPRESSO.md reads them: features live in w, then h, then k, then seq, so
    leading size-1 axes of ``[seq, k, h, w]`` are not counted
    (``{k 1, h 3420, w 4}`` is rank 3, ``{k 1, h 1, w 64}`` rank 2,
    ``{k 3, h 1, w 1}`` rank 4, anything with seq > 1 rank 5). That reading
    is *unverified* beyond the files seen; ``rank_declared`` tells which.

    How a blob appears at the ONNX graph's boundary is :attr:`onnx_dims`.
    """

    n: int
    k: int
    h: int
    w: int
    rank: int = 4
    seq: int = 1
    rank_declared: bool = True

    @property
    def nkhw(self) -> tuple[int, int, int, int]:
        return (self.n, self.k, self.h, self.w)

    @property
    def view(self) -> tuple[int, int, int, int]:
        """The per-image Espresso view ``(seq, k, h, w)`` (the batch n is carried apart)."""
        return (self.seq, self.k, self.h, self.w)

    @property
    def onnx_dims(self) -> tuple[int, ...]:
        """The per-image dims of this blob as an ONNX graph input or output (after the batch).

        The last ``rank - 1`` of ``(seq, k, h, w)``: rank 4 is ``[k, h, w]``, rank 3
        ``[h, w]``, rank 2 ``[w]``, rank 5 ``[seq, k, h, w]``. An axis above 1 is never
        dropped, whatever the rank says: the rank only squeezes size-1 axes.
        """
        view = self.view
        needed = len(view)
        while needed > 0 and view[len(view) - needed] == 1:
            needed -= 1
        count = min(len(view), max(self.rank - 1, needed))
        return view[len(view) - count :] if count else ()


def infer_rank(seq: int, k: int, h: int, w: int) -> int:
    """The rank of a shape entry without ``_rank`` (see :class:`BlobShape`)."""
    view = [seq, k, h, w]
    while len(view) > 1 and view[0] == 1:
        view.pop(0)
    return 1 + len(view) if view != [1] else 1


@dataclass(frozen=True)
class ModelSources:
    """The files a model was read from (any may be None for in-memory models)."""

    net: Path | None = None
    shape: Path | None = None
    weights: Path | None = None
    seed: Path | None = None

    def sha256(self) -> dict[str, str]:
        """sha256 of each source file that exists, keyed by role."""
        out = {}
        for role in ("net", "shape", "weights"):
            path = getattr(self, role)
            if path is not None:
                h = hashlib.sha256()
                with open(path, "rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        h.update(chunk)
                out[role] = h.hexdigest()
        return out


@dataclass
class EspressoModel:
    layers: list[Layer]
    shapes: dict[str, BlobShape]
    transform_params: dict[str, Any]
    weights: WeightsFile | None = None
    sources: ModelSources = field(default_factory=ModelSources)
    graph_info: dict[str, Any] = field(default_factory=dict)  # storage, format_version, properties, analyses
    inputs: list[str] = field(init=False)
    outputs: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.inputs, self.outputs = _check_graph(self.layers)
        if self.weights is not None:
            self.check_weights()

    # -- construction -------------------------------------------------------------

    @classmethod
    def from_documents(
        cls,
        graph: Any,
        shape_doc: Any | None = None,
        weights: WeightsFile | None = None,
        sources: ModelSources | None = None,
    ) -> "EspressoModel":
        """Build from already-parsed JSON documents (the graph and the shape file)."""
        where = str(sources.net) if sources and sources.net else "graph"
        if not isinstance(graph, dict):
            raise GraphError(f"{where}: the graph JSON should be an object, got {type(graph).__name__}")
        raw_layers = graph.get("layers")
        if not isinstance(raw_layers, list):
            raise GraphError(f"{where}: missing 'layers' list")
        try:
            layers = [parse_layer(raw, i) for i, raw in enumerate(raw_layers)]
        except GraphError as exc:
            raise GraphError(f"{where}: {exc}") from None
        transform = graph.get("transform_params", {})
        if not isinstance(transform, dict):
            raise GraphError(f"{where}: 'transform_params' should be an object")
        info = {k: v for k, v in graph.items() if k not in ("layers", "transform_params")}
        shapes = _parse_shapes(shape_doc, str(sources.shape) if sources and sources.shape else "shape") if shape_doc is not None else {}
        return cls(layers, shapes, transform, weights, sources or ModelSources(), info)

    @classmethod
    def from_layers(
        cls,
        layers: list[Mapping[str, Any]],
        blobs: Mapping[int, np.ndarray | bytes] | None,
        shapes: Mapping[str, BlobShape | tuple[int, int, int, int]],
        transform_params: Mapping[str, Any] | None = None,
    ) -> "EspressoModel":
        """An in-memory model from layer JSON objects, weight blobs and (at least the input) shapes.

        The blobs go through the real weights encoder and reader, so the model
        is exactly what reading the written files would give.
        """
        from .weights import encode_weights
        from .writer import graph_document

        graph = graph_document(layers, storage="memory.espresso.weights", transform_params=transform_params)
        weights = WeightsFile.from_bytes(encode_weights(blobs), source="<memory>") if blobs is not None else None
        return cls.from_documents(graph, shapes_document(shapes), weights)

    # -- queries --------------------------------------------------------------------

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def layer_types(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for layer in self.layers:
            counts[layer.type] = counts.get(layer.type, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def parameter_count(self) -> int | None:
        """Number of weight values the layers reference (None without a weights file)."""
        if self.weights is None:
            return None
        seen: dict[int, int] = {}
        for layer in self.layers:
            for ref in layer.blob_refs().values():
                seen[ref.id] = ref.count
        return sum(seen.values())

    def tensor(self, layer: Layer, role: str) -> np.ndarray:
        """A weight blob as float32 in the canonical layout for ``layer``.

        Convolution ``weights`` [C, K/groups, kh, kw]; ``biases`` [C];
        batchnorm ``params`` [C, 4]; inner_product ``weights`` [nC, nB]
        (``w_f16_t`` is transposed back); load_constant ``constant`` [k, h, w].
        float16 payloads are upcast, which is exact.
        """
        if self.weights is None:
            raise WeightsError(f"layer {layer.name!r}: no weights file was loaded")
        ref = layer.blob_refs()[role]
        raw = self._payload(layer, ref)
        array = raw.view("<f4" if ref.dtype == "float32" else "<f2").reshape(ref.shape)
        if array.dtype != np.float32:
            array = array.astype(np.float32)
        if getattr(layer, "transposed", False) and role == "weights":
            array = np.ascontiguousarray(array.T)
        return array

    def check_weights(self) -> None:
        """Every referenced blob exists and has the element count its layer implies."""
        for layer in self.layers:
            for ref in layer.blob_refs().values():
                self._payload(layer, ref)

    def _payload(self, layer: Layer, ref: BlobRef) -> np.ndarray:
        assert self.weights is not None
        where = f"{self.weights.source}: layer {layer.name!r} ({layer.type})"
        if ref.id not in self.weights:
            raise WeightsError(f"{where}: {ref.field} {ref.id} names a blob that is not in the weights file")
        raw = self.weights.blob(ref.id)
        size = _ITEMSIZE[ref.dtype]
        expected = ref.count
        if raw.size != expected * size:
            held = raw.size / size
            held_txt = str(int(held)) if held.is_integer() else f"{held:.1f}"
            raise WeightsError(
                f"{where}: {ref.field} {ref.id} holds {raw.size} bytes = {held_txt} {ref.dtype} values, "
                f"the layer expects {expected} {list(ref.shape)}"
            )
        return raw


def _parse_shapes(doc: Any, where: str) -> dict[str, BlobShape]:
    if not isinstance(doc, dict) or not isinstance(doc.get("layer_shapes"), dict):
        raise GraphError(f"{where}: the shape file should be an object with a 'layer_shapes' object")
    shapes = {}
    for blob, entry in doc["layer_shapes"].items():
        if not isinstance(entry, dict):
            raise GraphError(f"{where}: shape of blob {blob!r} should be an object")
        dims = {}
        for key in ("n", "k", "h", "w", "seq"):
            value = entry.get(key, 1)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise GraphError(f"{where}: shape of blob {blob!r}: field {key!r} should be a non-negative integer")
            dims[key] = value
        rank = entry.get("_rank")
        if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= 5):
            raise GraphError(f"{where}: shape of blob {blob!r}: field '_rank' should be an integer from 1 to 5, got {rank!r}")
        declared = rank is not None
        if not declared:
            rank = infer_rank(dims["seq"], dims["k"], dims["h"], dims["w"])
        shapes[blob] = BlobShape(dims["n"], dims["k"], dims["h"], dims["w"], rank=rank, seq=dims["seq"],
                                 rank_declared=declared)
    return shapes


def _check_graph(layers: list[Layer]) -> tuple[list[str], list[str]]:
    """Return (inputs, outputs); every bottom must be produced before it is read.

    A layer may name several tops, comma-separated (``split_nd``).
    """
    if not layers:
        raise GraphError("the graph has no layers")
    names: set[str] = set()
    for layer in layers:
        if layer.name in names:
            raise GraphError(f"layer name {layer.name!r} appears twice")
        names.add(layer.name)
    producers = {}
    for index, layer in enumerate(layers):
        for top in layer.tops:
            producers.setdefault(top, index)
    declared_inputs = [layer.top for layer in layers if isinstance(layer, Input)]
    if declared_inputs:
        inputs = declared_inputs
    else:
        inputs = []
        for layer in layers:
            for blob in layer.bottoms:
                if blob not in producers and blob not in inputs:
                    inputs.append(blob)
        if len(inputs) > 1:
            raise GraphError(
                f"layer {_first_reader(layers, inputs[1])!r} reads blob {inputs[1]!r}, which no layer produces "
                f"(the network input is {inputs[0]!r})"
            )
        if not inputs:
            raise GraphError("the graph has no input: every blob is produced by a layer")
    available = set(declared_inputs or inputs)
    for layer in layers:
        for blob in layer.bottoms:
            if blob not in available:
                if blob in producers:
                    raise GraphError(
                        f"layer {layer.name!r} reads blob {blob!r} before layer "
                        f"{layers[producers[blob]].name!r} produces it"
                    )
                raise GraphError(f"layer {layer.name!r} reads blob {blob!r}, which no layer produces")
        available.update(layer.tops)
    flagged = [top for layer in layers if layer.is_output for top in layer.tops]
    if flagged:
        outputs = flagged
    else:
        consumed = {b for layer in layers for b in layer.bottoms}
        outputs = [top for layer in layers if not isinstance(layer, Input) for top in layer.tops if top not in consumed]
    return inputs, list(dict.fromkeys(outputs))


def _first_reader(layers: list[Layer], blob: str) -> str:
    return next(layer.name for layer in layers if blob in layer.bottoms)


# -- files ----------------------------------------------------------------------------


def read_json_file(path: str | os.PathLike, *, max_decoded_size: int = DEFAULT_MAX_DECODED_SIZE) -> tuple[Any, bytes]:
    """Read a ``.net`` / ``.shape`` file, compressed or plain; return (document, JSON bytes)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise EspressoError(f"{path}: cannot read ({exc.strerror or exc})") from None
    text = decode_json_bytes(data, source=str(path), max_decoded_size=max_decoded_size)
    try:
        return json.loads(text), text
    except (ValueError, RecursionError) as exc:
        raise GraphError(f"{path}: not valid JSON ({exc})") from None


def decode_json_bytes(data: bytes, *, source: str, max_decoded_size: int = DEFAULT_MAX_DECODED_SIZE) -> bytes:
    """The JSON text of a file's bytes: decoded from a container, or as it is."""
    if is_container(data):
        return decode_container(data, source=source, max_decoded_size=max_decoded_size)
    if data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"{":
        if len(data) > max_decoded_size:
            raise GraphError(f"{source}: {len(data)} bytes of JSON is above the limit of {max_decoded_size}")
        return data
    raise GraphError(f"{source}: neither a compressed Espresso container ('pbze') nor plain JSON")


def locate(src: str | os.PathLike) -> ModelSources:
    """Find the .net / .shape / .weights (and seed) files for ``src``.

    ``src`` is a folder holding one model (any prefix; Vision.framework's
    folder is narrowed to its NeuralHash model) or the path of any of the
    three files.
    """
    path = Path(src)
    if path.is_dir():
        nets = sorted(p for p in path.iterdir() if p.name.endswith(NET_SUFFIX))
        if len(nets) > 1:
            neural = [p for p in nets if p.name.startswith("NeuralHash")]
            nets = neural or nets
        if not nets:
            raise EspressoError(f"{path}: no *{NET_SUFFIX} file in this folder")
        if len(nets) > 1:
            listed = ", ".join(p.name for p in nets)
            raise EspressoError(f"{path}: several models here ({listed}); pass the .espresso.net path of one")
        prefix = nets[0].name[: -len(NET_SUFFIX)]
        folder = path
    else:
        for suffix in (NET_SUFFIX, SHAPE_SUFFIX, WEIGHTS_SUFFIX):
            if path.name.endswith(suffix):
                prefix, folder = path.name[: -len(suffix)], path.parent
                break
        else:
            if not path.exists():
                raise EspressoError(f"{path}: no such file or folder")
            raise EspressoError(f"{path}: not an Espresso file (expected *{NET_SUFFIX}, *{SHAPE_SUFFIX} or *{WEIGHTS_SUFFIX})")
    net = folder / (prefix + NET_SUFFIX)
    if not net.is_file():
        raise EspressoError(f"{net}: graph file not found")

    def optional(p: Path) -> Path | None:
        return p if p.is_file() else None

    return ModelSources(
        net=net,
        shape=optional(folder / (prefix + SHAPE_SUFFIX)),
        weights=optional(folder / (prefix + WEIGHTS_SUFFIX)),
        seed=optional(folder / SEED_FILENAME),
    )


def load_model(
    src: str | os.PathLike | ModelSources,
    *,
    require_weights: bool = True,
    max_decoded_size: int = DEFAULT_MAX_DECODED_SIZE,
) -> EspressoModel:
    """Read and validate a model. ``require_weights=False`` allows a graph without weights."""
    sources = src if isinstance(src, ModelSources) else locate(src)
    if sources.net is None:
        raise EspressoError("no graph (.espresso.net) file given")
    graph, _ = read_json_file(sources.net, max_decoded_size=max_decoded_size)
    shape_doc = read_json_file(sources.shape, max_decoded_size=max_decoded_size)[0] if sources.shape else None
    if sources.weights is None and require_weights:
        raise WeightsError(f"{sources.net}: no weights file beside it ({sources.net.name[: -len(NET_SUFFIX)]}{WEIGHTS_SUFFIX})")
    weights = WeightsFile.read(sources.weights) if sources.weights else None
    return EspressoModel.from_documents(graph, shape_doc, weights, sources)


def sources_from_paths(net: str | os.PathLike, shape: str | os.PathLike | None = None,
                       weights: str | os.PathLike | None = None, seed: str | os.PathLike | None = None) -> ModelSources:
    """ModelSources from explicit paths (each must exist)."""
    paths = {}
    for role, value in (("net", net), ("shape", shape), ("weights", weights), ("seed", seed)):
        if value is not None:
            p = Path(value)
            if not p.is_file():
                raise EspressoError(f"{p}: {role} file not found")
            paths[role] = p
    return ModelSources(**paths)


def iter_blob_refs(model: EspressoModel) -> Iterable[tuple[Layer, str, BlobRef]]:
    for layer in model.layers:
        for role, ref in layer.blob_refs().items():
            yield layer, role, ref


def shapes_document(shapes: Mapping[str, BlobShape | tuple[int, int, int, int]]) -> dict[str, Any]:
    """The shape-file JSON object for ``shapes`` (a tuple is ``(n, k, h, w)`` of rank 4)."""
    out = {}
    for blob, shape in shapes.items():
        if not isinstance(shape, BlobShape):
            shape = BlobShape(*(int(d) for d in shape))
        entry = {"k": int(shape.k), "w": int(shape.w), "n": int(shape.n), "h": int(shape.h)}
        if shape.rank_declared:
            entry["_rank"] = int(shape.rank)
        if shape.seq != 1:
            entry["seq"] = int(shape.seq)
        out[blob] = entry
    return {"layer_shapes": out}
