"""ONNX converters of Espresso layers, one per layer type (see ESPRESSO.md).

Every Espresso blob is an ONNX value with a symbolic batch first: 4-D NCHW
when its seq is 1, ``[N, seq, k, h, w]`` otherwise (see ``context.py``).
Image layers (convolution, pooling, ...) refuse sequence blobs by name. Padding
is always made explicit from the static input size, so TensorFlow's SAME
(the odd extra row / column at the bottom / right) needs no ``auto_pad``.
Semantics that ESPRESSO.md marks *unverified* follow the NumPy reference
executor (``neuralhash.reference``), so that a wrong guess shows up as a
shape-file mismatch or a verification failure, not as a silent difference
between the two; anything else raises UnsupportedLayerError naming the
layer, the field and the value.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import onnx

from ..espresso.layers import (
    AXIS_NAMES,
    Activation,
    BatchNorm,
    Concat,
    Convolution,
    Elementwise,
    ExpandDims,
    Flatten,
    GeneralConcat,
    GeneralPadding,
    GeneralSlice,
    InnerProduct,
    Input,
    LoadConstant,
    Pool,
    Reduce,
    Reshape,
    SequenceConcat,
    Slice,
    Softmax,
    SoftmaxND,
    SplitND,
    Squeeze,
    Transpose,
    Upsample,
    nd_axis_name,
)
from ..errors import UnsupportedLayerError, layer_label
from ..espresso.padding import PaddingRefused, WindowTooSmall, axis_window
from .context import Context, Shape, View
from .registry import handler

# -- helpers ---------------------------------------------------------------------------------


def _axis_window(ctx: Context, axis: str, size: int, kernel: int, stride: int, dilation: int,
                 pad_mode: int, pads: tuple[int, int]) -> tuple[int, int, int]:
    """(output size, pad before, pad after) along one spatial axis (``espresso/padding.py``)."""
    try:
        return axis_window(pad_mode, axis, size, kernel, stride, dilation, pads)
    except PaddingRefused as exc:
        raise ctx.unsupported(exc.field, exc.value, exc.detail) from None
    except WindowTooSmall as exc:
        raise ctx.mismatch(str(exc)) from None


def _window(ctx: Context, h: int, w: int, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int,
            pad_mode: int, pads: tuple[int, int, int, int]) -> tuple[int, int, list[int]]:
    """(output h, output w, ONNX pads [top, left, bottom, right])."""
    pt, pb, pl, pr = pads
    ho, top, bottom = _axis_window(ctx, "height", h, kh, sh, dh, pad_mode, (pt, pb))
    wo, left, right = _axis_window(ctx, "width", w, kw, sw, dw, pad_mode, (pl, pr))
    return ho, wo, [top, left, bottom, right]


def _check_pad_fill(ctx: Context, layer: Any, value_too: bool) -> None:
    """Only zero padding (or -inf for max pooling) is handled."""
    fill = layer.params.get("pad_fill_mode", 0)
    if fill not in (0, None):
        raise ctx.unsupported("pad_fill_mode", fill)
    value = layer.params.get("pad_value", 0)
    if value_too and value not in (0, None):
        raise ctx.unsupported("pad_value", value)


def _fused(ctx: Context, y: str, relu: bool, tanh: bool, relu_field: str, tanh_field: str) -> str:
    if relu and tanh:  # the order would be a guess
        raise ctx.unsupported(f"{relu_field} + {tanh_field}", (1, 1), "both set")
    if relu:
        return ctx.node("Relu", [y])
    if tanh:
        return ctx.node("Tanh", [y])
    return y


def _broadcast(ctx: Context, shapes: list[View]) -> View:
    try:
        return tuple(int(d) for d in np.broadcast_shapes(*shapes))  # type: ignore[return-value]
    except ValueError:
        listed = ", ".join(str(list(s)) for s in shapes)
        raise ctx.mismatch(f"inputs of [seq, k, h, w] {listed} do not broadcast") from None


_LAYOUT4 = {"k": 1, "h": 2, "w": 3}
_LAYOUT5 = {"n": 0, "seq": 1, "k": 2, "h": 3, "w": 4}
_VIEW_INDEX = {"seq": 0, "k": 1, "h": 2, "w": 3}


def _input_rank(ctx: Context, i: int = 0) -> int:
    """The rank the shape file gives the layer's i-th input (4 without an entry, the old reading)."""
    shape = ctx.model.shapes.get(ctx.layer.bottoms[i])
    return shape.rank if shape is not None else 4


def _shape_entry(ctx: Context, top: str, why: str):
    shape = ctx.model.shapes.get(top)
    if shape is None:
        raise UnsupportedLayerError(f"{layer_label(ctx.layer)}: blob {top!r} has no entry in the shape file, "
                                    f"which gives {why}")
    return shape


def _reshaped(ctx: Context, value: str, view: View) -> str:
    """``value`` reshaped (C order, per image) to ``view`` in the context's layout."""
    dims = list(view) if view[0] != 1 else list(view[1:])
    return ctx.node("Reshape", [value, ctx.ints([0, *dims], "shape")])


# -- layers ----------------------------------------------------------------------------------


@handler("input")
def input_(ctx: Context, layer: Input) -> None:
    """The graph input itself: no node (an input of another rank is already reshaped to its view)."""
    value = ctx.value(layer.top)
    if value == layer.top:
        ctx.finish(value, ctx.view(value), batch1=False)


