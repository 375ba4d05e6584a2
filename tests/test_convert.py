"""The ONNX converter: every handler against the NumPy reference, the graph's contract, and the real graph."""

from __future__ import annotations

import collections
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import neuralhash
from neuralhash.convert import HANDLERS, IR_VERSION, OPSET, convert, save_model
from neuralhash.errors import ConversionError, NeuralHashError, ShapeMismatchError, UnsupportedLayerError
from neuralhash.espresso import BlobShape, EspressoModel, WeightsFile, encode_weights, read_json_file
from neuralhash.espresso.model import iter_blob_refs
from neuralhash.hashing.seed import default_seed_matrix
from neuralhash.reference import run as reference_run

from conftest import assert_close

RTOL = 1e-5  # of the largest |reference value| (see conftest.assert_close)


# -- building small models ---------------------------------------------------------------------


class Net:
    """Layers and weight blobs of a small in-memory model, with odd blob ids handed out in order."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.layers: list[dict] = []
        self.blobs: dict[int, np.ndarray] = {}
        self._next = 1

    def blob(self, array: np.ndarray) -> int:
        blob_id = self._next
        self._next += 2
        self.blobs[blob_id] = np.asarray(array, np.float32)
        return blob_id

    def add(self, type_: str, name: str, bottom: str | list[str], top: str | None = None, **fields) -> str:
        bottom = ",".join(bottom) if isinstance(bottom, list) else bottom
        self.layers.append({"type": type_, "name": name, "bottom": bottom, "top": top or name, **fields})
        return top or name

    def conv(self, name, bottom, k, c, kh=3, kw=None, *, groups=1, bias=True, **fields) -> str:
        kw = kh if kw is None else kw
        fan_in = (k // groups) * kh * kw
        weights = self.blob(self.rng.normal(0, 1 / np.sqrt(fan_in), (c, k // groups, kh, kw)))
        extra = {"blob_biases": self.blob(self.rng.normal(0, 0.1, c))} if bias else {}
        fields.setdefault("pad_mode", 1)
        return self.add("convolution", name, bottom, C=c, K=k, Nx=kw, Ny=kh, n_groups=groups,
                        has_biases=int(bias), blob_weights=weights, **extra, **fields)

    def norm(self, name, bottom, c, **fields) -> str:
        p = np.stack([self.rng.normal(1, 0.1, c), self.rng.normal(0, 0.1, c),
                      self.rng.normal(0, 0.1, c), self.rng.uniform(0.5, 1.5, c)], 1)
        fields.setdefault("training", 1)
        fields.setdefault("training_instancenorm", 1)
        return self.add("batchnorm", name, bottom, C=c, training_eps=1e-6,
                        blob_batchnorm_params=self.blob(p), **fields)

    def ew(self, name, bottom, operation, alpha=None, beta=0.0, **fields) -> str:
        if alpha is None:  # Apple's files write alpha 1 on multi-input operations, 0 on the others
            alpha = 1.0 if isinstance(bottom, list) else 0.0
        return self.add("elementwise", name, bottom, operation=operation, alpha=alpha, beta=beta, **fields)

    def hard_sigmoid(self, prefix, x) -> str:
        t = self.ew(f"{prefix}/add", x, 2, 3.0)
        t = self.ew(f"{prefix}/relu6", t, 119, 0.0, 6.0)
        return self.ew(f"{prefix}/mul", t, 3, float(np.float32(1 / 6)))

    def hard_swish(self, prefix, x) -> str:
        return self.ew(f"{prefix}/mul_1", [x, self.hard_sigmoid(prefix, x)], 1, 1.0)

    def model(self, input_shape, shapes=None, input_name="x") -> EspressoModel:
        all_shapes = {input_name: (1, *input_shape), **(shapes or {})}
        return EspressoModel.from_layers(self.layers, self.blobs, all_shapes)


def inputs_for(model: EspressoModel, batch: int, seed: int = 0) -> np.ndarray:
    s = model.shapes[model.inputs[0]]
    return np.random.default_rng(seed).uniform(-1, 1, (batch, *s.onnx_dims)).astype(np.float32)


def session(proto: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def run_onnx(proto: onnx.ModelProto, model: EspressoModel, x: np.ndarray) -> dict[str, np.ndarray]:
    names = [o.name for o in proto.graph.output]
    return dict(zip(names, session(proto).run(names, {model.inputs[0]: x})))


def max_error(model: EspressoModel, proto: onnx.ModelProto, batches=(1, 3)) -> float:
    worst = 0.0
    for batch in batches:
        x = inputs_for(model, batch, seed=batch)
        ref = reference_run(model, x)
        got = run_onnx(proto, model, x)
        for blob in model.outputs:
            assert got[blob].shape == ref[blob].shape, blob
            assert np.isfinite(ref[blob]).all()
            scale = float(np.abs(ref[blob]).max()) or 1.0  # relative to the values' scale
            worst = max(worst, float(np.max(np.abs(got[blob].astype(np.float64) - ref[blob]))) / scale)
    return worst


def assert_matches_reference(model: EspressoModel, rtol: float = RTOL) -> None:
    for optimize in (False, True):
        proto = convert(model, optimize=optimize)
        onnx.checker.check_model(proto, full_check=True)
        error = max_error(model, proto)
        assert error <= rtol, f"optimize={optimize}: max relative error {error:.3g}"


# -- one model per handler case -----------------------------------------------------------------

CASES: dict[str, tuple] = {}


def case(name):
    def wrap(fn):
        CASES[name] = fn
        return fn

    return wrap


@case("conv_same_stride2_odd")
def _():
    n = Net(1)
    n.conv("c", "x", 3, 5, 3, stride_x=2, stride_y=2)  # 12x9 -> 6x5: padding 1 row (odd, at the bottom), 2 columns
    return n.model((3, 12, 9), {"c": (1, 5, 6, 5)})


@case("conv_same_stride1_even_kernel")
def _():
    n = Net(2)
    n.conv("c", "x", 2, 3, 4, 2)  # 4x2 kernel: total padding 3 rows / 1 column, both odd
    return n.model((2, 7, 10), {"c": (1, 3, 7, 10)})


@case("conv_same_stride2_even_input")
def _():
    n = Net(3)
    n.conv("c", "x", 4, 4, 5, stride_x=2, stride_y=2, bias=False)
    return n.model((4, 12, 8), {"c": (1, 4, 6, 4)})


@case("conv_valid_and_explicit")
def _():
    n = Net(4)
    a = n.conv("valid", "x", 3, 4, 3, pad_mode=2, stride_x=2, stride_y=1)
    n.conv("explicit", a, 4, 2, 3, 2, pad_mode=0, pad_t=2, pad_b=0, pad_l=1, pad_r=3, stride_x=2, stride_y=2)
    return n.model((3, 9, 13), {"valid": (1, 4, 7, 6), "explicit": (1, 2, 4, 5)})


@case("conv_grouped_dilated")
def _():
    n = Net(5)
    n.conv("c", "x", 6, 4, 3, groups=2, dilation_x=2, dilation_y=3, stride_x=2, stride_y=1)
    return n.model((6, 10, 9), {"c": (1, 4, 10, 5)})


@case("conv_depthwise_and_multiplier")
def _():
    n = Net(6)
    a = n.conv("dw", "x", 5, 5, 3, groups=5, stride_x=2, stride_y=2)
    n.conv("mult", a, 5, 10, 5, groups=5)
    return n.model((5, 13, 11), {"dw": (1, 5, 7, 6), "mult": (1, 10, 7, 6)})


@case("conv_fused_relu_tanh")
def _():
    n = Net(7)
    a = n.conv("r", "x", 3, 4, 1, pad_mode=2, fused_relu=1)
    n.conv("t", a, 4, 3, 3, fused_tanh=1)
    return n.model((3, 5, 6))


@case("batchnorm_instance_and_inference")
def _():
    n = Net(8)
    a = n.conv("c", "x", 3, 4, 3)
    a = n.norm("in", a, 4)
    n.norm("bn", a, 4, training=0, training_instancenorm=0)
    return n.model((3, 9, 7))


@case("elementwise_broadcast_product_and_sums")
def _():
    n = Net(9)
    a = n.conv("a", "x", 3, 4, 3)
    b = n.conv("b", "x", 3, 4, 1)
    g = n.add("pool", "gap", a, avg_or_max=0, is_global=1)
    n.ew("scale", [a, g], 1, 1.0)  # [4, 9, 7] * [4, 1, 1]
    n.ew("scale2", [g, b], 1, 1.0)  # [4, 1, 1] * [4, 9, 7]
    n.ew("sum3", ["scale", b, "scale2"], 0, 1.0, fused_relu=1)
    n.ew("out", ["sum3", g], 0, 1.0)
    return n.model((3, 9, 7), {"scale": (1, 4, 9, 7), "sum3": (1, 4, 9, 7), "out": (1, 4, 9, 7)})


@case("elementwise_unary_ops")
def _():
    n = Net(10)
    a = n.ew("plus", "x", 2, 0.75)
    a = n.ew("times", a, 3, -1.5)
    a = n.ew("times1", a, 1, 0.5)
    a = n.ew("clip", a, 119, -0.4, 0.6)
    n.ew("abs", "x", 24)
    n.ew("abs_relu", "times", 3, 2.0, fused_relu=1)
    return n.model((2, 5, 3))


@case("elementwise_binary_ops")
def _():
    n = Net(11)
    a = n.conv("a", "x", 2, 3, 3)
    b = n.conv("b", "x", 2, 3, 1)
    d = n.ew("denominator", b, 119, 0.5, 2.0)
    n.ew("min", [a, b], 22)
    n.ew("max", [a, b], 23)
    n.ew("sub", [a, b], 33)
    n.ew("div", [a, d], 102)
    return n.model((2, 6, 5))


def _activation_case(mode, alpha=0.0, beta=0.0):
    def build():
        n = Net(20 + mode)
        a = n.ew("spread", "x", 3, 4.0)  # inputs in [-4, 4]
        n.add("activation", "act", a, mode=mode, alpha=alpha, beta=beta)
        return n.model((3, 7, 5))

    return build


for _mode, _alpha, _beta in [(0, 0, 0), (1, 0, 0), (2, 0.2, 0), (3, 0, 0), (5, 1.5, 0.7), (6, -0.5, 0.25),
                             (7, 1.0, 0.0), (8, 0.8, 0), (9, 0.5, 0), (10, 0, 0), (12, 0, 0), (25, 0, 0),
                             (26, 0, 0)]:
    CASES[f"activation_mode_{_mode}"] = _activation_case(_mode, _alpha, _beta)


def _pool_case(avg_or_max, pad_mode, exclude, stride, size, pads=(0, 0, 0, 0)):
    def build():
        n = Net(40)
        pt, pb, pl, pr = pads
        n.add("pool", "p", "x", avg_or_max=avg_or_max, is_global=0, size_x=size[1], size_y=size[0],
              stride_x=stride, stride_y=stride, pad_mode=pad_mode, pad_t=pt, pad_b=pb, pad_l=pl, pad_r=pr,
              average_count_exclude_padding=exclude)
        return n.model((3, 11, 8))

    return build


for _kind in (0, 1):
    for _exclude in ((0, 1) if _kind == 0 else (1,)):
        tag = f"{'avg' if _kind == 0 else 'max'}{'_incl' if not _exclude else ''}"
        CASES[f"pool_{tag}_same_s2"] = _pool_case(_kind, 1, _exclude, 2, (3, 3))
        CASES[f"pool_{tag}_same_s1_even"] = _pool_case(_kind, 1, _exclude, 1, (2, 4))
        CASES[f"pool_{tag}_valid"] = _pool_case(_kind, 2, _exclude, 2, (3, 2))
        CASES[f"pool_{tag}_explicit"] = _pool_case(_kind, 0, _exclude, 3, (3, 3), (1, 2, 0, 1))


@case("pool_global")
def _():
    n = Net(41)
    n.add("pool", "gavg", "x", avg_or_max=0, is_global=1, size_x=8, size_y=11)
    n.add("pool", "gmax", "x", avg_or_max=1, is_global=1)
    n.ew("out", ["gavg", "gmax"], 0)
    return n.model((3, 11, 8), {"gavg": (1, 3, 1, 1), "out": (1, 3, 1, 1)})


@case("inner_product")
def _():
    n = Net(50)
    w1 = n.blob(n.rng.normal(0, 0.2, (7, 3 * 4 * 5)))
    b1 = n.blob(n.rng.normal(0, 0.1, 7))
    n.add("inner_product", "fc1", "x", nB=60, nC=7, has_biases=1, has_relu=1, blob_weights=w1, blob_biases=b1)
    w2 = n.blob(n.rng.normal(0, 0.3, (5, 7)))
    n.add("inner_product", "fc2", "fc1", nB=7, nC=5, has_biases=0, has_tanh=1, blob_weights=w2)
    w3 = n.blob(n.rng.normal(0, 0.3, (5, 4)))  # stored transposed [nB, nC] (fp16 layout)
    n.add("inner_product", "fc3", "fc2", nB=5, nC=4, has_biases=0, w_f16_t=w3)
    n.blobs[w3] = n.blobs[w3].astype(np.float16)
    return n.model((3, 4, 5), {"fc1": (1, 7, 1, 1), "fc3": (1, 4, 1, 1)})


@case("nd_concat_slice_add_alpha_flatten_last_same4")
def _():
    n = Net(70)
    a = n.conv("a", "x", 3, 4, 3, pad_mode=4)  # "same", symmetric: 6 x 5 stays 6 x 5
    n.add("general_slice", "sl", a, begin_k=1, end_k=3, begin_h=-4, end_mask_h=1, stride_w=2)
    n.add("general_concat", "gc", ["sl", "sl"], nd_mode=True, axis=-3)
    n.add("elementwise", "plus", "gc", operation=0, alpha=0.5)
    n.add("flatten", "fl", "plus", mode=1)
    return n.model((3, 6, 5), {"a": (1, 4, 6, 5), "sl": (1, 2, 4, 3), "gc": (1, 4, 4, 3), "fl": (1, 48, 1, 1)})


@case("softmax_concat_flatten_reshape_transpose")
def _():
    n = Net(60)
    a = n.conv("a", "x", 3, 4, 3)
    n.add("softmax", "sm", a)
    n.add("softmax_nd", "smw", a, nd_axis=-1)
    n.add("softmax_nd", "smh", a, nd_axis=2)
    n.add("concat", "cat", ["sm", "smw", "x", "smh"])
    n.add("flatten", "flat", "cat")
    n.add("reshape", "rs", "flat", dst_k=5, dst_h=-1, dst_w=3)
    # axis numbers: 0 w, 1 h, 2 k, 3 n, 4 seq; output axis X is the input axis numbered axis_X
    n.add("transpose", "tr", "rs", axis_n=3, axis_k=0, axis_h=2, axis_w=1)
    n.add("transpose", "tr2", "cat", axis_n=3, axis_k=1, axis_h=0, axis_w=2)
    return n.model((3, 6, 5), {"cat": (1, 15, 6, 5), "flat": (1, 450, 1, 1), "rs": (1, 5, 30, 3),
                               "tr": (1, 3, 5, 30), "tr2": (1, 6, 5, 15)})


@case("upsample_nearest_bilinear")
def _():
    n = Net(70)
    n.add("upsample", "near", "x", scaling_factor_x=3, scaling_factor_y=2, mode=0)
    n.add("upsample", "lin", "x", scaling_factor_x=2, scaling_factor_y=3, mode=1)
    n.add("upsample", "corners", "x", scaling_factor_x=2, scaling_factor_y=2, mode=1, align_corners=1)
    return n.model((2, 4, 5), {"near": (1, 2, 8, 15), "lin": (1, 2, 12, 10), "corners": (1, 2, 8, 10)})


@case("load_constant_input_layer")
def _():
    n = Net(80)
    n.add("input", "image", "", "x")
    const = n.blob(n.rng.normal(0, 1, (2, 4, 1)))
    n.add("load_constant", "k", "", k=2, h=4, w=1, constant_blob=const)
    n.ew("plus", ["x", "k"], 0)  # [2, 4, 3] + [2, 4, 1], batch N + batch 1
    const2 = n.blob(n.rng.normal(0, 1, (1, 4, 3)))
    n.add("load_constant", "k2", "", k=1, h=4, w=3, constant_blob=const2)
    n.add("concat", "cat", ["k2", "plus", "k2"])  # the constants follow the batch
    n.ew("times", ["cat", "cat"], 1, attributes={"is_output": 1})
    return n.model((2, 4, 3), {"k": (1, 2, 4, 1), "cat": (1, 4, 4, 3)})


@case("in_place_and_reused_blobs")
def _():
    n = Net(90)
    n.conv("c", "x", 2, 3, 3, top="y")
    n.add("activation", "relu", "y", "y", mode=0)  # in place
    n.ew("plus", "y", 2, 1.0, top="z")
    n.ew("again", "z", 3, 2.0, top="y")  # reuses y
    n.ew("out", ["y", "z"], 0)
    return n.model((2, 5, 4), {"y": (1, 3, 5, 4), "out": (1, 3, 5, 4)})


def _seq(seq, k, h=1, w=1):
    return BlobShape(1, k, h, w, rank=5, seq=seq, rank_declared=False)


def _nd(k, h, w):  # a shape entry without _rank: its rank is inferred
    return BlobShape(1, k, h, w, rank=__import__("neuralhash.espresso.model", fromlist=["infer_rank"]).infer_rank(1, k, h, w),
                     rank_declared=False)


@case("elementwise_real_model_ops_and_relu6_lowerings")
def _():
    n = Net(80)
    a = n.ew("spread", "x", 3, 8.0)  # inputs in [-8, 8]
    r = n.add("activation", "r", a, mode=0)
    neg = n.add("activation", "neg", r, mode=6, alpha=-1.0, beta=0.0)
    clip = n.ew("clip", neg, 25, -6.0)
    n.add("activation", "relu6a", clip, mode=6, alpha=-1.0, beta=0.0)
    s6 = n.add("activation", "s6", a, mode=6, alpha=float(np.float32(1 / 6)), beta=0.0)
    c01 = n.add("activation", "c01", s6, mode=7, beta=0.0)
    n.add("activation", "relu6b", c01, mode=6, alpha=6.0, beta=0.0)
    e = n.ew("e", "x", 27, 1.0)
    n.ew("inv", e, 10, 2.0)
    return n.model((3, 5, 4))


@case("ssd_head")
def _():
    """A miniature of SSDOcr's head: 5-axis transposes, reshapes onto seq, a lowered softmax, slices."""
    n = Net(81)
    feat = n.conv("cls", "x", 3, 6, 1, pad_mode=0)  # 2 anchors x 3 classes per location
    t = n.add("transpose", "t", feat, axis_h=0, axis_w=2, axis_k=1, axis_n=3, axis_seq=4)  # {k h, h w, w 6}
    seq = n.add("reshape", "toseq", t, dst_seq=-1, dst_n=0, dst_k=3, dst_h=1, dst_w=1, mode=0)
    feat2 = n.conv("cls2", "x", 3, 3, 1, pad_mode=0)
    seq2 = n.add("reshape", "toseq2", n.add("transpose", "t2", feat2, axis_h=0, axis_w=2, axis_k=1, axis_n=3,
                                            axis_seq=4), dst_seq=-1, dst_k=3, dst_h=1, dst_w=1)
    cat = n.add("sequence_concat", "cat", [seq, seq2], simple_concat=1)
    e = n.ew("exp", cat, 27, 1.0)
    total = n.add("reduce", "sum", e, axis_mode=4, mode=0, use_version=1)
    flat = n.add("flatten", "flat", total, mode=0, nd_axis=0)
    inv = n.ew("inverse", flat, 10, 1.0)
    prob = n.ew("prob", [e, inv], 1, 1.0)
    fg = n.add("slice", "fg", prob, axis=2, start=1, end=1000)
    n.add("reduce", "fgsum", fg, axis_mode=4, mode=0)
    n.add("reshape", "scores", fg, dst_seq=1, dst_k=1, dst_h=-1, dst_w=2)
    box = n.conv("box", "x", 3, 8, 1, pad_mode=0)
    bt = n.add("transpose", "bt", box, axis_h=0, axis_w=2, axis_k=1, axis_n=3, axis_seq=4)
    b4 = n.add("reshape", "b4", bt, dst_seq=1, dst_k=1, dst_h=-1, dst_w=4)
    n.add("transpose", "boxes", b4, axis_h=2, axis_w=0, axis_k=1, axis_n=3, axis_seq=4)
    locs = 4 * 5
    shapes = {"t": (1, 4, 5, 6), "toseq": _seq(2 * locs, 3), "cat": _seq(3 * locs, 3), "sum": _seq(3 * locs, 1),
              "prob": _seq(3 * locs, 3), "fg": _seq(3 * locs, 2), "fgsum": _seq(3 * locs, 1),
              "scores": _nd(1, 3 * locs, 2), "b4": _nd(1, 2 * locs, 4), "boxes": _nd(2 * locs, 1, 4)}
    return n.model((3, 4, 5), shapes)


