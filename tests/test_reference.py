"""The NumPy reference executor against independent, brute-force definitions.

Every expectation here is written out with explicit Python loops or closed
forms on tiny arrays, never with the executor's own vectorised code.
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from neuralhash.errors import NeuralHashError, ShapeMismatchError, UnsupportedLayerError
from neuralhash.espresso import BlobShape, EspressoModel, WeightsFile, encode_weights, read_json_file
from neuralhash.espresso.model import iter_blob_refs
from neuralhash.reference import ACTIVATION_MODES, ELEMENTWISE_OPERATIONS, HANDLERS, check_shapes, run

from conftest import assert_close

RNG_SEED = 1234


def rng(seed: int = RNG_SEED) -> np.random.Generator:
    return np.random.default_rng(seed)


def model_of(layers, blobs=None, shapes=None):
    return EspressoModel.from_layers(layers, blobs or {}, shapes or {"x": (1, 1, 1, 1)})


def one(model, x):
    out = run(model, x)
    assert list(out) == model.outputs
    (value,) = out.values()
    assert value.dtype == np.float32
    return value.astype(np.float64)


def inputs(*names):
    return [{"type": "input", "name": f"in_{n}", "top": n} for n in names]


# -- convolution ---------------------------------------------------------------------------


def same_pads(size, k, s, d):
    out = math.ceil(size / s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


def brute_conv(x, w, b, sh, sw, dh, dw, groups, pads):
    """Direct definition: every output value as an explicit sum over its window."""
    n, k, h, wd = x.shape
    c, kg, kh, kw = w.shape
    pt, pb, pl, pr = pads
    xp = np.zeros((n, k, h + pt + pb, wd + pl + pr))
    xp[:, :, pt : pt + h, pl : pl + wd] = x
    ho = (h + pt + pb - (kh - 1) * dh - 1) // sh + 1
    wo = (wd + pl + pr - (kw - 1) * dw - 1) // sw + 1
    cg = c // groups
    out = np.zeros((n, c, ho, wo))
    for ni in range(n):
        for co in range(c):
            g = co // cg
            for oy in range(ho):
                for ox in range(wo):
                    acc = 0.0 if b is None else float(b[co])
                    for ci in range(kg):
                        for i in range(kh):
                            for j in range(kw):
                                acc += w[co, ci, i, j] * xp[ni, g * kg + ci, oy * sh + i * dh, ox * sw + j * dw]
                    out[ni, co, oy, ox] = acc
    return out


CONV_CASES = {
    # name: (N, K, H, W, C, kh, kw, sh, sw, dh, dw, groups, pad_mode, pads, bias, relu)
    "3x3 s1 same": (1, 2, 5, 7, 3, 3, 3, 1, 1, 1, 1, 1, 1, None, False, False),
    "3x3 s2 same odd total": (1, 2, 6, 7, 3, 3, 3, 2, 2, 1, 1, 1, 1, None, False, False),
    "2x3 kernel s1 same": (1, 2, 5, 7, 2, 2, 3, 1, 1, 1, 1, 1, 1, None, True, False),
    "4x1 kernel s2x1": (2, 3, 7, 5, 2, 4, 1, 2, 1, 1, 1, 1, 1, None, False, False),
    "grouped": (1, 4, 5, 6, 6, 3, 3, 1, 1, 1, 1, 2, 1, None, True, False),
    "depthwise": (2, 4, 6, 5, 4, 3, 3, 2, 2, 1, 1, 4, 1, None, False, False),
    "depthwise 5x5": (1, 3, 7, 8, 3, 5, 5, 1, 1, 1, 1, 3, 1, None, True, True),
    "depthwise multiplier": (1, 2, 5, 5, 4, 3, 3, 1, 1, 1, 1, 2, 1, None, False, False),
    "dilated same": (1, 2, 7, 8, 2, 3, 3, 1, 1, 2, 2, 1, 1, None, False, False),
    "explicit pads": (1, 2, 5, 7, 3, 3, 2, 2, 1, 1, 1, 1, 0, (1, 0, 2, 1), True, False),
    "valid": (1, 2, 6, 7, 3, 3, 3, 2, 2, 1, 1, 1, 2, None, False, False),
    "1x1 bias relu": (2, 3, 4, 5, 4, 1, 1, 1, 1, 1, 1, 1, 2, None, True, True),
}


@pytest.mark.parametrize("case", CONV_CASES.values(), ids=list(CONV_CASES))
def test_convolution_matches_brute_force(case):
    n, k, h, wd, c, kh, kw, sh, sw, dh, dw, groups, pad_mode, pads, bias, relu = case
    r = rng()
    w = r.standard_normal((c, k // groups, kh, kw)).astype(np.float32)
    b = r.standard_normal(c).astype(np.float32) if bias else None
    x = r.standard_normal((n, k, h, wd)).astype(np.float32)
    layer = {
        "type": "convolution", "name": "conv", "bottom": "x", "top": "y",
        "C": c, "K": k, "Nx": kw, "Ny": kh, "stride_x": sw, "stride_y": sh,
        "dilation_x": dw, "dilation_y": dh, "n_groups": groups, "pad_mode": pad_mode,
        "has_biases": int(bias), "blob_weights": 1, "fused_relu": int(relu),
    }
    blobs = {1: w}
    if bias:
        layer["blob_biases"] = 3
        blobs[3] = b
    if pad_mode == 0:
        layer.update(zip(("pad_t", "pad_b", "pad_l", "pad_r"), pads))
    elif pad_mode == 1:
        pads = same_pads(h, kh, sh, dh) + same_pads(wd, kw, sw, dw)
    else:
        pads = (0, 0, 0, 0)
    expected = brute_conv(x.astype(np.float64), w.astype(np.float64), b, sh, sw, dh, dw, groups, pads)
    if relu:
        expected = np.maximum(expected, 0)
    got = one(model_of([layer], blobs, {"x": (1, k, h, wd)}), x)
    if pad_mode == 1:
        assert got.shape[2:] == (math.ceil(h / sh), math.ceil(wd / sw))
    assert got.shape == expected.shape
    assert_close(got, expected, rtol=1e-5)


def test_same_padding_puts_the_odd_row_and_column_at_the_bottom_right():
    # A 2x2 all-ones kernel at stride 1 pads one row and one column, after the data.
    x = np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3)
    layer = {"type": "convolution", "name": "c", "bottom": "x", "top": "y", "C": 1, "K": 1,
             "Nx": 2, "Ny": 2, "pad_mode": 1, "blob_weights": 1}
    got = one(model_of([layer], {1: np.ones((1, 1, 2, 2), np.float32)}, {"x": (1, 1, 2, 3)}), x)
    # x = [[0 1 2] [3 4 5]]; padded below and right with zeros
    np.testing.assert_array_equal(got[0, 0], [[8, 12, 7], [7, 9, 5]])


def test_convolution_fused_tanh():
    x = rng().standard_normal((1, 1, 3, 3)).astype(np.float32) * 3
    layer = {"type": "convolution", "name": "c", "bottom": "x", "top": "y", "C": 1, "K": 1,
             "Nx": 1, "Ny": 1, "pad_mode": 2, "blob_weights": 1, "fused_tanh": 1}
    got = one(model_of([layer], {1: np.full((1, 1, 1, 1), 2, np.float32)}, {"x": (1, 1, 3, 3)}), x)
    np.testing.assert_allclose(got, np.tanh(2 * x.astype(np.float64)), rtol=1e-6)


@pytest.mark.parametrize("field,value", [("has_batch_norm", 1), ("n_parallel", 2), ("pad_mode", 3)])
def test_convolution_unsupported_fields(field, value):
    layer = {"type": "convolution", "name": "cv", "bottom": "x", "top": "y", "C": 1, "K": 1,
             "Nx": 1, "Ny": 1, "pad_mode": 1, "blob_weights": 1, field: value}
    model = model_of([layer], {1: np.ones((1, 1, 1, 1), np.float32)}, {"x": (1, 1, 2, 2)})
    with pytest.raises(UnsupportedLayerError, match=rf"'cv' \(convolution\): {field} {value} is not supported"):
        run(model, np.ones((1, 1, 2, 2), np.float32))


def test_convolution_channel_mismatch_names_the_layer():
    layer = {"type": "convolution", "name": "cv", "bottom": "x", "top": "y", "C": 1, "K": 2,
             "Nx": 1, "Ny": 1, "pad_mode": 1, "blob_weights": 1}
    model = model_of([layer], {1: np.ones((1, 2, 1, 1), np.float32)}, {"x": (1, 2, 2, 2)})
    with pytest.raises(ShapeMismatchError, match="'cv'"):
        run(model, np.ones((1, 3, 2, 2), np.float32))


# -- pooling ---------------------------------------------------------------------------------


def brute_pool(x, is_max, kh, kw, sh, sw, pads, exclude):
    n, c, h, w = x.shape
    pt, pb, pl, pr = pads
    ho = (h + pt + pb - kh) // sh + 1
    wo = (w + pl + pr - kw) // sw + 1
    out = np.zeros((n, c, ho, wo))
    for ni in range(n):
        for ci in range(c):
            for oy in range(ho):
                for ox in range(wo):
                    cells = []
                    for i in range(kh):
                        for j in range(kw):
                            y, xx = oy * sh + i - pt, ox * sw + j - pl
                            if 0 <= y < h and 0 <= xx < w:
                                cells.append(x[ni, ci, y, xx])
                    if is_max:
                        out[ni, ci, oy, ox] = max(cells)
                    else:
                        out[ni, ci, oy, ox] = sum(cells) / (len(cells) if exclude else kh * kw)
    return out


@pytest.mark.parametrize("is_max", [False, True], ids=["avg", "max"])
@pytest.mark.parametrize("exclude", [True, False], ids=["exclude", "include"])
@pytest.mark.parametrize(
    "pad_mode,pads,kh,kw,sh,sw",
    [
        (0, (1, 0, 2, 1), 3, 3, 2, 2),
        (0, (1, 1, 0, 0), 2, 3, 1, 2),
        (1, None, 3, 3, 2, 2),
        (1, None, 2, 2, 1, 1),
        (1, None, 3, 2, 2, 1),
        (2, None, 3, 2, 2, 1),
    ],
    ids=["explicit", "explicit-2x3", "same-3x3-s2", "same-2x2-odd", "same-3x2", "valid"],
)
def test_pool_matches_brute_force(is_max, exclude, pad_mode, pads, kh, kw, sh, sw):
    h, w = 5, 7
    x = (rng().standard_normal((2, 2, h, w)) - (3 if is_max else 0)).astype(np.float32)  # max: negatives beat 0-padding
    layer = {"type": "pool", "name": "p", "bottom": "x", "top": "y", "avg_or_max": int(is_max),
             "size_x": kw, "size_y": kh, "stride_x": sw, "stride_y": sh, "pad_mode": pad_mode,
             "average_count_exclude_padding": int(exclude)}
    if pad_mode == 0:
        layer.update(zip(("pad_t", "pad_b", "pad_l", "pad_r"), pads))
    elif pad_mode == 1:
        pads = same_pads(h, kh, sh, 1) + same_pads(w, kw, sw, 1)
    else:
        pads = (0, 0, 0, 0)
    expected = brute_pool(x.astype(np.float64), is_max, kh, kw, sh, sw, pads, exclude)
    got = one(model_of([layer], None, {"x": (2, 2, h, w)}), x)
    assert got.shape == expected.shape
    assert_close(got, expected, rtol=1e-6)


@pytest.mark.parametrize("is_max", [False, True])
def test_global_pool(is_max):
    x = rng().standard_normal((2, 3, 4, 5)).astype(np.float32)
    layer = {"type": "pool", "name": "g", "bottom": "x", "top": "y", "avg_or_max": int(is_max),
             "is_global": 1, "size_x": 5, "size_y": 4}
    got = one(model_of([layer], None, {"x": (1, 3, 4, 5)}), x)
    assert got.shape == (2, 3, 1, 1)
    for n in range(2):
        for c in range(3):
            cells = [float(v) for v in x[n, c].ravel()]
            want = max(cells) if is_max else sum(cells) / len(cells)
            assert got[n, c, 0, 0] == pytest.approx(want, abs=1e-6 * float(max(map(abs, cells))))


def test_pool_unsupported_kind():
    layer = {"type": "pool", "name": "p", "bottom": "x", "top": "y", "avg_or_max": 2, "size_x": 2, "size_y": 2}
    with pytest.raises(UnsupportedLayerError, match=r"'p' \(pool\): avg_or_max 2"):
        run(model_of([layer], None, {"x": (1, 1, 4, 4)}), np.ones((1, 1, 4, 4), np.float32))


# -- batchnorm -------------------------------------------------------------------------------


def test_instance_norm_closed_form_and_per_image():
    c = 3
    r = rng()
    scale = np.array([2.0, -0.5, 1.5], np.float32)
    shift = np.array([0.25, -1.0, 3.0], np.float32)
    params = np.stack([scale, shift, r.standard_normal(c), r.random(c) + 1], axis=1).astype(np.float32)
    layer = {"type": "batchnorm", "name": "in", "bottom": "x", "top": "y", "C": c, "training": 1,
             "training_instancenorm": 1, "training_eps": 1e-6, "blob_batchnorm_params": 1}
    model = model_of([layer], {1: params}, {"x": (1, c, 5, 7)})
    # Very different images: per-image statistics must not mix.
    x = np.concatenate([r.standard_normal((1, c, 5, 7)) * 10 + 4, r.standard_normal((1, c, 5, 7)) * 0.1 - 2])
    x = x.astype(np.float32)
    got = one(model, x)
    for n in range(2):
        for ch in range(c):
            assert got[n, ch].mean() == pytest.approx(shift[ch], abs=1e-5 * float(abs(shift[ch]) + abs(scale[ch])))
            assert got[n, ch].std() == pytest.approx(abs(scale[ch]), rel=1e-4)
            # sign of the scale is kept: correlation with the input has its sign
            assert np.sign(np.corrcoef(got[n, ch].ravel(), x[n, ch].ravel())[0, 1]) == np.sign(scale[ch])
    assert_close(one(model, x[1:]), got[1:], rtol=1e-6)


def test_inference_batchnorm_closed_form():
    params = np.array([[2.0, 1.0, 0.5, 4.0], [1.0, 0.0, -1.0, 0.25]], np.float32)
    layer = {"type": "batchnorm", "name": "bn", "bottom": "x", "top": "y", "C": 2, "training": 0,
             "training_eps": 0.0, "blob_batchnorm_params": 1}
    x = rng().standard_normal((2, 2, 3, 3)).astype(np.float32)
    got = one(model_of([layer], {1: params}, {"x": (1, 2, 3, 3)}), x)
    x64 = x.astype(np.float64)
    assert_close(got[:, 0], (x64[:, 0] - 0.5) / 2.0 * 2.0 + 1.0, rtol=1e-6)
    assert_close(got[:, 1], (x64[:, 1] + 1.0) / 0.5, rtol=1e-6)


def test_training_batchnorm_without_instance_norm_is_unsupported():
    layer = {"type": "batchnorm", "name": "bn", "bottom": "x", "top": "y", "C": 1, "training": 1,
             "training_instancenorm": 0, "blob_batchnorm_params": 1}
    model = model_of([layer], {1: np.ones((1, 4), np.float32)}, {"x": (1, 1, 2, 2)})
    with pytest.raises(UnsupportedLayerError, match=r"'bn' \(batchnorm\): training_instancenorm 0"):
        run(model, np.ones((1, 1, 2, 2), np.float32))


# -- elementwise -----------------------------------------------------------------------------


def ew(op, bottoms, **extra):
    return {"type": "elementwise", "name": "e", "bottom": ",".join(bottoms), "top": "y", "operation": op, **extra}


def test_elementwise_product_broadcasts_channel_vector():
    r = rng()
    a = r.standard_normal((2, 3, 4, 5)).astype(np.float32)
    s = r.standard_normal((2, 3, 1, 1)).astype(np.float32)
    model = model_of(inputs("a", "s") + [ew(1, ["a", "s"], alpha=1.0)], None, {"a": (1, 3, 4, 5), "s": (1, 3, 1, 1)})
    got = one(model, {"a": a, "s": s})
    for n in range(2):
        for c in range(3):
            np.testing.assert_allclose(got[n, c], a[n, c].astype(np.float64) * float(s[n, c, 0, 0]), rtol=1e-6)


@pytest.mark.parametrize(
    "op,fn",
    [(22, min), (23, max), (33, lambda p, q: p - q), (102, lambda p, q: p / q)],
    ids=["min", "max", "sub", "div"],
)
def test_elementwise_binary(op, fn):
    r = rng()
    a = r.standard_normal((1, 2, 2, 3)).astype(np.float32)
    b = (r.random((1, 2, 2, 3)) + 0.5).astype(np.float32)
    model = model_of(inputs("a", "b") + [ew(op, ["a", "b"])], None, {"a": (1, 2, 2, 3), "b": (1, 2, 2, 3)})
    got = one(model, {"a": a, "b": b})
    want = np.array([fn(float(p), float(q)) for p, q in zip(a.ravel(), b.ravel())]).reshape(a.shape)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_elementwise_sum_of_three_with_fused_relu():
    r = rng()
    xs = [r.standard_normal((1, 2, 3, 3)).astype(np.float32) for _ in range(3)]
    model = model_of(inputs("a", "b", "c") + [ew(0, ["a", "b", "c"], fused_relu=1)], None,
                     {k: (1, 2, 3, 3) for k in "abc"})
    got = one(model, dict(zip("abc", xs)))
    want = [max(0.0, float(p) + float(q) + float(s)) for p, q, s in zip(*(v.ravel() for v in xs))]
    assert_close(got.ravel(), want, rtol=1e-6)


@pytest.mark.parametrize(
    "op,alpha,beta,fn",
    [
        (1, 2.5, 0.0, lambda v: v * 2.5),
        (2, 3.0, 0.0, lambda v: v + 3.0),
        (3, 1 / 6, 0.0, lambda v: v / 6),
        (24, 0.0, 0.0, abs),
        (119, 0.0, 6.0, lambda v: min(max(v, 0.0), 6.0)),
    ],
    ids=["scale-1", "add", "mul", "abs", "relu6"],
)
def test_elementwise_unary(op, alpha, beta, fn):
    x = (rng().standard_normal((2, 2, 3, 3)) * 5).astype(np.float32)
    model = model_of([ew(op, ["x"], alpha=alpha, beta=beta)], None, {"x": (1, 2, 3, 3)})
    got = one(model, x)
    want = np.array([fn(float(v)) for v in x.ravel()]).reshape(x.shape)
    assert_close(got, want, rtol=1e-6)


def test_hard_swish_chain_as_in_neuralhash():
    layers = [
        {"type": "elementwise", "name": "add", "bottom": "x", "top": "t1", "operation": 2, "alpha": 3.0},
        {"type": "elementwise", "name": "relu6", "bottom": "t1", "top": "t2", "operation": 119, "alpha": 0.0, "beta": 6.0},
        {"type": "elementwise", "name": "mul", "bottom": "t2", "top": "t3", "operation": 3, "alpha": 1 / 6},
        {"type": "elementwise", "name": "mul_1", "bottom": "x,t3", "top": "y", "operation": 1, "alpha": 1.0},
    ]
    x = np.linspace(-5, 5, 24, dtype=np.float32).reshape(1, 2, 3, 4)
    got = one(model_of(layers, None, {"x": (1, 2, 3, 4)}), x)
    want = [v * min(max(v + 3, 0), 6) / 6 for v in x.astype(np.float64).ravel()]
    assert_close(got.ravel(), want, rtol=1e-6)


def test_unknown_elementwise_operation_names_the_layer():
    model = model_of([ew(57, ["x"]) | {"name": "foo"}], None, {"x": (1, 1, 2, 2)})
    with pytest.raises(UnsupportedLayerError, match=r"layer 'foo' \(elementwise\): operation 57 is not supported"):
        run(model, np.ones((1, 1, 2, 2), np.float32))


@pytest.mark.parametrize("op,bottoms", [(22, ["x"]), (2, ["x", "z"]), (22, ["x", "z", "z"])])
def test_elementwise_wrong_input_count(op, bottoms):
    layers = [{"type": "elementwise", "name": "pre", "bottom": "x", "top": "z", "operation": 2, "alpha": 1.0},
              ew(op, bottoms)]
    model = model_of(layers, None, {"x": (1, 1, 2, 2)})
    with pytest.raises(UnsupportedLayerError, match=rf"'e' \(elementwise\): operation {op} with {len(bottoms)} input"):
        run(model, np.ones((1, 1, 2, 2), np.float32))


def test_elementwise_shapes_that_do_not_broadcast():
    model = model_of(inputs("a", "b") + [ew(0, ["a", "b"])], None, {"a": (1, 2, 2, 2), "b": (1, 3, 2, 2)})
    with pytest.raises(ShapeMismatchError, match="'e'"):
        run(model, {"a": np.ones((1, 2, 2, 2), np.float32), "b": np.ones((1, 3, 2, 2), np.float32)})


# -- activation ------------------------------------------------------------------------------


def _sig(v):
    return 1 / (1 + math.exp(-v))


ACTIVATION_CASES = {
    0: (0.0, 0.0, lambda v, a, b: max(v, 0.0)),
    1: (0.0, 0.0, lambda v, a, b: math.tanh(v)),
    2: (0.1, 0.0, lambda v, a, b: v if v > 0 else a * v),
    3: (0.0, 0.0, lambda v, a, b: _sig(v)),
    5: (1.5, 0.5, lambda v, a, b: a * math.tanh(b * v)),
    6: (2.0, -1.0, lambda v, a, b: a * v + b),
    7: (1.0, 0.0, lambda v, a, b: min(max(v, 0.0), 1.0)),  # clip to [0, 1] (ESPRESSO.md)
    8: (0.7, 0.0, lambda v, a, b: v if v >= 0 else a * (math.exp(v) - 1)),
    9: (0.5, 0.0, lambda v, a, b: v if v > a else 0.0),
    10: (0.0, 0.0, lambda v, a, b: math.log1p(math.exp(v))),
    12: (0.0, 0.0, lambda v, a, b: v / (1 + abs(v))),
    25: (0.0, 0.0, lambda v, a, b: v * _sig(v)),
    26: (0.0, 0.0, lambda v, a, b: v * min(max(v + 3, 0), 6) / 6),
}


@pytest.mark.parametrize("mode", sorted(ACTIVATION_CASES))
def test_activation_modes(mode):
    alpha, beta, fn = ACTIVATION_CASES[mode]
    x = np.linspace(-6, 6, 30, dtype=np.float32).reshape(1, 2, 3, 5)
    layer = {"type": "activation", "name": "a", "bottom": "x", "top": "y", "mode": mode, "alpha": alpha, "beta": beta}
    got = one(model_of([layer], None, {"x": (1, 2, 3, 5)}), x)
    want = [fn(float(v), alpha, beta) for v in x.ravel()]
    assert_close(got.ravel(), want, rtol=1e-6)


def test_activation_table_is_the_tested_one():
    assert set(ACTIVATION_MODES) == set(ACTIVATION_CASES)


@pytest.mark.parametrize("mode", [4, 11, 99])
def test_unsupported_activation_mode(mode):
    layer = {"type": "activation", "name": "act", "bottom": "x", "top": "y", "mode": mode}
    with pytest.raises(UnsupportedLayerError, match=rf"'act' \(activation\): mode {mode} is not supported"):
        run(model_of([layer], None, {"x": (1, 1, 1, 1)}), np.ones((1, 1, 1, 1), np.float32))


# -- inner product ---------------------------------------------------------------------------


@pytest.mark.parametrize("transposed", [False, True], ids=["nC-nB", "w_f16_t"])
def test_inner_product_explicit_sum(transposed):
    r = rng()
    n_in, n_out = 2 * 2 * 3, 5
    w = r.standard_normal((n_out, n_in)).astype(np.float32)
    b = r.standard_normal(n_out).astype(np.float32)
    layer = {"type": "inner_product", "name": "fc", "bottom": "x", "top": "y", "nB": n_in, "nC": n_out,
             "has_biases": 1, "blob_biases": 3, "has_relu": 1}
    if transposed:
        w = w.astype(np.float16).astype(np.float32)  # exact in float16
        layer["w_f16_t"] = 1
        blobs = {1: np.ascontiguousarray(w.T).astype(np.float16), 3: b}
    else:
        layer["blob_weights"] = 1
        blobs = {1: w, 3: b}
    x = r.standard_normal((2, 2, 2, 3)).astype(np.float32)
    got = one(model_of([layer], blobs, {"x": (1, 2, 2, 3)}), x)
    assert got.shape == (2, n_out, 1, 1)
    for n in range(2):
        flat = [float(x[n, c, i, j]) for c in range(2) for i in range(2) for j in range(3)]  # C order
        for o in range(n_out):
            want = max(0.0, float(b[o]) + sum(float(w[o, t]) * flat[t] for t in range(n_in)))
            assert got[n, o, 0, 0] == pytest.approx(want, abs=1e-6 * (abs(float(b[o])) + sum(abs(float(w[o, t]) * flat[t]) for t in range(n_in))))


def test_inner_product_tanh_and_size_mismatch():
    w = np.full((1, 4), 0.5, np.float32)
    layer = {"type": "inner_product", "name": "fc", "bottom": "x", "top": "y", "nB": 4, "nC": 1,
             "blob_weights": 1, "has_tanh": 1}
    model = model_of([layer], {1: w}, {"x": (1, 4, 1, 1)})
    x = np.array([1, 2, 3, -4], np.float32).reshape(1, 4, 1, 1)
    assert one(model, x)[0, 0, 0, 0] == pytest.approx(math.tanh(1.0))
    with pytest.raises(ShapeMismatchError, match=r"'fc' \(inner_product\).*nB is 4"):
        run(model, np.ones((1, 5, 1, 1), np.float32))


def test_inner_product_prelu_is_unsupported():
    layer = {"type": "inner_product", "name": "fc", "bottom": "x", "top": "y", "nB": 1, "nC": 1,
             "blob_weights": 1, "has_prelu": 1}
    with pytest.raises(UnsupportedLayerError, match=r"'fc' \(inner_product\): has_prelu 1"):
        run(model_of([layer], {1: np.ones((1, 1), np.float32)}, {"x": (1, 1, 1, 1)}), np.ones((1, 1, 1, 1), np.float32))


# -- shape layers ----------------------------------------------------------------------------


def test_upsample_nearest_is_repeat():
    x = rng().standard_normal((2, 2, 3, 2)).astype(np.float32)
    layer = {"type": "upsample", "name": "u", "bottom": "x", "top": "y", "scaling_factor_x": 3, "scaling_factor_y": 2}
    got = one(model_of([layer], None, {"x": (1, 2, 3, 2)}), x)
    np.testing.assert_array_equal(got, np.repeat(np.repeat(x, 2, axis=2), 3, axis=3))


def test_upsample_bilinear_half_pixel_by_hand():
    x = np.array([[0, 4], [8, 12]], np.float32).reshape(1, 1, 2, 2)
    layer = {"type": "upsample", "name": "u", "bottom": "x", "top": "y", "scaling_factor_x": 2,
             "scaling_factor_y": 2, "mode": 1}
    got = one(model_of([layer], None, {"x": (1, 1, 2, 2)}), x)
    # source coordinates -0.25, 0.25, 0.75, 1.25 -> clamped 0, .25, .75, 1
    want = [[0, 1, 3, 4], [2, 3, 5, 6], [6, 7, 9, 10], [8, 9, 11, 12]]
    assert_close(got[0, 0], want, rtol=1e-6)


def test_upsample_bilinear_align_corners_by_hand():
    x = np.array([[0, 4], [8, 12]], np.float32).reshape(1, 1, 2, 2)
    layer = {"type": "upsample", "name": "u", "bottom": "x", "top": "y", "scaling_factor_x": 2,
             "scaling_factor_y": 2, "mode": 1, "align_corners": 1}
    got = one(model_of([layer], None, {"x": (1, 1, 2, 2)}), x)
    want = [[8 * i / 3 + 4 * j / 3 for j in range(4)] for i in range(4)]
    assert_close(got[0, 0], want, rtol=1e-6)


def test_upsample_unknown_mode():
    layer = {"type": "upsample", "name": "u", "bottom": "x", "top": "y", "scaling_factor_x": 2,
             "scaling_factor_y": 2, "mode": 2}
    with pytest.raises(UnsupportedLayerError, match=r"'u' \(upsample\): mode 2"):
        run(model_of([layer], None, {"x": (1, 1, 2, 2)}), np.ones((1, 1, 2, 2), np.float32))


def test_transpose():
    x = rng().standard_normal((2, 2, 3, 4)).astype(np.float32)
    # axis numbers 0 w, 1 h, 2 k, 3 n, 4 seq: output k is input w, output h input k, output w input h
    layer = {"type": "transpose", "name": "t", "bottom": "x", "top": "y", "axis_n": 3, "axis_k": 0, "axis_h": 2, "axis_w": 1}
    got = one(model_of([layer], None, {"x": (1, 2, 3, 4)}), x)
    assert got.shape == (2, 4, 2, 3)
    for n in range(2):
        for a in range(4):
            for b in range(2):
                for c in range(3):
                    assert got[n, a, b, c] == x[n, b, c, a]
    bad = dict(layer, axis_n=0, axis_k=3)
    with pytest.raises(UnsupportedLayerError, match=r"'t' \(transpose\): axis_n 0"):
        run(model_of([bad], None, {"x": (1, 2, 3, 4)}), x)


def test_reshape_and_flatten_in_c_order():
    x = np.arange(2 * 24, dtype=np.float32).reshape(2, 2, 3, 4)
    layers = [
        {"type": "reshape", "name": "r", "bottom": "x", "top": "r", "dst_k": 4, "dst_h": -1, "dst_w": 2},
        {"type": "flatten", "name": "f", "bottom": "x", "top": "f"},
    ]
    out = run(model_of(layers, None, {"x": (1, 2, 3, 4)}), x)
    assert out["r"].shape == (2, 4, 3, 2) and out["f"].shape == (2, 24, 1, 1)
    for n in range(2):
        values = [x[n, c, i, j] for c in range(2) for i in range(3) for j in range(4)]
        assert list(out["r"][n].ravel()) == values
        assert list(out["f"][n].ravel()) == values


def test_reshape_errors():
    x = np.ones((1, 2, 3, 4), np.float32)
    bad_count = {"type": "reshape", "name": "r", "bottom": "x", "top": "y", "dst_k": 5, "dst_h": 1, "dst_w": 1}
    with pytest.raises(ShapeMismatchError, match=r"'r' \(reshape\)"):
        run(model_of([bad_count], None, {"x": (1, 2, 3, 4)}), x)
    zero = dict(bad_count, dst_k=0)
    with pytest.raises(UnsupportedLayerError, match=r"'r' \(reshape\): dst_k 0"):
        run(model_of([zero], None, {"x": (1, 2, 3, 4)}), x)


def test_concat_along_channels_and_constant_broadcast():
    r = rng()
    a = r.standard_normal((2, 1, 2, 3)).astype(np.float32)
    b = r.standard_normal((2, 2, 2, 3)).astype(np.float32)
    const = r.standard_normal((1, 2, 3)).astype(np.float32)
    layers = inputs("a", "b") + [
        {"type": "load_constant", "name": "k", "top": "k", "k": 1, "h": 2, "w": 3, "constant_blob": 5},
        {"type": "concat", "name": "cat", "bottom": "a,b,k", "top": "y"},
    ]
    got = one(model_of(layers, {5: const}, {"a": (1, 1, 2, 3), "b": (1, 2, 2, 3)}), {"a": a, "b": b})
    assert got.shape == (2, 4, 2, 3)
    for n in range(2):
        np.testing.assert_array_equal(got[n, 0], a[n, 0])
        np.testing.assert_array_equal(got[n, 1:3], b[n])
        np.testing.assert_array_equal(got[n, 3], const[0])


def test_load_constant_broadcasts_in_elementwise():
    const = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
    layers = [
        {"type": "load_constant", "name": "k", "top": "k", "k": 1, "h": 2, "w": 3, "constant_blob": 7},
        ew(0, ["x", "k"]),
    ]
    x = rng().standard_normal((3, 1, 2, 3)).astype(np.float32)
    got = one(model_of(layers, {7: const}, {"x": (1, 1, 2, 3)}), x)
    for n in range(3):
        assert_close(got[n, 0], x[n, 0].astype(np.float64) + const[0], rtol=1e-6)


def test_softmax_and_softmax_nd():
    x = (rng().standard_normal((2, 3, 2, 4)) * 20).astype(np.float32)
    layers = [
        {"type": "softmax", "name": "s", "bottom": "x", "top": "s"},
        {"type": "softmax_nd", "name": "sn", "bottom": "x", "top": "sn", "nd_axis": -1},
    ]
    out = run(model_of(layers, None, {"x": (1, 3, 2, 4)}), x)
    assert_close(out["s"].sum(axis=1), np.ones_like(out["s"].sum(axis=1)), rtol=1e-6)
    assert_close(out["sn"].sum(axis=3), np.ones_like(out["sn"].sum(axis=3)), rtol=1e-6)
    n, c, i, j = 1, 2, 1, 3
    col = [math.exp(float(x[n, t, i, j])) for t in range(3)]
    assert out["s"][n, c, i, j] == pytest.approx(col[c] / sum(col), rel=1e-5)
    assert np.isfinite(out["s"]).all()


# -- executor --------------------------------------------------------------------------------


def test_keep_returns_every_blob_in_layer_order_and_feeds_by_array_or_dict():
    layers = [
        {"type": "activation", "name": "a", "bottom": "x", "top": "r", "mode": 0},
        {"type": "elementwise", "name": "b", "bottom": "r", "top": "s", "operation": 2, "alpha": 1.0},
        {"type": "elementwise", "name": "c", "bottom": "s,x", "top": "y", "operation": 0},
    ]
    model = model_of(layers, None, {"x": (1, 1, 2, 2)})
    x = np.array([-1, 2, -3, 4], np.float32).reshape(1, 1, 2, 2)
    kept = run(model, {"x": x}, keep=True)
    assert list(kept) == ["x", "r", "s", "y"]
    assert all(v.dtype == np.float32 for v in kept.values())
    np.testing.assert_array_equal(kept["y"].ravel(), [0, 5, -2, 9])
    assert list(run(model, x)) == ["y"]
    np.testing.assert_array_equal(run(model, x)["y"], kept["y"])


def test_feed_errors():
    model = model_of([{"type": "activation", "name": "a", "bottom": "x", "top": "y", "mode": 0}], None, {"x": (1, 1, 1, 1)})
    with pytest.raises(NeuralHashError, match="'z'"):
        run(model, {"z": np.ones((1, 1, 1, 1), np.float32)})
    with pytest.raises(NeuralHashError, match=r"\[N, k, h, w\]"):
        run(model, np.ones((1, 1, 1), np.float32))


def test_unknown_layer_type_names_the_layer():
    model = model_of([{"type": "crop", "name": "cropper", "bottom": "x", "top": "y"}], None, {"x": (1, 1, 2, 2)})
    with pytest.raises(UnsupportedLayerError, match=r"layer 'cropper' \(crop\): layer type 'crop' is not supported"):
        run(model, np.ones((1, 1, 2, 2), np.float32))


def test_handlers_registry():
    expected = {"input", "convolution", "batchnorm", "elementwise", "activation", "pool", "inner_product",
                "softmax", "softmax_nd", "concat", "flatten", "reshape", "transpose", "upsample", "load_constant",
                "general_padding", "sequence_concat", "slice", "reduce", "expand_dims", "squeeze", "split_nd",
                "general_concat", "general_slice"}
    assert set(HANDLERS) == expected
    assert set(ELEMENTWISE_OPERATIONS) == {0, 1, 2, 3, 10, 22, 23, 24, 25, 27, 33, 102, 119}


def test_does_not_import_onnx():
    code = "import sys, neuralhash.reference; assert not any(m.split('.')[0] in ('onnx', 'onnxruntime') for m in sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


# -- the real NeuralHash graph with synthetic weights ----------------------------------------


def synthetic_neuralhash(real_dir):
    graph = read_json_file(real_dir / "NeuralHashv3b-current.espresso.net")[0]
    shape_doc = read_json_file(real_dir / "NeuralHashv3b-current.espresso.shape")[0]
    skeleton = EspressoModel.from_documents(graph, shape_doc, None)
    r = rng(7)
    blobs = {}
    for layer, role, ref in iter_blob_refs(skeleton):
        if layer.type == "batchnorm":
            a = np.tile(np.array([1, 0, 0, 1], np.float32), (ref.shape[0], 1))
        elif role == "weights":
            fan_in = ref.count // (ref.shape[1] if getattr(layer, "transposed", False) else ref.shape[0])
            a = r.standard_normal(ref.shape) / np.sqrt(fan_in)
        else:
            a = 0.1 * r.standard_normal(ref.shape)
        blobs[ref.id] = np.asarray(a, np.float16 if ref.dtype == "float16" else np.float32)
    return EspressoModel.from_documents(graph, shape_doc, WeightsFile.from_bytes(encode_weights(blobs)))


def test_full_neuralhash_graph_shapes(real_dir):
    model = synthetic_neuralhash(real_dir)
    assert len(model.layers) == 225
    shape = model.shapes[model.inputs[0]]
    x = rng().uniform(-1, 1, (1, shape.k, shape.h, shape.w)).astype(np.float32)
    kept = run(model, x, keep=True)
    assert list(kept) == [model.inputs[0]] + [layer.top for layer in model.layers]
    for blob, value in kept.items():
        s = model.shapes[blob]
        assert value.shape[1:] == (s.k, s.h, s.w), blob
    check_shapes(model, kept)
    for name in model.outputs:
        assert np.isfinite(kept[name]).all()
        assert kept[name].shape == (1, 128, 1, 1)
        assert np.abs(kept[name]).max() > 0
    # batch of two: each image computed independently
    x2 = np.concatenate([x, rng(3).uniform(-1, 1, x.shape).astype(np.float32)])
    out = run(model, x2)
    for name in model.outputs:
        assert_close(out[name][:1], kept[name], rtol=1e-5, what=name)


# -- the vocabulary of real compiled models (ESPRESSO.md, "Seen in real compiled models") --------


def seq_shape(seq, k, h=1, w=1):
    """A shape entry with a sequence axis, as the CardScan files write it (no _rank)."""
    return BlobShape(1, k, h, w, rank=5, seq=seq, rank_declared=False)


@pytest.mark.parametrize(
    "op,alpha,fn",
    [(25, -6.0, lambda v, a: max(v, a)), (27, 1.0, lambda v, a: math.exp(v)), (10, 1.0, lambda v, a: a / v),
     (10, 2.5, lambda v, a: a / v)],
    ids=["threshold", "exp", "inverse", "inverse_alpha"],
)
def test_elementwise_unary_operations_of_real_models(op, alpha, fn):
    x = np.linspace(-3, 3, 12, dtype=np.float32).reshape(1, 3, 2, 2) + 0.05  # never 0
    got = one(model_of([ew(op, ["x"], alpha=alpha)], None, {"x": (1, 3, 2, 2)}), x)
    np.testing.assert_allclose(got.ravel(), [fn(float(v), alpha) for v in x.ravel()], rtol=1e-6)


@pytest.mark.parametrize("op,field,value", [(25, "beta", 1.0), (27, "alpha", 2.0), (27, "beta", 0.5), (10, "beta", 1.0)])
def test_elementwise_unary_operations_refuse_unseen_parameters(op, field, value):
    layer = ew(op, ["x"], **{"alpha": 1.0, "beta": 0.0, field: value})
    with pytest.raises(UnsupportedLayerError, match=rf"{field} {value}"):
        run(model_of([layer], None, {"x": (1, 1, 1, 1)}), np.ones((1, 1, 1, 1), np.float32))


def relu6_layers(kind):
    """Core ML's two lowerings of ReLU6 seen in real models (ESPRESSO.md)."""
    act = lambda name, bottom, **f: {"type": "activation", "name": name, "bottom": bottom, "top": name, **f}
    if kind == "threshold":  # FindFour / UxModel: relu, linear(-1), max(x, -6), linear(-1)
        return [act("r", "x", mode=0), act("neg", "r", mode=6, alpha=-1.0, beta=0.0),
                {"type": "elementwise", "name": "clip", "bottom": "neg", "top": "clip", "operation": 25,
                 "alpha": -6.0, "beta": 0.0, "fused_relu": 0},
                act("y", "clip", mode=6, alpha=-1.0, beta=0.0)]
    # SSDOcr: linear(1/6), clip to [0, 1] (mode 7, beta 0, no alpha), linear(6)
    return [act("s", "x", mode=6, alpha=float(np.float32(1 / 6)), beta=0.0), act("c", "s", mode=7, beta=0.0),
            act("y", "c", mode=6, alpha=6.0, beta=0.0)]


