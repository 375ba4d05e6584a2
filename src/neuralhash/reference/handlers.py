"""NumPy executors of Espresso layers, one per layer type (see ESPRESSO.md).

Every handler takes float64 [N, k, h, w] blobs and returns a float64 rank-4
blob; images of a batch never mix. Handlers registered with
``sequences=True`` also take sequence blobs, [N, seq, k, h, w]; they work on
that 5-D form throughout (:func:`_five`) and may return it even when seq is 1. Anything not implemented exactly raises
:class:`~neuralhash.errors.UnsupportedLayerError` naming the layer, the field
and the value. Semantics that ESPRESSO.md marks *unverified* (not exercised by
Apple's NeuralHash) are marked so here: they follow the best public reading
and the brief, and are the first suspects if a non-NeuralHash model disagrees
with Core ML.
"""

from __future__ import annotations

from functools import reduce
from typing import Any, Callable

import numpy as np

from ..errors import UnsupportedLayerError, layer_label
from ..espresso.layers import AXIS_NAMES, nd_axis_name
from ..espresso.padding import PaddingRefused, WindowTooSmall, axis_window
from .registry import expect_inputs, handler, mismatch, unsupported

F64 = np.float64
_AXIS5 = {"seq": 1, "k": 2, "h": 3, "w": 4}  # positions in [N, seq, k, h, w]


def _five(x: np.ndarray) -> np.ndarray:
    """A blob as [N, seq, k, h, w]."""
    return x if x.ndim == 5 else x[:, None]


def _rank_of(model: Any, blob: str) -> int:
    shape = model.shapes.get(blob)
    return shape.rank if shape is not None else 4


def _entry_view(model: Any, layer: Any, blob: str, why: str) -> tuple[int, int, int, int]:
    shape = model.shapes.get(blob)
    if shape is None:
        raise unsupported(layer, "top", blob, f"no shape entry, which gives {why}")
    return shape.view


def _weights(model: Any, layer: Any, role: str) -> np.ndarray:
    return model.tensor(layer, role).astype(F64)


# -- windows (convolution and pooling) ----------------------------------------------------


def _axis_window(layer: Any, axis: str, size: int, kernel: int, stride: int, dilation: int,
                 pad_mode: int, pads: tuple[int, int]) -> tuple[int, int, int]:
    """(output size, pad before, pad after) along one spatial axis (``espresso/padding.py``)."""
    try:
        return axis_window(pad_mode, axis, size, kernel, stride, dilation, pads)
    except PaddingRefused as exc:
        raise unsupported(layer, exc.field, exc.value, exc.detail) from None
    except WindowTooSmall as exc:
        raise mismatch(layer, str(exc)) from None


def _window(layer: Any, x: np.ndarray, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int,
            pad_mode: int, pads: tuple[int, int, int, int]):
    pt, pb, pl, pr = pads
    ho, top, bottom = _axis_window(layer, "height", x.shape[2], kh, sh, dh, pad_mode, (pt, pb))
    wo, left, right = _axis_window(layer, "width", x.shape[3], kw, sw, dw, pad_mode, (pl, pr))
    return ho, wo, ((0, 0), (0, 0), (top, bottom), (left, right))


def _taps(xp: np.ndarray, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int, ho: int, wo: int):
    """Yield (i, j, view): the padded input sampled under kernel offset (i, j), [..., ho, wo]."""
    for i in range(kh):
        for j in range(kw):
            r, c = i * dh, j * dw
            yield i, j, xp[..., r : r + (ho - 1) * sh + 1 : sh, c : c + (wo - 1) * sw + 1 : sw]


def _fused(layer: Any, y: np.ndarray, relu: bool, tanh: bool, relu_field: str, tanh_field: str) -> np.ndarray:
    if relu and tanh:  # the order would be a guess
        raise unsupported(layer, f"{relu_field} + {tanh_field}", (1, 1), "both set")
    if relu:
        return np.maximum(y, 0.0)
    if tanh:
        return np.tanh(y)
    return y


# -- layers ----------------------------------------------------------------------------------


@handler("input", sequences=True)
def input_(layer, inputs, model):
    """The executor hands an ``input`` layer its feed as the single input."""
    expect_inputs(layer, inputs, 1)
    return inputs[0]


