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
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from ..errors import EspressoError, GraphError, WeightsError
from .bundle import check_folder
from .container import DEFAULT_MAX_DECODED_SIZE, decode_container, is_container
from .coremldata import FILENAME as COREMLDATA_FILENAME
from .coremldata import BundleInfo, read_coremldata
from .layers import BlobRef, Input, Layer, parse_layer
from .quantization import QuantizedRef, check_quantized, dequantize
from .weights import WeightsFile

NET_SUFFIX = ".espresso.net"
SHAPE_SUFFIX = ".espresso.shape"
WEIGHTS_SUFFIX = ".espresso.weights"
SEED_FILENAME = "neuralhash_128x96_seed1.dat"

_ITEMSIZE = {"float32": 4, "float16": 2, "uint8": 1}
_VIEW = {"float32": "<f4", "float16": "<f2", "uint8": "u1"}


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
    coremldata: Path | None = None  # a compiled bundle's description (coremldata.py)

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
    # What a lenient load (strict=False, for inspect) found wrong instead of raising, in file order.
    problems: list[str] = field(default_factory=list)
    strict: bool = True
    bundle_info: BundleInfo | None = None  # the .mlmodelc's coremldata.bin, when read
    inputs: list[str] = field(init=False)
    outputs: list[str] = field(init=False)

    def __post_init__(self) -> None:
        if self.strict:
            self.inputs, self.outputs = _check_graph(self.layers, self.shapes, self.bundle_info)
            if self.weights is not None:
                self.check_weights()
            return
        try:
            self.inputs, self.outputs = _check_graph(self.layers, self.shapes, self.bundle_info)
        except GraphError as exc:
            self.problems.append(str(exc))
            self.inputs, self.outputs = _lenient_boundary(self.layers)
        if self.weights is not None:
            try:
                self.check_weights()
            except EspressoError as exc:
                self.problems.append(str(exc))

    # -- construction -------------------------------------------------------------

    @classmethod
    def from_documents(
        cls,
        graph: Any,
        shape_doc: Any | None = None,
        weights: WeightsFile | None = None,
        sources: ModelSources | None = None,
        *,
        strict: bool = True,
        bundle_info: BundleInfo | None = None,
    ) -> "EspressoModel":
        """Build from already-parsed JSON documents (the graph and the shape file).

        Any non-finite number in a layer's fields or in ``transform_params``
        is refused, naming the layer and field. ``strict=False`` (for
        ``inspect``) records what is wrong with a layer, the graph or the
        weights in ``problems`` instead of raising, keeping an unparsable
        layer as a plain :class:`Layer`.
        """
        where = str(sources.net) if sources and sources.net else "graph"
        if not isinstance(graph, dict):
            raise GraphError(f"{where}: the graph JSON should be an object, got {type(graph).__name__}")
        raw_layers = graph.get("layers")
        if not isinstance(raw_layers, list):
            raise GraphError(f"{where}: missing 'layers' list")
        problems: list[str] = []
        layers = []
        for i, raw in enumerate(raw_layers):
            try:
                if isinstance(raw, dict):
                    _check_finite_fields(raw, _layer_where(raw, i))
                layers.append(parse_layer(raw, i))
            except GraphError as exc:
                if strict:
                    raise GraphError(f"{where}: {exc}") from None
                problems.append(str(exc))
                plain = _plain_layer(raw)
                if plain is not None:
                    layers.append(plain)
        transform = graph.get("transform_params", {})
        if not isinstance(transform, dict):
            raise GraphError(f"{where}: 'transform_params' should be an object")
        try:
            _check_finite_fields(transform, "transform_params")
        except GraphError as exc:
            if strict:
                raise GraphError(f"{where}: {exc}") from None
            problems.append(str(exc))
        info = {k: v for k, v in graph.items() if k not in ("layers", "transform_params")}
        shapes = _parse_shapes(shape_doc, str(sources.shape) if sources and sources.shape else "shape") if shape_doc is not None else {}
        return cls(layers, shapes, transform, weights, sources or ModelSources(), info, problems, strict,
                   bundle_info=bundle_info)

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
        float16 payloads are upcast, which is exact; uint8 payloads are
        dequantised (``quantization.py``, *unverified* schemes).
        """
        if self.weights is None:
            raise WeightsError(f"layer {layer.name!r}: no weights file was loaded")
        ref = layer.blob_refs()[role]
        raw = self._payload(layer, ref)
        if isinstance(ref, QuantizedRef):
            companions = {r: self._payload(layer, c).view("<f4") for r, c in ref.companions.items()}
            return dequantize(ref, raw.reshape(ref.shape), companions, self._where(layer))
        array = raw.view(_VIEW[ref.dtype]).reshape(ref.shape)
        if array.dtype != np.float32:
            array = array.astype(np.float32)
        if getattr(layer, "transposed", False) and role == "weights":
            array = np.ascontiguousarray(array.T)
        return array

    def check_weights(self) -> None:
        """Every referenced blob exists, holds the element count its layer implies, and only finite values.

        Each distinct blob is scanned for NaN / infinity once, vectorised.
        """
        scanned: set[tuple[int, str]] = set()
        for layer in self.layers:
            for ref in layer.blob_refs().values():
                refs = [ref, *ref.companions.values()] if isinstance(ref, QuantizedRef) else [ref]
                for one in refs:
                    raw = self._payload(layer, one)
                    if one.dtype != "uint8" and (one.id, one.dtype) not in scanned:
                        scanned.add((one.id, one.dtype))
                        self._check_finite(layer, one, raw.view(_VIEW[one.dtype]))
                if isinstance(ref, QuantizedRef):
                    companions = {r: self._payload(layer, c).view("<f4") for r, c in ref.companions.items()}
                    check_quantized(ref, companions, self._where(layer))

    def _where(self, layer: Layer) -> str:
        source = self.weights.source if self.weights is not None else "<memory>"
        return f"{source}: layer {layer.name!r} ({layer.type})"

    def _check_finite(self, layer: Layer, ref: BlobRef, values: np.ndarray) -> None:
        finite = np.isfinite(values)
        if not finite.all():
            index = int(np.argmin(finite))
            raise WeightsError(
                f"{self._where(layer)}: {ref.field} {ref.id} holds a non-finite value "
                f"({values[index]!r} at element {index}): refused, it would make every output NaN or zero"
            )

    def _payload(self, layer: Layer, ref: BlobRef) -> np.ndarray:
        """The bytes of ``ref``, exactly ``count * itemsize`` of them.

        An entry holding more bytes than the layer needs is accepted when the
        extra bytes are all zero (compiled models pad some blobs); otherwise,
        and when it is short, the error names the layer and both counts.
        """
        assert self.weights is not None
        where = self._where(layer)
        if ref.id not in self.weights:
            raise WeightsError(f"{where}: {ref.field} {ref.id} names a blob that is not in the weights file")
        raw = self.weights.blob(ref.id)
        size = _ITEMSIZE[ref.dtype]
        need = ref.count * size
        if raw.size == need:
            return raw
        held = raw.size / size
        held_txt = str(int(held)) if held.is_integer() else f"{held:.1f}"
        counts = (f"{ref.field} {ref.id} holds {raw.size} bytes = {held_txt} {ref.dtype} values, "
                  f"the layer expects {ref.count} {list(ref.shape)}")
        if raw.size < need:
            raise WeightsError(f"{where}: {counts}")
        if raw[need:].any():
            raise WeightsError(f"{where}: {counts}, and the {raw.size - need} extra bytes are not all zero")
        return raw[:need]


def _layer_where(raw: Mapping[str, Any], index: int) -> str:
    name, type_name = raw.get("name"), raw.get("type")
    if isinstance(name, str) and isinstance(type_name, str):
        return f"layer {name!r} ({type_name})"
    return f"layer #{index}"


def _check_finite_fields(doc: Any, where: str, path: str = "", depth: int = 0) -> None:
    """Refuse NaN / infinity anywhere in a JSON object (Python's json reads NaN, Infinity, 1e999)."""
    if depth > 32:  # json.loads itself stops far deeper documents; parameters are flat
        return
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, value in items:
        name = f"{path}.{key}" if path else str(key)
        if isinstance(value, float) and not math.isfinite(value):
            raise GraphError(f"{where}: field {name!r} is {value!r}: non-finite parameters are refused")
        if isinstance(value, (dict, list)):
            _check_finite_fields(value, where, name, depth + 1)


def _plain_layer(raw: Any) -> Layer | None:
    """An unparsable layer kept as a plain Layer for inspection (None when it has no name/type/top)."""
    if not isinstance(raw, dict):
        return None
    name, type_name, top = raw.get("name"), raw.get("type"), raw.get("top")
    if not all(isinstance(v, str) and v for v in (name, type_name, top)):
        return None
    bottom = raw.get("bottom")
    bottoms = tuple(b for b in bottom.split(",") if b) if isinstance(bottom, str) else ()
    attributes = raw.get("attributes")
    is_output = bool(isinstance(attributes, dict) and attributes.get("is_output"))
    return Layer(name=name, type=type_name, bottoms=bottoms, top=top, is_output=is_output, params=raw)


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


def _check_graph(layers: list[Layer], shapes: Mapping[str, BlobShape] | None = None,
                 bundle: BundleInfo | None = None) -> tuple[list[str], list[str]]:
    """Return (inputs, outputs); every bottom must be produced before it is read.

    A layer may name several tops, comma-separated (``split_nd``). The inputs
    are the ``input`` layers' tops, or else every blob read and never
    produced, in order of first reading: the first always, the others when
    the bundle's ``coremldata.bin`` declares them as inputs (a second input,
    an LSTM's optional state) or, without a readable description, when the
    shape file gives their shape. Any other such blob is an error (a typo
    would otherwise become an input). The outputs are the bundle's declared
    outputs that are blobs of the graph (``coremldata.bin`` is the model's
    own description: a flagged ``is_output`` blob it does not declare is
    internal), else the flagged tops, else the tops nobody reads.
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
    described = bundle is not None and bundle.readable and bool(bundle.inputs)
    declared_names = {f.name for f in bundle.inputs} if described else set()
    declared_inputs = [layer.top for layer in layers if isinstance(layer, Input)]
    if declared_inputs:
        inputs = declared_inputs
    else:
        inputs = []
        for layer in layers:
            for blob in layer.bottoms:
                if blob not in producers and blob not in inputs:
                    inputs.append(blob)
        if not inputs:
            raise GraphError("the graph has no input: every blob is produced by a layer")
        for blob in inputs[1:]:
            known = blob in declared_names if described else blob in (shapes or {})
            if not known:
                why = "the bundle's coremldata.bin does not declare it as an input" if described else \
                      "the shape file has no entry for it"
                raise GraphError(
                    f"layer {_first_reader(layers, blob)!r} reads blob {blob!r}, which no layer produces "
                    f"(the network input is {inputs[0]!r}; {why})"
                )
    available = set(inputs)
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
    declared_outputs = [f.name for f in bundle.outputs if f.name in producers] \
        if bundle is not None and bundle.readable else []
    flagged = [top for layer in layers if layer.is_output for top in layer.tops]
    if declared_outputs:
        outputs = declared_outputs
    elif flagged:
        outputs = flagged
    else:
        consumed = {b for layer in layers for b in layer.bottoms}
        outputs = [top for layer in layers if not isinstance(layer, Input) for top in layer.tops if top not in consumed]
    return inputs, list(dict.fromkeys(outputs))


def _lenient_boundary(layers: list[Layer]) -> tuple[list[str], list[str]]:
    """For inspect, when the graph is invalid: every blob read and never produced, and the unread tops."""
    produced = {top for layer in layers for top in layer.tops}
    consumed = {b for layer in layers for b in layer.bottoms}
    inputs = list(dict.fromkeys(b for layer in layers for b in layer.bottoms if b not in produced))
    outputs = list(dict.fromkeys(t for layer in layers for t in layer.tops if t not in consumed))
    return inputs, outputs


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
    """Find the .net / .shape / .weights (and seed, coremldata.bin) files for ``src``.

    ``src`` is a folder holding one model (any prefix, any folder name: a
    compiled ``.mlmodelc`` is recognised by its contents; Vision.framework's
    folder is narrowed to its NeuralHash model) or the path of any of the
    three files. A pipeline bundle raises :class:`PipelineError` listing its
    stages (each is a folder ``locate`` accepts); an ML Program bundle
    raises :class:`MLProgramError`.
    """
    path = Path(src).expanduser()
    if path.is_dir():
        nets = sorted(p for p in path.iterdir() if p.name.endswith(NET_SUFFIX))
        if len(nets) > 1:
            neural = [p for p in nets if p.name.startswith("NeuralHash")]
            nets = neural or nets
        if not nets:
            check_folder(path)  # an ML Program, a pipeline, or nothing: each has its own message
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
        coremldata=optional(folder / COREMLDATA_FILENAME),
    )


def load_model(
    src: str | os.PathLike | ModelSources,
    *,
    require_weights: bool = True,
    max_decoded_size: int = DEFAULT_MAX_DECODED_SIZE,
    strict: bool = True,
) -> EspressoModel:
    """Read and validate a model. ``require_weights=False`` allows a graph without weights.

    ``strict=False`` (what ``inspect`` uses) keeps going past bad layers and
    weights, listing them in ``model.problems``. A bundle's
    ``coremldata.bin`` is read into ``model.bundle_info`` (with ``error``
    set when it cannot be interpreted; that never stops the load).
    """
    sources = src if isinstance(src, ModelSources) else locate(src)
    if sources.net is None:
        raise EspressoError("no graph (.espresso.net) file given")
    graph, _ = read_json_file(sources.net, max_decoded_size=max_decoded_size)
    shape_doc = read_json_file(sources.shape, max_decoded_size=max_decoded_size)[0] if sources.shape else None
    if sources.weights is None and require_weights:
        raise WeightsError(f"{sources.net}: no weights file beside it ({sources.net.name[: -len(NET_SUFFIX)]}{WEIGHTS_SUFFIX})")
    weights = WeightsFile.read(sources.weights) if sources.weights else None
    bundle = read_coremldata(sources.coremldata) if sources.coremldata is not None else None
    return EspressoModel.from_documents(graph, shape_doc, weights, sources, strict=strict, bundle_info=bundle)


def sources_from_paths(net: str | os.PathLike, shape: str | os.PathLike | None = None,
                       weights: str | os.PathLike | None = None, seed: str | os.PathLike | None = None) -> ModelSources:
    """ModelSources from explicit paths (each must exist)."""
    paths = {}
    for role, value in (("net", net), ("shape", shape), ("weights", weights), ("seed", seed)):
        if value is not None:
            p = Path(value).expanduser()
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