@pytest.mark.parametrize("kind", ["threshold", "clip_0_1"])
def test_relu6_lowerings_are_relu6(kind):
    x = np.linspace(-9, 9, 37, dtype=np.float32).reshape(1, 1, 1, 37)
    got = one(model_of(relu6_layers(kind), None, {"x": (1, 1, 1, 37)}), x)
    assert_close(got.ravel(), [min(max(float(v), 0.0), 6.0) for v in x.ravel()], rtol=1e-6)


def test_activation_mode_7_refuses_other_parameters():
    layer = {"type": "activation", "name": "a", "bottom": "x", "top": "y", "mode": 7, "alpha": 0.2, "beta": 0.5}
    with pytest.raises(UnsupportedLayerError, match=r"'a' \(activation\): alpha, beta \(0.2, 0.5\)"):
        run(model_of([layer], None, {"x": (1, 1, 1, 1)}), np.ones((1, 1, 1, 1), np.float32))


def ssd_softmax_layers():
    """SSDOcr's softmax over k, lowered: exp, reduce (sum over k), flatten, inverse, multiply."""
    return [
        {"type": "elementwise", "name": "e", "bottom": "x", "top": "e", "operation": 27, "alpha": 1, "beta": 0},
        {"type": "reduce", "name": "s", "bottom": "e", "top": "s", "axis_mode": 4, "mode": 0, "use_version": 1},
        {"type": "flatten", "name": "f", "bottom": "s", "top": "f", "mode": 0, "nd_axis": 0},
        {"type": "elementwise", "name": "i", "bottom": "f", "top": "i", "operation": 10, "alpha": 1, "beta": 0},
        {"type": "elementwise", "name": "y", "bottom": "e,i", "top": "y", "operation": 1, "alpha": 1, "beta": 0},
    ]


