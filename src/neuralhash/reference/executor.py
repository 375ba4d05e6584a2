"""Run an EspressoModel layer by layer with the registered NumPy handlers.

Blobs are float64 ``[N, k, h, w]`` when their seq is 1 and ``[N, seq, k, h, w]``
otherwise (the batch first, each image on its own). Inputs are fed and outputs
returned in their real rank, ``[N, *BlobShape.onnx_dims]``, as in the ONNX graph.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..errors import NeuralHashError, ShapeMismatchError, UnsupportedLayerError, layer_label
from . import handlers as _handlers  # noqa: F401  (registers the handlers)
from .registry import HANDLERS, SEQUENCE_TYPES


def _internal(view) -> tuple[int, ...]:
    return tuple(view) if view[0] != 1 else tuple(view[1:])


def _to_internal(model: Any, blob: str, x: np.ndarray) -> np.ndarray:
    """A fed input in its real rank -> the executor's layout (from the shape file).

    A 4-D feed is taken as it is (its layers check it); another rank must be
    the input's real rank.
    """
    shape = model.shapes.get(blob)
    if x.ndim == 4 and (shape is None or shape.seq == 1):
        return x
    if shape is not None and x.shape[1:] == shape.onnx_dims:
        return x.reshape((x.shape[0],) + _internal(shape.view))
    want = f"[N, {', '.join(map(str, shape.onnx_dims))}]" if shape is not None else "[N, k, h, w]"
    raise NeuralHashError(f"feed {blob!r} should be a real {want} array ([N, k, h, w] for images), "
                          f"got shape {list(x.shape)}")


def _to_boundary(model: Any, blob: str, y: np.ndarray) -> np.ndarray:
    """An output in the executor's layout -> its real rank (as the ONNX graph gives it)."""
    shape = model.shapes.get(blob)
    if shape is None or y.shape[1:] != _internal(shape.view):
        return y
    return y.reshape((y.shape[0],) + shape.onnx_dims)


def _feeds(model: Any, feeds: Mapping[str, np.ndarray] | np.ndarray) -> dict[str, np.ndarray]:
    if isinstance(feeds, np.ndarray):
        if len(model.inputs) != 1:
            raise NeuralHashError(f"the model has {len(model.inputs)} inputs {model.inputs}; pass a dict of feeds")
        feeds = {model.inputs[0]: feeds}
    if not isinstance(feeds, Mapping):
        raise NeuralHashError(f"feeds should be an array or a dict of input name -> array, got {type(feeds).__name__}")
    unknown = [name for name in feeds if name not in model.inputs]
    if unknown:
        raise NeuralHashError(f"feed {unknown[0]!r} is not a model input (inputs: {model.inputs})")
    out = {}
    for name in model.inputs:
        if name not in feeds:
            raise NeuralHashError(f"no feed for the model input {name!r}")
        x = np.asarray(feeds[name])
        if x.ndim < 1 or not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise NeuralHashError(
                f"feed {name!r} should be a real [N, k, h, w] array, got {x.dtype} of shape {list(x.shape)}"
            )
        out[name] = _to_internal(model, name, x).astype(np.float64)
    return out


def run(
    model: Any,
    feeds: Mapping[str, np.ndarray] | np.ndarray,
    *,
    keep: bool = False,
) -> dict[str, np.ndarray]:
    """Execute ``model`` on ``feeds`` (input blob name -> float array; a bare array feeds the single input).

    A feed is ``[N, *onnx_dims]`` of its shape entry (``[N, k, h, w]`` for
    image inputs). Returns ``{output blob: float32 array}`` for
    ``model.outputs`` in their real rank, or with ``keep=True`` every blob
    (the inputs, then every layer's tops in layer order; outputs in their real
    rank, the others in the executor's layout). Computation is float64
    throughout. ``load_constant`` blobs have batch 1 and broadcast against the
    others.
    """
    values: dict[str, np.ndarray] = _feeds(model, feeds)
    kept: dict[str, np.ndarray] = {name: v.astype(np.float32) for name, v in values.items()} if keep else {}
    inputs_fed = dict(values)
    last_use: dict[str, int] = {}
    for index, layer in enumerate(model.layers):
        for blob in layer.bottoms:
            last_use[blob] = index
    outputs = set(model.outputs)

    with np.errstate(all="ignore"):  # inf / nan travel to the caller, who checks finiteness
        for index, layer in enumerate(model.layers):
            fn = HANDLERS.get(layer.type)
            if fn is None:
                raise UnsupportedLayerError(f"{layer_label(layer)}: layer type {layer.type!r} is not supported")
            if layer.type == "input":
                args = [inputs_fed[layer.top]]
            else:
                args = [values[blob] for blob in layer.bottoms]
            if layer.type not in SEQUENCE_TYPES:
                for a in args:
                    if a.ndim == 5:
                        raise UnsupportedLayerError(
                            f"{layer_label(layer)}: a {layer.type} layer on a sequence blob (seq {a.shape[1]}) "
                            f"is not supported"
                        )
            try:
                result = fn(layer, args, model)
            except ValueError as exc:  # a NumPy shape error a handler did not foresee
                shapes = ", ".join(str(list(a.shape)) for a in args)
                raise ShapeMismatchError(f"{layer_label(layer)}: cannot run on inputs of shapes {shapes} ({exc})") from exc
            results = result if isinstance(result, list) else [result]
            for top, y in zip(layer.tops, results):
                y = np.asarray(y, dtype=np.float64)
                if y.ndim == 5 and y.shape[1] == 1:
                    y = y[:, 0]  # seq 1: the 4-D form
                if y.ndim not in (4, 5):
                    raise ShapeMismatchError(f"{layer_label(layer)}: produced a rank-{y.ndim} blob {list(y.shape)}")
                values[top] = y
                if keep:
                    kept[top] = (_to_boundary(model, top, y) if top in outputs else y).astype(np.float32)
            for blob in layer.bottoms:  # free what no later layer reads
                if last_use.get(blob) == index and blob not in outputs and blob not in layer.tops:
                    values.pop(blob, None)
    if keep:
        return kept
    return {name: _to_boundary(model, name, values[name]).astype(np.float32) for name in model.outputs}


def check_shapes(model: Any, blobs: Mapping[str, np.ndarray]) -> None:
    """Raise ShapeMismatchError at the first blob whose shape differs from the shape file.

    A blob is compared in the executor's layout ((seq,) k, h, w after the
    batch); inputs and outputs may also be in their real rank. Blobs the shape
    file does not list are skipped.
    """
    producer = {top: layer for layer in model.layers for top in layer.tops}
    boundary = set(model.inputs) | set(model.outputs)
    for blob, value in blobs.items():
        expected = model.shapes.get(blob)
        if expected is None:
            continue
        got = tuple(value.shape[1:])
        wanted = [_internal(expected.view)]
        if blob in boundary:
            wanted.append(expected.onnx_dims)
        if got not in wanted:
            layer = producer.get(blob)
            who = layer_label(layer) if layer is not None else f"input {blob!r}"
            raise ShapeMismatchError(
                f"{who}: blob {blob!r} is {list(got)} (after the batch), the shape file says {list(wanted[-1])}"
            )