@handler("convolution")
def convolution(layer, inputs, model):
    """Grouped, strided, dilated 2-D cross-correlation; weights [C, K/groups, kh, kw]."""
    expect_inputs(layer, inputs, 1)
    if layer.has_batch_norm:
        raise unsupported(layer, "has_batch_norm", 1)
    if layer.n_parallel != 1:
        raise unsupported(layer, "n_parallel", layer.n_parallel)
    x = inputs[0]
    n, k = x.shape[:2]
    if k != layer.in_channels:
        raise mismatch(layer, f"input has {k} channels, the layer expects K = {layer.in_channels}")
    c, g = layer.out_channels, layer.groups
    cg, kg = c // g, k // g
    kh, kw, sh, sw = layer.kernel_h, layer.kernel_w, layer.stride_h, layer.stride_w
    dh, dw = layer.dilation_h, layer.dilation_w
    ho, wo, pad = _window(layer, x, kh, kw, sh, sw, dh, dw, layer.pad_mode, layer.pads)
    xp = np.pad(x, pad) if any(p for pair in pad for p in pair) else x
    w = _weights(model, layer, "weights")  # [C, Kg, kh, kw]
    if kg == 1:  # depthwise (and channel multipliers): per-channel shifted multiply-adds
        wr = w.reshape(g, cg, kh, kw)
        out = np.zeros((n, g, cg, ho, wo), F64)
        for i, j, tap in _taps(xp, kh, kw, sh, sw, dh, dw, ho, wo):
            out += tap.reshape(n, g, 1, ho, wo) * wr[None, :, :, i, j, None, None]
    else:  # dense per group: one batched matrix product per kernel offset
        wr = w.reshape(g, cg, kg, kh, kw)
        out = np.zeros((n, g, cg, ho * wo), F64)
        for i, j, tap in _taps(xp, kh, kw, sh, sw, dh, dw, ho, wo):
            out += np.matmul(np.ascontiguousarray(wr[..., i, j]), tap.reshape(n, g, kg, ho * wo))
    y = out.reshape(n, c, ho, wo)
    if layer.has_biases:
        y = y + _weights(model, layer, "biases")[None, :, None, None]
    return _fused(layer, y, layer.fused_relu, layer.fused_tanh, "fused_relu", "fused_tanh")


@handler("batchnorm")
def batchnorm(layer, inputs, model):
    expect_inputs(layer, inputs, 1)
    x = inputs[0]
    if x.shape[1] != layer.channels:
        raise mismatch(layer, f"input has {x.shape[1]} channels, the layer expects C = {layer.channels}")
    p = _weights(model, layer, "params")  # [C, 4]: scale, shift, mean, variance
    scale, shift = p[:, 0][None, :, None, None], p[:, 1][None, :, None, None]
    if layer.training:
        if not layer.instance_norm:
            # training-mode batch norm would mix the images of a batch
            raise unsupported(layer, "training_instancenorm", 0, "with training 1")
        # Instance norm (NeuralHash): per image and channel over H x W, biased variance.
        mean = x.mean(axis=(2, 3), keepdims=True)
        var = np.square(x - mean).mean(axis=(2, 3), keepdims=True)
        return (x - mean) / np.sqrt(var + layer.eps) * scale + shift
    # Inference batch norm: columns 2 and 3 as mean and variance (unverified).
    mean, var = p[:, 2][None, :, None, None], p[:, 3][None, :, None, None]
    return (x - mean) / np.sqrt(var + layer.eps) * scale + shift


def _broadcast(layer: Any, op: Callable[[np.ndarray, np.ndarray], np.ndarray], inputs: list[np.ndarray]):
    try:
        return reduce(op, inputs)
    except ValueError:
        shapes = ", ".join(str(list(a.shape)) for a in inputs)
        raise mismatch(layer, f"inputs of shapes {shapes} do not broadcast") from None


