"""The handler registry: one small function per Espresso layer type.

A handler is ``fn(ctx, layer) -> None``. It reads its inputs' ONNX value names
and static shapes from the :class:`~neuralhash.convert.context.Context`,
emits nodes and initializers through it, and ends with ``ctx.finish(value,
shape)``, which gives the layer's last value the name of its ``top`` blob.
"""

from __future__ import annotations

from typing import Any, Callable

Handler = Callable[[Any, Any], None]
HANDLERS: dict[str, Handler] = {}


def handler(type_name: str) -> Callable[[Handler], Handler]:
    """Decorator: register ``fn`` as the converter of Espresso layers of ``type_name``."""

    def wrap(fn: Handler) -> Handler:
        if type_name in HANDLERS:
            raise ValueError(f"a converter for layer type {type_name!r} is already registered")
        HANDLERS[type_name] = fn
        return fn

    return wrap
