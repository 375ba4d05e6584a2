"""The project's single exception hierarchy.

Every error the library raises on bad input is a :class:`NeuralHashError`, so a
caller (and the CLI) can catch one type and show its message. Messages name
the file, layer or field at fault.
"""

from __future__ import annotations


class NeuralHashError(Exception):
    """Base class of every error raised by this package on bad input."""


class EspressoError(NeuralHashError):
    """An Espresso file (graph, shape or weights) is malformed or inconsistent."""


class ContainerError(EspressoError):
    """A compressed JSON container (``pbze`` header + LZFSE) is malformed."""


class WeightsError(EspressoError):
    """The weights file is malformed, or a blob does not fit the layer using it."""


class GraphError(EspressoError):
    """The graph JSON is malformed: a missing field, a dangling ``bottom``..."""


class BundleError(EspressoError):
    """A compiled Core ML bundle that is not one Espresso model, or whose description cannot be read."""


class MLProgramError(BundleError):
    """The folder is an ML Program bundle (``model.mil``), not an Espresso model."""


class PipelineError(BundleError):
    """The folder is a pipeline bundle: one model per stage (``.stages``), addressed stage by stage."""

    def __init__(self, message: str, path=None, stages: tuple = ()):
        super().__init__(message)
        self.path = path
        self.stages = stages


class CoreMLDataError(BundleError):
    """A ``coremldata.bin`` that the reader cannot interpret."""


class ConversionError(NeuralHashError):
    """The model cannot be converted to ONNX."""


class UnsupportedLayerError(ConversionError):
    """A layer type, operation code or parameter value is not handled."""


class ShapeMismatchError(ConversionError):
    """An inferred blob shape disagrees with the ``.shape`` file."""


class ProviderError(NeuralHashError):
    """An onnxruntime execution provider that was asked for is not installed."""


class SeedError(NeuralHashError):
    """A NeuralHash seed (projection) file is malformed."""


def layer_label(layer) -> str:
    """How every message names a layer: ``layer 'name' (type)``."""
    return f"layer {layer.name!r} ({layer.type})"


def unsupported_value(layer, field: str, value, detail: str = "") -> UnsupportedLayerError:
    """The error for a layer field value that is not handled (raise it)."""
    extra = f" ({detail})" if detail else ""
    return UnsupportedLayerError(f"{layer_label(layer)}: {field} {value!r} is not supported{extra}")


def install_hint(extra: str) -> str:
    """How to install an optional extra. The distribution is not on the package index, so by name
    it cannot be installed: from a checkout of the repository, or from a wheel built there."""
    return f"pip install '.[{extra}]' in a checkout of neuralhash (or 'WHEEL[{extra}]' for a wheel built from it)"


class ImageError(NeuralHashError):
    """An image cannot be read: missing, not an image, truncated, corrupt, too large..."""


class ModelNotFoundError(NeuralHashError):
    """No NeuralHash model was found where one was looked for."""


class FirmwareError(NeuralHashError):
    """Apple firmware (an IPSW, a UDIF .dmg, an APFS or GPT image) that cannot be read, or is refused."""
