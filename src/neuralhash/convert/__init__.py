"""Espresso -> ONNX conversion.

``convert(model, *, optimize=True, hash_head=None, check_shapes=True)`` builds
an ``onnx.ModelProto`` (opset 17, IR 8, symbolic batch named ``batch``);
``save_model(proto, path)`` writes it deterministically and atomically.
``HANDLERS`` maps each supported Espresso layer type to its converter,
registered with ``@handler("type")``. ``unsupported_layers(model)`` lists every
layer that cannot be converted (name -> reason) without converting.
"""

from .converter import BATCH, HASH_BITS, HASH_PROJECTION, IR_VERSION, OPSET, convert, save_model, unsupported_layers
from .handlers import ACTIVATION_MODES, ELEMENTWISE_OPERATIONS
from .registry import HANDLERS, handler

__all__ = [
    "ACTIVATION_MODES",
    "BATCH",
    "ELEMENTWISE_OPERATIONS",
    "HANDLERS",
    "HASH_BITS",
    "HASH_PROJECTION",
    "IR_VERSION",
    "OPSET",
    "convert",
    "handler",
    "save_model",
    "unsupported_layers",
]


# `from neuralhash import convert` must give something callable, but the import system
# binds this subpackage over that name in `neuralhash` as soon as it is imported: so the
# package itself is callable, as the function (neuralhash.convert(model) == convert(model)).
import inspect as _inspect
import sys as _sys
import types as _types


class _CallableModule(_types.ModuleType):
    def __call__(self, *args, **kwargs):
        return convert(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallableModule
__signature__ = _inspect.signature(convert)