def test_lowered_softmax_on_a_sequence_blob_is_softmax():
    x = rng().normal(0, 2, (2, 5, 4, 1, 1)).astype(np.float32)  # [N, seq, k, h, w]
    shapes = {"x": seq_shape(5, 4), "s": seq_shape(5, 1), "y": seq_shape(5, 4)}
    kept = run(model_of(ssd_softmax_layers(), None, shapes), x, keep=True)
    check_shapes(model_of(ssd_softmax_layers(), None, shapes), kept)
    got = kept["y"].astype(np.float64)
    assert got.shape == (2, 5, 4, 1, 1)
    for n in range(2):
        for t in range(5):
            row = [math.exp(float(v)) for v in x[n, t, :, 0, 0]]
            np.testing.assert_allclose(got[n, t, :, 0, 0], [v / sum(row) for v in row], rtol=1e-6)
    np.testing.assert_allclose(got.sum(axis=2), 1.0, rtol=1e-6)


def test_transpose_five_axes_as_the_ssd_shape_file_shows():
    # SSDOcr: {k 33, h 24, w 38} with axis_h 0, axis_w 2, axis_k 1 becomes {k 24, h 38, w 33}
    x = rng().standard_normal((2, 5, 3, 4)).astype(np.float32)
    layer = {"type": "transpose", "name": "t", "bottom": "x", "top": "y",
             "axis_h": 0, "axis_w": 2, "axis_k": 1, "axis_n": 3, "axis_seq": 4}
    model = model_of([layer], None, {"x": (1, 5, 3, 4), "y": (1, 3, 4, 5)})
    kept = run(model, x, keep=True)
    check_shapes(model, kept)
    got = kept["y"]
    for n in range(2):
        for a in range(3):
            for b in range(4):
                for c in range(5):
                    assert got[n, a, b, c] == x[n, c, a, b]