@handler("convolution")
def convolution(ctx: Context, layer: Convolution) -> None:
    """Conv with explicit pads; weights [C, K/groups, kh, kw] are ONNX's layout already."""
    ctx.expect_inputs(1)
    if layer.has_batch_norm:
        raise ctx.unsupported("has_batch_norm", 1)
    if layer.n_parallel != 1:
        raise ctx.unsupported("n_parallel", layer.n_parallel)
    _check_pad_fill(ctx, layer, value_too=True)
    k, h, w = ctx.in_shape()
    if k != layer.in_channels:
        raise ctx.mismatch(f"input has {k} channels, the layer expects K = {layer.in_channels}")
    kh, kw = layer.kernel_h, layer.kernel_w
    ho, wo, pads = _window(ctx, h, w, kh, kw, layer.stride_h, layer.stride_w, layer.dilation_h,
                           layer.dilation_w, layer.pad_mode, layer.pads)
    inputs = [ctx.input(), ctx.weight("weights")]
    if layer.has_biases:
        inputs.append(ctx.weight("biases"))
    attrs: dict[str, Any] = dict(kernel_shape=[kh, kw], strides=[layer.stride_h, layer.stride_w], pads=pads)
    if (layer.dilation_h, layer.dilation_w) != (1, 1):
        attrs["dilations"] = [layer.dilation_h, layer.dilation_w]
    if layer.groups != 1:
        attrs["group"] = layer.groups
    y = ctx.node("Conv", inputs, **attrs)
    y = _fused(ctx, y, layer.fused_relu, layer.fused_tanh, "fused_relu", "fused_tanh")
    ctx.finish(y, (layer.out_channels, ho, wo))


def _column(i: int) -> Callable[[np.ndarray], np.ndarray]:
    """Column ``i`` of a batchnorm parameter blob [C, 4] (scale, shift, mean, variance)."""
    return lambda params: np.ascontiguousarray(params[:, i])


@handler("batchnorm")
def batchnorm(ctx: Context, layer: BatchNorm) -> None:
    """training 1 + instancenorm 1: InstanceNormalization; training 0: BatchNormalization (unverified)."""
    ctx.expect_inputs(1)
    shape = ctx.in_shape()
    if shape[0] != layer.channels:
        raise ctx.mismatch(f"input has {shape[0]} channels, the layer expects C = {layer.channels}")
    scale = ctx.weight("params", "scale", _column(0))
    shift = ctx.weight("params", "shift", _column(1))
    if layer.training:
        if not layer.instance_norm:  # training-mode batch norm would mix the images of a batch
            raise ctx.unsupported("training_instancenorm", 0, "with training 1")
        y = ctx.node("InstanceNormalization", [ctx.input(), scale, shift], epsilon=layer.eps)
    else:
        mean = ctx.weight("params", "mean", _column(2))
        var = ctx.weight("params", "variance", _column(3))
        y = ctx.node("BatchNormalization", [ctx.input(), scale, shift, mean, var], epsilon=layer.eps)
    ctx.finish(y, shape)


def _variadic(op: str) -> Callable[[Context, Elementwise], str]:
    """A chain of binary ``op`` nodes over all inputs (numpy broadcasting)."""

    def build(ctx: Context, layer: Elementwise) -> str:
        values = _aligned(ctx)
        y = values[0]
        for other in values[1:]:
            y = ctx.node(op, [y, other])
        return y

    return build


def _with_alpha(op: str) -> Callable[[Context, Elementwise], str]:
    return lambda ctx, layer: ctx.node(op, [ctx.input(), ctx.scalar(layer.alpha, "alpha")])


def _clip(ctx: Context, layer: Elementwise) -> str:
    return ctx.node("Clip", [ctx.input(), ctx.scalar(layer.alpha, "min"), ctx.scalar(layer.beta, "max")])


def _unary_neutral(ctx: Context, layer: Elementwise, op: int, alpha: bool) -> None:
    """Only the alpha (if ``alpha``) / beta values seen in real files are accepted for ``op``."""
    if layer.params.get("beta", 0) != 0:
        raise ctx.unsupported("beta", layer.beta, f"operation {op}")
    if alpha and layer.params.get("alpha", 1) != 1:
        raise ctx.unsupported("alpha", layer.alpha, f"operation {op}")


def _add_alpha(ctx: Context, layer: Elementwise) -> str:  # one input: x + alpha (Core ML's AddLayerParams)
    _unary_neutral(ctx, layer, 0, alpha=False)
    return ctx.node("Add", [ctx.input(), ctx.scalar(layer.alpha, "alpha")])


def _threshold(ctx: Context, layer: Elementwise) -> str:  # max(x, alpha): ReLU6 lowering (see ESPRESSO.md)
    _unary_neutral(ctx, layer, 25, alpha=False)
    return ctx.node("Max", [ctx.input(), ctx.scalar(layer.alpha, "alpha")])


def _exp(ctx: Context, layer: Elementwise) -> str:  # exp(x): SSDOcr's lowered softmax
    _unary_neutral(ctx, layer, 27, alpha=True)
    return ctx.node("Exp", [ctx.input()])


def _inverse(ctx: Context, layer: Elementwise) -> str:  # alpha / x: SSDOcr's lowered softmax
    _unary_neutral(ctx, layer, 10, alpha=False)
    return ctx.node("Div", [ctx.scalar(layer.alpha, "alpha"), ctx.input()])