@case("general_padding_and_pool_top_shape_style")
def _():
    n = Net(82)
    p = n.add("general_padding", "pad", "x", pad_t=1, pad_b=2, pad_l=0, pad_r=1, pad_fill_mode=0, pad_value=0.25,
              pad_pad_mode=0)
    common = dict(size_x=2, size_y=2, stride_x=2, stride_y=2, pad_mode=0, top_shape_style=2, is_global=0)
    n.add("pool", "ceil_max", p, avg_or_max=1, **common)
    n.add("pool", "ceil_avg", p, avg_or_max=0, average_count_exclude_padding=1, **common)
    n.add("pool", "floor_max", "x", avg_or_max=1, **common)
    return n.model((2, 6, 8), {"pad": (1, 2, 9, 9), "ceil_max": (1, 2, 5, 5), "ceil_avg": (1, 2, 5, 5),
                               "floor_max": (1, 2, 3, 4)})


@case("softmax_nd_rank3_squeeze_expand_split")
def _():
    n = Net(83)
    a = n.conv("a", "x", 3, 4, 3)
    n.add("softmax_nd", "sm", a, nd_axis=2)  # over w of the rank-3 [k, h, w] view
    n.add("softmax_nd", "sm0", a, nd_axis=0)  # over k
    sq = n.add("squeeze", "sq", a)
    ex = n.add("expand_dims", "ex", sq)
    n.add("split_nd", "split", ex, top="p1,p2", nd_axis=2)  # h of the rank-4 [n, k, h, w]
    n.add("flatten", "fl1", sq, mode=1)  # k is 1: channel-last order cannot differ
    shapes = {"a": BlobShape(1, 4, 5, 6, rank=3), "sq": BlobShape(1, 1, 4, 30, rank=3),
              "ex": BlobShape(1, 4, 30, 1, rank=4), "p1": BlobShape(1, 4, 10, 1, rank=4),
              "p2": BlobShape(1, 4, 20, 1, rank=4), "fl1": (1, 120, 1, 1)}
    return n.model((3, 5, 6), shapes)


