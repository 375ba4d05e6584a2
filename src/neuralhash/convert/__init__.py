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