# (operation, "1" for one input / "n" for several) -> (input count: n or (low, high|None), builder).
# 0, 1 (two inputs), 2, 3 and 119 are NeuralHash's; 25, 27 and 10 are read off real models' lowering
# patterns (ESPRESSO.md, "Seen in real compiled models"), checked by tests of those patterns: still
# unverified against Core ML itself. The rest are unverified.
_ELEMENTWISE: dict[tuple[int, str], tuple[Any, Callable[[Context, Elementwise], str]]] = {
    (0, "n"): ((2, None), _variadic("Add")),
    (1, "n"): ((2, None), _variadic("Mul")),
    (0, "1"): (1, _add_alpha),  # x + alpha: Core ML's Add with one input (NeuralNetwork.proto)
    (1, "1"): (1, _with_alpha("Mul")),  # x * alpha: Core ML's Multiply with one input (NeuralNetwork.proto)
    (2, "1"): (1, _with_alpha("Add")),  # x + alpha
    (3, "1"): (1, _with_alpha("Mul")),  # x * alpha
    (22, "n"): (2, _variadic("Min")),  # unverified
    (23, "n"): (2, _variadic("Max")),  # unverified
    (24, "1"): (1, lambda ctx, layer: ctx.node("Abs", [ctx.input()])),  # unverified
    (33, "n"): (2, _variadic("Sub")),  # unverified: a - b
    (102, "n"): (2, _variadic("Div")),  # unverified: a / b
    (119, "1"): (1, _clip),  # clip(x, alpha, beta)
    (25, "1"): (1, _threshold),  # max(x, alpha), unverified
    (27, "1"): (1, _exp),  # exp(x), unverified
    (10, "1"): (1, _inverse),  # alpha / x, unverified
}
ELEMENTWISE_OPERATIONS = tuple(sorted({op for op, _ in _ELEMENTWISE}))


@handler("elementwise")
def elementwise(ctx: Context, layer: Elementwise) -> None:
    op = layer.operation
    arity = "1" if len(layer.bottoms) == 1 else "n"
    entry = _ELEMENTWISE.get((op, arity)) or _ELEMENTWISE.get((op, "n" if arity == "1" else "1"))
    if entry is None:
        raise ctx.unsupported("operation", op)
    count, build = entry
    ctx.expect_inputs(count, f"operation {op}")  # names the count when only the other arity exists
    if arity == "n" and not layer.binary_modifiers_neutral:
        # What alpha / beta do to a binary operation is unknown: refuse rather than ignore them.
        raise ctx.unsupported("alpha, beta", (layer.alpha, layer.beta), f"operation {op} with several inputs")
    view = _broadcast(ctx, [ctx.view(v) for v in ctx.inputs()])
    y = build(ctx, layer)
    if layer.fused_relu:
        y = ctx.node("Relu", [y])
    if view[0] == 1 and any(ctx.view(v)[0] != 1 for v in ctx.inputs()):
        y = ctx.pack(y, view)
    ctx.finish(y, view)


def _aligned(ctx: Context) -> list[str]:
    """The inputs, all 5-D when any is a sequence blob (so that broadcasting lines axes up)."""
    values = ctx.inputs()
    if any(ctx.view(v)[0] != 1 for v in values):
        return [ctx.as5(v) for v in values]
    return values


def _unary(op: str) -> Callable[[Context, Activation], str]:
    return lambda ctx, layer: ctx.node(op, [ctx.input()])


def _scaled_tanh(ctx: Context, layer: Activation) -> str:  # alpha * tanh(beta * x)
    t = ctx.node("Mul", [ctx.input(), ctx.scalar(layer.beta, "beta")])
    t = ctx.node("Tanh", [t])
    return ctx.node("Mul", [t, ctx.scalar(layer.alpha, "alpha")])


def _linear(ctx: Context, layer: Activation) -> str:  # alpha * x + beta
    t = ctx.node("Mul", [ctx.input(), ctx.scalar(layer.alpha, "alpha")])
    return ctx.node("Add", [t, ctx.scalar(layer.beta, "beta")])


def _silu(ctx: Context, layer: Activation) -> str:  # x * sigmoid(x); ONNX has no Swish before opset 24
    s = ctx.node("Sigmoid", [ctx.input()])
    return ctx.node("Mul", [ctx.input(), s])


def _clip01(ctx: Context, layer: Activation) -> str:
    """clip(x, 0, 1): mode 7 with beta 0 and no alpha, between linear(1/6) and linear(6) in layers
    named ``..._clip_0_1`` (ESPRESSO.md). *Unverified*; other parameter values are refused."""
    if layer.params.get("beta", 0) != 0 or layer.params.get("alpha", 1) != 1:
        raise ctx.unsupported("alpha, beta", (layer.params.get("alpha"), layer.params.get("beta")),
                              "mode 7 is known only as clip(x, 0, 1), with beta 0 and no alpha")
    return ctx.node("Clip", [ctx.input(), ctx.scalar(0.0, "min"), ctx.scalar(1.0, "max")])


