"""The independent NumPy reference executor of Espresso semantics.

It runs an :class:`~neuralhash.espresso.EspressoModel` directly from its
layers and weights, in float64, with no ONNX involved, so it can check the
ONNX converter. ``run(model, feeds, keep=False)`` executes; ``HANDLERS`` maps
each supported Espresso layer type to its function, registered with
``@handler("type")``.
"""

from .executor import check_shapes, run
from .handlers import ACTIVATION_MODES, ELEMENTWISE_OPERATIONS
from .registry import HANDLERS, handler

__all__ = ["ACTIVATION_MODES", "ELEMENTWISE_OPERATIONS", "HANDLERS", "check_shapes", "handler", "run"]
