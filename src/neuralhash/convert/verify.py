"""Prove an ONNX conversion against the independent NumPy reference executor.

Both run on the same inputs (seeded random tensors in [-1, 1] for every
input, indices in range for an embedding's, and optionally
real images, resized to the model's input and scaled as its
``transform_params`` say); the largest absolute and relative error of every
output is reported. Inputs are shaped from the shape file, so their size is
capped (``max_input_size``, bytes of float32 per case): a file may claim any
size. An output passes when its error is at most ``atol * max(1, M)``,
M being its largest |reference| value: ``atol`` absolute on outputs of order
1, the same relative precision on larger ones. On failure, every Espresso
blob that survives in the ONNX graph is exposed and compared in layer order,
to name the first layer that diverges.

The reference computes in float64; ONNX Runtime in float32. Its
InstanceNormalization loses precision on channels whose mean is large against
their spread (flat image regions), so real images show larger errors than
random ones. The converter keeps that operator all the same: the community
ONNX model that published NeuralHash values came from uses it.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import onnx

from ..errors import ConversionError, NeuralHashError
from ..espresso import EspressoModel
from ..hashing.runtime import make_session

DEFAULT_ATOL = 1e-4
DEFAULT_MAX_INPUT_SIZE = 64 << 20  # bytes of float32 input per case, batch included


@dataclass(frozen=True)
class OutputError:
    """Largest errors of one output over every input case."""

    blob: str
    max_abs: float
    max_rel: float  # max_abs / largest |reference| value
    limit: float  # atol * max(1, largest |reference| value)
    cases: int

    @property
    def passed(self) -> bool:
        return self.max_abs <= self.limit


@dataclass(frozen=True)
class Divergence:
    """The first layer whose ONNX value leaves tolerance."""

    layer: str
    type: str
    blob: str
    max_abs: float
    scale: float  # largest |reference| value of that blob


@dataclass
class VerificationReport:
    atol: float
    inputs: list[str]
    outputs: list[OutputError] = field(default_factory=list)
    divergence: Divergence | None = None

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs)


def _errors(ref: np.ndarray, got: np.ndarray) -> tuple[float, float, float]:
    ref64, got64 = ref.astype(np.float64), got.astype(np.float64)
    if ref64.shape != got64.shape or not (np.isfinite(ref64).all() and np.isfinite(got64).all()):
        return float("inf"), float("inf"), float(np.nanmax(np.abs(ref64))) if ref64.size else 0.0
    diff = float(np.max(np.abs(ref64 - got64))) if ref64.size else 0.0
    scale = float(np.max(np.abs(ref64))) if ref64.size else 0.0
    return diff, diff / scale if scale > 0 else diff, scale


def _input_dims(model: EspressoModel, max_input_size: int, batch: int, name: str | None = None) -> tuple[str, tuple[int, ...]]:
    """An input's name (the first by default) and ONNX dims at ``batch``, refused above ``max_input_size`` bytes."""
    name = model.inputs[0] if name is None else name
    shape = model.shapes.get(name)
    if shape is None:
        raise ConversionError(f"the shape file gives no shape for the input blob {name!r}")
    dims = (batch, *shape.onnx_dims)
    size = 4 * int(np.prod(dims, dtype=object))
    if size > max_input_size:
        raise NeuralHashError(
            f"input blob {name!r} of {list(dims)} would take {size / 2**20:,.0f} MiB as float32, above the limit "
            f"of {max_input_size / 2**20:,.0f} MiB (max_input_size, --max-input-size)"
        )
    return name, dims


def index_range(model: EspressoModel, name: str) -> int | None:
    """The number of rows of the embedding tables an input indexes (None: not an index input)."""
    from .converter import integer_inputs

    if name not in integer_inputs(model):
        return None
    return min(layer.n_in for layer in model.layers if name in layer.bottoms)


Feeds = dict[str, np.ndarray]