# operation -> (input count, or (min, max/None), function of (layer, inputs)).
# 0, 1 (two or more inputs), 2, 3 and 119 are NeuralHash's; the rest are unverified.
_ELEMENTWISE: dict[tuple[int, str], tuple[Any, Callable]] = {
    (0, "n"): ((2, None), lambda l, xs: _broadcast(l, np.add, xs)),
    (1, "n"): ((2, None), lambda l, xs: _broadcast(l, np.multiply, xs)),
    (0, "1"): (1, lambda l, xs: xs[0] + l.alpha),  # Core ML's Add with one input: x + alpha
    (1, "1"): (1, lambda l, xs: xs[0] * l.alpha),  # Core ML's Multiply with one input: x * alpha
    (2, "1"): (1, lambda l, xs: xs[0] + l.alpha),
    (3, "1"): (1, lambda l, xs: xs[0] * l.alpha),
    (22, "n"): (2, lambda l, xs: _broadcast(l, np.minimum, xs)),  # unverified
    (23, "n"): (2, lambda l, xs: _broadcast(l, np.maximum, xs)),  # unverified
    (24, "1"): (1, lambda l, xs: np.abs(xs[0])),  # unverified
    (33, "n"): (2, lambda l, xs: _broadcast(l, np.subtract, xs)),  # unverified: a - b
    (102, "n"): (2, lambda l, xs: _broadcast(l, np.divide, xs)),  # unverified: a / b
    (119, "1"): (1, lambda l, xs: np.clip(xs[0], l.alpha, l.beta)),
    # Read off real models' lowering patterns (ESPRESSO.md); unverified against Core ML itself.
    (25, "1"): (1, lambda l, xs: np.maximum(xs[0], l.alpha)),  # threshold (ReLU6 lowering)
    (27, "1"): (1, lambda l, xs: np.exp(xs[0])),  # exp (SSDOcr's softmax)
    (10, "1"): (1, lambda l, xs: l.alpha / xs[0]),  # inverse (SSDOcr's softmax)
}
# Per unary operation, the parameters that must keep the only value seen: (alpha must be 1, beta must be 0).
_NEUTRAL = {0: (False, True), 25: (False, True), 27: (True, True), 10: (False, True)}
ELEMENTWISE_OPERATIONS = tuple(sorted({op for op, _ in _ELEMENTWISE}))


@handler("elementwise", sequences=True)
def elementwise(layer, inputs, model):
    op = layer.operation
    arity = "1" if len(inputs) == 1 else "n"
    entry = _ELEMENTWISE.get((op, arity))
    if entry is None:
        other = _ELEMENTWISE.get((op, "n" if arity == "1" else "1"))
        if other is None:
            raise unsupported(layer, "operation", op)
        expect_inputs(layer, inputs, other[0], f"operation {op}")
    count, fn = entry
    expect_inputs(layer, inputs, count, f"operation {op}")
    alpha_one, beta_zero = _NEUTRAL.get(op, (False, False)) if arity == "1" else (False, False)
    if beta_zero and layer.params.get("beta", 0) != 0:
        raise unsupported(layer, "beta", layer.beta, f"operation {op}")
    if alpha_one and layer.params.get("alpha", 1) != 1:
        raise unsupported(layer, "alpha", layer.alpha, f"operation {op}")
    if any(x.ndim == 5 for x in inputs):  # line sequence blobs' axes up with the others
        inputs = [_five(x) for x in inputs]
    if arity == "n" and not layer.binary_modifiers_neutral:
        # Unknown meaning for a binary operation: refuse rather than ignore.
        raise unsupported(layer, "alpha, beta", (layer.alpha, layer.beta), f"operation {op} with several inputs")
    y = fn(layer, inputs)
    if layer.fused_relu:
        y = np.maximum(y, 0.0)
    return y


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # exact identity, no overflow


# mode -> function of (x, alpha, beta). Only mode 0 (ReLU) is in NeuralHash; 6 and 7 are read
# off Core ML's ReLU6 lowering in real models (ESPRESSO.md): every other mode is unverified.
_ACTIVATIONS: dict[int, Callable[[np.ndarray, float, float], np.ndarray]] = {
    0: lambda x, a, b: np.maximum(x, 0.0),
    1: lambda x, a, b: np.tanh(x),
    2: lambda x, a, b: np.where(x > 0, x, a * x),  # leaky ReLU
    3: lambda x, a, b: _sigmoid(x),
    5: lambda x, a, b: a * np.tanh(b * x),  # scaled tanh
    6: lambda x, a, b: a * x + b,  # linear
    7: lambda x, a, b: np.clip(x, 0.0, 1.0),  # clip to [0, 1] (ReLU6 lowering; alpha, beta checked below)
    8: lambda x, a, b: np.where(x >= 0, x, a * np.expm1(np.minimum(x, 0.0))),  # ELU
    9: lambda x, a, b: np.where(x > a, x, 0.0),  # thresholded ReLU
    10: lambda x, a, b: np.logaddexp(0.0, x),  # softplus
    12: lambda x, a, b: x / (1.0 + np.abs(x)),  # softsign
    25: lambda x, a, b: x * _sigmoid(x),  # SiLU
    26: lambda x, a, b: x * np.clip(x / 6.0 + 0.5, 0.0, 1.0),  # hard swish
}
ACTIVATION_MODES = tuple(sorted(_ACTIVATIONS))