# mode -> builder. Only mode 0 (ReLU) is in NeuralHash; 6 (linear) and 7 are read off Core ML's
# ReLU6 lowering in real models (ESPRESSO.md); every other mode is unverified.
_ACTIVATIONS: dict[int, Callable[[Context, Activation], str]] = {
    0: _unary("Relu"),
    1: _unary("Tanh"),
    2: lambda ctx, layer: ctx.node("LeakyRelu", [ctx.input()], alpha=layer.alpha),
    3: _unary("Sigmoid"),
    5: _scaled_tanh,
    6: _linear,
    7: _clip01,
    8: lambda ctx, layer: ctx.node("Elu", [ctx.input()], alpha=layer.alpha),
    9: lambda ctx, layer: ctx.node("ThresholdedRelu", [ctx.input()], alpha=layer.alpha),
    10: _unary("Softplus"),
    12: _unary("Softsign"),
    25: _silu,
    26: _unary("HardSwish"),
}
ACTIVATION_MODES = tuple(sorted(_ACTIVATIONS))


@handler("activation")
def activation(ctx: Context, layer: Activation) -> None:
    ctx.expect_inputs(1)
    build = _ACTIVATIONS.get(layer.mode)
    if build is None:
        raise ctx.unsupported("mode", layer.mode, "PReLU" if layer.mode == 4 else "")
    ctx.finish(build(ctx, layer), ctx.in_view())


@handler("pool")
def pool(ctx: Context, layer: Pool) -> None:
    """Global pools, or Average/MaxPool with explicit pads (floor output size)."""
    ctx.expect_inputs(1)
    if layer.avg_or_max not in (0, 1):
        raise ctx.unsupported("avg_or_max", layer.avg_or_max)
    k, h, w = ctx.in_shape()
    if layer.is_global:
        y = ctx.node("GlobalMaxPool" if layer.is_max else "GlobalAveragePool", [ctx.input()])
        ctx.finish(y, (k, 1, 1))
        return
    _check_pad_fill(ctx, layer, value_too=False)
    kh, kw = layer.size_h, layer.size_w
    ho, wo, pads = _window(ctx, h, w, kh, kw, layer.stride_h, layer.stride_w, 1, 1, layer.pad_mode, layer.pads)
    attrs: dict[str, Any] = dict(kernel_shape=[kh, kw], strides=[layer.stride_h, layer.stride_w], pads=pads)
    if _ceil_pool(ctx, layer, h, w, ho, wo, pads):
        attrs["ceil_mode"] = 1
        ho, wo = _ceil_size(h, kh, layer.stride_h, pads[0], pads[2]), _ceil_size(w, kw, layer.stride_w, pads[1], pads[3])
    if layer.is_max:
        y = ctx.node("MaxPool", [ctx.input()], **attrs)
    else:
        y = ctx.node("AveragePool", [ctx.input()], count_include_pad=0 if layer.exclude_padding else 1, **attrs)
    ctx.finish(y, (k, ho, wo))