@case("dense_rank2_output")
def _():
    """A newer file's dense layers: rank 2, features in w; the ONNX output is [batch, 7]."""
    n = Net(84)
    w1 = n.blob(n.rng.normal(0, 0.2, (7, 3 * 4 * 5)))
    n.add("inner_product", "fc", "x", nB=60, nC=7, has_biases=0, blob_weights=w1)
    n.add("softmax_nd", "prob", "fc", nd_axis=-1)
    return n.model((3, 4, 5), {"fc": BlobShape(1, 1, 1, 7, rank=2), "prob": BlobShape(1, 1, 1, 7, rank=2)})


@case("grey_rank3_input_with_input_layer")
def _():
    """An input entry without _rank and k 1 is rank 3: the ONNX input is [batch, h, w]."""
    n = Net(85)
    n.add("input", "in", "", top="x")
    n.conv("c", "x", 1, 2, 3)
    return n.model((1, 6, 5), {"x": BlobShape(1, 1, 6, 5, rank=3, rank_declared=False)})


@case("neuralhash_block")
def _():
    n = Net(100)
    a = n.conv("stem", "x", 3, 8, 3, bias=False, stride_x=2, stride_y=2)
    a = n.norm("stem/in", a, 8)
    a = n.hard_swish("stem", a)
    e = n.conv("expand", a, 8, 16, 1, pad_mode=2, bias=False)
    e = n.norm("expand/in", e, 16)
    e = n.add("activation", "expand/relu", e, mode=0)
    d = n.conv("dw", e, 16, 16, 5, groups=16, bias=False, stride_x=2, stride_y=2)
    d = n.norm("dw/in", d, 16)
    g = n.add("pool", "gap", d, avg_or_max=0, is_global=1, size_x=4, size_y=5)
    s = n.conv("se1", g, 16, 4, 1, pad_mode=2)
    s = n.add("activation", "se/relu", s, mode=0)
    s = n.conv("se2", s, 4, 16, 1, pad_mode=2)
    s = n.hard_sigmoid("se", s)
    d = n.ew("se/scale", [d, s], 1, 1.0)
    d = n.hard_swish("dw", d)
    p = n.add("pool", "final", d, avg_or_max=0, is_global=1)
    w = n.blob(n.rng.normal(0, 0.25, (6, 16)))
    b = n.blob(n.rng.normal(0, 0.1, 6))
    n.add("inner_product", "fc", p, nB=16, nC=6, has_biases=1, blob_weights=w, blob_biases=b)
    return n.model((3, 17, 19), {"stem/mul_1": (1, 8, 9, 10), "dw/mul_1": (1, 16, 5, 5), "fc": (1, 6, 1, 1)})


