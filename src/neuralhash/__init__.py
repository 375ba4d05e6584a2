"""neuralhash: Apple's NeuralHash as a verified ONNX model, and NeuralHash hashes.

The package follows the data: ``espresso`` reads Apple's files into an
:class:`~neuralhash.espresso.EspressoModel`; ``reference`` executes it with
NumPy; ``convert`` turns it into ONNX; ``verify`` proves the two agree;
``hashing`` projects network outputs to 96-bit hashes.
"""

from .errors import NeuralHashError

__version__ = "0.1.0"

__all__ = ["NeuralHashError", "__version__"]