def _ceil_size(size: int, kernel: int, stride: int, before: int, after: int) -> int:
    """Output size rounding up, without a window that starts in the padding after the input."""
    out = -(-(size + before + after - kernel) // stride) + 1
    if (out - 1) * stride >= size + before:
        out -= 1
    return out


def _ceil_pool(ctx: Context, layer: Pool, h: int, w: int, ho: int, wo: int, pads: list[int]) -> bool:
    """Whether a pool rounds its output size up: ``top_shape_style`` 0 floors; any other style is
    *unverified* and decided by the shape file (floor or ceil, whichever it shows, else an error)."""
    style = layer.params.get("top_shape_style", 0)
    if style in (0, None):
        return False
    want = ctx.model.shapes.get(layer.top)
    if want is None:
        raise ctx.unsupported("top_shape_style", style, "without a shape entry to tell floor from ceil")
    if (want.h, want.w) == (ho, wo):
        return False
    ceil = (_ceil_size(h, layer.size_h, layer.stride_h, pads[0], pads[2]),
            _ceil_size(w, layer.size_w, layer.stride_w, pads[1], pads[3]))
    if (want.h, want.w) != ceil:
        raise ctx.unsupported("top_shape_style", style,
                              f"the shape file's [h, w] {[want.h, want.w]} is neither floor {[ho, wo]} nor ceil {list(ceil)}")
    if not layer.is_max and not layer.exclude_padding:
        raise ctx.unsupported("top_shape_style", style, "rounding up an average pool that counts padding")
    return True


@handler("inner_product")
def inner_product(ctx: Context, layer: InnerProduct) -> None:
    """Flatten, then Gemm (optimized) or MatMul + Add, then back to [N, nC, 1, 1]; ``is_lookup``: Gather."""
    ctx.expect_inputs(1)
    if layer.has_prelu:
        raise ctx.unsupported("has_prelu", 1)
    if layer.has_relu and layer.has_tanh:
        raise ctx.unsupported("has_relu + has_tanh", (1, 1), "both set")
    if layer.is_lookup:
        _lookup(ctx, layer)
        return
    k, h, w = ctx.in_shape()
    if k * h * w != layer.n_in:
        raise ctx.mismatch(f"input [k, h, w] {[k, h, w]} has {k * h * w} values per image, nB is {layer.n_in}")
    flat = ctx.node("Flatten", [ctx.input()], axis=1)
    if ctx.optimize:
        inputs = [flat, ctx.weight("weights")]  # [nC, nB], transB
        if layer.has_biases:
            inputs.append(ctx.weight("biases"))
        y = ctx.node("Gemm", inputs, transB=1)
    else:
        y = ctx.node("MatMul", [flat, ctx.weight("weights", "weights_t", lambda a: np.ascontiguousarray(a.T))])
        if layer.has_biases:
            y = ctx.node("Add", [y, ctx.weight("biases")])
    y = _fused(ctx, y, layer.has_relu, layer.has_tanh, "has_relu", "has_tanh")
    out = dense_view(ctx.model, layer)
    y = ctx.node("Reshape", [y, ctx.ints([0, *out[1:]], "shape")])
    ctx.finish(y, out)


def _lookup(ctx: Context, layer: InnerProduct) -> None:
    """An embedding: each sequence step's index picks a row of the [nB, nC] table (the weights transposed).

    A negative index is sent past the table so that ONNX Runtime refuses it, as the reference does
    (ONNX's Gather would count it from the end).
    """
    seq, k, h, w = ctx.in_view()
    if k * h * w != 1:
        raise ctx.mismatch(f"an embedding takes one index per sequence step, its input [k, h, w] is {[k, h, w]}")
    x = ctx.input()
    if not ctx.is_integer(x):
        x = ctx.node("Cast", [x], to=onnx.TensorProto.INT64)
    x = ctx.node("Reshape", [x, ctx.ints([0, seq], "steps")])
    size = ctx.const(np.array(layer.n_in, np.int64), "vocabulary")
    x = ctx.node("Where", [ctx.node("Less", [x, ctx.const(np.array(0, np.int64), "zero")]), size, x])
    table = ctx.weight("weights", "table", lambda a: np.ascontiguousarray(a.T))
    y = ctx.node("Gather", [table, x], axis=0)  # [N, seq, nC]
    if layer.has_biases:
        y = ctx.node("Add", [y, ctx.weight("biases")])
    y = _fused(ctx, y, layer.has_relu, layer.has_tanh, "has_relu", "has_tanh")
    out = (seq, layer.n_out, 1, 1)
    ctx.finish(_reshaped(ctx, y, out), out)


def dense_view(model: Any, layer: InnerProduct) -> View:
    """(1, nC, 1, 1), or the features in w (or h) when the shape file puts them there.

    A rank-2 dense output is ``{k 1, h 1, w nC}`` in newer files (ESPRESSO.md); the
    values are one vector either way, so the shape file only names the axis.
    """
    want = model.shapes.get(layer.top)
    n = layer.n_out
    if want is not None and want.view in ((1, 1, 1, n), (1, 1, n, 1)):
        return want.view
    return (1, n, 1, 1)


def _softmax_axis_field(ctx: Context, layer: Softmax) -> None:
    """``C`` is 2 in every real softmax seen (over k of 3 channels): axis number 2, k, in the
    numbering of transpose and slice (*unverified*). Any other value is refused."""
    if layer.params.get("C", 2) != 2:
        raise ctx.unsupported("C", layer.params.get("C"), "only 2 (k) is known")


@handler("softmax")
def softmax(ctx: Context, layer: Softmax) -> None:
    """Over k (each sequence item on its own)."""
    ctx.expect_inputs(1)
    _softmax_axis_field(ctx, layer)
    view = ctx.in_view()
    ctx.finish(ctx.node("Softmax", [ctx.input()], axis=1 if view[0] == 1 else 2), view)


@handler("softmax_nd")
def softmax_nd(ctx: Context, layer: SoftmaxND) -> None:
    """Over ``nd_axis`` counted over the input's rank (its shape entry's; 4 without one)."""
    ctx.expect_inputs(1)
    rank = _input_rank(ctx)
    name = nd_axis_name(layer.axis, rank)
    if name is None or name == "n":
        raise ctx.unsupported("nd_axis", layer.axis, f"on a rank-{rank} blob" + (" (the batch axis)" if name else ""))
    view = ctx.in_view()
    x = ctx.input()
    if view[0] == 1 and name != "seq":
        y = ctx.node("Softmax", [x], axis=_LAYOUT4[name])
    else:
        y = ctx.pack(ctx.node("Softmax", [ctx.as5(x)], axis=_LAYOUT5[name]), view)
    ctx.finish(y, view)


@handler("concat")
def concat(ctx: Context, layer: Concat) -> None:
    """Along channels; batch-1 constants are expanded to the batch of the other inputs."""
    ctx.expect_inputs((1, None))
    values = ctx.inputs()
    shapes = [ctx.shape(v) for v in values]
    if len({s[1:] for s in shapes}) > 1:
        listed = ", ".join(str(list(s)) for s in shapes)
        raise ctx.mismatch(f"inputs of [k, h, w] {listed} cannot be concatenated along channels")
    batched = [v for v in values if not ctx.is_batch1(v)]
    if batched and len(batched) < len(values):
        batch = ctx.node("Shape", [batched[0]], "batch", start=0, end=1)
        expanded = []
        for v, s in zip(values, shapes):
            if ctx.is_batch1(v):
                full = ctx.node("Concat", [batch, ctx.ints(list(s), "khw")], "expand_shape", axis=0)
                v = ctx.node("Expand", [v, full])
            expanded.append(v)
        values = expanded
    y = ctx.node("Concat", values, axis=1)
    _, h, w = shapes[0]
    ctx.finish(y, (sum(s[0] for s in shapes), h, w))


@handler("flatten")
def flatten(ctx: Context, layer: Flatten) -> None:
    """Each sequence item's [k, h, w] -> [k*h*w, 1, 1]: mode 0 in C order (k, h, w), mode 1 channels-last
    (h, w, k: a Keras dense layer after it classifies drawn digits correctly on real weights, ESPRESSO.md)."""
    ctx.expect_inputs(1)
    seq, k, h, w = ctx.in_view()
    if layer.mode not in (0, 1):
        raise ctx.unsupported("mode", layer.mode, "0 (channels-first) and 1 (channels-last) are known")
    x = ctx.input()
    if layer.mode == 1 and k != 1 and h * w != 1:
        x = ctx.node("Transpose", [x], perm=[0, 2, 3, 1] if seq == 1 else [0, 1, 3, 4, 2])
    out = (seq, k * h * w, 1, 1)
    ctx.finish(_reshaped(ctx, x, out), out)


def reshape_target(layer: Reshape, view: View) -> tuple[View | None, str]:
    """The output view of a reshape, or (None, why not)."""
    if layer.dst_n not in (0, 1, -1):
        return None, f"dst_n {layer.dst_n} would reshape across the batch axis"
    dst = (layer.dst_seq, layer.dst_k, layer.dst_h, layer.dst_w)
    names = ("dst_seq", "dst_k", "dst_h", "dst_w")
    for name, value in zip(names, dst):
        if value == 0 or value < -1:
            return None, f"{name} {value} is not supported"
    if dst.count(-1) > 1:
        return None, f"dst_seq/k/h/w {list(dst)}: more than one -1 is not supported"
    total = int(np.prod(view))
    known = int(np.prod([d for d in dst if d != -1]))
    if (-1 in dst and (known == 0 or total % known)) or (-1 not in dst and known != total):
        return None, f"cannot reshape [seq, k, h, w] {list(view)} to {list(dst)}"
    out = tuple(total // known if d == -1 else d for d in dst)
    if layer.mode != 0:
        # mode 1 is seen only where channel-first and channel-last orders coincide.
        same = all(v[1] == 1 or v[2] * v[3] == 1 for v in (view, out))
        if layer.mode != 1 or not same:
            return None, f"mode {layer.mode} is not supported (only where it cannot differ from mode 0)"
    return out, ""  # type: ignore[return-value]


@handler("reshape")
def reshape(ctx: Context, layer: Reshape) -> None:
    """Each image's [seq, k, h, w] -> [dst_seq, dst_k, dst_h, dst_w] in C order; the batch is kept.

    The sizes are SSDOcr's shape file's; the C order (w fastest, then h, k, seq) is *unverified*.
    """
    ctx.expect_inputs(1)
    out, why = reshape_target(layer, ctx.in_view())
    if out is None:
        if why.startswith("cannot"):
            raise ctx.mismatch(why)
        raise UnsupportedLayerError(f"{layer_label(layer)}: {why}")
    _check_nd_rank(ctx, layer)
    ctx.finish(_reshaped(ctx, ctx.input(), out), out)


def _check_nd_rank(ctx: Context, layer: Reshape) -> None:
    """``dst_nd_rank`` must agree with the rank the shape file declares for the top."""
    want = ctx.model.shapes.get(layer.top)
    if layer.nd_rank is not None and want is not None and want.rank_declared and want.rank != layer.nd_rank:
        raise ctx.mismatch(f"dst_nd_rank {layer.nd_rank}, the shape file gives {layer.top!r} rank {want.rank}")


def transpose_plan(layer: Transpose) -> tuple[list[str] | None, str]:
    """The source axis name of each destination axis (seq, n, k, h, w), or (None, why not)."""
    if not layer.has_axes:
        return None, "no axis_* field: the permutation is unknown"
    if sorted(layer.axes) != [0, 1, 2, 3, 4]:
        return None, f"axis_seq/n/k/h/w {list(layer.axes)} is not a permutation of 0..4"
    sources = [AXIS_NAMES[a] for a in layer.axes]
    if sources[1] != "n":
        return None, f"axis_n {layer.axes[1]} is not supported (moving the batch axis)"
    return sources, ""


@handler("transpose")
def transpose(ctx: Context, layer: Transpose) -> None:
    """Output axis X is the input axis numbered axis_X (0 w, 1 h, 2 k, 3 n, 4 seq); the batch stays."""
    ctx.expect_inputs(1)
    sources, why = transpose_plan(layer)
    if sources is None:
        raise UnsupportedLayerError(f"{layer_label(layer)}: {why}")
    view = ctx.in_view()
    size = dict(zip(("seq", "k", "h", "w"), view))
    out = tuple(size[s] for s in (sources[0], *sources[2:]))
    if view[0] == 1 and out[0] == 1 and "seq" not in sources[2:]:
        y = ctx.node("Transpose", [ctx.input()], perm=[0] + [_LAYOUT4[s] for s in sources[2:]])
    else:
        y = ctx.node("Transpose", [ctx.as5(ctx.input())], perm=[_LAYOUT5[s] for s in sources])
        y = ctx.pack(y, out)
    ctx.finish(y, out)  # type: ignore[arg-type]


@handler("sequence_concat")
def sequence_concat(ctx: Context, layer: SequenceConcat) -> None:
    """Along seq, in bottom order (*unverified*: the shape file shows only the sizes); other axes agree."""
    ctx.expect_inputs((1, None))
    if layer.simple_concat != 1:
        raise ctx.unsupported("simple_concat", layer.simple_concat)
    views = [ctx.view(v) for v in ctx.inputs()]
    if len({v[1:] for v in views}) > 1 or any(ctx.is_batch1(v) for v in ctx.inputs()):
        raise ctx.mismatch(f"inputs of [seq, k, h, w] {[list(v) for v in views]} cannot be concatenated along seq")
    out = (sum(v[0] for v in views), *views[0][1:])
    y = ctx.node("Concat", [ctx.as5(v) for v in ctx.inputs()], axis=1)
    ctx.finish(ctx.pack(y, out), out)


def slice_range(start: int, end: int | None, size: int) -> tuple[int, int]:
    """Python's reading of [start, end) on an axis of ``size`` (negative from the end, clamped).

    That negative values count from the end is *unverified*; SSDOcr shows an end past the axis clamped.
    """
    begin, stop, _ = slice(start, end).indices(size)
    return begin, max(begin, stop)


@handler("slice")
def slice_(ctx: Context, layer: Slice) -> None:
    """``[start, end)`` along the axis numbered ``axis`` (0 w, 1 h, 2 k, 4 seq)."""
    ctx.expect_inputs(1)
    if layer.axis is None or layer.axis not in AXIS_NAMES or AXIS_NAMES[layer.axis] == "n":
        raise ctx.unsupported("axis", layer.axis)
    if layer.stride != 1:
        raise ctx.unsupported("stride", layer.stride)
    name = AXIS_NAMES[layer.axis]
    view = ctx.in_view()
    begin, stop = slice_range(layer.start, layer.end, view[_VIEW_INDEX[name]])
    out = list(view)
    out[_VIEW_INDEX[name]] = stop - begin
    if stop == begin:
        raise ctx.mismatch(f"start {layer.start}, end {layer.end} leave nothing of {name} {view[_VIEW_INDEX[name]]}")
    x = ctx.input()
    five = view[0] != 1 or name == "seq"
    axis = _LAYOUT5[name] if five else _LAYOUT4[name]
    y = ctx.node("Slice", [ctx.as5(x) if five else x, ctx.ints([begin], "starts"), ctx.ints([stop], "ends"),
                           ctx.ints([axis], "axes")])
    if five:
        y = ctx.pack(y, out)
    ctx.finish(y, tuple(out))


# reduce axis_mode -> axis reduced; only 4 (k) is evidenced (SSDOcr's softmax).
REDUCE_AXES = {4: "k"}


@handler("reduce")
def reduce(ctx: Context, layer: Reduce) -> None:
    """mode 0: sum over axis_mode 4 (k), kept as size 1 (*unverified*: SSDOcr's softmax, whose rows then
    sum to 1, is the evidence). Other modes and axes are refused."""
    ctx.expect_inputs(1)
    if layer.mode != 0:
        raise ctx.unsupported("mode", layer.mode, layer.MODES_NOTE)
    if layer.params.get("use_version", 1) != 1:
        raise ctx.unsupported("use_version", layer.params.get("use_version"), "only 1 is known")
    name = REDUCE_AXES.get(layer.axis_mode)
    if name is None:
        raise ctx.unsupported("axis_mode", layer.axis_mode, "only 4 (k) is known")
    view = ctx.in_view()
    axis = _LAYOUT4[name] if view[0] == 1 else _LAYOUT5[name]
    y = ctx.node("ReduceSum", [ctx.input(), ctx.ints([axis], "axes")], keepdims=1)
    out = list(view)
    out[_VIEW_INDEX[name]] = 1
    ctx.finish(y, tuple(out))


@handler("general_padding")
def general_padding(ctx: Context, layer: GeneralPadding) -> None:
    """Constant padding of h and w (pad_t, pad_b rows; pad_l, pad_r columns), *unverified*."""
    ctx.expect_inputs(1)
    if layer.fill_mode != 0:
        raise ctx.unsupported("pad_fill_mode", layer.fill_mode, layer.FILL_MODES_NOTE)
    if layer.pad_mode != 0:
        raise ctx.unsupported("pad_pad_mode", layer.pad_mode, "only 0 is known")
    k, h, w = ctx.in_shape()
    t, b, left, right = layer.pads
    y = ctx.node("Pad", [ctx.input(), ctx.ints([0, 0, t, left, 0, 0, b, right], "pads"),
                         ctx.scalar(layer.value, "value")], mode="constant")
    ctx.finish(y, (k, h + t + b, w + left + right))


@handler("general_concat")
def general_concat(ctx: Context, layer: GeneralConcat) -> None:
    """Core ML's ConcatND: along ``axis`` counted over the first input's rank (its shape entry's)."""
    ctx.expect_inputs((1, None))
    if not layer.nd_mode:
        raise ctx.unsupported("nd_mode", 0, "only the N-D form (nd_mode true) is known")
    rank = _input_rank(ctx)
    name = nd_axis_name(layer.axis, rank)
    if name is None or name == "n":
        raise ctx.unsupported("axis", layer.axis, f"on a rank-{rank} blob")
    values = ctx.inputs()
    views = [ctx.view(v) for v in values]
    i = _VIEW_INDEX[name]
    if len({v[:i] + v[i + 1:] for v in views}) > 1 or any(ctx.is_batch1(v) for v in values):
        raise ctx.mismatch(f"inputs of [seq, k, h, w] {[list(v) for v in views]} cannot be concatenated along {name}")
    out = list(views[0])
    out[i] = sum(v[i] for v in views)
    five = out[0] != 1 or name == "seq"
    y = ctx.node("Concat", [ctx.as5(v) for v in values] if five else values,
                 axis=_LAYOUT5[name] if five else _LAYOUT4[name])
    ctx.finish(ctx.pack(y, out) if five else y, tuple(out))


@handler("general_slice")
def general_slice(ctx: Context, layer: GeneralSlice) -> None:
    """Core ML's SliceStatic: numpy slicing of each axis (masks, negative bounds, positive strides); a
    squeezed axis moves no data, the top's view then comes from the shape file."""
    ctx.expect_inputs(1)
    view = ctx.in_view()
    cuts, out = layer.plan(view)
    if cuts is None:
        raise UnsupportedLayerError(f"{layer_label(layer)}: {out}")
    x = ctx.input()
    if cuts:
        five = view[0] != 1 or out[0] != 1
        layout = _LAYOUT5 if five else _LAYOUT4
        starts, stops, axes, steps = zip(*((c[1], c[2], layout[c[0]], c[3]) for c in cuts))
        x = ctx.node("Slice", [ctx.as5(x) if five else x, ctx.ints(starts, "starts"), ctx.ints(stops, "ends"),
                               ctx.ints(axes, "axes"), ctx.ints(steps, "steps")])
        if five:
            x = ctx.pack(x, out)
    if layer.squeeze:
        want = _shape_entry(ctx, layer.top, "the view after squeezing").view
        if int(np.prod(want)) != int(np.prod(out)):
            raise ctx.mismatch(f"[seq, k, h, w] {list(out)} cannot become the shape file's {list(want)}")
        x, out = _reshaped(ctx, x, want), want
    elif not cuts:
        x = ctx.node("Identity", [x])
    ctx.finish(x, out)


def _same_data(ctx: Context, layer) -> None:
    """expand_dims / squeeze: the data do not move (*unverified*); the top's view comes from the shape file."""
    ctx.expect_inputs(1)
    want = _shape_entry(ctx, layer.top, "the axes it adds or removes").view
    view = ctx.in_view()
    if int(np.prod(want)) != int(np.prod(view)):
        raise ctx.mismatch(f"[seq, k, h, w] {list(view)} cannot become the shape file's {list(want)}")
    ctx.finish(_reshaped(ctx, ctx.input(), want), want)


@handler("expand_dims")
def expand_dims(ctx: Context, layer: ExpandDims) -> None:
    _same_data(ctx, layer)


@handler("squeeze")
def squeeze(ctx: Context, layer: Squeeze) -> None:
    _same_data(ctx, layer)


@handler("split_nd")
def split_nd(ctx: Context, layer: SplitND) -> None:
    """Along ``nd_axis`` (over the input's rank) into the tops, sized by their shape entries (*unverified*)."""
    ctx.expect_inputs(1)
    rank = _input_rank(ctx)
    name = nd_axis_name(layer.axis, rank)
    if name is None or name == "n":
        raise ctx.unsupported("nd_axis", layer.axis, f"on a rank-{rank} blob")
    view = ctx.in_view()
    i = _VIEW_INDEX[name]
    parts = [_shape_entry(ctx, top, "the size of each part").view for top in layer.tops]
    others = [tuple(v[:i] + v[i + 1 :]) for v in (view, *parts)]
    if len(set(others)) > 1 or sum(p[i] for p in parts) != view[i]:
        raise ctx.mismatch(f"[seq, k, h, w] {list(view)} does not split along {name} into {[list(p) for p in parts]}")
    x = ctx.input()
    five = view[0] != 1 or name == "seq"
    axis = _LAYOUT5[name] if five else _LAYOUT4[name]
    start = 0
    for top, part in zip(layer.tops, parts):
        y = ctx.node("Slice", [ctx.as5(x) if five else x, ctx.ints([start], "starts"),
                               ctx.ints([start + part[i]], "ends"), ctx.ints([axis], "axes")])
        ctx.finish(ctx.pack(y, part) if five else y, part, top=top)
        start += part[i]


@handler("upsample")
def upsample(ctx: Context, layer: Upsample) -> None:
    """Resize by integer factors: nearest = pixel repetition; bilinear half-pixel or align-corners."""
    ctx.expect_inputs(1)
    scales = ctx.const(np.array([1, 1, layer.scale_h, layer.scale_w], np.float32), "scales")
    if layer.mode == 0:
        if layer.align_corners:  # its rounding is not repetition and is unverified: refuse
            raise ctx.unsupported("align_corners", 1, "with nearest upsampling")
        attrs = dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    elif layer.mode == 1:  # bilinear (unverified)
        attrs = dict(mode="linear",
                     coordinate_transformation_mode="align_corners" if layer.align_corners else "half_pixel")
    else:
        raise ctx.unsupported("mode", layer.mode)
    y = ctx.node("Resize", [ctx.input(), "", scales], **attrs)
    k, h, w = ctx.in_shape()
    ctx.finish(y, (k, h * layer.scale_h, w * layer.scale_w))


@handler("load_constant")
def load_constant(ctx: Context, layer: LoadConstant) -> None:
    """An initializer [1, k, h, w] under the blob's name; bottoms (if any) are ignored."""
    if layer.n != 1:
        raise ctx.unsupported("n", layer.n, "Core ML's load_constant is [1, 1, C, H, W]")
    name = ctx.weight("constant", transform=lambda a: a[None], name=ctx.top_name())
    ctx.finish(name, layer.shape, batch1=True)