@pytest.mark.parametrize("name", sorted(CASES))
def test_handler_matches_reference(name):
    assert_matches_reference(CASES[name]())


def test_every_layer_type_and_code_is_covered():
    covered_types = set()
    codes = collections.defaultdict(set)
    for build in CASES.values():
        for layer in build().layers:
            covered_types.add(layer.type)
            if layer.type == "elementwise":
                codes["elementwise"].add(layer.operation)
            if layer.type == "activation":
                codes["activation"].add(layer.mode)
    assert covered_types == set(HANDLERS)
    from neuralhash.convert import ACTIVATION_MODES, ELEMENTWISE_OPERATIONS

    assert codes["elementwise"] == set(ELEMENTWISE_OPERATIONS)
    assert codes["activation"] == set(ACTIVATION_MODES)


# -- the graph's contract ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def block_model():
    return CASES["neuralhash_block"]()


def _dims(info: onnx.ValueInfoProto) -> list:
    return [d.dim_param or d.dim_value for d in info.type.tensor_type.shape.dim]


def test_graph_contract(block_model):
    proto = convert(block_model)
    onnx.checker.check_model(proto, full_check=True)
    assert proto.ir_version == IR_VERSION and IR_VERSION in (8, 9)
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", OPSET)] and OPSET == 17
    assert proto.producer_name == "neuralhash"
    assert [(i.name, _dims(i)) for i in proto.graph.input] == [("x", ["batch", 3, 17, 19])]
    assert [(o.name, _dims(o)) for o in proto.graph.output] == [("fc", ["batch", 6, 1, 1])]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta == {
        "neuralhash.transform_params": json.dumps(block_model.transform_params, sort_keys=True),
        "neuralhash.source_sha256": "{}",
        "neuralhash.converter_version": neuralhash.__version__,
    }
    # readable names: Espresso blobs that map to one node keep their name
    produced = {out for node in proto.graph.node for out in node.output}
    assert {"stem", "stem/in", "expand/relu", "dw", "gap", "se/scale", "dw/mul_1", "fc"} <= produced
    inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=True, data_prop=True)
    shapes = {v.name: _dims(v) for v in inferred.graph.value_info}
    assert shapes["dw"] == ["batch", 16, 5, 5]


