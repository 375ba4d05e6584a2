"""What Core ML adds around an Espresso network: image preprocessing and the classifier's answer.

A compiled bundle's network takes pixels already scaled and biased, and a
classifier's network ends at the probabilities; Core ML does the rest:

- an image input (``coremldata.bin``: size and colour space) becomes
  ``pixel * scale + bias`` per channel, the numbers from the graph's
  ``transform_params`` (keyed by the input's name, or ``image``), cross-checked
  with ``model/coremldata.bin`` whose last record for the input is the scale
  (ESPRESSO.md; the other records' meaning is *unverified*, so they are not used);
- a classifier (``coremldata.bin`` with first word 403, or ``metadata.json``'s
  ``classLabels``) answers the label of the largest probability, under the
  description's predicted-feature name, and the probabilities under its
  probabilities name.

:func:`describe` gives both as plain data (the ONNX metadata carries it);
:func:`add_interface` rewrites a converted graph so that it takes the image as
Core ML does (uint8 ``[batch, height, width, channels]``, RGB or grey,
0-255) and outputs the class label (int64 or string ``[batch]``) and the
probabilities (``[batch, classes]``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import ConversionError

BATCH = "batch"


@dataclass(frozen=True)
class ImagePreprocessing:
    """How Core ML turns an image input into the network's input blob."""

    input: str
    width: int
    height: int
    color_space: str  # "grayscale" or "RGB" / "BGR" (the description's)
    scale: float
    biases: tuple[float, ...]  # per channel of the image as given: (grey,) or (red, green, blue)
    network_bgr: bool  # the network takes the channels in blue, green, red order

    @property
    def channels(self) -> int:
        return 1 if self.color_space == "grayscale" else 3


@dataclass(frozen=True)
class Classifier:
    probabilities_blob: str
    labels: tuple[int | str, ...]
    label_type: str  # "Int64" or "String"
    label_output: str
    probabilities_output: str


def _number(where: str, params: dict, key: str, default: float) -> float:
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or \
            abs(value) > float(np.finfo(np.float32).max):
        raise ConversionError(f"{where}: {key!r} should be a finite float32 number, got {value!r}"[:300])
    return float(value)


def image_preprocessing(model: Any) -> list[ImagePreprocessing]:
    """The preprocessing of each image input the bundle declares (ConversionError when it is not evidenced)."""
    bundle = model.bundle_info
    if bundle is None or not bundle.readable:
        return []
    out = []
    for feature in bundle.inputs:
        if feature.kind != "image" or feature.name not in model.inputs:
            continue
        where = f"transform_params of image input {feature.name!r}"
        params = model.transform_params.get(feature.name)
        if not isinstance(params, dict):
            params = model.transform_params.get("image")
        if not isinstance(params, dict):
            raise ConversionError(f"{where}: the graph gives no transform_params for it")
        scale = _number(where, params, "scale", 1.0)
        rgb = tuple(_number(where, params, f"bias_{c}", 0.0) for c in "rgb")
        space = feature.color_space or ""
        if space == "grayscale":
            if len(set(rgb)) != 1:
                raise ConversionError(f"{where}: a grayscale input with biases r, g, b {list(rgb)}: which one "
                                      "Core ML applies to grey is not evidenced (seen only with all equal)")
            biases: tuple[float, ...] = rgb[:1]
        elif space in ("RGB", "BGR"):
            biases = rgb
        else:
            raise ConversionError(f"image input {feature.name!r}: colour space {space!r} is not supported "
                                  "(grayscale, RGB and BGR are)")
        records = [value for name, value in bundle.image_records if name == feature.name]
        if records and np.float32(records[-1]) != np.float32(scale):
            raise ConversionError(f"image input {feature.name!r}: model/coremldata.bin gives the scale "
                                  f"{records[-1]!r}, the graph's transform_params {scale!r}")
        view = model.shapes[feature.name].view if feature.name in model.shapes else None
        channels = 1 if space == "grayscale" else 3
        if view is not None and (view[1], view[2], view[3]) != (channels, feature.height, feature.width):
            raise ConversionError(f"image input {feature.name!r}: {space} {feature.width}x{feature.height} in "
                                  f"coremldata.bin, [k, h, w] {list(view[1:])} in the shape file")
        out.append(ImagePreprocessing(feature.name, int(feature.width), int(feature.height), space, scale, biases,
                                      bool(params.get("is_network_bgr"))))
    return out


def classifier(model: Any) -> Classifier | None:
    """The classifier description, when the bundle has one whose probabilities are a graph output."""
    bundle = model.bundle_info
    if bundle is None or not bundle.readable or not bundle.class_labels or not bundle.predicted_feature:
        return None
    blob = bundle.probabilities_blob or bundle.predicted_probabilities
    if blob not in model.outputs:
        raise ConversionError(f"the classifier's probabilities {blob!r} are not an output of the graph "
                              f"(outputs: {model.outputs})")
    size = int(np.prod(model.shapes[blob].view)) if blob in model.shapes else None
    if size is not None and size != len(bundle.class_labels):
        raise ConversionError(f"the classifier has {len(bundle.class_labels)} class labels, its probabilities "
                              f"{blob!r} have {size} values")
    return Classifier(blob, tuple(bundle.class_labels), bundle.class_label_type or "String",
                      bundle.predicted_feature, bundle.predicted_probabilities or blob)


