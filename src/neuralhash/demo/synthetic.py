"""A synthetic NeuralHash v3b: Apple's architecture, generated from a compact description, with random weights.

Apple's weights are not redistributable, and neither is its graph. This module
rebuilds the *structure* of ``NeuralHashv3b-current`` programmatically: a
MobileNetV3-style network described by :data:`ARCHITECTURE` (a stem
convolution, eleven bottleneck blocks, a final 1x1 convolution, global pooling,
a 1x1 convolution to 1280 and two inner products 1280 -> 500 -> 128). Layer
names follow TensorFlow's name-scope rules (``add``, ``add_1``, ``mul_2``...),
blob ids are handed out in layer order (odd numbers, biases before weights),
and every layer field takes the value Apple's exporter writes. The result
equals the real graph layer for layer and field for field, and the shapes
equal the real shape file (``tests/test_synthetic.py`` checks both against
Apple's files when they are present).

Two precisions:

- ``"float32"``: the graph of ``NeuralHashv3b-current`` (macOS 11.4+), every
  blob float32;
- ``"float16"``: the layout of ``NeuralHashv3b_fp16-current`` (newer macOS):
  an ``input`` layer first, convolution kernels under ``blob_weights_f16``,
  the first inner product under ``blob_weights_f16`` ([nC, nB]) and the
  second under ``w_f16_t`` ([nB, nC], transposed), biases and instance-norm
  parameters float32.

Weights are random (He-normal kernels, small biases, instance-norm scale near
1). A random network maps every image to almost the same 128 outputs, so
:func:`calibrate` rescales the last layer on the sample images that ship
with the package, so that their hashes differ clearly. The hashes still mean
nothing perceptually: the model only exercises every stage of the pipeline.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import NeuralHashError
from ..espresso import EspressoModel, ModelSources, write_espresso
from ..hashing.model_ids import SYNTHETIC_MARK

PRECISIONS = ("float32", "float16")
PREFIXES = {"float32": "NeuralHashv3b-current", "float16": "NeuralHashv3b_fp16-current"}

#: The input preprocessing Apple's graph declares: pixel * 2/255 - 1, RGB.
TRANSFORM_PARAMS: dict[str, Any] = {
    "image": {
        "scale": 2.0 / 255.0,
        "bias_r": -1.0,
        "bias_g": -1.0,
        "bias_b": -1.0,
        "bias_a": 0.0,
        "center_mean": False,
        "is_network_bgr": False,
    }
}


# -- the architecture -------------------------------------------------------------------


@dataclass(frozen=True)
class Bottleneck:
    """One inverted-residual block: 1x1 expand, depthwise, optional squeeze-excite, 1x1 compress."""

    expand: int  # channels after the 1x1 expansion
    out: int  # channels after the 1x1 compression
    kernel: int  # depthwise kernel size (square)
    stride: int  # depthwise stride
    se: bool  # squeeze-excite (reduction to expand // 4)
    act: str  # "relu" or "hswish"


@dataclass(frozen=True)
class Architecture:
    input_size: int = 360
    input_channels: int = 3
    stem_channels: int = 16
    blocks: tuple[Bottleneck, ...] = ()
    last_conv: int = 432
    head_conv: int = 1280
    fc: tuple[int, ...] = (500, 128)
    se_reduction: int = 4


#: NeuralHash v3b (a MobileNetV3 variant with instance normalisation).
ARCHITECTURE = Architecture(
    blocks=(
        Bottleneck(16, 16, 3, 2, True, "relu"),
        Bottleneck(56, 24, 3, 2, False, "relu"),
        Bottleneck(64, 24, 3, 1, False, "relu"),
        Bottleneck(72, 32, 5, 2, True, "hswish"),
        Bottleneck(184, 32, 5, 1, True, "hswish"),
        Bottleneck(184, 32, 5, 1, True, "hswish"),
        Bottleneck(88, 40, 5, 1, True, "hswish"),
        Bottleneck(112, 40, 5, 1, True, "hswish"),
        Bottleneck(216, 72, 5, 2, True, "hswish"),
        Bottleneck(432, 72, 5, 1, True, "hswish"),
        Bottleneck(432, 72, 5, 1, True, "hswish"),
    )
)

ROOT_SCOPE = "stem/MobilenetV3"
INPUT_BLOB = "image"
OUTPUT_BLOB = "leaf/logits"
FEATURE_BLOB = "cell_leaf/fully_connected_1/MatMul"  # the 500-d input of the last layer

# Apple's exporter writes float32 parameters as the doubles they round to:
# 0.1666666716337204, 9.999999974752427e-07, 0.8999999761581421.
_ONE_SIXTH = float(np.float32(1 / 6))
_EPS = float(np.float32(1e-6))
_MOMENTUM = float(np.float32(0.9))


class _Scope:
    """A TensorFlow name scope: the second ``mul`` in it is ``mul_1``, and so on."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self._used: dict[str, int] = {}

    def unique(self, base: str) -> str:
        n = self._used.get(base, 0)
        self._used[base] = n + 1
        return f"{self.prefix}/{base}" if n == 0 else f"{self.prefix}/{base}_{n}"


