"""Reading and writing Apple's Espresso model files."""

from .bundle import Stage, pipeline_stages
from .container import decode_container, encode_container
from .coremldata import BundleInfo, FeatureInfo, read_coremldata
from .layers import LAYER_TYPES, BlobRef, Layer
from .model import BlobShape, EspressoModel, ModelSources, load_model, locate, read_json_file
from .weights import WeightsFile, encode_weights
from .writer import write_espresso

__all__ = [
    "LAYER_TYPES",
    "BlobRef",
    "BlobShape",
    "BundleInfo",
    "FeatureInfo",
    "Stage",
    "pipeline_stages",
    "read_coremldata",
    "EspressoModel",
    "Layer",
    "ModelSources",
    "WeightsFile",
    "decode_container",
    "encode_container",
    "encode_weights",
    "load_model",
    "locate",
    "read_json_file",
    "write_espresso",
]