def describe(model: Any) -> dict[str, Any]:
    """Preprocessing and classifier as JSON-ready data ({} when the bundle describes neither, or not clearly)."""
    try:
        images = image_preprocessing(model)
        found = classifier(model)
    except ConversionError as exc:
        return {"error": str(exc)}
    out: dict[str, Any] = {}
    if images:
        out["image_inputs"] = [asdict(p) for p in images]
    if found is not None:
        out["classifier"] = asdict(found)
    return out


def add_interface(proto: onnx.ModelProto, model: Any) -> None:
    """Rewrite ``proto`` (a conversion of ``model``) to take images and answer as Core ML does."""
    images = image_preprocessing(model)
    found = classifier(model)
    if model.bundle_info is None:
        raise ConversionError("--with-preprocessing: the model has no coremldata.bin (not a compiled bundle): "
                              "nothing says what Core ML adds around this network")
    if not images and found is None:
        raise ConversionError("--with-preprocessing: the bundle's coremldata.bin describes no image input and no "
                              "classifier: there is nothing Core ML adds around this network")
    graph = proto.graph
    taken = {v for node in graph.node for v in (*node.input, *node.output)} | \
        {i.name for i in graph.input} | {t.name for t in graph.initializer}
    front: list[onnx.NodeProto] = []

    def fresh(base: str) -> str:
        name, i = base, 1
        while name in taken:
            name, i = f"{base}_{i}", i + 1
        taken.add(name)
        return name

    def const(array: np.ndarray, base: str) -> str:
        name = fresh(base)
        graph.initializer.append(numpy_helper.from_array(array, name))
        return name

    def node(nodes: list, op: str, inputs: list[str], base: str, **attrs: Any) -> str:
        out = fresh(base)
        nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    for prep in images:
        old = next(i for i in graph.input if i.name == prep.input)
        dims = [d.dim_value for d in old.type.tensor_type.shape.dim[1:]]
        inner = fresh(f"{prep.input}/network_input")
        for n in graph.node:
            for i, name in enumerate(n.input):
                if name == prep.input:
                    n.input[i] = inner
        x = node(front, "Cast", [prep.input], f"{prep.input}/pixels", to=TensorProto.FLOAT)
        x = node(front, "Transpose", [x], f"{prep.input}/nchw", perm=[0, 3, 1, 2])
        x = node(front, "Mul", [x, const(np.array(prep.scale, np.float32), f"{prep.input}/scale")],
                 f"{prep.input}/scaled")
        bias = np.array(prep.biases, np.float32).reshape(1, -1, 1, 1)
        x = node(front, "Add", [x, const(bias, f"{prep.input}/bias")], f"{prep.input}/biased")
        if prep.network_bgr and prep.channels == 3:
            x = node(front, "Gather", [x, const(np.array([2, 1, 0], np.int64), f"{prep.input}/bgr")],
                     f"{prep.input}/bgr_order", axis=1)
        front.append(helper.make_node("Reshape", [x, const(np.array([0, *dims], np.int64), f"{prep.input}/dims")],
                                      [inner], name=inner))
        old.CopyFrom(helper.make_tensor_value_info(prep.input, TensorProto.UINT8,
                                                   [BATCH, prep.height, prep.width, prep.channels]))
    back: list[onnx.NodeProto] = []
    if found is not None:
        probs = next(o for o in graph.output if o.name == found.probabilities_blob)
        raw = fresh(f"{found.probabilities_blob}/network")
        for n in graph.node:
            if n.name == found.probabilities_blob:
                n.name = raw
            for seq in (n.input, n.output):
                for i, name in enumerate(seq):
                    if name == found.probabilities_blob:
                        seq[i] = raw
        taken.discard(found.probabilities_blob)
        flat = fresh(found.probabilities_output) if found.probabilities_output != found.probabilities_blob else \
            found.probabilities_blob
        taken.add(flat)
        back.append(helper.make_node("Flatten", [raw], [flat], name=flat, axis=1))
        best = node(back, "ArgMax", [flat], "classifier/argmax", axis=1, keepdims=0)
        if found.label_type == "Int64":
            labels = numpy_helper.from_array(np.array(found.labels, np.int64), fresh("classifier/labels"))
            label_type = TensorProto.INT64
        else:
            labels = helper.make_tensor(fresh("classifier/labels"), TensorProto.STRING, [len(found.labels)],
                                        [str(v).encode() for v in found.labels])
            label_type = TensorProto.STRING
        graph.initializer.append(labels)
        label = found.label_output
        if label in taken:
            raise ConversionError(f"the classifier's label output {label!r} is already a name in the graph")
        back.append(helper.make_node("Gather", [labels.name, best], [label], name=label, axis=0))
        batch = probs.type.tensor_type.shape.dim[0]
        batch_dim = batch.dim_param or batch.dim_value
        new_outputs = []
        for o in graph.output:
            if o.name == found.probabilities_blob:
                new_outputs.append(helper.make_tensor_value_info(label, label_type, [batch_dim]))
                new_outputs.append(helper.make_tensor_value_info(flat, TensorProto.FLOAT,
                                                                 [batch_dim, len(found.labels)]))
            else:
                new_outputs.append(o)
        del graph.output[:]
        graph.output.extend(new_outputs)
    nodes = [*front, *graph.node, *back]
    del graph.node[:]
    graph.node.extend(nodes)