def test_transpose_moves_the_sequence_axis():
    x = rng().standard_normal((2, 3, 2, 1, 1)).astype(np.float32)  # seq 3, k 2
    layer = {"type": "transpose", "name": "t", "bottom": "x", "top": "y", "axis_seq": 2, "axis_k": 4}
    got = one(model_of([layer], None, {"x": seq_shape(3, 2), "y": seq_shape(2, 3)}), x)
    assert got.shape == (2, 2, 3, 1, 1)
    for n in range(2):
        for s in range(2):
            for c in range(3):
                assert got[n, s, c, 0, 0] == x[n, c, s, 0, 0]


def test_reshape_onto_the_sequence_axis_in_c_order():
    # SSDOcr's "509": {k 2, h 3, w 4} -> dst_seq -1, dst_k 3 -> {seq 8, k 3}
    x = np.arange(2 * 24, dtype=np.float32).reshape(2, 2, 3, 4)
    layer = {"type": "reshape", "name": "r", "bottom": "x", "top": "y", "dst_seq": -1, "dst_n": 0,
             "dst_k": 3, "dst_h": 1, "dst_w": 1, "mode": 0}
    got = one(model_of([layer], None, {"x": (1, 2, 3, 4), "y": seq_shape(8, 3)}), x)
    assert got.shape == (2, 8, 3, 1, 1)
    for n in range(2):
        flat = list(x[n].ravel())
        for t in range(8):
            for c in range(3):
                assert got[n, t, c, 0, 0] == flat[t * 3 + c]
    back = {"type": "reshape", "name": "b", "bottom": "y", "top": "z", "dst_seq": 1, "dst_k": 1, "dst_h": -1, "dst_w": 4}
    shapes = {"x": (1, 2, 3, 4), "y": seq_shape(8, 3), "z": BlobShape(1, 1, 6, 4, rank=3, rank_declared=False)}
    z = one(model_of([layer, back], None, shapes), x)
    assert z.shape == (2, 6, 4)  # rank 3: [N, h, w]
    np.testing.assert_array_equal(z.reshape(2, -1), x.reshape(2, -1))


