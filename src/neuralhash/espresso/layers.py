"""Typed Espresso layers, parsed from the graph JSON.

One dataclass per layer type, registered under its Espresso ``type`` string.
Parsing checks that every field a type needs is present and of the right
kind, naming the layer and the field when it is not. Types without a parser
become a plain :class:`Layer`: the model can still be inspected, and the
converter refuses it by name.

Semantics that ESPRESSO.md marks *unverified* are noted where they are decided.
Whether a parameter *value* is supported (an operation code, a mode) is the
converter's and the reference executor's business, not the parser's: parsers
of the layers beyond NeuralHash are lenient, so that ``inspect`` can show any
model, and the handlers refuse what they do not understand.

Axis numbers (``transpose``'s ``axis_*``, ``slice``'s ``axis``) count the
5-D blob from its fastest axis: 0 w, 1 h, 2 k, 3 n, 4 seq
(:data:`AXIS_NUMBERS`). *Unverified* but forced by SSDOcr's shape file: its
transpose ``axis_h 0, axis_w 2, axis_k 1`` turns ``{k 33, h 24, w 38}`` into
``{k 24, h 38, w 33}`` only in this numbering, reading "output axis X is the
input axis numbered axis_X"; its slice ``axis 2`` cuts k.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

from ..errors import GraphError

_MISSING = object()

# Espresso's axis numbers, fastest axis first (see the module docstring).
AXIS_NUMBERS = {"w": 0, "h": 1, "k": 2, "n": 3, "seq": 4}


@dataclass(frozen=True)
class BlobRef:
    """A layer's pointer into the weights file, with what the layer implies about it."""

    id: int
    dtype: str  # "float32" or "float16": how the payload is stored
    shape: tuple[int, ...]  # the stored layout
    field: str  # the JSON key it came from, for messages

    @property
    def count(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class Layer:
    """Fields every layer has. ``params`` is the layer's whole JSON object, untouched."""

    name: str
    type: str
    bottoms: tuple[str, ...]
    top: str
    is_output: bool
    params: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def tops(self) -> tuple[str, ...]:
        """The blobs this layer writes: ``top`` split at commas (``split_nd`` has several)."""
        return tuple(t for t in self.top.split(",") if t) or (self.top,)

    def blob_refs(self) -> dict[str, BlobRef]:
        """Weight blobs this layer reads, by role."""
        return {}


LAYER_TYPES: dict[str, type[Layer]] = {}


def register(type_name: str):
    """Class decorator: the dataclass that parses layers of ``type_name``."""

    def wrap(cls):
        LAYER_TYPES[type_name] = cls
        return cls

    return wrap


#: The largest value an integer field may hold (Espresso's fields are int32).
INT32_MAX = 2**31 - 1


class _Fields:
    """Typed access to a layer's JSON fields with errors that name layer and field."""

    def __init__(self, raw: Mapping[str, Any], layer_name: str, layer_type: str):
        self.raw = raw
        self.where = f"layer {layer_name!r} ({layer_type})"

    def _get(self, key: str, default: Any):
        value = self.raw.get(key, _MISSING)
        if value is _MISSING:
            if default is _MISSING:
                raise GraphError(f"{self.where}: missing field {key!r}")
            return default
        return value

    def int(self, key: str, default: Any = _MISSING) -> int:
        value = self._get(key, default)
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise GraphError(f"{self.where}: field {key!r} should be an integer, got {value!r}")
        # Espresso's fields are 32-bit; a larger one would reach ONNX (int64 attributes) as a traceback.
        if not -INT32_MAX - 1 <= value <= INT32_MAX:
            raise GraphError(f"{self.where}: field {key!r} is out of range, got {value}")
        return value

    def float(self, key: str, default: Any = _MISSING) -> float:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise GraphError(f"{self.where}: field {key!r} should be a number, got {value!r}")
        try:
            return float(value)
        except OverflowError:
            raise GraphError(f"{self.where}: field {key!r} is out of range ({value})") from None

    def flag(self, key: str, default: Any = 0) -> bool:
        return bool(self.int(key, default))

    def positive(self, key: str, default: Any = _MISSING) -> int:
        value = self.int(key, default)
        if value < 1:
            raise GraphError(f"{self.where}: field {key!r} should be at least 1, got {value}")
        return value

    def blob(self, keys: tuple[tuple[str, str], ...], shape: tuple[int, ...], role: str, required: bool = True):
        """The first present key of ``keys`` ((json key, dtype), ...) as a BlobRef."""
        for key, dtype in keys:
            if key in self.raw:
                return BlobRef(self.int(key), dtype, shape, key)
        if required:
            names = " or ".join(repr(k) for k, _ in keys)
            raise GraphError(f"{self.where}: missing field {names} ({role})")
        return None


def _quantized(f: _Fields, shape: tuple[int, ...]):
    """uint8 weights with their dequantisation blobs (``quantization.py``), or None."""
    from .quantization import find_quantized  # it subclasses BlobRef, defined above

    found = find_quantized(f.raw, f.where, shape)
    if found is not None:
        plain = [k for k in ("blob_weights", "blob_weights_f16", "w_f16_t") if k in f.raw]
        if plain:
            raise GraphError(f"{f.where}: both {plain[0]!r} and the quantized {found.field!r} give the weights")
    return found


def _pads(f: _Fields) -> tuple[int, int, int, int]:
    """Explicit padding (top, bottom, left, right), each >= 0."""
    pads = tuple(f.int(k, 0) for k in ("pad_t", "pad_b", "pad_l", "pad_r"))
    if min(pads) < 0:
        raise GraphError(f"{f.where}: negative padding {pads}")
    return pads  # type: ignore[return-value]


@register("input")
@dataclass(frozen=True)
class Input(Layer):
    """Declares a network input (fp16 NeuralHash begins with one)."""


@register("convolution")
@dataclass(frozen=True)
class Convolution(Layer):
    out_channels: int = 0
    in_channels: int = 0
    kernel_h: int = 1  # Ny; that Ny is rows is unverified (NeuralHash kernels are square)
    kernel_w: int = 1  # Nx
    stride_h: int = 1
    stride_w: int = 1
    dilation_h: int = 1
    dilation_w: int = 1
    groups: int = 1
    pad_mode: int = 0
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    has_biases: bool = False
    fused_relu: bool = False
    fused_tanh: bool = False
    has_batch_norm: bool = False
    n_parallel: int = 1
    weights: BlobRef | None = None
    biases: BlobRef | None = None

    @classmethod
    def parse(cls, f: _Fields, common: dict[str, Any]) -> "Convolution":
        c, k = f.positive("C"), f.positive("K")
        groups = f.positive("n_groups", 1)
        if k % groups or c % groups:
            raise GraphError(f"{f.where}: n_groups {groups} does not divide K {k} and C {c}")
        kh, kw = f.positive("Ny"), f.positive("Nx")
        shape = (c, k // groups, kh, kw)
        has_biases = f.flag("has_biases")
        return cls(
            **common,
            out_channels=c,
            in_channels=k,
            kernel_h=kh,
            kernel_w=kw,
            stride_h=f.positive("stride_y", 1),
            stride_w=f.positive("stride_x", 1),
            dilation_h=f.positive("dilation_y", 1),
            dilation_w=f.positive("dilation_x", 1),
            groups=groups,
            pad_mode=f.int("pad_mode", 0),
            pads=_pads(f),
            has_biases=has_biases,
            fused_relu=f.flag("fused_relu"),
            fused_tanh=f.flag("fused_tanh"),
            has_batch_norm=f.flag("has_batch_norm"),
            n_parallel=f.int("n_parallel", 1),
            weights=_quantized(f, shape)
            or f.blob((("blob_weights_f16", "float16"), ("blob_weights", "float32")), shape, "kernel"),
            biases=f.blob((("blob_biases", "float32"), ("b_f32", "float32")), (c,), "biases") if has_biases else None,
        )

    def blob_refs(self) -> dict[str, BlobRef]:
        refs = {"weights": self.weights}
        if self.biases is not None:
            refs["biases"] = self.biases
        return refs  # type: ignore[return-value]


@register("batchnorm")
@dataclass(frozen=True)
class BatchNorm(Layer):
    """``training`` 1 + ``training_instancenorm`` 1 is instance normalisation (NeuralHash)."""

    channels: int = 0
    training: bool = False
    instance_norm: bool = False
    eps: float = 1e-5
    params_blob: BlobRef | None = None  # [C, 4] rows: scale, shift, mean, variance

    @classmethod
    def parse(cls, f: _Fields, common: dict[str, Any]) -> "BatchNorm":
        c = f.positive("C")
        return cls(
            **common,
            channels=c,
            training=f.flag("training"),
            instance_norm=f.flag("training_instancenorm"),
            # 1e-5 default when absent is unverified; NeuralHash always sets it.
            eps=f.float("training_eps", 1e-5),
            params_blob=f.blob((("blob_batchnorm_params", "float32"),), (c, 4), "batchnorm parameters"),
        )

    def blob_refs(self) -> dict[str, BlobRef]:
        return {"params": self.params_blob}  # type: ignore[dict-item]


@register("elementwise")
@dataclass(frozen=True)
class Elementwise(Layer):
    operation: int = 0
    alpha: float = 0.0
    beta: float = 0.0
    fused_relu: bool = False
    nd_mode: bool = False

    @classmethod
    def parse(cls, f: _Fields, common: dict[str, Any]) -> "Elementwise":
        return cls(
            **common,
            operation=f.int("operation"),
            alpha=f.float("alpha", 0.0),
            beta=f.float("beta", 0.0),
            fused_relu=f.flag("fused_relu"),
            nd_mode=f.flag("nd_mode"),
        )

    @property
    def binary_modifiers_neutral(self) -> bool:
        """alpha 1 and beta 0, or absent: the only values ever seen on multi-input operations."""
        return self.params.get("alpha", 1) == 1 and self.params.get("beta", 0) == 0


@register("activation")
@dataclass(frozen=True)
class Activation(Layer):
    mode: int = 0
    alpha: float = 0.0
    beta: float = 0.0

    @classmethod
    def parse(cls, f: _Fields, common: dict[str, Any]) -> "Activation":
        return cls(**common, mode=f.int("mode"), alpha=f.float("alpha", 0.0), beta=f.float("beta", 0.0))


@register("pool")
@dataclass(frozen=True)
class Pool(Layer):
    is_max: bool = False  # avg_or_max: 0 average, 1 max
    avg_or_max: int = 0
    is_global: bool = False
    size_h: int = 1
    size_w: int = 1
    stride_h: int = 1
    stride_w: int = 1
    pad_mode: int = 0
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    exclude_padding: bool = True

    @classmethod
    def parse(cls, f: _Fields, common: dict[str, Any]) -> "Pool":
        is_global = f.flag("is_global")
        avg_or_max = f.int("avg_or_max")
        return cls(
            **common,
            is_max=avg_or_max == 1,
            avg_or_max=avg_or_max,
            is_global=is_global,
            size_h=f.positive("size_y", 1 if is_global else _MISSING),
            size_w=f.positive("size_x", 1 if is_global else _MISSING),
            stride_h=f.positive("stride_y", 1),
            stride_w=f.positive("stride_x", 1),
            pad_mode=f.int("pad_mode", 0),
            pads=_pads(f),
            exclude_padding=f.flag("average_count_exclude_padding", 1),
        )


@register("inner_product")
@dataclass(frozen=True)
class InnerProduct(Layer):
    """``weights`` is stored [nC, nB], or [nB, nC] when ``transposed`` (``w_f16_t``).

    ``is_lookup`` 1 makes it an embedding table: the input holds one index in
    [0, nB) per sequence step and the output is that column of the [nC, nB]
    weights (Core ML's EmbeddingLayerParams stores [outputChannels, inputDim]:
    the product with a one-hot vector).
    """

    n_in: int = 0  # nB
    n_out: int = 0  # nC
    has_biases: bool = False
    has_relu: bool = False
    has_tanh: bool = False
    has_prelu: bool = False
    transposed: bool = False
    is_lookup: bool = False
    weights: BlobRef | None = None
    biases: BlobRef | None = None

    @classmethod
    def parse(cls, f: _Fields, common: dict[str, Any]) -> "InnerProduct":
        n_in, n_out = f.positive("nB"), f.positive("nC")
        has_biases = f.flag("has_biases")
        if "w_f16_t" in f.raw:
            weights = BlobRef(f.int("w_f16_t"), "float16", (n_in, n_out), "w_f16_t")
        elif (quantized := _quantized(f, (n_out, n_in))) is not None:
            weights = quantized
        else:
            weights = f.blob(
                (("blob_weights_f16", "float16"), ("blob_weights", "float32")), (n_out, n_in), "weights"
            )
        return cls(
            **common,
            n_in=n_in,
            n_out=n_out,
            has_biases=has_biases,
            has_relu=f.flag("has_relu"),
            has_tanh=f.flag("has_tanh"),
            has_prelu=f.flag("has_prelu"),
            transposed=weights.field == "w_f16_t",
            is_lookup=f.flag("is_lookup"),
            weights=weights,
            biases=f.blob((("blob_biases", "float32"), ("b_f32", "float32")), (n_out,), "biases")
            if has_biases
            else None,
        )

    def blob_refs(self) -> dict[str, BlobRef]:
        refs = {"weights": self.weights}
        if self.biases is not None:
            refs["biases"] = self.biases
        return refs  # type: ignore[return-value]


@register("softmax")
@dataclass(frozen=True)
class Softmax(Layer):
    """Softmax over the channel axis (k)."""

    @classmethod
    def parse(cls, f: _Fields, common: dict[str, Any]) -> "Softmax":
        return cls(**common)


@register("softmax_nd")
@dataclass(frozen=True)
class SoftmaxND(Layer):
    """Softmax over ``nd_axis``, counted over the blob's own rank (negative: from the end)."""

    axis: int = -3

    @classmethod
    def parse(cls, f: _Fields, common: dict[str, Any]) -> "SoftmaxND":
        return cls(**common, axis=f.int("nd_axis", -3))


@register("concat")
@dataclass(frozen=True)
class Concat(Layer):
    """Concatenation along the channel axis (k)."""

    @classmethod
    def parse(cls, f: _Fields, common: dict[str, Any]) -> "Concat":
        return cls(**common)


@register("sequence_concat")
@dataclass(frozen=True)
class SequenceConcat(Layer):
    """Concatenation along the sequence axis (seq); ``simple_concat`` 1 is the only value seen."""

    simple_concat: int = 1

    @classmethod
    def parse(cls, f: _Fields, common: dict[str, Any]) -> "SequenceConcat":
        return cls(**common, simple_concat=f.int("simple_concat", 1))


@register("flatten")
@dataclass(frozen=True)
class Flatten(Layer):
    """``mode`` 0: each sequence item's [k, h, w] -> [k*h*w, 1, 1] in C order (SSDOcr keeps seq)."""

    mode: int = 0
    nd_axis: int = 0

    @classmethod
    def parse(cls, f: _Fields, common: dict[str, Any]) -> "Flatten":
        return cls(**common, mode=f.int("mode", 0), nd_axis=f.int("nd_axis", 0))


@register("reshape")
@dataclass(frozen=True)
class Reshape(Layer):
    """Reshape each image's [seq, k, h, w] to ``dst_seq``, ``dst_k``, ``dst_h``, ``dst_w`` (C order).

    ``dst_n`` 0 keeps the batch (1 and -1 are accepted as "the batch" too);
    ``-1`` stands for the rest; ``dst_seq`` absent is 1. ``mode`` 0 is seen
    everywhere; ``mode`` 1 only where it cannot differ from 0.
    """

    dst_seq: int = 1
    dst_n: int = 0
    dst_k: int = 0
    dst_h: int = 0
    dst_w: int = 0
    mode: int = 0
    nd_rank: int | None = None

    @classmethod
    def parse(cls, f: _Fields, common: dict[str, Any]) -> "Reshape":
        return cls(
            **common,
            dst_seq=f.int("dst_seq", 1),
            dst_n=f.int("dst_n", 0),
            dst_k=f.int("dst_k", 1),
            dst_h=f.int("dst_h", 1),
            dst_w=f.int("dst_w", 1),
            mode=f.int("mode", 0),
            nd_rank=f.int("dst_nd_rank") if "dst_nd_rank" in f.raw else None,
        )


@register("transpose")
@dataclass(frozen=True)
class Transpose(Layer):
    """A permutation of the five axes: output axis X is the input axis numbered ``axis_X``.

    ``axes`` holds those numbers in the order (seq, n, k, h, w); absent fields
    keep their own axis. See the module docstring for the numbering.
    """

    axes: tuple[int, int, int, int, int] = (4, 3, 2, 1, 0)
    has_axes: bool = True  # False: no axis_* field at all, which the handlers refuse rather than read as identity

    @classmethod
    def parse(cls, f: _Fields, common: dict[str, Any]) -> "Transpose":
        axes = tuple(f.int(f"axis_{a}", AXIS_NUMBERS[a]) for a in ("seq", "n", "k", "h", "w"))
        has_axes = any(f"axis_{a}" in f.raw for a in AXIS_NUMBERS)
        return cls(**common, axes=axes, has_axes=has_axes)  # type: ignore[arg-type]


@register("slice")
@dataclass(frozen=True)
class Slice(Layer):
    """``[start, end)`` along axis number ``axis`` (2 is k); an end past the axis is clamped."""

    axis: int | None = None  # None: the field is absent, which the handlers refuse
    start: int = 0
    end: int | None = None  # None: to the end of the axis
    stride: int = 1

    @classmethod
    def parse(cls, f: _Fields, common: dict[str, Any]) -> "Slice":
        return cls(**common, axis=f.int("axis") if "axis" in f.raw else None, start=f.int("start", 0),
                   end=f.int("end") if "end" in f.raw else None, stride=f.int("stride", 1))


@register("reduce")
@dataclass(frozen=True)
class Reduce(Layer):
    """``mode`` 0 sums; ``axis_mode`` 4 reduces k (SSDOcr's softmax). Nothing else is evidenced."""

    mode: int | None = None  # None: absent, which the handlers refuse
    axis_mode: int | None = None
    #: Why modes other than 0 are refused (converter and reference say the same).
    MODES_NOTE: ClassVar[str] = (
        "only 0 (sum) is known: Espresso's reduce codes are not Core ML's ReduceOperation numbers (there SUM 0 ... "
        "MAX 7, MIN 8, ARGMAX 9), and the shape file cannot tell an argmax from a max")

    @classmethod
    def parse(cls, f: _Fields, common: dict[str, Any]) -> "Reduce":
        return cls(**common, mode=f.int("mode") if "mode" in f.raw else None,
                   axis_mode=f.int("axis_mode") if "axis_mode" in f.raw else None)


@register("general_padding")
@dataclass(frozen=True)
class GeneralPadding(Layer):
    """Explicit spatial padding: ``pad_t/b/l/r``, ``pad_fill_mode`` (0 constant), ``pad_value``."""

    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    fill_mode: int = 0
    value: float = 0.0
    pad_mode: int = 0
    #: Why fill modes other than 0 are refused (converter and reference say the same).
    FILL_MODES_NOTE: ClassVar[str] = (
        "only 0 (constant) is known: Core ML's padding layer also reflects or replicates the border, and which of "
        "those Espresso's other codes are is not evidenced (the shape file is the same for each)")

    @classmethod
    def parse(cls, f: _Fields, common: dict[str, Any]) -> "GeneralPadding":
        return cls(**common, pads=_pads(f), fill_mode=f.int("pad_fill_mode", 0), value=f.float("pad_value", 0.0),
                   pad_mode=f.int("pad_pad_mode", 0))


@register("general_concat")
@dataclass(frozen=True)
class GeneralConcat(Layer):
    """Core ML's ConcatND: along ``axis`` counted over the inputs' rank (negative from the end), ``nd_mode`` 1."""

    nd_mode: bool = False
    axis: int | None = None  # None: absent, which the handlers refuse

    @classmethod
    def parse(cls, f: _Fields, common: dict[str, Any]) -> "GeneralConcat":
        return cls(**common, nd_mode=f.flag("nd_mode"), axis=f.int("axis") if "axis" in f.raw else None)


#: The axes general_slice names, in the executor's [N, seq, k, h, w] order (n is the batch).
SLICE_AXES = ("seq", "k", "h", "w")


@register("general_slice")
@dataclass(frozen=True)
class GeneralSlice(Layer):
    """Core ML's SliceStatic per axis: ``begin_X``, ``end_X``, ``stride_X``, ``begin_mask_X`` / ``end_mask_X``
    (1: from the start / to the end), ``squeeze_mask_X``; X in seq, n, k, h, w.

    ``ranges`` holds (begin or None, end or None, stride) per axis of :data:`SLICE_AXES`
    plus n; numpy's reading of negative bounds (from the end), as the specification says.
    """

    ranges: Mapping[str, tuple[int | None, int | None, int]] = field(default_factory=dict)
    squeeze: tuple[str, ...] = ()

    @classmethod
    def parse(cls, f: _Fields, common: dict[str, Any]) -> "GeneralSlice":
        ranges = {}
        squeeze = []
        for axis in ("n", *SLICE_AXES):
            begin = None if f.flag(f"begin_mask_{axis}") else f.int(f"begin_{axis}", 0)
            end = None if f.flag(f"end_mask_{axis}") or f"end_{axis}" not in f.raw else f.int(f"end_{axis}")
            ranges[axis] = (begin or None, end, f.int(f"stride_{axis}", 1))
            if f.flag(f"squeeze_mask_{axis}"):
                squeeze.append(axis)
        return cls(**common, ranges=ranges, squeeze=tuple(squeeze))

    def plan(self, view: tuple[int, int, int, int]):
        """((axis, start, stop, step) for each axis that is cut, the sliced (seq, k, h, w)), or (None, why not)."""
        begin, end, stride = self.ranges.get("n", (None, None, 1))
        if (begin, end, stride) != (None, None, 1) or "n" in self.squeeze:
            return None, f"begin_n / end_n / stride_n {[begin, end, stride]} would slice the batch axis"
        if self.params.get("use_static_sizes", False):
            return None, "use_static_sizes 1 is not supported (only false is seen)"
        cuts, out = [], list(view)
        for i, axis in enumerate(SLICE_AXES):
            begin, end, stride = self.ranges.get(axis, (None, None, 1))
            if stride < 1:
                return None, f"stride_{axis} {stride} is not supported (only positive strides)"
            start, stop, step = slice(begin, end, stride).indices(view[i])
            count = len(range(start, stop, step))
            if count == 0:
                return None, f"begin_{axis} {begin}, end_{axis} {end} leave nothing of {axis} {view[i]}"
            if count != view[i]:
                cuts.append((axis, start, stop, step))
            out[i] = count
        return cuts, tuple(out)


@register("expand_dims")
@dataclass(frozen=True)
class ExpandDims(Layer):
    """Adds size-1 axes: the data do not move; the output's view is the shape file's."""


@register("squeeze")
@dataclass(frozen=True)
class Squeeze(Layer):
    """Removes size-1 axes: the data do not move; the output's view is the shape file's."""


@register("split_nd")
@dataclass(frozen=True)
class SplitND(Layer):
    """Splits along ``nd_axis`` (counted over the blob's rank) into its tops; sizes from the shape file."""

    axis: int | None = None  # None: absent, which the handlers refuse

    @classmethod
    def parse(cls, f: _Fields, common: dict[str, Any]) -> "SplitND":
        return cls(**common, axis=f.int("nd_axis") if "nd_axis" in f.raw else None)


@register("upsample")
@dataclass(frozen=True)
class Upsample(Layer):
    """Integer upsampling; ``mode`` 0 nearest, 1 bilinear."""

    scale_h: int = 1
    scale_w: int = 1
    mode: int = 0
    align_corners: bool = False

    @classmethod
    def parse(cls, f: _Fields, common: dict[str, Any]) -> "Upsample":
        return cls(
            **common,
            scale_h=f.positive("scaling_factor_y"),
            scale_w=f.positive("scaling_factor_x"),
            mode=f.int("mode", 0),
            align_corners=f.flag("align_corners"),
        )


@register("load_constant")
@dataclass(frozen=True)
class LoadConstant(Layer):
    """A constant blob of shape [1, k, h, w] read from the weights file."""

    shape: tuple[int, int, int] = (1, 1, 1)
    n: int = 1  # Core ML's LoadConstant is [1, 1, C, H, W]: any other n is refused by the handlers
    constant: BlobRef | None = None

    @classmethod
    def parse(cls, f: _Fields, common: dict[str, Any]) -> "LoadConstant":
        shape = (f.positive("k", 1), f.positive("h", 1), f.positive("w", 1))
        return cls(**common, shape=shape, n=f.positive("n", 1),
                   constant=f.blob((("constant_blob", "float32"),), shape, "constant"))

    def blob_refs(self) -> dict[str, BlobRef]:
        return {"constant": self.constant}  # type: ignore[dict-item]


def parse_layer(raw: Any, index: int) -> Layer:
    """Parse one JSON layer object into its typed dataclass."""
    if not isinstance(raw, dict):
        raise GraphError(f"layer #{index}: should be a JSON object, got {type(raw).__name__}")
    for key in ("type", "name", "top"):
        if not isinstance(raw.get(key), str) or not raw.get(key):
            if key in raw:
                raise GraphError(f"layer #{index} ({raw.get('name', '?')!r}): field {key!r} should be a non-empty string")
            raise GraphError(f"layer #{index} ({raw.get('name', '?')!r}): missing field {key!r}")
    name, type_name = raw["name"], raw["type"]
    bottom = raw.get("bottom", "")
    if not isinstance(bottom, str):
        raise GraphError(f"layer {name!r} ({type_name}): field 'bottom' should be a string")
    bottoms = tuple(b for b in bottom.split(",") if b)
    if not bottoms and type_name not in ("input", "load_constant"):
        raise GraphError(f"layer {name!r} ({type_name}): missing field 'bottom'")
    attributes = raw.get("attributes") or {}
    is_output = bool(isinstance(attributes, dict) and attributes.get("is_output"))
    common = dict(name=name, type=type_name, bottoms=bottoms, top=raw["top"], is_output=is_output, params=raw)
    cls = LAYER_TYPES.get(type_name)
    if cls is None:
        return Layer(**common)
    parse = getattr(cls, "parse", None)
    if parse is None:
        return cls(**common)
    return parse(_Fields(raw, name, type_name), common)


AXIS_NAMES = {number: name for name, number in AXIS_NUMBERS.items()}
_FIVE = ("seq", "n", "k", "h", "w")


def nd_axis_name(axis: int | None, rank: int) -> str | None:
    """The 5-D axis (``seq``/``n``/``k``/``h``/``w``) that ``nd_axis`` names on a blob of ``rank``.

    A rank-r blob is the last r axes of ``[seq, n, k, h, w]`` (its features
    in w, then h...); ``axis`` counts from the first of them, or from the end
    when negative. None when it is out of range. *Unverified* beyond the
    reading in ESPRESSO.md (a rank-3 ``[4, 25, 439]`` blob's nd_axis 2 is w).
    """
    if axis is None or not 1 <= rank <= 5 or not -rank <= axis < rank:
        return None
    return _FIVE[5 - rank + axis] if axis >= 0 else _FIVE[5 + axis]