@handler("activation", sequences=True)
def activation(layer, inputs, model):
    expect_inputs(layer, inputs, 1)
    fn = _ACTIVATIONS.get(layer.mode)
    if fn is None:
        detail = "PReLU" if layer.mode == 4 else ""
        raise unsupported(layer, "mode", layer.mode, detail)
    if layer.mode == 7 and (layer.params.get("beta", 0) != 0 or layer.params.get("alpha", 1) != 1):
        raise unsupported(layer, "alpha, beta", (layer.params.get("alpha"), layer.params.get("beta")),
                          "mode 7 is known only as clip(x, 0, 1), with beta 0 and no alpha")
    return fn(inputs[0], layer.alpha, layer.beta)


@handler("pool")
def pool(layer, inputs, model):
    expect_inputs(layer, inputs, 1)
    if layer.avg_or_max not in (0, 1):
        raise unsupported(layer, "avg_or_max", layer.avg_or_max)
    x = inputs[0]
    if layer.is_global:
        if layer.is_max:
            return x.max(axis=(2, 3), keepdims=True)
        return x.mean(axis=(2, 3), keepdims=True)
    kh, kw, sh, sw = layer.size_h, layer.size_w, layer.stride_h, layer.stride_w
    ho, wo, pad = _window(layer, x, kh, kw, sh, sw, 1, 1, layer.pad_mode, layer.pads)
    extra = _ceil_extra(layer, model, x, pad, ho, wo)
    if extra is not None:
        return _ceil_pool(layer, x, pad, extra)
    padded = any(p for pair in pad for p in pair)
    if layer.is_max:  # padding never wins
        xp = np.pad(x, pad, constant_values=-np.inf) if padded else x
        out = None
        for _, _, tap in _taps(xp, kh, kw, sh, sw, 1, 1, ho, wo):
            out = tap.copy() if out is None else np.maximum(out, tap)
        return out
    xp = np.pad(x, pad) if padded else x
    total = np.zeros(x.shape[:2] + (ho, wo), F64)
    for _, _, tap in _taps(xp, kh, kw, sh, sw, 1, 1, ho, wo):
        total += tap
    if layer.exclude_padding and padded:
        ones = np.pad(np.ones(x.shape[2:], F64), pad[2:])
        count = np.zeros((ho, wo), F64)
        for _, _, tap in _taps(ones, kh, kw, sh, sw, 1, 1, ho, wo):
            count += tap
        return total / count
    return total / (kh * kw)


def _ceil_extra(layer: Any, model: Any, x: np.ndarray, pad, ho: int, wo: int):
    """None to floor the output size; else the extra (rows, columns) that rounding it up adds.

    ``top_shape_style`` 0 floors; any other style is *unverified* and decided by
    the shape file: floor or ceil, whichever it shows, else an error.
    """
    style = layer.params.get("top_shape_style", 0)
    if style in (0, None):
        return None
    want = model.shapes.get(layer.top)
    if want is None:
        raise unsupported(layer, "top_shape_style", style, "without a shape entry to tell floor from ceil")
    if (want.h, want.w) == (ho, wo):
        return None
    extra = []
    for size, (before, after), k, s, got, target in (
        (x.shape[2], pad[2], layer.size_h, layer.stride_h, ho, want.h),
        (x.shape[3], pad[3], layer.size_w, layer.stride_w, wo, want.w),
    ):
        # a window may start past the end only inside the explicit padding, never in the added part
        if target < got or (target - 1) * s >= size + before:
            raise unsupported(layer, "top_shape_style", style, f"the shape file's [h, w] {[want.h, want.w]} is "
                              f"neither the floor {[ho, wo]} nor a rounding up")
        extra.append((target - 1) * s + k - (size + before + after))
    if extra[0] > layer.size_h or extra[1] > layer.size_w:
        raise unsupported(layer, "top_shape_style", style, "the shape file's size is more than a rounding up")
    if not layer.is_max and not layer.exclude_padding:
        raise unsupported(layer, "top_shape_style", style, "rounding up an average pool that counts padding")
    return max(extra[0], 0), max(extra[1], 0)