def test_ssa_names_for_in_place_and_reused_blobs():
    model = CASES["in_place_and_reused_blobs"]()
    proto = convert(model, optimize=False)
    outputs = [out for node in proto.graph.node for out in node.output]
    assert len(outputs) == len(set(outputs))
    assert {"y__1", "y__2", "y", "z", "out"} <= set(outputs)


def test_symbolic_batch(block_model):
    proto = convert(block_model)
    sess = session(proto)
    for batch in (1, 2, 8):
        (out,) = sess.run(["fc"], {"x": inputs_for(block_model, batch)})
        assert out.shape == (batch, 6, 1, 1)
    x = inputs_for(block_model, 8)
    batched = sess.run(["fc"], {"x": x})[0]
    single = np.concatenate([sess.run(["fc"], {"x": x[i : i + 1]})[0] for i in range(8)])
    assert_close(batched, single, RTOL)  # images never mix


def test_conversion_is_deterministic(block_model, tmp_path):
    one = convert(block_model).SerializeToString(deterministic=True)
    two = convert(block_model).SerializeToString(deterministic=True)
    assert one == two
    save_model(convert(block_model), tmp_path / "a.onnx")
    save_model(convert(block_model), tmp_path / "b.onnx")
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes() == one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.onnx", "b.onnx"]  # no temporary left
    assert onnx.load(tmp_path / "a.onnx").graph.output[0].name == "fc"