def random_inputs(model: EspressoModel, seeds: Iterable[int], batch: int,
                  max_input_size: int = DEFAULT_MAX_INPUT_SIZE) -> list[tuple[str, Feeds]]:
    """Seeded feeds of every input at ``[batch, *onnx_dims]``: uniform [-1, 1] float32, or int64 indices in
    [0, rows) for an input that only embedding tables read."""
    out = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        feeds = {}
        for name in model.inputs:
            _, dims = _input_dims(model, max_input_size, batch, name)
            rows = index_range(model, name)
            feeds[name] = rng.integers(0, rows, dims, dtype=np.int64) if rows is not None else \
                rng.uniform(-1, 1, dims).astype(np.float32)
        out.append((f"seed {seed}", feeds))
    return out


def _transform_number(model: EspressoModel, params: dict, blob: str, key: str, default: float) -> float:
    """A number of the input's ``transform_params`` (inspect shows odd ones; preprocessing needs real numbers)."""
    value = params.get(key, default)
    number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    if number is not None and abs(number) <= float(np.finfo(np.float32).max):  # a Python comparison: ints of any size
        return float(number)
    where = f"{model.sources.net}: " if model.sources.net is not None else ""
    raise NeuralHashError(f"{where}transform_params of input {blob!r}: {key!r} should be a finite float32 number, "
                          f"got {value!r}"[:300])


def image_inputs(paths: Sequence[str | os.PathLike | Any], model: EspressoModel | None = None,
                 max_input_size: int = DEFAULT_MAX_INPUT_SIZE) -> list[tuple[str, np.ndarray]]:
    """Each image (a path, or a Pillow image) as a batch of one for the model's first input.

    A 3 x 360 x 360 input (or no model) gets NeuralHash's exact preprocessing.
    Any other input gets the image resized (bicubic) to its h x w, RGB (or grey
    when k is 1), as ``pixel * scale + bias`` from the input's
    ``transform_params`` (scale 1, bias 0 when absent; BGR when
    ``is_network_bgr``).
    """
    from ..hashing.image import load_image, preprocess

    if model is None or model.shapes.get(model.inputs[0]) is None or \
            model.shapes[model.inputs[0]].view == (1, 3, 360, 360):
        return [(os.fspath(p), preprocess(p)[None]) for p in paths]
    name, dims = _input_dims(model, max_input_size, 1)
    seq, k, h, w = model.shapes[name].view
    if seq != 1 or k not in (1, 3):
        if not paths:  # an array input: nothing to preprocess (verify feeds it seeded arrays)
            return []
        raise NeuralHashError(f"input blob {name!r} of [seq, k, h, w] {[seq, k, h, w]} is not an image")
    params = model.transform_params.get(name, {})
    params = params if isinstance(params, dict) else {}
    scale = _transform_number(model, params, name, "scale", 1.0)
    bias = np.array([_transform_number(model, params, name, f"bias_{c}", 0.0) for c in "rgb"], np.float32)
    out = []
    for i, p in enumerate(paths):
        label = os.fspath(p) if isinstance(p, (str, os.PathLike)) else f"image {i}"
        img = load_image(p).resize((w, h))  # Pillow's default filter for RGB: bicubic
        pixels = np.asarray(img, np.float32) * np.float32(scale) + bias
        if params.get("is_network_bgr"):
            pixels = pixels[..., ::-1]
        if k == 1:  # grey: Pillow's luma weights, then the red channel's transform (unverified)
            grey = np.asarray(img.convert("L"), np.float32) * np.float32(scale) + bias[0]
            pixels = grey[..., None]
        x = np.ascontiguousarray(pixels.transpose(2, 0, 1))[None]
        out.append((label, x.reshape(dims).astype(np.float32)))
    return out