def _ceil_pool(layer: Any, x: np.ndarray, pad, extra) -> np.ndarray:
    """A pool whose last windows may run past the padded input: those cells never count."""
    kh, kw, sh, sw = layer.size_h, layer.size_w, layer.stride_h, layer.stride_w
    full = ((0, 0), (0, 0), (pad[2][0], pad[2][1] + extra[0]), (pad[3][0], pad[3][1] + extra[1]))
    ho = (x.shape[2] + sum(full[2]) - kh) // sh + 1
    wo = (x.shape[3] + sum(full[3]) - kw) // sw + 1
    if layer.is_max:
        # explicit padding never wins either: it is -inf too
        xp = np.pad(x, full, constant_values=-np.inf)
        out = None
        for _, _, tap in _taps(xp, kh, kw, sh, sw, 1, 1, ho, wo):
            out = tap.copy() if out is None else np.maximum(out, tap)
        return out
    xp = np.pad(x, full)
    ones = np.pad(np.ones(x.shape[2:], F64), full[2:])  # exclude_padding: only real cells count
    total = np.zeros(x.shape[:2] + (ho, wo), F64)
    count = np.zeros((ho, wo), F64)
    for (_, _, tap), (_, _, one) in zip(_taps(xp, kh, kw, sh, sw, 1, 1, ho, wo), _taps(ones, kh, kw, sh, sw, 1, 1, ho, wo)):
        total += tap
        count += one
    return total / count


@handler("inner_product", sequences=True)
def inner_product(layer, inputs, model):
    expect_inputs(layer, inputs, 1)
    if layer.has_prelu:
        raise unsupported(layer, "has_prelu", 1)
    if layer.is_lookup:
        return _lookup(layer, inputs[0], model)
    x = inputs[0]
    if x.ndim == 5:
        raise unsupported(layer, "input", f"seq {x.shape[1]}", "a dense layer on a sequence blob")
    n = x.shape[0]
    flat = x.reshape(n, -1)
    if flat.shape[1] != layer.n_in:
        raise mismatch(layer, f"input {list(x.shape[1:])} has {flat.shape[1]} values per image, nB is {layer.n_in}")
    y = flat @ _weights(model, layer, "weights").T  # [nC, nB]
    if layer.has_biases:
        y = y + _weights(model, layer, "biases")[None, :]
    y = _fused(layer, y, layer.has_relu, layer.has_tanh, "has_relu", "has_tanh")
    # The features sit in k, or in w (or h) where the shape file puts them (a rank-2 dense output
    # is {k 1, h 1, w nC} in newer files): one vector either way.
    want = model.shapes.get(layer.top)
    if want is not None and want.view in ((1, 1, 1, layer.n_out), (1, 1, layer.n_out, 1)):
        return y.reshape((n,) + want.view[1:])
    return y.reshape(n, layer.n_out, 1, 1)


def _lookup(layer: Any, x: np.ndarray, model: Any) -> np.ndarray:
    """An embedding: column ``index`` of the [nC, nB] weights for each sequence step's index."""
    x = _five(x)
    n, seq = x.shape[:2]
    if x.shape[2:] != (1, 1, 1):
        raise mismatch(layer, f"an embedding takes one index per sequence step, its input is {list(x.shape[1:])}")
    index = x.reshape(n * seq)
    bad = (index != np.round(index)) | (index < 0) | (index >= layer.n_in)
    if bad.any():
        raise mismatch(layer, f"index {index[np.argmax(bad)]!r} is not an integer in [0, {layer.n_in})")
    y = _weights(model, layer, "weights")[:, index.astype(np.intp)].T  # [N * seq, nC]
    if layer.has_biases:
        y = y + _weights(model, layer, "biases")[None, :]
    y = _fused(layer, y, layer.has_relu, layer.has_tanh, "has_relu", "has_tanh")
    return y.reshape(n, seq, layer.n_out, 1, 1)


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@handler("softmax", sequences=True)
def softmax(layer, inputs, model):
    """Over k, each sequence item on its own. ``C`` 2 (axis number 2, k, *unverified*) is the only value seen."""
    expect_inputs(layer, inputs, 1)
    if layer.params.get("C", 2) != 2:
        raise unsupported(layer, "C", layer.params.get("C"), "only 2 (k) is known")
    return _softmax(_five(inputs[0]), _AXIS5["k"])