def test_save_model_failure_leaves_nothing(block_model, tmp_path):
    with pytest.raises(NeuralHashError, match="cannot write"):
        save_model(convert(block_model), tmp_path / "missing" / "m.onnx")
    target = tmp_path / "m.onnx"
    target.write_bytes(b"old")
    target_dir_as_file = tmp_path / "m.onnx" / "x.onnx"
    with pytest.raises(NeuralHashError):
        save_model(convert(block_model), target_dir_as_file)
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_optimize_fuses_and_keeps_outputs(block_model):
    plain = convert(block_model, optimize=False)
    tidy = convert(block_model, optimize=True)
    plain_ops = collections.Counter(n.op_type for n in plain.graph.node)
    tidy_ops = collections.Counter(n.op_type for n in tidy.graph.node)
    assert tidy_ops["HardSwish"] == 2 and tidy_ops["HardSigmoid"] == 1 and tidy_ops["Gemm"] == 1
    assert "Clip" not in tidy_ops and "MatMul" not in tidy_ops
    assert plain_ops["Clip"] == 3 and "HardSwish" not in plain_ops and "Gemm" not in plain_ops
    assert len(tidy.graph.node) < len(plain.graph.node)
    used = {i for n in tidy.graph.node for i in n.input}
    assert all(t.name in used for t in tidy.graph.initializer)  # no dead initializers
    for batch in (1, 3):
        x = inputs_for(block_model, batch, seed=7)
        a, b = run_onnx(plain, block_model, x)["fc"], run_onnx(tidy, block_model, x)["fc"]
        assert_close(b, a, RTOL)


def test_fusion_skipped_when_an_intermediate_has_other_readers():
    n = Net(110)
    a = n.conv("c", "x", 2, 3, 3)
    t = n.ew("h/add", a, 2, 3.0)
    t = n.ew("h/relu6", t, 119, 0.0, 6.0)
    t = n.ew("h/mul", t, 3, float(np.float32(1 / 6)))
    n.ew("h/mul_1", [a, t], 1, 1.0)
    n.ew("peek", ["h/relu6", "h/mul_1"], 0)  # reads the clipped value
    model = n.model((2, 6, 5))
    proto = convert(model)
    ops = collections.Counter(node.op_type for node in proto.graph.node)
    assert "HardSwish" not in ops and "HardSigmoid" not in ops and ops["Clip"] == 1
    assert max_error(model, proto) <= RTOL


def test_hard_sigmoid_used_elsewhere_is_fused_alone():
    n = Net(111)
    a = n.conv("c", "x", 2, 3, 3)
    s = n.hard_sigmoid("h", a)
    n.ew("h/mul_1", [a, s], 1, 1.0)
    n.ew("out", ["h/mul_1", s], 0)  # the hard-sigmoid is read twice: no hard-swish
    model = n.model((2, 6, 5))
    proto = convert(model)
    ops = collections.Counter(node.op_type for node in proto.graph.node)
    assert ops["HardSigmoid"] == 1 and "HardSwish" not in ops and "Clip" not in ops
    assert max_error(model, proto) <= RTOL


def test_hash_head_bits():
    n = Net(120)
    a = n.conv("c", "x", 3, 8, 3, stride_x=2, stride_y=2)
    a = n.add("pool", "gap", a, avg_or_max=0, is_global=1)
    w = n.blob(n.rng.normal(0, 0.5, (128, 8)))
    n.add("inner_product", "leaf/logits", a, nB=8, nC=128, has_biases=0, blob_weights=w)
    model = n.model((3, 12, 10))
    seed = default_seed_matrix()
    proto = convert(model, hash_head=seed)
    onnx.checker.check_model(proto, full_check=True)
    assert [(o.name, _dims(o)) for o in proto.graph.output] == [
        ("leaf/logits", ["batch", 128, 1, 1]), ("hash_projection", ["batch", 96]), ("hash_bits", ["batch", 96])]
    assert proto.graph.output[2].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    x = inputs_for(model, 8, seed=3)
    got = run_onnx(proto, model, x)
    logits = got["leaf/logits"].reshape(8, 128)
    v = logits.astype(np.float64) @ seed.T.astype(np.float64)
    assert_close(got["hash_projection"], v, 1e-5)
    assert got["hash_bits"].dtype == np.uint8
    assert np.array_equal(got["hash_bits"], (got["hash_projection"] >= 0).astype(np.uint8))
    clear = np.abs(v) > 1e-4
    assert np.array_equal(got["hash_bits"][clear], (v >= 0).astype(np.uint8)[clear])
    assert 0 < got["hash_bits"].mean() < 1
    # the head needs one output with as many features as the matrix has columns
    with pytest.raises(ConversionError, match="128 features"):
        convert(model, hash_head=seed[:, :100])
    with pytest.raises(ConversionError, match="one output"):
        convert(CASES["elementwise_binary_ops"](), hash_head=seed)


# -- errors -------------------------------------------------------------------------------------


def test_shape_file_mismatch_names_the_layer():
    n = Net(130)
    a = n.conv("first", "x", 3, 4, 3, stride_x=2, stride_y=2)
    n.conv("second", a, 4, 2, 3)
    good = n.model((3, 9, 9), {"first": (1, 4, 5, 5), "second": (1, 2, 5, 5)})
    convert(good)
    bad = n.model((3, 9, 9), {"first": (1, 4, 5, 5), "second": (1, 2, 4, 5)})
    with pytest.raises(ShapeMismatchError, match=r"layer 'second' \(convolution\).*'second'.*\[2, 5, 5\].*\[2, 4, 5\]"):
        convert(bad)
    convert(bad, check_shapes=False)  # the check can be turned off
    bad_first = n.model((3, 9, 9), {"first": (1, 4, 4, 4), "second": (1, 2, 4, 5)})
    with pytest.raises(ShapeMismatchError, match="layer 'first'"):
        convert(bad_first)


