"""Write Espresso files: the counterpart of the reader, used to build test and demo models.

The graph and shape files are written compressed (``pbze`` + LZFSE, as Apple
ships them) or as plain JSON; the weights file in the blob-table layout.
Each file is written to a temporary name and renamed, so a failure never
leaves a half-written file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..files.fileio import atomic_write
from .container import encode_container
from .model import NET_SUFFIX, SHAPE_SUFFIX, WEIGHTS_SUFFIX, BlobShape, ModelSources, shapes_document
from .weights import encode_weights


def graph_document(
    layers: Sequence[Mapping[str, Any]],
    *,
    storage: str,
    transform_params: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The top-level ``.espresso.net`` object around ``layers``."""
    return {
        "storage": storage,
        "analyses": {},
        "properties": {},
        "format_version": 200,
        "layers": [dict(layer) for layer in layers],
        "transform_params": dict(transform_params or {}),
    }


def write_espresso(
    folder: str | os.PathLike,
    prefix: str,
    *,
    layers: Sequence[Mapping[str, Any]],
    shapes: Mapping[str, BlobShape | tuple[int, int, int, int]],
    blobs: Mapping[int, np.ndarray | bytes] | None,
    transform_params: Mapping[str, Any] | None = None,
    compressed: bool = True,
    empty_ids: tuple[int, ...] = (),
) -> ModelSources:
    """Write ``<prefix>.espresso.{net,shape,weights}`` into ``folder``; return their paths.

    ``blobs`` None writes no weights file. JSON is written with sorted keys so
    the same model always gives the same bytes.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    net = folder / (prefix + NET_SUFFIX)
    shape = folder / (prefix + SHAPE_SUFFIX)
    weights = folder / (prefix + WEIGHTS_SUFFIX)
    graph = graph_document(layers, storage=weights.name, transform_params=transform_params)
    for path, doc in ((net, graph), (shape, shapes_document(shapes))):
        text = json.dumps(doc, indent=2, sort_keys=True).encode()
        atomic_write(path, encode_container(text) if compressed else text)
    if blobs is not None:
        atomic_write(weights, encode_weights(blobs, empty_ids=empty_ids))
    return ModelSources(net=net, shape=shape, weights=weights if blobs is not None else None)
