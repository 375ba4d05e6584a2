"""Run an EspressoModel layer by layer with the registered NumPy handlers."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..errors import NeuralHashError, ShapeMismatchError, UnsupportedLayerError, layer_label
from . import handlers as _handlers  # noqa: F401  (registers the handlers)
from .registry import HANDLERS


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
        if x.ndim != 4 or not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise NeuralHashError(
                f"feed {name!r} should be a real [N, k, h, w] array, got {x.dtype} of shape {list(x.shape)}"
            )
        out[name] = x.astype(np.float64)
    return out


def run(
    model: Any,
    feeds: Mapping[str, np.ndarray] | np.ndarray,
    *,
    keep: bool = False,
) -> dict[str, np.ndarray]:
    """Execute ``model`` on ``feeds`` (input blob name -> float [N, k, h, w]; a bare array feeds the single input).

    Returns ``{output blob: float32 array}`` for ``model.outputs``, or with
    ``keep=True`` every blob (the inputs, then every layer's top in layer
    order). Computation is float64 throughout. ``load_constant`` blobs have
    batch 1 and broadcast against the others.
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
            try:
                y = fn(layer, args, model)
            except ValueError as exc:  # a NumPy shape error a handler did not foresee
                shapes = ", ".join(str(list(a.shape)) for a in args)
                raise ShapeMismatchError(f"{layer_label(layer)}: cannot run on inputs of shapes {shapes} ({exc})") from exc
            y = np.asarray(y, dtype=np.float64)
            if y.ndim != 4:
                raise ShapeMismatchError(f"{layer_label(layer)}: produced a rank-{y.ndim} blob {list(y.shape)}")
            values[layer.top] = y
            if keep:
                kept[layer.top] = y.astype(np.float32)
            for blob in layer.bottoms:  # free what no later layer reads
                if last_use.get(blob) == index and blob not in outputs and blob != layer.top:
                    values.pop(blob, None)
    if keep:
        return kept
    return {name: values[name].astype(np.float32) for name in model.outputs}


def check_shapes(model: Any, blobs: Mapping[str, np.ndarray]) -> None:
    """Raise ShapeMismatchError at the first blob whose [k, h, w] differs from the shape file.

    Blobs the shape file does not list are skipped.
    """
    producer = {layer.top: layer for layer in model.layers}
    for blob, value in blobs.items():
        expected = model.shapes.get(blob)
        if expected is None:
            continue
        got = tuple(value.shape[1:])
        if got != (expected.k, expected.h, expected.w):
            layer = producer.get(blob)
            who = layer_label(layer) if layer is not None else f"input {blob!r}"
            raise ShapeMismatchError(
                f"{who}: blob {blob!r} is [k, h, w] {list(got)}, the shape file says "
                f"{[expected.k, expected.h, expected.w]}"
            )