@handler("softmax_nd", sequences=True)
def softmax_nd(layer, inputs, model):
    """Over ``nd_axis`` counted over the input's rank (its shape entry's; 4 without one)."""
    expect_inputs(layer, inputs, 1)
    rank = _rank_of(model, layer.bottoms[0])
    name = nd_axis_name(layer.axis, rank)
    if name is None or name == "n":
        raise unsupported(layer, "nd_axis", layer.axis, f"on a rank-{rank} blob")
    return _softmax(_five(inputs[0]), _AXIS5[name])


@handler("concat")
def concat(layer, inputs, model):
    expect_inputs(layer, inputs, (1, None))
    n = max(a.shape[0] for a in inputs)  # constants ([1, ...]) follow the batch
    parts = [np.broadcast_to(a, (n,) + a.shape[1:]) if a.shape[0] == 1 else a for a in inputs]
    if len({a.shape[0] for a in parts}) > 1 or len({a.shape[2:] for a in parts}) > 1:
        shapes = ", ".join(str(list(a.shape)) for a in inputs)
        raise mismatch(layer, f"inputs of shapes {shapes} cannot be concatenated along channels")
    return np.concatenate(parts, axis=1)


@handler("flatten", sequences=True)
def flatten(layer, inputs, model):
    """mode 0: each sequence item's [k, h, w] flattened in C order; mode 1: channels-last, (h, w, k) order."""
    expect_inputs(layer, inputs, 1)
    x = _five(inputs[0])
    n, seq, k, h, w = x.shape
    if layer.mode == 1:
        x = np.transpose(x, (0, 1, 3, 4, 2))
    elif layer.mode != 0:
        raise unsupported(layer, "mode", layer.mode, "0 (channels-first) and 1 (channels-last) are known")
    return x.reshape(n, seq, k * h * w, 1, 1)


@handler("reshape", sequences=True)
def reshape(layer, inputs, model):
    """Each image's [seq, k, h, w] to [dst_seq, dst_k, dst_h, dst_w] in C order."""
    expect_inputs(layer, inputs, 1)
    x = _five(inputs[0])
    if layer.dst_n not in (0, 1, -1):
        raise unsupported(layer, "dst_n", layer.dst_n, "reshaping across the batch axis")
    dst = (layer.dst_seq, layer.dst_k, layer.dst_h, layer.dst_w)
    for name, value in zip(("dst_seq", "dst_k", "dst_h", "dst_w"), dst):
        if value == 0 or value < -1:
            raise unsupported(layer, name, value)
    if dst.count(-1) > 1:
        raise unsupported(layer, "dst_seq/k/h/w", dst, "more than one -1")
    try:
        y = x.reshape((x.shape[0],) + dst)
    except ValueError:
        raise mismatch(layer, f"cannot reshape {list(x.shape[1:])} to {list(dst)}") from None
    if layer.mode != 0:
        same = all(v[2] == 1 or v[3] * v[4] == 1 for v in (x.shape, y.shape))
        if layer.mode != 1 or not same:
            raise unsupported(layer, "mode", layer.mode, "only where it cannot differ from mode 0")
    want = model.shapes.get(layer.top)
    if layer.nd_rank is not None and want is not None and want.rank_declared and want.rank != layer.nd_rank:
        raise mismatch(layer, f"dst_nd_rank {layer.nd_rank}, the shape file gives {layer.top!r} rank {want.rank}")
    return y


@handler("transpose", sequences=True)
def transpose(layer, inputs, model):
    """Output axis X is the input axis numbered axis_X (0 w, 1 h, 2 k, 3 n, 4 seq)."""
    expect_inputs(layer, inputs, 1)
    if not layer.has_axes:
        raise unsupported(layer, "axis_*", None, "absent: the permutation is unknown")
    if sorted(layer.axes) != [0, 1, 2, 3, 4]:
        raise unsupported(layer, "axis_seq/n/k/h/w", layer.axes, "not a permutation of 0..4")
    source = {name: AXIS_NAMES[number] for name, number in zip(("seq", "n", "k", "h", "w"), layer.axes)}
    if source["n"] != "n":
        raise unsupported(layer, "axis_n", layer.axes[1], "moving the batch axis")
    order = [0] + [_AXIS5[source[name]] for name in ("seq", "k", "h", "w")]
    return np.transpose(_five(inputs[0]), order)