def test_reshape_mode_1_and_nd_rank():
    layer = {"type": "reshape", "name": "r", "bottom": "x", "top": "y", "dst_k": 6, "dst_h": 1, "dst_w": 1, "mode": 1}
    x = np.arange(6, dtype=np.float32).reshape(1, 6, 1, 1)
    np.testing.assert_array_equal(one(model_of([layer], None, {"x": (1, 6, 1, 1)}), x).ravel(), x.ravel())
    with pytest.raises(UnsupportedLayerError, match=r"'r' \(reshape\): mode 1"):
        run(model_of([layer], None, {"x": (1, 2, 3, 1)}), x.reshape(1, 2, 3, 1))
    ranked = dict(layer, mode=0, dst_nd_rank=2)
    with pytest.raises(ShapeMismatchError, match=r"dst_nd_rank 2.*rank 4"):
        run(model_of([ranked], None, {"x": (1, 6, 1, 1), "y": BlobShape(1, 6, 1, 1, rank=4)}), x)


def test_sequence_concat():
    a = rng().standard_normal((2, 2, 3, 1, 1)).astype(np.float32)
    b = rng(5).standard_normal((2, 4, 3, 1, 1)).astype(np.float32)
    layers = inputs("a", "b") + [{"type": "sequence_concat", "name": "c", "bottom": "a,b", "top": "c", "simple_concat": 1}]
    got = one(model_of(layers, None, {"a": seq_shape(2, 3), "b": seq_shape(4, 3), "c": seq_shape(6, 3)}), {"a": a, "b": b})
    for n in range(2):
        rows = [list(a[n, t, :, 0, 0]) for t in range(2)] + [list(b[n, t, :, 0, 0]) for t in range(4)]
        np.testing.assert_array_equal(got[n, :, :, 0, 0], rows)


