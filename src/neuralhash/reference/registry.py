"""The handler registry: one function per Espresso layer type.

A handler is ``fn(layer, inputs, model) -> np.ndarray``: ``inputs`` are the
layer's bottom blobs (float64) in ``bottom`` order and the result is its top
blob (a list of them for a layer with several tops). A blob is ``[N, k, h, w]``
when its seq is 1 and ``[N, seq, k, h, w]`` otherwise; only handlers
registered with ``sequences=True`` are given the 5-D form. Handlers raise
:class:`~neuralhash.errors.UnsupportedLayerError` for any field value they do
not implement, through :func:`unsupported`, so the message always names the
layer, its type, the field and the value.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..errors import ShapeMismatchError, UnsupportedLayerError, layer_label, unsupported_value

Handler = Callable[[Any, "list[np.ndarray]", Any], np.ndarray]
HANDLERS: dict[str, Handler] = {}
SEQUENCE_TYPES: set[str] = set()  # types whose handler takes sequence (5-D) blobs


def handler(type_name: str, *, sequences: bool = False) -> Callable[[Handler], Handler]:
    """Decorator: register ``fn`` as the executor of Espresso layers of ``type_name``."""

    def wrap(fn: Handler) -> Handler:
        if type_name in HANDLERS:
            raise ValueError(f"a handler for layer type {type_name!r} is already registered")
        HANDLERS[type_name] = fn
        if sequences:
            SEQUENCE_TYPES.add(type_name)
        return fn

    return wrap




def unsupported(layer: Any, field: str, value: Any, detail: str = "") -> UnsupportedLayerError:
    """The error for a field value the reference does not implement (raise it)."""
    return unsupported_value(layer, field, value, detail)


def mismatch(layer: Any, message: str) -> ShapeMismatchError:
    """The error for inputs whose shapes the layer cannot take (raise it)."""
    return ShapeMismatchError(f"{layer_label(layer)}: {message}")


def expect_inputs(layer: Any, inputs: list[np.ndarray], count: int | tuple[int, int | None], what: str = "") -> None:
    """Check the number of bottoms: exactly ``count``, or within (low, high or None)."""
    low, high = (count, count) if isinstance(count, int) else count
    n = len(inputs)
    if n < low or (high is not None and n > high):
        if isinstance(count, int):
            wanted = str(count)
        elif high is None:
            wanted = f"at least {low}"
        else:
            wanted = f"{low} to {high}"
        prefix = f"{what} " if what else ""
        raise UnsupportedLayerError(
            f"{layer_label(layer)}: {prefix}with {n} input{'s' if n != 1 else ''} is not supported (expects {wanted})"
        )