class _Builder:
    """Appends Espresso layer objects, tracking blob ids and every blob's shape."""

    def __init__(self, arch: Architecture, precision: str):
        if precision not in PRECISIONS:
            raise ValueError(f"precision should be one of {PRECISIONS}, got {precision!r}")
        self.precision = precision
        self.layers: list[dict[str, Any]] = []
        self.shapes: dict[str, tuple[int, int, int, int]] = {
            INPUT_BLOB: (1, arch.input_channels, arch.input_size, arch.input_size)
        }
        self._next_blob = 1

    def _blob_id(self) -> int:
        blob_id = self._next_blob
        self._next_blob += 2
        return blob_id

    def _add(self, layer_type: str, name: str, bottoms: Sequence[str], shape, **params) -> str:
        layer = {"type": layer_type, "name": name, "bottom": ",".join(bottoms), "top": name,
                 "debug_info": "", "weights": {}}
        layer.update(params)
        self.layers.append(layer)
        self.shapes[name] = shape
        return name

    def shape(self, blob: str) -> tuple[int, int, int, int]:
        return self.shapes[blob]

    # -- layer kinds ----------------------------------------------------------------

    def input(self) -> None:
        """The float16 model's explicit input layer (no bottom)."""
        self.layers.append({"type": "input", "name": INPUT_BLOB, "top": INPUT_BLOB, "debug_info": "", "weights": {}})

    def conv(self, name: str, bottom: str, out: int, *, kernel: int = 1, stride: int = 1, groups: int = 1,
             biases: bool = False, relu: bool = False, pad_mode: int = 1) -> str:
        n, k, h, w = self.shape(bottom)
        params: dict[str, Any] = {
            "C": out, "K": k, "Nx": kernel, "Ny": kernel, "n_groups": groups, "n_parallel": 1,
            "has_biases": int(biases), "has_batch_norm": 0, "fused_relu": int(relu), "fused_tanh": 0,
            "pad_mode": pad_mode, "pad_t": 0, "pad_b": 0, "pad_l": 0, "pad_r": 0,
            "pad_fill_mode": 0, "pad_value": 0,
        }
        if stride != 1:
            params["stride_x"] = stride
            params["stride_y"] = stride
        if biases:
            params["blob_biases"] = self._blob_id()
        params["blob_weights_f16" if self.precision == "float16" else "blob_weights"] = self._blob_id()
        # pad_mode 1 is SAME (ceil), 2 is only used on 1x1 stride-1 kernels.
        shape = (n, out, -(-h // stride), -(-w // stride))
        return self._add("convolution", name, [bottom], shape, **params)

    def instance_norm(self, scope: str, bottom: str) -> str:
        return self._add(
            "batchnorm", f"{scope}/InstanceNorm/instancenorm/add_1", [bottom], self.shape(bottom),
            C=self.shape(bottom)[1], training=1, training_instancenorm=1, training_eps=_EPS,
            training_momentum=_MOMENTUM, blob_batchnorm_params=self._blob_id(),
        )

    def elementwise(self, name: str, bottoms: Sequence[str], operation: int, alpha, beta, nd_mode: bool = False) -> str:
        params: dict[str, Any] = {"operation": operation, "alpha": alpha, "beta": beta, "fused_relu": 0}
        if nd_mode:
            params["nd_mode"] = True
        return self._add("elementwise", name, bottoms, self.shape(bottoms[0]), **params)

    def relu(self, scope: _Scope, bottom: str) -> str:
        return self._add("activation", scope.unique("Relu"), [bottom], self.shape(bottom), mode=0, beta=0)

    def hard_sigmoid(self, scope: _Scope, bottom: str) -> str:
        """relu6(x + 3) / 6 as three elementwise layers."""
        t = self.elementwise(scope.unique("add"), [bottom], 2, 3, 0)
        t = self.elementwise(scope.unique("Relu6"), [t], 119, 0, 6)
        return self.elementwise(scope.unique("mul"), [t], 3, _ONE_SIXTH, 0)

    def hard_swish(self, scope: _Scope, bottom: str) -> str:
        """x * relu6(x + 3) / 6 as four elementwise layers."""
        t = self.hard_sigmoid(scope, bottom)
        return self.elementwise(scope.unique("mul"), [bottom, t], 1, 1, 0)

    def activation(self, kind: str, scope: _Scope, bottom: str) -> str:
        if kind == "relu":
            return self.relu(scope, bottom)
        if kind == "hswish":
            return self.hard_swish(scope, bottom)
        raise ValueError(f"unknown activation {kind!r}")

    def global_pool(self, name: str, bottom: str) -> str:
        n, k, h, w = self.shape(bottom)
        return self._add(
            "pool", name, [bottom], (n, k, 1, 1),
            avg_or_max=0, is_global=1, size_x=w, size_y=h, stride_x=1, stride_y=1,
            average_count_exclude_padding=1, top_shape_style=0,
            pad_mode=0, pad_t=0, pad_b=0, pad_l=0, pad_r=0, pad_fill_mode=0, pad_value=0,
        )

    def inner_product(self, name: str, bottom: str, out: int, *, relu: bool, weights_key: str,
                      is_output: bool = False) -> str:
        n, k, h, w = self.shape(bottom)
        params: dict[str, Any] = {
            "nB": k * h * w, "nC": out, "has_biases": 1, "has_relu": int(relu), "has_tanh": 0, "has_prelu": 0,
            "blob_biases": self._blob_id(), weights_key: self._blob_id(),
        }
        if is_output:
            params["attributes"] = {"is_output": 1}
        return self._add("inner_product", name, [bottom], (n, out, 1, 1), **params)

    # -- blocks -----------------------------------------------------------------------

    def bottleneck(self, index: int, block: Bottleneck, bottom: str, se_reduction: int) -> str:
        root = f"{ROOT_SCOPE}/Bottleneck_{index}"
        scope = _Scope(root)
        in_channels = self.shape(bottom)[1]

        x = self.conv(f"{root}/expand/Conv2D", bottom, block.expand)
        x = self.instance_norm(f"{root}/expand", x)
        x = self.activation(block.act, _Scope(f"{root}/expand"), x)

        x = self.conv(f"{root}/depthwise/depthwise", x, block.expand, kernel=block.kernel, stride=block.stride,
                      groups=block.expand)
        x = self.instance_norm(f"{root}/depthwise", x)

        if block.se:
            squeezed = block.expand // se_reduction
            s = self.global_pool(f"{root}/gap/Mean", x)
            s = self.conv(f"{root}/Bottleneck_{index}/Conv/Conv2D", s, squeezed, biases=True, relu=True, pad_mode=2)
            s = self.conv(f"{root}/Bottleneck_{index}_1/Conv_1/Conv2D", s, block.expand, biases=True, pad_mode=2)
            s = self.hard_sigmoid(_Scope(f"{root}/Bottleneck_{index}_1/Conv_1"), s)
            x = self.elementwise(scope.unique("mul"), [x, s], 1, 1, 0, nd_mode=True)

        x = self.activation(block.act, scope, x)
        x = self.conv(f"{root}/compress/Conv2D", x, block.out)
        x = self.instance_norm(f"{root}/compress", x)

        if block.stride == 1 and in_channels == block.out:
            x = self.elementwise(scope.unique("add"), [x, bottom], 0, 1, 0)
        return x

    def network(self, arch: Architecture) -> None:
        if self.precision == "float16":
            self.input()
        # Stem: 3x3 stride-2 convolution, instance norm, hard-swish.
        stem = f"{ROOT_SCOPE}/Conv2d_0"
        x = self.conv(f"{stem}/Conv2D", INPUT_BLOB, arch.stem_channels, kernel=3, stride=2)
        x = self.instance_norm(stem, x)
        x = self.hard_swish(_Scope(stem), x)

        for index, block in enumerate(arch.blocks, start=1):
            x = self.bottleneck(index, block, x, arch.se_reduction)

        last = f"{ROOT_SCOPE}/Conv2d_{len(arch.blocks) + 1}"
        x = self.conv(f"{last}/Conv2D", x, arch.last_conv)
        x = self.instance_norm(last, x)
        x = self.hard_swish(_Scope(last), x)

        x = self.global_pool(f"{ROOT_SCOPE}/Mean", x)
        head = f"{ROOT_SCOPE}/GAP_{len(arch.blocks) + 2}"
        x = self.conv(f"{head}/Conv2D", x, arch.head_conv, biases=True)
        x = self.hard_swish(_Scope(head), x)

        hidden, out = arch.fc
        f16 = self.precision == "float16"
        x = self.inner_product(FEATURE_BLOB, x, hidden, relu=True,
                               weights_key="blob_weights_f16" if f16 else "blob_weights")
        # The two float16 inner-product layouts are both exercised: [nC, nB] above, [nB, nC] here.
        self.inner_product(OUTPUT_BLOB, x, out, relu=False, weights_key="w_f16_t" if f16 else "blob_weights",
                           is_output=True)


def _build(precision: str, arch: Architecture = ARCHITECTURE) -> _Builder:
    builder = _Builder(arch, precision)
    builder.network(arch)
    return builder


def neuralhash_v3b_layers(precision: str = "float32") -> list[dict[str, Any]]:
    """The layer objects of NeuralHash v3b (225 layers; 226 with the float16 input layer)."""
    return _build(precision).layers


def neuralhash_v3b_shapes() -> dict[str, tuple[int, int, int, int]]:
    """(n, k, h, w) of every blob, the input ``image`` included (as in Apple's shape file)."""
    return dict(_build("float32").shapes)


# -- weights ---------------------------------------------------------------------------------

_F16_KEYS = ("blob_weights_f16", "w_f16_t")


def _normal(seed: int, blob_id: int, shape: tuple[int, ...], mean: float, std: float) -> np.ndarray:
    # One generator per blob: a blob's values do not depend on the other layers or the precision.
    rng = np.random.default_rng((seed, blob_id))
    return (mean + std * rng.standard_normal(shape)).astype(np.float32)


def _stored(values: np.ndarray, key: str) -> np.ndarray:
    """float32 values in the dtype the JSON key implies (float16 payloads are rounded once)."""
    return values.astype(np.float16) if key in _F16_KEYS else values


_FINAL_NORM_PREFIX = "stem/MobilenetV3/Conv2d_12/InstanceNorm"


def synthetic_blobs(layers: Sequence[Mapping[str, Any]], seed: int = 0) -> dict[int, np.ndarray]:
    """Random weights for every blob ``layers`` reference, in their stored layout and dtype.

    Convolution kernels [C, K/groups, Ny, Nx] and inner-product weights [nC, nB]
    ([nB, nC] under ``w_f16_t``) are He-normal (std sqrt(2 / fan_in)); biases
    are N(0, 0.02); instance-norm parameters are [C, 4] rows (scale ~ N(1, 0.1),
    shift ~ N(0, 0.1), 0, 1; wider for the norm before the final pool, see below). Values are drawn as float32, per blob id, so a
    float16 blob is exactly the rounding of the float32 blob with the same id
    and seed. The first convolution's first output channel is
    :data:`~neuralhash.hashing.model_ids.SYNTHETIC_MARK` (exact in float16), so
    that no synthetic model gets the id of Apple's.
    """
    blobs: dict[int, np.ndarray] = {}
    for layer in layers:
        kind = layer.get("type")
        if kind == "convolution":
            c, k, g, ny, nx = (int(layer[f]) for f in ("C", "K", "n_groups", "Ny", "Nx"))
            fan_in = (k // g) * ny * nx
            for key in ("blob_weights", "blob_weights_f16"):
                if key in layer:
                    w = _normal(seed, layer[key], (c, k // g, ny, nx), 0.0, float(np.sqrt(2.0 / fan_in)))
                    if layer.get("bottom") == INPUT_BLOB and w.shape[1:] == SYNTHETIC_MARK.shape:
                        w[0] = SYNTHETIC_MARK  # never taken for Apple's model (hashing.model_ids)
                    blobs[int(layer[key])] = _stored(w, key)
            for key in ("blob_biases", "b_f32"):
                if key in layer:
                    blobs[int(layer[key])] = _normal(seed, layer[key], (c,), 0.0, 0.02)
        elif kind == "batchnorm":
            c, blob_id = int(layer["C"]), int(layer["blob_batchnorm_params"])
            # The norm before the final pool feeds a hard-swish, which is exactly
            # quadratic on [-3, 3]: with scale ~1 the pooled mean depends only on
            # the mean and variance that instance norm fixes, and every image gives
            # almost the same output. A wider scale and shift reach the non-quadratic
            # part, so image content survives to the logits and calibration needs
            # far less amplification (of float32 noise too).
            wide = layer.get("name", "").startswith(_FINAL_NORM_PREFIX)
            scale_mean, scale_std, shift_std = (3.0, 0.9, 1.0) if wide else (1.0, 0.1, 0.1)
            params = np.zeros((c, 4), np.float32)
            params[:, 0] = _normal(seed, blob_id, (c,), scale_mean, scale_std)
            params[:, 1] = _normal(seed, blob_id + 1, (c,), 0.0, shift_std)  # +1: even, never a blob id here
            params[:, 3] = 1.0
            blobs[blob_id] = params
        elif kind == "inner_product":
            n_in, n_out = int(layer["nB"]), int(layer["nC"])
            std = float(np.sqrt(2.0 / n_in))
            for key in ("blob_weights", "blob_weights_f16", "w_f16_t"):
                if key in layer:
                    w = _normal(seed, layer[key], (n_out, n_in), 0.0, std)
                    blobs[int(layer[key])] = _stored(w.T.copy() if key == "w_f16_t" else w, key)
            for key in ("blob_biases", "b_f32"):
                if key in layer:
                    blobs[int(layer[key])] = _normal(seed, layer[key], (n_out,), 0.0, 0.02)
    return blobs


# -- models and files ----------------------------------------------------------------------


def build_neuralhash_v3b(precision: str = "float32", seed: int = 0, *, calibrate: bool = False) -> EspressoModel:
    """The synthetic model in memory (through the real weights encoder and reader).

    ``calibrate=True`` runs :func:`calibrate` on the sample images (needs the
    reference executor; a few seconds).
    """
    layers, shapes, blobs = _synthetic_parts(precision, seed, calibrate)
    return EspressoModel.from_layers(layers, blobs, shapes, TRANSFORM_PARAMS)


def write_neuralhash_v3b(
    folder: str | os.PathLike,
    precision: str = "float32",
    seed: int = 0,
    compressed: bool = True,
    calibrate: bool = True,
) -> ModelSources:
    """Write the synthetic model as Espresso files named as Apple names them.

    ``NeuralHashv3b-current.espresso.{net,shape,weights}`` for float32,
    ``NeuralHashv3b_fp16-current...`` for float16; the graph and shape files
    are ``pbze`` + LZFSE containers unless ``compressed`` is False.
    """
    layers, shapes, blobs = _synthetic_parts(precision, seed, calibrate)
    return write_espresso(folder, PREFIXES[precision], layers=layers, shapes=shapes, blobs=blobs,
                          transform_params=TRANSFORM_PARAMS, compressed=compressed)


def _synthetic_parts(precision: str, seed: int, do_calibrate: bool):
    builder = _build(precision)
    blobs = synthetic_blobs(builder.layers, seed)
    if do_calibrate:
        blobs = calibrate(builder.layers, blobs, shapes=builder.shapes)
    return builder.layers, builder.shapes, blobs


# -- calibration ----------------------------------------------------------------------------


def calibrate(
    layers: Sequence[Mapping[str, Any]],
    blobs: Mapping[int, np.ndarray],
    images: np.ndarray | None = None,
    *,
    shapes: Mapping[str, tuple[int, int, int, int]] | None = None,
    target_std: float = 1.0,
) -> dict[int, np.ndarray]:
    """Refit the output layer so that ``images`` get clearly different hashes; return new blobs.

    A random network maps every image to nearly the same 128 outputs, so all
    images would share one hash. This runs the reference executor on
    ``images`` (N x 3 x 360 x 360 float32 in [-1, 1]; default: the
    preprocessed sample images; N >= 2) and takes the input of the last
    inner product (the 500-d ``cell_leaf/fully_connected_1/MatMul``). Each of
    that layer's 128 weight rows is then projected onto the span of the
    centred features (the only directions in which the images differ) and
    rescaled, and the biases are set, so that over ``images`` every output
    has mean 0 and standard deviation ``target_std``.

    The projection does not change the outputs on ``images`` (the centred
    features lie in that span) but drops the directions that carry only
    rounding noise, which makes a float32 runtime agree with the float64
    reference about 7x more closely than rescaling alone. float16 weights
    stay float16; the biases are fitted after rounding, so the mean stays 0.
    The other blobs are shared with ``blobs``.
    """
    from ..reference import run

    if images is None:
        images = np.stack([preprocess_image(p) for p in sample_image_paths()])
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[0] < 2:
        raise NeuralHashError(f"calibration needs a batch of at least two images, got shape {list(images.shape)}")
    output = next((layer for layer in reversed(layers) if layer.get("type") == "inner_product"), None)
    if output is None:
        raise NeuralHashError("calibration needs a graph that ends with an inner_product layer")
    key = next((k for k in ("blob_weights", "blob_weights_f16", "w_f16_t") if k in output), None)
    bias_key = next((k for k in ("blob_biases", "b_f32") if k in output), None)
    if key is None or bias_key is None or not output.get("has_biases"):
        raise NeuralHashError(f"layer {output.get('name')!r}: calibration needs an output layer with weights and biases")

    if shapes is None:
        shapes = {INPUT_BLOB: (1,) + tuple(images.shape[1:])}
    model = EspressoModel.from_layers(list(layers), blobs, shapes, TRANSFORM_PARAMS)
    feature_blob = str(output["bottom"])
    values = run(model, {model.inputs[0]: images}, keep=True)
    features = values[feature_blob].reshape(len(images), -1).astype(np.float64)

    weights = np.asarray(blobs[int(output[key])], dtype=np.float64)
    if key == "w_f16_t":
        weights = weights.T  # canonical [nC, nB]
    centred = features - features.mean(axis=0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    basis = vt[singular > singular[0] * 1e-6] if singular[0] > 0 else vt[:0]
    if basis.shape[0] == 0:
        raise NeuralHashError("calibration: every image gives the same features; their hashes cannot differ")
    projected = (weights @ basis.T) @ basis  # rows restricted to the span of the centred features
    spread = (centred @ projected.T).std(axis=0)
    if not np.all(spread > 0):
        raise NeuralHashError("calibration: an output does not vary over the images")
    scaled = projected * (target_std / spread)[:, None]

    dtype = np.float16 if key in _F16_KEYS else np.float32
    stored = np.ascontiguousarray((scaled.T if key == "w_f16_t" else scaled).astype(dtype))
    rounded = stored.astype(np.float64)
    rounded = rounded.T if key == "w_f16_t" else rounded
    biases = -(features @ rounded.T).mean(axis=0)

    out = dict(blobs)
    out[int(output[key])] = stored
    out[int(output[bias_key])] = biases.astype(np.float32)
    return out


# -- sample images -----------------------------------------------------------------------------

DATA_DIR = Path(__file__).resolve().parent.parent / "data"


def sample_image_paths() -> list[Path]:
    """The small procedurally drawn images that ship with the package, sorted by name."""
    return sorted(p for p in DATA_DIR.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))


def preprocess_image(source) -> np.ndarray:
    """[3, 360, 360] float32 in [-1, 1] from a path or a Pillow image (see :mod:`neuralhash.hashing.image`)."""
    from ..hashing.image import preprocess

    return preprocess(source)