def test_slice_along_k_and_seq():
    x = rng().standard_normal((2, 4, 11, 1, 1)).astype(np.float32)
    k_slice = {"type": "slice", "name": "s", "bottom": "x", "top": "y", "axis": 2, "start": 1, "end": 3420}
    got = one(model_of([k_slice], None, {"x": seq_shape(4, 11), "y": seq_shape(4, 10)}), x)
    np.testing.assert_array_equal(got, x[:, :, 1:])  # SSDOcr drops the background class
    seq_slice = dict(k_slice, axis=4, start=-3, end=-1)  # negative bounds: Python's reading (unverified)
    got = one(model_of([seq_slice], None, {"x": seq_shape(4, 11)}), x)
    assert got.shape == (2, 2, 11, 1, 1)
    np.testing.assert_array_equal(got[:, 0], x[:, 1])
    with pytest.raises(UnsupportedLayerError, match=r"'s' \(slice\): axis 3"):
        run(model_of([dict(k_slice, axis=3)], None, {"x": seq_shape(4, 11)}), x)


def test_reduce_sums_k_and_refuses_the_rest():
    x = rng().standard_normal((2, 3, 4, 5)).astype(np.float32)
    layer = {"type": "reduce", "name": "r", "bottom": "x", "top": "y", "axis_mode": 4, "mode": 0}
    got = one(model_of([layer], None, {"x": (1, 3, 4, 5)}), x)
    for n in range(2):
        for i in range(4):
            for j in range(5):
                assert got[n, 0, i, j] == pytest.approx(sum(float(x[n, c, i, j]) for c in range(3)), rel=1e-6)
    for field, value in (("mode", 1), ("axis_mode", 2)):
        with pytest.raises(UnsupportedLayerError, match=rf"'r' \(reduce\): {field} {value}"):
            run(model_of([dict(layer, **{field: value})], None, {"x": (1, 3, 4, 5)}), x)