def test_input_without_shape_is_an_error():
    n = Net(131)
    n.conv("c", "x", 3, 4, 3)
    model = EspressoModel.from_layers(n.layers, n.blobs, {"c": (1, 4, 5, 5)})
    with pytest.raises(ConversionError, match="no shape for the input blob 'x'"):
        convert(model)


def _one_layer(type_, **fields):
    n = Net(132)
    a = n.conv("c", "x", 3, 4, 3)
    n.add(type_, "bad", a, **fields)
    return n


@pytest.mark.parametrize(
    "build,pattern",
    [
        (lambda: _one_layer("lrn", alpha=1.0), r"layer 'bad' \(lrn\): layer type 'lrn' is not supported"),
        (lambda: _one_layer("elementwise", operation=57), r"layer 'bad' \(elementwise\): operation 57 is not supported"),
        (lambda: _one_layer("elementwise", operation=22), r"layer 'bad' \(elementwise\): operation 22 with 1 input"),
        (lambda: _one_layer("activation", mode=4), r"layer 'bad' \(activation\): mode 4 is not supported"),
        (lambda: _one_layer("activation", mode=99), r"'bad' \(activation\): mode 99"),
        (lambda: _one_layer("pool", avg_or_max=2, is_global=1), r"'bad' \(pool\): avg_or_max 2"),
        (lambda: _one_layer("pool", avg_or_max=0, size_x=2, size_y=2, pad_mode=3), r"'bad' \(pool\): pad_mode 3"),
        (lambda: _one_layer("upsample", scaling_factor_x=2, scaling_factor_y=2, mode=2), r"'bad' \(upsample\): mode 2"),
        (lambda: _one_layer("transpose", axis_n=1, axis_k=0, axis_h=2, axis_w=3), r"'bad' \(transpose\): axis_n 1"),
        (lambda: _one_layer("reshape", dst_k=-1, dst_h=-1, dst_w=2), r"'bad' \(reshape\)"),
        (lambda: _one_layer("inner_product", nB=100, nC=2, has_prelu=1, blob_weights=1), r"'bad' \(inner_product\): has_prelu 1"),
        (lambda: _one_layer("batchnorm", C=4, training=1, training_instancenorm=0, blob_batchnorm_params=1),
         r"'bad' \(batchnorm\): training_instancenorm 0"),
    ],
)
def test_unsupported_layers_are_named(build, pattern):
    n = build()
    # every referenced blob must exist with the right size: give unknown ones zeros of the layer's size
    layers = n.layers
    model = EspressoModel.from_layers(layers, None, {"x": (1, 3, 5, 5)})
    blobs = dict(n.blobs)
    for layer, role, ref in iter_blob_refs(model):
        if layer.name == "bad":
            blobs[ref.id + 1000] = np.zeros(ref.shape, np.float32)
            layers[-1] = dict(layers[-1], **{ref.field: ref.id + 1000})
    model = EspressoModel.from_layers(layers, blobs, {"x": (1, 3, 5, 5)})
    with pytest.raises(UnsupportedLayerError, match=pattern):
        convert(model)


@pytest.mark.parametrize("field,value", [("has_batch_norm", 1), ("n_parallel", 2), ("pad_mode", 5), ("pad_fill_mode", 1)])
def test_unsupported_convolution_fields(field, value):
    n = Net(133)
    n.conv("odd", "x", 3, 4, 3, **{field: value})
    with pytest.raises(UnsupportedLayerError, match=rf"layer 'odd' \(convolution\): {field} {value}"):
        convert(n.model((3, 5, 5)))


def test_inconsistent_shapes_are_named():
    n = Net(134)
    n.conv("c", "x", 4, 2, 3)  # K 4, the input has 3 channels
    with pytest.raises(ShapeMismatchError, match=r"layer 'c' \(convolution\): input has 3 channels"):
        convert(n.model((3, 5, 5)))
    n = Net(135)
    w = n.blob(np.zeros((2, 10)))
    n.add("inner_product", "fc", "x", nB=10, nC=2, blob_weights=w)
    with pytest.raises(ShapeMismatchError, match=r"layer 'fc' \(inner_product\).*75 values per image, nB is 10"):
        convert(n.model((3, 5, 5)))


# -- the real graph with synthetic weights ---------------------------------------------------------


