"""EspressoModel -> onnx.ModelProto, and writing the result safely.

The graph is built layer by layer by the registered handlers (``handlers.py``);
a layer that cannot be converted does not stop the others from being checked,
and one error lists them all (``unsupported_layers`` gives the same list
without converting). The graph is then optionally tidied (``fusion.py``
chains, Gemm, dead code), optionally extended with the NeuralHash hash head, checked against the shape file with
ONNX's own strict shape inference, and validated with ``onnx.checker``.
Nothing here depends on time, dict or set order: converting the same model
twice gives byte-identical files.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from .. import __version__
from ..errors import ConversionError, NeuralHashError, ShapeMismatchError, UnsupportedLayerError, layer_label
from ..files.fileio import atomic_write
from . import handlers as _handlers  # noqa: F401  (registers the handlers)
from ..espresso.layers import LAYER_TYPES
from .context import Context, View
from .coreml_io import add_interface
from .coreml_io import describe as describe_interface
from .fusion import plan_fusions
from .registry import HANDLERS

OPSET = 17
IR_VERSION = 8  # opset 17's IR version; onnxruntime 1.13+ loads it
BATCH = "batch"
HASH_PROJECTION = "hash_projection"
HASH_BITS = "hash_bits"


def convert(
    model: Any,
    *,
    optimize: bool = True,
    hash_head: np.ndarray | None = None,
    check_shapes: bool = True,
    with_preprocessing: bool = False,
) -> onnx.ModelProto:
    """Convert an EspressoModel to an ONNX model (opset 17, symbolic batch).

    ``optimize`` fuses NeuralHash's hard-swish / hard-sigmoid chains, uses Gemm
    for inner products and drops dead nodes and initializers. ``hash_head``
    (a [bits, features] matrix, NeuralHash's [96, 128] seed) appends
    ``hash_projection`` (float32 [batch, bits]) and ``hash_bits`` (uint8,
    1 where the projection is >= 0) outputs. ``check_shapes`` compares every
    inferred blob shape with the model's shape file. Graph inputs and outputs
    have their real rank (``BlobShape.onnx_dims``) after the symbolic batch.
    Every layer that cannot be converted is named in the one error raised.
    ``with_preprocessing`` adds what Core ML does around the network
    (``coreml_io.py``): the image input as uint8 pixels, a classifier's label.
    """
    input_shapes = _input_views(model)
    if model.weights is None and any(layer.blob_refs() for layer in model.layers):
        raise ConversionError("the model has no weights file: nothing to convert the layers' weights from")

    integer = integer_inputs(model)
    ctx = Context(model, optimize=optimize, input_shapes=input_shapes, renamed=_boundary_reshapes(model),
                  integer=integer)
    prologue = _reshape_inputs(ctx, model)
    fusions = plan_fusions(model) if optimize else {}
    failures = _build(ctx, model, fusions)
    if failures:
        raise _one_error(failures)
    ctx.nodes[:0] = prologue

    outputs = []
    for blob in model.outputs:
        value = ctx.value(blob)
        dims = _boundary_dims(model, blob, ctx.view(value))
        if value != blob:
            if blob in model.inputs:
                raise ConversionError(f"blob {blob!r} is both the network input and an output, which ONNX cannot name")
            target = ctx.const(np.array([0, *dims], np.int64), "", name=ctx.unique(f"{blob}/rank_shape"))
            ctx.nodes.append(helper.make_node("Reshape", [value, target], [blob], name=blob))
        outputs.append(_value_info(blob, dims, ctx.is_batch1(value)))
    if hash_head is not None:
        outputs += _add_hash_head(ctx, model, hash_head)

    inputs = [_value_info(blob, _boundary_dims(model, blob, input_shapes[blob]), False,
                          TensorProto.INT64 if blob in integer else TensorProto.FLOAT) for blob in model.inputs]
    nodes, initializers = ctx.nodes, ctx.initializers
    ctx.initializers = []  # the proto below takes them over
    if optimize:
        nodes, initializers = _prune(nodes, initializers, [o.name for o in outputs])
    proto = onnx.ModelProto(
        ir_version=IR_VERSION,
        producer_name="neuralhash",
        producer_version=__version__,
        opset_import=[helper.make_opsetid("", OPSET)],
    )
    graph = proto.graph
    graph.name = "espresso"
    graph.doc_string = f"Converted from Apple Espresso by neuralhash {__version__}"
    graph.node.extend(nodes)
    graph.input.extend(inputs)
    graph.output.extend(outputs)
    # Move the weights in one tensor at a time, so that they are never held twice.
    initializers.reverse()
    while initializers:
        graph.initializer.append(initializers.pop())
    props = {
        "neuralhash.transform_params": json.dumps(model.transform_params, sort_keys=True),
        "neuralhash.source_sha256": json.dumps(model.sources.sha256(), sort_keys=True),
        "neuralhash.converter_version": __version__,
    }
    bundle = getattr(model, "bundle_info", None)
    if bundle is not None and bundle.readable:  # the .mlmodelc's coremldata.bin (espresso/coremldata.py)
        props["neuralhash.coreml_description"] = json.dumps(bundle.to_json(), sort_keys=True)
        interface = describe_interface(model)
        if interface:
            props["neuralhash.coreml_interface"] = json.dumps(interface, sort_keys=True)
        if with_preprocessing:
            props["neuralhash.with_preprocessing"] = "1"
    helper.set_model_props(proto, props)
    skeleton = _skeleton(proto)
    if check_shapes:
        _check_shapes(model, ctx, skeleton)
    if with_preprocessing:
        add_interface(proto, model)
        skeleton = _skeleton(proto)
    try:
        onnx.checker.check_model(skeleton)
    except onnx.checker.ValidationError as exc:
        raise ConversionError(f"internal error: the generated ONNX model is invalid ({exc})") from None
    return proto


def unsupported_layers(model: Any) -> dict[str, str]:
    """Every layer the converter cannot handle, by name, with the reason (one line each).

    Checks every layer without stopping at the first and without reading a
    weight: a layer that fails stands in for its top with the shape file's
    view, so the layers after it are still checked. A layer whose input could
    not be stood in for (no shape entry) is listed as not converting, naming
    that input.
    The same layers make :func:`convert` fail, all named in one error.
    Raises ConversionError when nothing can be checked (no shape for the input).
    """
    ctx = Context(model, optimize=False, input_shapes=_input_views(model), dry=True)
    return {layer.name: str(exc) for layer, exc in _build(ctx, model, {})}


def _input_views(model: Any) -> dict[str, View]:
    views = {}
    for blob in model.inputs:
        shape = model.shapes.get(blob)
        if shape is None:
            raise ConversionError(
                f"the shape file gives no shape for the input blob {blob!r}: the converter needs its dimensions"
            )
        views[blob] = shape.view
    return views


def _build(ctx: Context, model: Any, fusions: dict) -> list[tuple[Any, NeuralHashError]]:
    """Run every layer's handler; return the (layer, error) of those that failed."""
    failures: list[tuple[Any, NeuralHashError]] = []
    for index, layer in enumerate(model.layers):
        ctx.begin(index, layer)
        fusion = fusions.get(layer.name)
        if fusion is not None:
            if layer is fusion.layers[-1]:
                fusion.emit(ctx)
            continue
        fn = HANDLERS.get(layer.type)
        try:
            parsed_as = LAYER_TYPES.get(layer.type)
            if fn is not None and parsed_as is not None and not isinstance(layer, parsed_as):
                # A leniently loaded model (inspect) keeps a layer it could not parse as a bare Layer.
                label = layer_label(layer)
                why = next((p for p in getattr(model, "problems", ()) if p.startswith(label + ":")), None)
                raise UnsupportedLayerError(why or f"{label}: its fields could not be read")
            if fn is None:
                reason = UNSUPPORTED_TYPES.get(layer.type, "")
                raise UnsupportedLayerError(
                    f"{layer_label(layer)}: layer type {layer.type!r} is not supported{': ' + reason if reason else ''}"
                )
            missing = [b for b in layer.bottoms if not ctx.has_value(b)]
            if missing:  # an input failed and had no shape entry to stand in with
                raise UnsupportedLayerError(
                    f"{layer_label(layer)}: cannot be converted: its input {missing[0]!r} comes from a layer that "
                    "cannot be converted, and the shape file has no entry to go on with")
            fn(ctx, layer)
        except NeuralHashError as exc:  # ConversionError, and a weight that cannot be read
            failures.append((layer, exc))
            for top in layer.tops:
                shape = model.shapes.get(top)
                if shape is not None:
                    ctx.placeholder(top, shape.view)
    return failures


def _one_error(failures: list[tuple[Any, NeuralHashError]]) -> NeuralHashError:
    """One failure as itself; several as one error listing them all."""
    if len(failures) == 1:
        return failures[0][1]
    cls = UnsupportedLayerError if all(isinstance(e, UnsupportedLayerError) for _, e in failures) else ConversionError
    listed = "; ".join(str(e) for _, e in failures)
    return cls(f"{len(failures)} layers cannot be converted: {listed}")


def _boundary_dims(model: Any, blob: str, view: View) -> tuple[int, ...]:
    """A graph input's or output's per-image dims: its real rank from the shape file.

    Without a shape entry, the context's own layout ([k, h, w], or [seq, k, h, w]).
    """
    shape = model.shapes.get(blob)
    if shape is not None and shape.view == tuple(view):
        return shape.onnx_dims
    return tuple(view) if view[0] != 1 else tuple(view[1:])


def _internal_dims(view: View) -> tuple[int, ...]:
    return tuple(view) if view[0] != 1 else tuple(view[1:])


def _boundary_reshapes(model: Any) -> list[str]:
    """Outputs whose real rank differs from their in-graph layout: a final Reshape takes their name."""
    out = []
    for blob in model.outputs:
        shape = model.shapes.get(blob)
        if shape is not None and shape.onnx_dims != _internal_dims(shape.view):
            out.append(blob)
    return out


def _reshape_inputs(ctx: Context, model: Any) -> list[onnx.NodeProto]:
    """Reshape nodes from each input's real rank to its in-graph layout (none for NCHW inputs)."""
    nodes = []
    for blob in model.inputs:
        view = ctx.view(blob)
        if model.shapes[blob].onnx_dims == _internal_dims(view):
            continue
        name = ctx.unique(f"{blob}/espresso_view")
        target = ctx.unique(f"{blob}/espresso_view_shape")
        ctx.initializers.append(onnx.numpy_helper.from_array(np.array([0, *_internal_dims(view)], np.int64), target))
        nodes.append(helper.make_node("Reshape", [blob, target], [name], name=name))
        ctx.rebind(blob, name, view)
        if ctx.is_integer(blob):
            ctx.integer.add(name)
    return nodes


# Types with no handler, and why (shown by ``unsupported_layers`` and ``inspect``).
UNSUPPORTED_TYPES = {
    "crop_and_resize": "Core ML's crop-and-resize has four sampling modes and four box layouts; which of them "
                       "Espresso's grid_sampling_mode and crop_index_mode numbers are is not evidenced (its reduce "
                       "codes do not follow Core ML's enumerations either)",
    "rnn_arch": "a recurrent (LSTM) layer: how Espresso lays out its weights (W_x, W_h, b) and orders the gates "
                "is not evidenced by any model with weights, and a guess could not be checked",
}


_SKELETON_LIMIT = 1024  # initializers of more elements become graph inputs in the skeleton


def _skeleton(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``proto`` with its large initializers turned into typed graph inputs.

    Shape inference and the checker serialise the whole model; they need the
    weights' types and shapes, not their values, so the skeleton spares two or
    three copies of the weights. Small initializers (Reshape targets, scalars)
    stay, since shape inference reads their values.
    """
    skeleton = onnx.ModelProto()
    for field in ("ir_version", "producer_name", "producer_version"):
        setattr(skeleton, field, getattr(proto, field))
    skeleton.opset_import.extend(proto.opset_import)
    graph = skeleton.graph
    graph.name = proto.graph.name
    graph.node.extend(proto.graph.node)
    graph.input.extend(proto.graph.input)
    graph.output.extend(proto.graph.output)
    for init in proto.graph.initializer:
        count = int(np.prod(init.dims)) if init.dims else 1
        if count <= _SKELETON_LIMIT:
            graph.initializer.append(init)
        else:
            graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    return skeleton


def _value_info(name: str, shape: tuple[int, ...], batch1: bool, elem_type: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, [1 if batch1 else BATCH, *shape])


def integer_inputs(model: Any) -> set[str]:
    """The inputs read only by embedding tables (``inner_product`` with ``is_lookup``): int64 in ONNX."""
    readers: dict[str, list[Any]] = {}
    for layer in model.layers:
        for blob in layer.bottoms:
            readers.setdefault(blob, []).append(layer)
    return {blob for blob in model.inputs
            if readers.get(blob) and all(getattr(r, "is_lookup", False) for r in readers[blob])}


def _add_hash_head(ctx: Context, model: Any, matrix: np.ndarray) -> list[onnx.ValueInfoProto]:
    """Flatten -> MatMul with M.T -> hash_projection; >= 0 -> uint8 hash_bits."""
    if len(model.outputs) != 1:
        raise ConversionError(f"a hash head needs a model with one output, this one has {len(model.outputs)}")
    matrix = np.asarray(matrix)
    blob = model.outputs[0]
    value = ctx.value(blob)
    features = int(np.prod(ctx.view(value)))
    if matrix.ndim != 2 or matrix.shape[1] != features:
        raise ConversionError(
            f"the hash head matrix is {list(matrix.shape)}, the output {blob!r} has {features} features "
            f"(expected [bits, {features}])"
        )
    if not np.isfinite(matrix).all():
        raise ConversionError("the hash head matrix holds non-finite values")
    for name in (HASH_PROJECTION, HASH_BITS):
        if ctx.is_used(name):
            raise ConversionError(f"the model already has a blob named {name!r}; cannot add the hash head")
        ctx.unique(name)
    bits = int(matrix.shape[0])

    def add(op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        ctx.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def const(array: np.ndarray, name: str) -> str:
        ctx.initializers.append(onnx.numpy_helper.from_array(array, ctx.unique(name)))
        return ctx.initializers[-1].name

    flat = add("Flatten", [value], ctx.unique("hash_head/features"), axis=1)
    seed = const(np.ascontiguousarray(matrix.astype(np.float32).T), "hash_head/seed_t")
    projection = add("MatMul", [flat, seed], HASH_PROJECTION)
    zero = const(np.array(0, np.float32), "hash_head/zero")
    nonneg = add("GreaterOrEqual", [projection, zero], ctx.unique("hash_head/nonnegative"))
    add("Cast", [nonneg], HASH_BITS, to=TensorProto.UINT8)
    batch = 1 if ctx.is_batch1(value) else BATCH
    return [
        helper.make_tensor_value_info(HASH_PROJECTION, TensorProto.FLOAT, [batch, bits]),
        helper.make_tensor_value_info(HASH_BITS, TensorProto.UINT8, [batch, bits]),
    ]


def _prune(nodes: list[onnx.NodeProto], initializers: list[onnx.TensorProto], outputs: list[str]):
    """Drop nodes that no output depends on, then initializers no node reads."""
    needed = set(outputs)
    kept = []
    for node in reversed(nodes):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    kept.reverse()
    return kept, [t for t in initializers if t.name in needed]


def _check_shapes(model: Any, ctx: Context, proto: onnx.ModelProto) -> None:
    """ONNX's strict shape inference against the shape file, first mismatch in layer order.

    Every blob the graph still has is compared in its in-graph layout
    ((seq,) k, h, w after the batch); graph inputs and outputs also in their
    real rank.
    """
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as exc:
        raise ConversionError(f"ONNX shape inference rejects the converted graph: {exc}") from None
    dims: dict[str, list[int | str | None]] = {}
    for info in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        t = info.type.tensor_type
        if t.HasField("shape"):
            dims[info.name] = [
                d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim
            ]
    for init in inferred.graph.initializer:  # load_constant blobs
        dims.setdefault(init.name, list(init.dims))
    last_definition = {}
    for index, layer in enumerate(model.layers):
        for top in layer.tops:
            last_definition[top] = index
    for index, layer in enumerate(model.layers):
        for top in layer.tops:
            expected = model.shapes.get(top)
            if expected is None or layer.type == "input" or last_definition[top] != index:
                continue
            value = ctx.planned_name(index, top)
            if ctx.current(top) != value:
                continue  # fused away
            _compare(layer, top, dims.get(value), list(_internal_dims(expected.view)), "")
    for blob in (*model.inputs, *model.outputs):
        expected = model.shapes.get(blob)
        if expected is not None:
            producer = next((layer for layer in model.layers if blob in layer.tops), None)
            _compare(producer, blob, dims.get(blob), list(expected.onnx_dims), f" (rank {expected.rank})")


def _compare(layer: Any, blob: str, got: list | None, want: list[int], what: str) -> None:
    if got is None or got[1:] != want:
        shown = "unknown" if got is None else str(got[1:])
        who = layer_label(layer) if layer is not None else f"input {blob!r}"
        raise ShapeMismatchError(
            f"{who}: blob {blob!r} is {shown} (after the batch) in the ONNX graph, the shape file says {want}{what}"
        )


def save_model(proto: onnx.ModelProto, path: str | os.PathLike) -> None:
    """Write ``proto`` to ``path`` via a temporary file and a rename.

    The bytes are exactly ``proto.SerializeToString(deterministic=True)``, but
    the weights are streamed: the fields around the graph, and the graph's
    fields around its initializers, are serialised separately (in field-number
    order, as protobuf does), and each initializer is appended one tensor at a
    time. The serialised weights never sit in memory beside the proto's own.
    """
    graph = proto.graph
    graph_no = onnx.ModelProto.DESCRIPTOR.fields_by_name["graph"].number
    init_no = onnx.GraphProto.DESCRIPTOR.fields_by_name["initializer"].number
    try:
        model_head, model_tail = (
            _fields(proto, onnx.ModelProto, lambda n: n < graph_no),
            _fields(proto, onnx.ModelProto, lambda n: n > graph_no),
        )
        graph_head, graph_tail = (
            _fields(graph, onnx.GraphProto, lambda n: n < init_no),
            _fields(graph, onnx.GraphProto, lambda n: n > init_no),
        )
    except ValueError as exc:
        raise ConversionError(f"{path}: cannot serialise the ONNX model ({exc})") from None
    init_tag = _tag(init_no)
    graph_len = len(graph_head) + len(graph_tail) + sum(
        len(init_tag) + len(_varint(n)) + n for n in (t.ByteSize() for t in graph.initializer)
    )

    def chunks():
        yield model_head
        if proto.HasField("graph"):
            yield _tag(graph_no) + _varint(graph_len) + graph_head
            for tensor in graph.initializer:
                data = tensor.SerializeToString(deterministic=True)
                yield init_tag + _varint(len(data)) + data
            yield graph_tail
        yield model_tail

    atomic_write(os.path.expanduser(path), chunks())


def _fields(source, cls, wanted) -> bytes:
    """The serialised fields of ``source`` whose numbers ``wanted`` accepts (never the weights)."""
    part = cls()
    for field, value in source.ListFields():
        if not wanted(field.number):
            continue
        if field.is_repeated:
            getattr(part, field.name).extend(value)
        elif field.type == field.TYPE_MESSAGE:
            getattr(part, field.name).CopyFrom(value)
        else:
            setattr(part, field.name, value)
    return part.SerializeToString(deterministic=True)


def _tag(number: int) -> bytes:
    return _varint(number << 3 | 2)  # wire type 2: length-delimited


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)