def test_flatten_modes():
    x = rng().standard_normal((2, 3, 2, 2, 2)).astype(np.float32)
    layer = {"type": "flatten", "name": "f", "bottom": "x", "top": "y", "mode": 0}
    got = one(model_of([layer], None, {"x": seq_shape(3, 2, 2, 2)}), x)
    assert got.shape == (2, 3, 8, 1, 1)  # each sequence item flattened on its own
    np.testing.assert_array_equal(got[1, 2, :, 0, 0], x[1, 2].ravel())
    last = one(model_of([dict(layer, mode=1)], None, {"x": seq_shape(3, 2, 2, 2)}), x)
    # channels-last: each sequence item's [k, h, w] read in (h, w, k) order
    np.testing.assert_array_equal(last[1, 2, :, 0, 0], x[1, 2].transpose(1, 2, 0).ravel())
    with pytest.raises(UnsupportedLayerError, match=r"'f' \(flatten\): mode 2"):
        run(model_of([dict(layer, mode=2)], None, {"x": seq_shape(3, 2, 2, 2)}), x)
    column = np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3)
    flat = one(model_of([dict(layer, mode=1)], None, {"x": (1, 1, 2, 3)}), column)
    np.testing.assert_array_equal(flat.ravel(), column.ravel())


def test_softmax_nd_counts_axes_over_the_blob_rank():
    x = rng().standard_normal((1, 4, 5, 6)).astype(np.float32)
    shapes = {"x": BlobShape(1, 4, 5, 6, rank=3)}  # a rank-3 blob [4, 5, 6] in k, h, w
    for axis, dim in ((2, 3), (-1, 3), (0, 1), (-2, 2)):
        layer = {"type": "softmax_nd", "name": "s", "bottom": "x", "top": "y", "nd_axis": axis}
        got = one(model_of([layer], None, shapes), x)
        e = np.exp(x.astype(np.float64))
        np.testing.assert_allclose(got, e / e.sum(axis=dim, keepdims=True), rtol=1e-6)
    with pytest.raises(UnsupportedLayerError, match=r"nd_axis 3"):
        run(model_of([dict(layer, nd_axis=3)], None, shapes), x)