def verify(
    model: EspressoModel,
    onnx_model: onnx.ModelProto | None = None,
    *,
    images: Sequence[str | os.PathLike] = (),
    seeds: Iterable[int] = (0, 1),
    batch: int = 1,
    atol: float = DEFAULT_ATOL,
    providers: Sequence[str] | None = None,
    optimize: bool = True,
    max_input_size: int = DEFAULT_MAX_INPUT_SIZE,
) -> VerificationReport:
    """Run reference and ONNX Runtime side by side; see the module docstring.

    Every input gets seeded random values of its declared shape (indices for
    embedding inputs); images feed the first input (the others then get the
    first seed's values at batch 1).
    """
    from ..reference import run as reference_run

    seeds = list(seeds)
    if not seeds and not images:
        raise NeuralHashError("nothing to verify on: no seeds and no images")
    cases = random_inputs(model, seeds, batch, max_input_size)
    # Without images too: an image input's transform_params must be real numbers (they are in the metadata).
    prepared = image_inputs(images, model, max_input_size)
    if prepared:
        others = random_inputs(model, seeds[:1] or [0], 1, max_input_size)[0][1]
        for label, x in prepared:
            cases.append((label, {**others, model.inputs[0]: x}))
    if onnx_model is None:
        from . import convert

        onnx_model = convert(model, optimize=optimize)
    session = make_session(onnx_model, providers)
    _check_interface(model, session)
    worst: dict[str, list[float]] = {blob: [0.0, 0.0, 0.0] for blob in model.outputs}  # abs, rel, scale
    report = VerificationReport(atol=atol, inputs=[label for label, _ in cases])
    failing_case = None
    for label, feeds in cases:
        ref = reference_run(model, feeds)
        got = dict(zip(model.outputs, session.run(model.outputs, feeds)))
        for blob in model.outputs:
            diff, rel, scale = _errors(ref[blob], got[blob])
            worst[blob] = [max(worst[blob][0], diff), max(worst[blob][1], rel), max(worst[blob][2], scale)]
            if diff > atol * max(1.0, scale) and failing_case is None:
                failing_case = feeds
    report.outputs = [OutputError(b, w[0], w[1], atol * max(1.0, w[2]), len(cases)) for b, w in worst.items()]
    if failing_case is not None:
        report.divergence = first_divergence(model, onnx_model, failing_case, atol, providers)
    return report


def _check_interface(model: EspressoModel, session: Any) -> None:
    """An ONNX model given with ``--onnx`` must be this model's conversion: its inputs and outputs by
    name, each input of the same size (ONNX Runtime's own complaint was a traceback)."""
    inputs = {i.name: i.shape for i in session.get_inputs()}
    outputs = {o.name for o in session.get_outputs()}
    missing = [b for b in model.outputs if b not in outputs]
    if sorted(inputs) != sorted(model.inputs) or missing:
        raise ConversionError(
            f"the ONNX model is not a conversion of this Espresso model: it takes {sorted(inputs)} and gives "
            f"{sorted(outputs)[:8]}; the Espresso model takes {list(model.inputs)} and gives {list(model.outputs)[:8]}")
    for name in model.inputs:
        shape = model.shapes.get(name)
        if shape is None:
            continue
        got = inputs[name]
        wanted = (list(shape.view), list(shape.onnx_dims))
        if not any(len(got) == 1 + len(want) and all(not isinstance(g, int) or g == w for g, w in zip(got[1:], want))
                   for want in wanted):
            raise ConversionError(f"the ONNX model's input {name!r} is {got}; the Espresso model's is "
                                  f"[batch, {', '.join(map(str, shape.onnx_dims))}]")


def first_divergence(
    model: EspressoModel,
    onnx_model: onnx.ModelProto,
    feeds: Feeds,
    atol: float,
    providers: Sequence[str] | None = None,
) -> Divergence | None:
    """Compare every blob the ONNX graph still has, in layer order; return the first out of tolerance.

    Intermediate blobs are judged relative to their own magnitude
    (``atol * max(1, max|ref|)``), since they are not all of order 1.
    """
    from ..reference import run as reference_run

    ref = reference_run(model, feeds, keep=True)
    produced = {out for node in onnx_model.graph.node for out in node.output}
    exposed = [(layer, top) for layer in model.layers for top in layer.tops
               if top in produced and top not in model.inputs]
    probe = copy.deepcopy(onnx_model)
    existing = {o.name for o in probe.graph.output}
    for _, top in exposed:
        if top not in existing:
            probe.graph.output.append(onnx.helper.make_tensor_value_info(top, onnx.TensorProto.FLOAT, None))
            existing.add(top)
    names = [top for _, top in exposed]
    values = dict(zip(names, make_session(probe, providers).run(names, feeds)))
    for layer, top in exposed:
        diff, _, scale = _errors(ref[top], values[top])
        if diff > atol * max(1.0, scale):
            return Divergence(layer.name, layer.type, top, diff, scale)
    return None