@handler("sequence_concat", sequences=True)
def sequence_concat(layer, inputs, model):
    expect_inputs(layer, inputs, (1, None))
    if layer.simple_concat != 1:
        raise unsupported(layer, "simple_concat", layer.simple_concat)
    parts = [_five(a) for a in inputs]
    if len({a.shape[:1] + a.shape[2:] for a in parts}) > 1:
        shapes = ", ".join(str(list(a.shape)) for a in parts)
        raise mismatch(layer, f"inputs of shapes {shapes} cannot be concatenated along seq")
    return np.concatenate(parts, axis=1)


@handler("slice", sequences=True)
def slice_(layer, inputs, model):
    """[start, end) along the axis numbered ``axis``, with Python's reading of the bounds (*unverified*
    for negative ones; an end past the axis is clamped, as SSDOcr's shape file shows)."""
    expect_inputs(layer, inputs, 1)
    if layer.axis not in AXIS_NAMES or AXIS_NAMES[layer.axis] == "n":
        raise unsupported(layer, "axis", layer.axis)
    if layer.stride != 1:
        raise unsupported(layer, "stride", layer.stride)
    x = _five(inputs[0])
    index = [slice(None)] * 5
    index[_AXIS5[AXIS_NAMES[layer.axis]]] = slice(layer.start, layer.end)
    y = x[tuple(index)]
    if y.size == 0:
        raise mismatch(layer, f"start {layer.start}, end {layer.end} leave nothing of {list(x.shape[1:])}")
    return y


@handler("reduce", sequences=True)
def reduce_(layer, inputs, model):
    """mode 0 (sum) over axis_mode 4 (k), the only combination real files show."""
    expect_inputs(layer, inputs, 1)
    if layer.mode != 0:
        raise unsupported(layer, "mode", layer.mode, layer.MODES_NOTE)
    if layer.axis_mode != 4:
        raise unsupported(layer, "axis_mode", layer.axis_mode, "only 4 (k) is known")
    if layer.params.get("use_version", 1) != 1:
        raise unsupported(layer, "use_version", layer.params.get("use_version"), "only 1 is known")
    return _five(inputs[0]).sum(axis=_AXIS5["k"], keepdims=True)


@handler("general_padding")
def general_padding(layer, inputs, model):
    expect_inputs(layer, inputs, 1)
    if layer.fill_mode != 0:
        raise unsupported(layer, "pad_fill_mode", layer.fill_mode, layer.FILL_MODES_NOTE)
    if layer.pad_mode != 0:
        raise unsupported(layer, "pad_pad_mode", layer.pad_mode, "only 0 is known")
    t, b, left, right = layer.pads
    return np.pad(inputs[0], ((0, 0), (0, 0), (t, b), (left, right)), constant_values=layer.value)


@handler("general_concat", sequences=True)
def general_concat(layer, inputs, model):
    """Core ML's ConcatND: along ``axis`` counted over the first input's rank (its shape entry's)."""
    expect_inputs(layer, inputs, (1, None))
    if not layer.nd_mode:
        raise unsupported(layer, "nd_mode", 0, "only the N-D form (nd_mode true) is known")
    rank = _rank_of(model, layer.bottoms[0])
    name = nd_axis_name(layer.axis, rank)
    if name is None or name == "n":
        raise unsupported(layer, "axis", layer.axis, f"on a rank-{rank} blob")
    parts = [_five(a) for a in inputs]
    try:
        return np.concatenate(parts, axis=_AXIS5[name])
    except ValueError:
        raise mismatch(layer, f"inputs of shapes {[list(a.shape) for a in parts]} cannot be concatenated "
                              f"along {name}") from None