def test_general_padding():
    x = rng().standard_normal((1, 2, 2, 3)).astype(np.float32)
    layer = {"type": "general_padding", "name": "p", "bottom": "x", "top": "y", "pad_t": 1, "pad_b": 0,
             "pad_l": 2, "pad_r": 1, "pad_fill_mode": 0, "pad_value": 0.5, "pad_pad_mode": 0}
    got = one(model_of([layer], None, {"x": (1, 2, 2, 3), "y": (1, 2, 3, 6)}), x)
    for c in range(2):
        for i in range(3):
            for j in range(6):
                inside = 1 <= i < 3 and 2 <= j < 5
                assert got[0, c, i, j] == (x[0, c, i - 1, j - 2] if inside else 0.5)
    with pytest.raises(UnsupportedLayerError, match=r"pad_fill_mode 1"):
        run(model_of([dict(layer, pad_fill_mode=1)], None, {"x": (1, 2, 2, 3)}), x)


def test_pool_top_shape_style_follows_the_shape_file():
    x = rng().standard_normal((1, 1, 5, 5)).astype(np.float32)
    layer = {"type": "pool", "name": "p", "bottom": "x", "top": "y", "avg_or_max": 1, "size_x": 2, "size_y": 2,
             "stride_x": 2, "stride_y": 2, "pad_mode": 0, "top_shape_style": 2}
    got = one(model_of([layer], None, {"x": (1, 1, 5, 5), "y": (1, 1, 3, 3)}), x)  # rounded up
    for i in range(3):
        for j in range(3):
            window = [float(x[0, 0, r, c]) for r in range(2 * i, min(2 * i + 2, 5)) for c in range(2 * j, min(2 * j + 2, 5))]
            assert got[0, 0, i, j] == max(window)
    avg = one(model_of([dict(layer, avg_or_max=0)], None, {"x": (1, 1, 5, 5), "y": (1, 1, 3, 3)}), x)
    assert avg[0, 0, 2, 2] == pytest.approx(float(x[0, 0, 4, 4]))  # the lone corner cell: its own mean
    floor = one(model_of([layer], None, {"x": (1, 1, 5, 5), "y": (1, 1, 2, 2)}), x)
    np.testing.assert_array_equal(floor, got[:, :, :2, :2])
    with pytest.raises(UnsupportedLayerError, match=r"top_shape_style 2"):
        run(model_of([layer], None, {"x": (1, 1, 5, 5), "y": (1, 1, 4, 4)}), x)


def test_expand_dims_and_squeeze_move_no_data():
    x = rng().standard_normal((2, 1, 4, 6)).astype(np.float32)
    layers = [{"type": "squeeze", "name": "s", "bottom": "x", "top": "s"},
              {"type": "expand_dims", "name": "e", "bottom": "s", "top": "e"}]
    shapes = {"x": (1, 1, 4, 6), "s": BlobShape(1, 1, 1, 24, rank=2), "e": BlobShape(1, 4, 6, 1, rank=4)}
    kept = run(model_of(layers, None, shapes), x, keep=True)
    assert kept["s"].shape == (2, 1, 1, 24) and kept["e"].shape == (2, 4, 6, 1)
    np.testing.assert_array_equal(kept["e"].reshape(2, -1), x.reshape(2, -1))
    with pytest.raises(UnsupportedLayerError, match=r"'s' \(squeeze\).*no shape entry"):
        run(model_of(layers[:1], None, {"x": (1, 1, 4, 6)}), x)


def test_split_nd_into_its_tops():
    x = rng().standard_normal((2, 5, 2, 3)).astype(np.float32)
    layers = [{"type": "split_nd", "name": "sp", "bottom": "x", "top": "a,b", "nd_axis": 1}]
    shapes = {"x": (1, 5, 2, 3), "a": (1, 2, 2, 3), "b": (1, 3, 2, 3)}
    out = run(model_of(layers, None, shapes), x)
    assert list(out) == ["a", "b"]
    np.testing.assert_array_equal(out["a"], x[:, :2])
    np.testing.assert_array_equal(out["b"], x[:, 2:])


def test_recurrent_layer_is_refused_by_name():
    layer = {"type": "rnn_arch", "name": "lstm", "bottom": "x", "top": "y", "input_size": 4, "hidden_size": 8}
    with pytest.raises(UnsupportedLayerError, match=r"'lstm' \(rnn_arch\)"):
        run(model_of([layer], None, {"x": (1, 4, 1, 1)}), np.ones((1, 4, 1, 1), np.float32))


@pytest.mark.parametrize(
    "layer,pattern",
    [({"type": "transpose"}, r"'l' \(transpose\): axis_\* None"),
     ({"type": "reduce", "axis_mode": 4}, r"'l' \(reduce\): mode None"),
     ({"type": "split_nd"}, r"'l' \(split_nd\): nd_axis None"),
     ({"type": "slice", "start": 1}, r"'l' \(slice\): axis None")],
    ids=["transpose", "reduce", "split_nd", "slice"],
)
def test_absent_fields_are_refused_not_guessed(layer, pattern):
    model = model_of([dict(layer, name="l", bottom="x", top="y")], None, {"x": (1, 2, 3, 4)})
    with pytest.raises(UnsupportedLayerError, match=pattern):
        run(model, np.ones((1, 2, 3, 4), np.float32))
    from neuralhash.convert import unsupported_layers

    assert list(unsupported_layers(model)) == ["l"]


def test_softmax_axis_field_and_reduce_version():
    x = rng().standard_normal((1, 3, 2, 2)).astype(np.float32)
    layer = {"type": "softmax", "name": "s", "bottom": "x", "top": "y", "C": 2}  # as FindFour and UxModel write it
    got = one(model_of([layer], None, {"x": (1, 3, 2, 2)}), x)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-6)
    with pytest.raises(UnsupportedLayerError, match=r"'s' \(softmax\): C 1"):
        run(model_of([dict(layer, C=1)], None, {"x": (1, 3, 2, 2)}), x)
    reduce_ = {"type": "reduce", "name": "r", "bottom": "x", "top": "y", "axis_mode": 4, "mode": 0, "use_version": 2}
    with pytest.raises(UnsupportedLayerError, match=r"'r' \(reduce\): use_version 2"):
        run(model_of([reduce_], None, {"x": (1, 3, 2, 2)}), x)