def synthetic_weights(model: EspressoModel, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    blobs = {}
    for layer, role, ref in iter_blob_refs(model):
        if layer.type == "batchnorm":
            c = ref.shape[0]
            a = np.stack([rng.normal(1, 0.1, c), rng.normal(0, 0.1, c), np.zeros(c), np.ones(c)], 1)
        elif role == "biases":
            a = rng.normal(0, 0.1, ref.shape)
        else:
            a = rng.normal(0, 1 / np.sqrt(np.prod(ref.shape[1:])), ref.shape)
        blobs[ref.id] = a.astype(ref.dtype)
    return encode_weights(blobs)


@pytest.fixture(scope="module")
def real_model(real_dir):
    graph = read_json_file(real_dir / "NeuralHashv3b-current.espresso.net")[0]
    shape = read_json_file(real_dir / "NeuralHashv3b-current.espresso.shape")[0]
    structure = EspressoModel.from_documents(graph, shape)
    return EspressoModel.from_documents(graph, shape, WeightsFile.from_bytes(synthetic_weights(structure)))


@pytest.fixture(scope="module")
def real_conversions(real_model):
    return {optimize: convert(real_model, optimize=optimize) for optimize in (True, False)}


@pytest.fixture(scope="module")
def real_reference(real_model):
    x = np.random.default_rng(2021).uniform(-1, 1, (4, 3, 360, 360)).astype(np.float32)
    return x, reference_run(real_model, x)["leaf/logits"]


@pytest.mark.parametrize("optimize", [True, False])
def test_real_graph_matches_reference(real_model, real_conversions, real_reference, optimize):
    proto = real_conversions[optimize]
    onnx.checker.check_model(proto, full_check=True)
    x, ref = real_reference
    assert np.abs(ref).max() > 0.05  # the synthetic network does not collapse to zero
    sess = session(proto)
    for batch in (1, 4):
        (out,) = sess.run(["leaf/logits"], {"image": x[:batch]})
        assert out.shape == (batch, 128, 1, 1)
        assert_close(out, ref[:batch], 1e-4)


def test_real_graph_structure(real_model, real_conversions):
    tidy, plain = real_conversions[True], real_conversions[False]
    assert [(i.name, _dims(i)) for i in tidy.graph.input] == [("image", ["batch", 3, 360, 360])]
    assert [(o.name, _dims(o)) for o in tidy.graph.output] == [("leaf/logits", ["batch", 128, 1, 1])]
    ops = collections.Counter(n.op_type for n in tidy.graph.node)
    assert ops["HardSwish"] > 0 and ops["HardSigmoid"] > 0 and ops["Gemm"] == 2 and "Clip" not in ops
    assert ops["Conv"] == 54 and ops["InstanceNormalization"] == 35
    assert len(tidy.graph.node) < len(plain.graph.node)
    assert convert(real_model).SerializeToString(deterministic=True) == tidy.SerializeToString(deterministic=True)


def test_real_graph_hash_head(real_model, real_reference):
    seed = default_seed_matrix()
    proto = convert(real_model, hash_head=seed)
    x, ref = real_reference
    got = session(proto).run(["hash_projection", "hash_bits"], {"image": x[:2]})
    v = ref[:2].reshape(2, 128).astype(np.float64) @ seed.T.astype(np.float64)
    assert_close(got[0], v, 1e-4)
    clear = np.abs(v) > 1e-3
    assert np.array_equal(got[1][clear], (v >= 0).astype(np.uint8)[clear])


@pytest.mark.parametrize("layer,needle", [
    ({"type": "elementwise", "name": "scaled_add", "bottom": "x,x", "top": "y", "operation": 0, "alpha": 2},
     "alpha, beta"),
    ({"type": "upsample", "name": "up", "bottom": "x", "top": "y", "scaling_factor_x": 3, "scaling_factor_y": 3,
      "mode": 0, "align_corners": 1}, "align_corners"),
])
def test_unverified_modifiers_are_refused_by_both_paths(layer, needle):
    """Values whose meaning is unknown must stop both the converter and the reference, not be ignored."""
    from neuralhash.reference import run

    model = EspressoModel.from_layers([layer], {}, {"x": (1, 2, 5, 5)})
    with pytest.raises(UnsupportedLayerError, match=f"layer '{layer['name']}'.*{needle}"):
        convert(model)
    with pytest.raises(UnsupportedLayerError, match=f"layer '{layer['name']}'.*{needle}"):
        run(model, np.zeros((1, 2, 5, 5), np.float32))


def test_real_ranks_at_the_graph_boundary():
    dense = CASES["dense_rank2_output"]()
    proto = convert(dense)
    assert [d.dim_value or d.dim_param for d in proto.graph.output[0].type.tensor_type.shape.dim] == ["batch", 7]
    grey = CASES["grey_rank3_input_with_input_layer"]()
    proto = convert(grey)
    assert [d.dim_value or d.dim_param for d in proto.graph.input[0].type.tensor_type.shape.dim] == ["batch", 6, 5]
    x = inputs_for(grey, 2)
    assert x.shape == (2, 6, 5)
    assert_close(run_onnx(proto, grey, x)["c"], reference_run(grey, x)["c"], rtol=RTOL)


def test_random_fields_of_the_new_layers_convert_and_run_alike():
    """Seeded random field values: converter and reference accept and refuse the same layers, and agree."""
    import random

    fields = {
        "transpose": ["axis_seq", "axis_n", "axis_k", "axis_h", "axis_w"],
        "reshape": ["dst_seq", "dst_n", "dst_k", "dst_h", "dst_w", "mode"],
        "slice": ["axis", "start", "end"],
        "reduce": ["mode", "axis_mode"],
        "flatten": ["mode"],
        "softmax_nd": ["nd_axis"],
        "general_padding": ["pad_t", "pad_b", "pad_l", "pad_r", "pad_value"],
        "elementwise": ["operation", "alpha"],
        "activation": ["mode", "alpha"],
        "pool": ["size_x", "size_y", "stride_x", "stride_y", "top_shape_style"],
    }
    values = [-3, -1, 0, 1, 2, 3, 4, 5, 7, 10, 25, 27, 119]
    inputs = [(1, 2, 3, 4), (1, 3, 5, 5), BlobShape(1, 3, 1, 1, rank=5, seq=4, rank_declared=False),
              BlobShape(1, 3, 2, 1, rank=5, seq=2, rank_declared=False)]
    r = random.Random(11)
    agreed = 0
    for i in range(300):
        kind = r.choice(sorted(fields))
        layer = {"type": kind, "name": "l", "bottom": "x", "top": "y", "avg_or_max": r.choice([0, 1])}
        layer.update({f: r.choice(values) for f in fields[kind] if r.random() < 0.85})
        try:
            model = EspressoModel.from_layers([layer], None, {"x": r.choice(inputs)})
        except NeuralHashError:  # a malformed layer (negative padding): refused when read
            continue
        x = np.random.default_rng(i).normal(size=(3, *model.shapes["x"].onnx_dims)).astype(np.float32) + 0.01
        outcomes = []
        for attempt in (lambda: run_onnx(convert(model), model, x)["y"], lambda: reference_run(model, x)["y"]):
            try:
                outcomes.append(attempt())
            except NeuralHashError:
                outcomes.append(None)
        got, want = outcomes
        assert (got is None) == (want is None), layer
        if got is not None:
            assert_close(got, want, rtol=1e-4, what=str(layer))
            agreed += 1
    assert agreed > 40  # the draw exercises real conversions, not only refusals
