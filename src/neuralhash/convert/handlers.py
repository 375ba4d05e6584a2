"""ONNX converters of Espresso layers, one per layer type (see ESPRESSO.md).

Every Espresso blob is a 4-D NCHW ONNX value with a symbolic batch. Padding
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

from ..espresso.layers import (
    Activation,
    BatchNorm,
    Concat,
    Convolution,
    Elementwise,
    Flatten,
    InnerProduct,
    Input,
    LoadConstant,
    Pool,
    Reshape,
    Softmax,
    SoftmaxND,
    Transpose,
    Upsample,
)
from .context import Context, Shape
from .registry import handler

# -- helpers ---------------------------------------------------------------------------------


def _axis_window(ctx: Context, axis: str, size: int, kernel: int, stride: int, dilation: int,
                 pad_mode: int, pads: tuple[int, int]) -> tuple[int, int, int]:
    """(output size, pad before, pad after) along one spatial axis."""
    extent = (kernel - 1) * dilation + 1
    if pad_mode == 1:  # TensorFlow SAME: output ceil(size / stride), odd extra padding after
        out = -(-size // stride)
        total = max((out - 1) * stride + extent - size, 0)
        before, after = total // 2, total - total // 2
    elif pad_mode == 2:  # VALID (unverified beyond 1x1 stride-1 kernels)
        before, after = 0, 0
    elif pad_mode == 0:  # explicit pad_t / pad_b (rows), pad_l / pad_r (columns)
        before, after = pads
    else:
        raise ctx.unsupported("pad_mode", pad_mode)
    padded = size + before + after
    if padded < extent:
        raise ctx.mismatch(f"input {axis} {size} (padded to {padded}) is smaller than the window extent {extent}")
    return (padded - extent) // stride + 1, before, after


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


def _broadcast(ctx: Context, shapes: list[Shape]) -> Shape:
    try:
        return tuple(int(d) for d in np.broadcast_shapes(*shapes))  # type: ignore[return-value]
    except ValueError:
        listed = ", ".join(str(list(s)) for s in shapes)
        raise ctx.mismatch(f"inputs of [k, h, w] {listed} do not broadcast") from None


# -- layers ----------------------------------------------------------------------------------


@handler("input")
def input_(ctx: Context, layer: Input) -> None:
    """The graph input itself: no node."""
    ctx.finish(ctx.value(layer.top), ctx.shape(ctx.value(layer.top)), batch1=False)


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
        values = ctx.inputs()
        y = values[0]
        for other in values[1:]:
            y = ctx.node(op, [y, other])
        return y

    return build


def _with_alpha(op: str) -> Callable[[Context, Elementwise], str]:
    return lambda ctx, layer: ctx.node(op, [ctx.input(), ctx.scalar(layer.alpha, "alpha")])


def _clip(ctx: Context, layer: Elementwise) -> str:
    return ctx.node("Clip", [ctx.input(), ctx.scalar(layer.alpha, "min"), ctx.scalar(layer.beta, "max")])


# (operation, "1" for one input / "n" for several) -> (input count: n or (low, high|None), builder).
# 0, 1 (two inputs), 2, 3 and 119 are NeuralHash's; the rest are unverified.
_ELEMENTWISE: dict[tuple[int, str], tuple[Any, Callable[[Context, Elementwise], str]]] = {
    (0, "n"): ((2, None), _variadic("Add")),
    (1, "n"): ((2, None), _variadic("Mul")),
    (1, "1"): (1, _with_alpha("Mul")),  # unverified: x * alpha
    (2, "1"): (1, _with_alpha("Add")),  # x + alpha
    (3, "1"): (1, _with_alpha("Mul")),  # x * alpha
    (22, "n"): (2, _variadic("Min")),  # unverified
    (23, "n"): (2, _variadic("Max")),  # unverified
    (24, "1"): (1, lambda ctx, layer: ctx.node("Abs", [ctx.input()])),  # unverified
    (33, "n"): (2, _variadic("Sub")),  # unverified: a - b
    (102, "n"): (2, _variadic("Div")),  # unverified: a / b
    (119, "1"): (1, _clip),  # clip(x, alpha, beta)
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
    shape = _broadcast(ctx, [ctx.shape(v) for v in ctx.inputs()])
    y = build(ctx, layer)
    if layer.fused_relu:
        y = ctx.node("Relu", [y])
    ctx.finish(y, shape)


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


# mode -> builder. Only mode 0 (ReLU) is in NeuralHash: every other mode is unverified.
_ACTIVATIONS: dict[int, Callable[[Context, Activation], str]] = {
    0: _unary("Relu"),
    1: _unary("Tanh"),
    2: lambda ctx, layer: ctx.node("LeakyRelu", [ctx.input()], alpha=layer.alpha),
    3: _unary("Sigmoid"),
    5: _scaled_tanh,
    6: _linear,
    7: lambda ctx, layer: ctx.node("HardSigmoid", [ctx.input()], alpha=layer.alpha, beta=layer.beta),
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
    ctx.finish(build(ctx, layer), ctx.in_shape())


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
    style = layer.params.get("top_shape_style", 0)
    if style not in (0, None):
        raise ctx.unsupported("top_shape_style", style)
    kh, kw = layer.size_h, layer.size_w
    ho, wo, pads = _window(ctx, h, w, kh, kw, layer.stride_h, layer.stride_w, 1, 1, layer.pad_mode, layer.pads)
    attrs: dict[str, Any] = dict(kernel_shape=[kh, kw], strides=[layer.stride_h, layer.stride_w], pads=pads)
    if layer.is_max:
        y = ctx.node("MaxPool", [ctx.input()], **attrs)
    else:
        y = ctx.node("AveragePool", [ctx.input()], count_include_pad=0 if layer.exclude_padding else 1, **attrs)
    ctx.finish(y, (k, ho, wo))


@handler("inner_product")
def inner_product(ctx: Context, layer: InnerProduct) -> None:
    """Flatten, then Gemm (optimized) or MatMul + Add, then back to [N, nC, 1, 1]."""
    ctx.expect_inputs(1)
    if layer.has_prelu:
        raise ctx.unsupported("has_prelu", 1)
    if layer.has_relu and layer.has_tanh:
        raise ctx.unsupported("has_relu + has_tanh", (1, 1), "both set")
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
    y = ctx.node("Reshape", [y, ctx.ints([0, layer.n_out, 1, 1], "shape")])
    ctx.finish(y, (layer.n_out, 1, 1))


@handler("softmax")
def softmax(ctx: Context, layer: Softmax) -> None:
    ctx.expect_inputs(1)
    ctx.finish(ctx.node("Softmax", [ctx.input()], axis=1), ctx.in_shape())


@handler("softmax_nd")
def softmax_nd(ctx: Context, layer: SoftmaxND) -> None:
    ctx.expect_inputs(1)
    if not -4 <= layer.axis <= 3:
        raise ctx.unsupported("nd_axis", layer.axis)
    ctx.finish(ctx.node("Softmax", [ctx.input()], axis=layer.axis), ctx.in_shape())


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
    """[N, k, h, w] -> [N, k*h*w, 1, 1], C order."""
    ctx.expect_inputs(1)
    k, h, w = ctx.in_shape()
    y = ctx.node("Reshape", [ctx.input(), ctx.ints([0, -1, 1, 1], "shape")])
    ctx.finish(y, (k * h * w, 1, 1))


@handler("reshape")
def reshape(ctx: Context, layer: Reshape) -> None:
    """[N, k, h, w] -> [N, dst_k, dst_h, dst_w]; the batch is copied (ONNX shape 0), one -1 allowed."""
    ctx.expect_inputs(1)
    dst = (layer.dst_k, layer.dst_h, layer.dst_w)
    for name, value in zip(("dst_k", "dst_h", "dst_w"), dst):
        if value == 0 or value < -1:
            raise ctx.unsupported(name, value)
    if dst.count(-1) > 1:
        raise ctx.unsupported("dst_k/dst_h/dst_w", dst, "more than one -1")
    k, h, w = ctx.in_shape()
    total = k * h * w
    known = int(np.prod([d for d in dst if d != -1]))
    if (-1 in dst and (known == 0 or total % known)) or (-1 not in dst and known != total):
        raise ctx.mismatch(f"cannot reshape [k, h, w] {[k, h, w]} to {list(dst)}")
    out = tuple(total // known if d == -1 else d for d in dst)
    y = ctx.node("Reshape", [ctx.input(), ctx.ints([0, *dst], "shape")])
    ctx.finish(y, out)  # type: ignore[arg-type]


@handler("transpose")
def transpose(ctx: Context, layer: Transpose) -> None:
    ctx.expect_inputs(1)
    if layer.perm[0] != 0:
        raise ctx.unsupported("axis_n", layer.perm[0], "moving the batch axis")
    full = (1, *ctx.in_shape())
    y = ctx.node("Transpose", [ctx.input()], perm=list(layer.perm))
    ctx.finish(y, tuple(full[p] for p in layer.perm[1:]))  # type: ignore[arg-type]


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
    name = ctx.const(ctx.model.tensor(layer, "constant")[None], "constant", name=ctx.top_name())
    ctx.finish(name, layer.shape, batch1=True)