@handler("general_slice", sequences=True)
def general_slice(layer, inputs, model):
    """Core ML's SliceStatic: numpy slicing of each axis; a squeezed axis takes the shape file's view."""
    expect_inputs(layer, inputs, 1)
    x = _five(inputs[0])
    cuts, out = layer.plan(x.shape[1:])
    if cuts is None:
        raise UnsupportedLayerError(f"{layer_label(layer)}: {out}")
    index = [slice(None)] * 5
    for axis, start, stop, step in cuts:
        index[_AXIS5[axis]] = slice(start, stop, step)
    y = x[tuple(index)]
    if layer.squeeze:
        view = _entry_view(model, layer, layer.top, "the view after squeezing")
        if int(np.prod(view)) * y.shape[0] != y.size:
            raise mismatch(layer, f"{list(y.shape[1:])} cannot become the shape file's {list(view)}")
        y = y.reshape((y.shape[0],) + tuple(view))
    return y


def _same_data(layer, inputs, model):
    """expand_dims / squeeze move no data: the top is the input seen through its shape entry's view."""
    expect_inputs(layer, inputs, 1)
    view = _entry_view(model, layer, layer.top, "the axes it adds or removes")
    x = inputs[0]
    if int(np.prod(view)) * x.shape[0] != x.size:
        raise mismatch(layer, f"{list(x.shape[1:])} cannot become the shape file's {list(view)}")
    return x.reshape((x.shape[0],) + tuple(view))


handler("expand_dims", sequences=True)(_same_data)
handler("squeeze", sequences=True)(_same_data)


@handler("split_nd", sequences=True)
def split_nd(layer, inputs, model):
    """Along ``nd_axis`` (over the input's rank) into the tops, sized by their shape entries (*unverified*)."""
    expect_inputs(layer, inputs, 1)
    rank = _rank_of(model, layer.bottoms[0])
    name = nd_axis_name(layer.axis, rank)
    if name is None or name == "n":
        raise unsupported(layer, "nd_axis", layer.axis, f"on a rank-{rank} blob")
    x = _five(inputs[0])
    axis = _AXIS5[name]
    sizes = [_entry_view(model, layer, top, "the size of each part")[axis - 1] for top in layer.tops]
    if sum(sizes) != x.shape[axis]:
        raise mismatch(layer, f"parts of {sizes} along {name} do not add up to {x.shape[axis]}")
    parts = np.split(x, np.cumsum(sizes)[:-1], axis=axis)
    for top, part in zip(layer.tops, parts):
        view = model.shapes[top].view
        if part.shape[1:] != view:
            raise mismatch(layer, f"part {top!r} is {list(part.shape[1:])}, the shape file says {list(view)}")
    return list(parts)


def _linear_axis(x: np.ndarray, axis: int, scale: int, align_corners: bool) -> np.ndarray:
    """Linear interpolation of ``x`` along ``axis`` to ``scale`` times its size, edges clamped."""
    n_in = x.shape[axis]
    n_out = n_in * scale
    d = np.arange(n_out, dtype=F64)
    if align_corners:
        src = d * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros(n_out)
    else:  # half-pixel centres
        src = (d + 0.5) / scale - 0.5
    src = np.clip(src, 0.0, n_in - 1)
    i0 = np.floor(src).astype(np.intp)
    i1 = np.minimum(i0 + 1, n_in - 1)
    shape = [1] * x.ndim
    shape[axis] = n_out
    lam = (src - i0).reshape(shape)
    return np.take(x, i0, axis=axis) * (1.0 - lam) + np.take(x, i1, axis=axis) * lam


@handler("upsample")
def upsample(layer, inputs, model):
    expect_inputs(layer, inputs, 1)
    x = inputs[0]
    if layer.mode == 0:
        if layer.align_corners:  # not plain repetition, and unverified: refuse
            raise unsupported(layer, "align_corners", 1, "with nearest upsampling")
        return np.repeat(np.repeat(x, layer.scale_h, axis=2), layer.scale_w, axis=3)
    if layer.mode == 1:  # bilinear (unverified)
        y = _linear_axis(x, 2, layer.scale_h, layer.align_corners)
        return _linear_axis(y, 3, layer.scale_w, layer.align_corners)
    raise unsupported(layer, "mode", layer.mode)


@handler("load_constant")
def load_constant(layer, inputs, model):
    """The constant as [1, k, h, w]: it broadcasts against the batch. Bottoms are ignored."""
    if layer.n != 1:
        raise unsupported(layer, "n", layer.n, "Core ML's load_constant is [1, 1, C, H, W]")
    return _weights(model, layer, "constant")[None]
