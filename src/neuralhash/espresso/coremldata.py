"""``coremldata.bin``: the model description inside a compiled ``.mlmodelc`` bundle.

No public document describes this file. What three real files
(``fixtures/coreml-wild``) show, and what this reader relies on (*unverified*
beyond them; anything else is reported as unreadable, never guessed at):

====== ================================================================
offset content
====== ================================================================
0      little-endian u32 500 (403 in a classifier's)
28     u64 length L, then L bytes of ASCII: the model kind (``generic``)
36+L   four u64 words of unknown meaning, then a u64 length D
68+L   D bytes: a protobuf ``CoreML.Specification.ModelDescription``
       (Core ML's public ``Model.proto``): inputs, outputs and their
       types (image size and colour space, array shape and type), the
       predicted feature names, metadata (author, licence, user keys)
then   optionally u64 500, u64 count, count x (u64 length, bytes): the
       output names again
====== ================================================================

A classifier's file (first word 403, MNISTClassifier) has the same head;
after the description come u64 403, u64 101, u64 count, count x int64:
the class labels (metadata.json lists the same ten, 0-9, with
``classLabel`` of type Int64), then (u64 length, bytes): the Espresso blob
holding the probabilities, then u64 count and the output names as above.
Code 101 is read as "Int64 labels"; no file with String labels in this
place was seen, so any other code leaves the labels to ``metadata.json``
(``classLabels``), and says so in ``labels_note``.

Two more files sit beside it in newer bundles: ``metadata.json`` (plain
JSON: input and output schema, class labels, ``modelType``, author,
licence), read into ``metadata_json``; and ``model/coremldata.bin``, a list
of records (u64 1, u64 length, the input's name, float32), eight for a
grayscale image input, the last the image scale (1/255 in MNISTClassifier,
equal to the graph's ``transform_params`` scale), read into
``image_records``: which bias each of the other records is, is
*unverified* (they are 1, 0, 1, 0, 0, 0, 0 there).

The description is parsed with the protobuf runtime against the subset of
Core ML's schema declared below (field numbers from Apple's public
``FeatureTypes.proto`` / ``Model.proto``); unknown fields are skipped.
"""

from __future__ import annotations

import os
import struct
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import CoreMLDataError

FILENAME = "coremldata.bin"
MAX_SIZE = 16 * 1024 * 1024  # a description with thousands of labels is far below this
_TAG = 500
_CLASSIFIER_TAG = 403
# The first word is the number of the Core ML model type in Model.proto's oneof (500 neuralNetwork, 403
# neuralNetworkClassifier, 400 glmClassifier, 603 dictVectorizer... as every file seen bears out).
MODEL_TYPES = {
    200: "pipelineClassifier", 201: "pipelineRegressor", 202: "pipeline", 300: "glmRegressor",
    301: "supportVectorRegressor", 302: "treeEnsembleRegressor", 303: "neuralNetworkRegressor",
    304: "bayesianProbitRegressor", 400: "glmClassifier", 401: "supportVectorClassifier",
    402: "treeEnsembleClassifier", 403: "neuralNetworkClassifier", 404: "kNearestNeighborsClassifier",
    500: "neuralNetwork", 501: "itemSimilarityRecommender", 555: "customModel", 556: "linkedModel",
    600: "oneHotEncoder", 601: "imputer", 602: "featureVectorizer", 603: "dictVectorizer", 604: "scaler",
    606: "categoricalMapping", 607: "normalizer", 609: "arrayFeatureExtractor", 610: "nonMaximumSuppression",
    900: "identity", 2000: "textClassifier", 2001: "wordTagger", 2002: "visionFeaturePrint",
    2003: "soundAnalysisPreprocessing", 2004: "gazetteer", 2005: "wordEmbedding", 3000: "serializedModel",
}
_SPEC_KIND = b"spec"  # a stage whose description is followed by its whole Core ML specification
_INT64_LABELS = 101
METADATA_JSON = "metadata.json"
IMAGE_RECORDS = "model/coremldata.bin"
_KIND_AT = 28
_MAX_KIND = 256

_COLOR_SPACES = {0: "invalid", 10: "grayscale", 20: "RGB", 30: "BGR", 40: "grayscale float16"}
_ARRAY_TYPES = {0: "invalid", 65568: "float32", 65600: "double", 131104: "int32", 131080: "int8", 65552: "float16"}


@dataclass(frozen=True)
class FeatureInfo:
    """One input or output as the bundle describes it."""

    name: str
    kind: str  # image, multiArray, double, int64, string, dictionary, sequence, state, or unknown
    description: str = ""
    optional: bool = False
    width: int | None = None  # image
    height: int | None = None
    color_space: str | None = None
    shape: tuple[int, ...] = ()  # multiArray (may be empty: flexible)
    data_type: str | None = None


@dataclass(frozen=True)
class BundleInfo:
    """What a bundle's ``coremldata.bin`` says; ``error`` is set (and the rest empty) when it cannot be read."""

    path: Path
    model_type: int | None = None  # the first word: Core ML's model type number (MODEL_TYPES)
    model_kind: str = ""
    inputs: tuple[FeatureInfo, ...] = ()
    outputs: tuple[FeatureInfo, ...] = ()
    predicted_feature: str | None = None
    predicted_probabilities: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    output_names: tuple[str, ...] = ()
    class_labels: tuple[int | str, ...] = ()
    class_label_type: str | None = None  # "Int64" or "String"
    probabilities_blob: str | None = None  # the Espresso blob a classifier's probabilities come from
    labels_note: str | None = None  # why labels could not be read, when a classifier's could not
    metadata_json: dict[str, Any] = field(default_factory=dict)
    image_records: tuple[tuple[str, float], ...] = ()
    error: str | None = None

    @property
    def readable(self) -> bool:
        return self.error is None

    @property
    def model_type_name(self) -> str | None:
        if self.model_type is None:
            return None
        return MODEL_TYPES.get(self.model_type, f"model type {self.model_type}")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the ONNX metadata's ``neuralhash.coreml_description``)."""
        out = asdict(self)
        del out["path"]  # where the user keeps the bundle is no part of the model
        for key in ("inputs", "outputs"):
            out[key] = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in f.items() if v not in (None, (), "")}
                        for f in out[key]]
        out["output_names"] = list(self.output_names)
        out["class_labels"] = list(self.class_labels)
        out["image_records"] = [list(r) for r in self.image_records]
        return {k: v for k, v in out.items() if v not in (None, (), "", [], {})}


@lru_cache(maxsize=1)
def _description_class():
    """The protobuf class of Core ML's ModelDescription, declared from the public schema's field numbers."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="neuralhash_coreml_subset.proto", package="nhcoreml", syntax="proto3")

    def message(name, *fields):
        m = fdp.message_type.add(name=name)
        for fname, number, ftype, label, type_name in fields:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = f".nhcoreml.{type_name}"
        return m

    opt, rep = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    message("Empty")
    message("ImageType", ("width", 1, F.TYPE_INT64, opt, None), ("height", 2, F.TYPE_INT64, opt, None),
            ("colorSpace", 3, F.TYPE_INT32, opt, None))
    message("ArrayType", ("shape", 1, F.TYPE_INT64, rep, None), ("dataType", 2, F.TYPE_INT32, opt, None))
    message("FeatureType",
            ("int64Type", 1, F.TYPE_MESSAGE, opt, "Empty"), ("doubleType", 2, F.TYPE_MESSAGE, opt, "Empty"),
            ("stringType", 3, F.TYPE_MESSAGE, opt, "Empty"), ("imageType", 4, F.TYPE_MESSAGE, opt, "ImageType"),
            ("multiArrayType", 5, F.TYPE_MESSAGE, opt, "ArrayType"),
            ("dictionaryType", 6, F.TYPE_MESSAGE, opt, "Empty"), ("sequenceType", 7, F.TYPE_MESSAGE, opt, "Empty"),
            ("stateType", 8, F.TYPE_MESSAGE, opt, "Empty"), ("isOptional", 1000, F.TYPE_BOOL, opt, None))
    message("FeatureDescription", ("name", 1, F.TYPE_STRING, opt, None),
            ("shortDescription", 2, F.TYPE_STRING, opt, None), ("type", 3, F.TYPE_MESSAGE, opt, "FeatureType"))
    entry = message("Metadata")
    kv = entry.nested_type.add(name="UserDefinedEntry")
    kv.options.map_entry = True
    kv.field.add(name="key", number=1, type=F.TYPE_STRING, label=opt)
    kv.field.add(name="value", number=2, type=F.TYPE_STRING, label=opt)
    for fname, number in (("shortDescription", 1), ("versionString", 2), ("author", 3), ("license", 4)):
        entry.field.add(name=fname, number=number, type=F.TYPE_STRING, label=opt)
    entry.field.add(name="userDefined", number=100, type=F.TYPE_MESSAGE, label=rep,
                    type_name=".nhcoreml.Metadata.UserDefinedEntry")
    message("ModelDescription", ("input", 1, F.TYPE_MESSAGE, rep, "FeatureDescription"),
            ("output", 10, F.TYPE_MESSAGE, rep, "FeatureDescription"),
            ("predictedFeatureName", 11, F.TYPE_STRING, opt, None),
            ("predictedProbabilitiesName", 12, F.TYPE_STRING, opt, None),
            ("metadata", 100, F.TYPE_MESSAGE, opt, "Metadata"))
    message("ModelHead", ("specificationVersion", 1, F.TYPE_INT32, opt, None),
            ("description", 2, F.TYPE_MESSAGE, opt, "ModelDescription"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return (message_factory.GetMessageClass(pool.FindMessageTypeByName("nhcoreml.ModelDescription")),
            message_factory.GetMessageClass(pool.FindMessageTypeByName("nhcoreml.ModelHead")))


def _feature(msg) -> FeatureInfo:
    # The schema's oneof is declared here as plain fields: the one that is set names the kind.
    kinds = [f.name for f, _ in msg.type.ListFields() if f.name != "isOptional"]
    kind = kinds[0] if kinds else None
    common = dict(name=msg.name, description=msg.shortDescription, optional=msg.type.isOptional)
    if kind == "imageType":
        t = msg.type.imageType
        return FeatureInfo(kind="image", width=t.width, height=t.height,
                           color_space=_COLOR_SPACES.get(t.colorSpace, f"code {t.colorSpace}"), **common)
    if kind == "multiArrayType":
        t = msg.type.multiArrayType
        return FeatureInfo(kind="multiArray", shape=tuple(t.shape),
                           data_type=_ARRAY_TYPES.get(t.dataType, f"code {t.dataType}"), **common)
    return FeatureInfo(kind=(kind or "unknown").removesuffix("Type"), **common)


def parse_coremldata(data: bytes, *, source: str = FILENAME) -> BundleInfo:
    """Interpret the bytes of a ``coremldata.bin`` (see the module docstring); CoreMLDataError otherwise."""
    from google.protobuf.message import DecodeError

    path = Path(source)
    size = len(data)

    def u64(at: int, what: str) -> int:
        if at + 8 > size:
            raise CoreMLDataError(f"{source}: ends at byte {size}, before the {what} at byte {at}")
        return struct.unpack_from("<Q", data, at)[0]

    first = struct.unpack_from("<I", data, 0)[0] if size >= 4 else None
    if first not in MODEL_TYPES:
        raise CoreMLDataError(f"{source}: layout not recognised (first word {first}, not a Core ML model type "
                              "number): this reader knows only the layout of the files it was checked on")
    kind_len = u64(_KIND_AT, "model kind length")
    start = _KIND_AT + 8
    if kind_len > _MAX_KIND or start + kind_len > size:
        raise CoreMLDataError(f"{source}: model kind length {kind_len} does not fit the file ({size} bytes)")
    kind_bytes = data[start:start + kind_len]
    if not kind_bytes.isascii() or not kind_bytes.decode("ascii").isprintable():
        raise CoreMLDataError(f"{source}: the model kind at byte {start} is not printable text")
    desc_at = start + kind_len + 4 * 8
    description_class, head_class = _description_class()
    if kind_bytes == _SPEC_KIND:  # the stage's whole Core ML specification, to the end of the file
        body, desc_len = desc_at, size - desc_at
        head = head_class()
        try:
            head.ParseFromString(bytes(data[body:]))
        except (DecodeError, RecursionError, ValueError) as exc:
            raise CoreMLDataError(f"{source}: the specification does not parse as protobuf ({exc})") from None
        message = head.description
    else:
        desc_len = u64(desc_at, "description length")
        body = desc_at + 8
        if desc_len > size - body:
            raise CoreMLDataError(f"{source}: description of {desc_len} bytes at byte {body} runs past the end ({size} bytes)")
        message = description_class()
        try:
            message.ParseFromString(bytes(data[body:body + desc_len]))
        except (DecodeError, RecursionError, ValueError) as exc:
            raise CoreMLDataError(f"{source}: the model description does not parse as protobuf ({exc})") from None
    if not message.input and not message.output:
        raise CoreMLDataError(f"{source}: the model description names no input and no output")
    metadata: dict[str, Any] = {}
    if message.HasField("metadata"):
        m = message.metadata
        for key, value in (("short_description", m.shortDescription), ("version", m.versionString),
                           ("author", m.author), ("license", m.license)):
            if value:
                metadata[key] = value
        if m.userDefined:
            metadata["user_defined"] = dict(sorted(m.userDefined.items()))
    if kind_bytes == _SPEC_KIND or first not in (_TAG, _CLASSIFIER_TAG):
        tail: dict[str, Any] = {}
    elif first == _CLASSIFIER_TAG:
        tail = _classifier_tail(data, body + desc_len, source)
    else:
        tail = {"output_names": _tail_names(data, body + desc_len)}
    return BundleInfo(
        path=path,
        model_type=first,
        model_kind=kind_bytes.decode("ascii"),
        inputs=tuple(_feature(f) for f in message.input),
        outputs=tuple(_feature(f) for f in message.output),
        predicted_feature=message.predictedFeatureName or None,
        predicted_probabilities=message.predictedProbabilitiesName or None,
        metadata=metadata,
        **tail,
    )


def _classifier_tail(data: bytes, at: int, source: str) -> dict[str, Any]:
    """A classifier's labels, probability blob and output names (see the module docstring)."""
    size = len(data)

    def u64(pos: int, what: str) -> int:
        if pos + 8 > size:
            raise CoreMLDataError(f"{source}: ends at byte {size}, before the classifier's {what} at byte {pos}")
        return struct.unpack_from("<Q", data, pos)[0]

    if u64(at, "tag") != _CLASSIFIER_TAG:
        raise CoreMLDataError(f"{source}: no classifier record ({_CLASSIFIER_TAG}) after the description at byte {at}")
    code = u64(at + 8, "label encoding")
    if code != _INT64_LABELS:
        return {"labels_note": f"class labels of encoding {code} are not read (only {_INT64_LABELS}, Int64, was seen)"}
    count = u64(at + 16, "label count")
    pos = at + 24
    if count > (size - pos) // 8:
        raise CoreMLDataError(f"{source}: {count} class labels at byte {pos} run past the end ({size} bytes)")
    labels = struct.unpack_from(f"<{count}q", data, pos)
    pos += 8 * count
    length = u64(pos, "probability blob name length")
    if length > size - pos - 8:
        raise CoreMLDataError(f"{source}: the probability blob name at byte {pos + 8} runs past the end")
    blob = data[pos + 8:pos + 8 + length].decode("utf-8", "backslashreplace")
    names = _tail_names(data, pos + 8 + length, tag=None)
    return {"class_labels": tuple(labels), "class_label_type": "Int64", "probabilities_blob": blob,
            "output_names": names}


def _tail_names(data: bytes, at: int, tag: int | None = _TAG) -> tuple[str, ...]:
    """The optional list of names (after a u64 ``tag``, when given; empty when absent or not as observed)."""
    size = len(data)
    if tag is not None:
        if at + 16 > size or struct.unpack_from("<Q", data, at)[0] != tag:
            return ()
        at += 8
    if at + 8 > size:
        return ()
    count = struct.unpack_from("<Q", data, at)[0]
    pos = at + 8
    names = []
    if count > (size - pos) // 8:
        return ()
    for _ in range(count):
        if pos + 8 > size:
            return ()
        n = struct.unpack_from("<Q", data, pos)[0]
        if n > size - pos - 8:
            return ()
        names.append(data[pos + 8:pos + 8 + n].decode("utf-8", "backslashreplace"))
        pos += 8 + n
    return tuple(names)


def raw_protobuf(path: str | os.PathLike) -> tuple[str, bytes] | None:
    """("spec", a stage's whole Core ML ``Model``) or ("description", a ``ModelDescription``): the protobuf
    bytes of a ``coremldata.bin`` (None when unreadable), for a reader with Core ML's own schema."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_SIZE + 1)
    except OSError:
        return None
    if len(data) > MAX_SIZE or len(data) < _KIND_AT + 8:
        return None
    kind_len = struct.unpack_from("<Q", data, _KIND_AT)[0]
    at = _KIND_AT + 8 + kind_len + 4 * 8
    if at > len(data):
        return None
    if data[_KIND_AT + 8:_KIND_AT + 8 + kind_len] == _SPEC_KIND:
        return "spec", data[at:]
    if at + 8 > len(data):
        return None
    length = struct.unpack_from("<Q", data, at)[0]
    if length > len(data) - at - 8:
        return None
    return "description", data[at + 8:at + 8 + length]


def read_coremldata(path: str | os.PathLike) -> BundleInfo:
    """Read and interpret a ``coremldata.bin``; an unreadable file is a BundleInfo with ``error`` set."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_SIZE + 1)
        if len(data) > MAX_SIZE:
            raise CoreMLDataError(f"{path}: larger than {MAX_SIZE} bytes, not read")
        info = parse_coremldata(data, source=os.fsdecode(path))
    except OSError as exc:
        return BundleInfo(path=path, error=f"{path}: cannot read ({exc.strerror or exc})")
    except CoreMLDataError as exc:
        return BundleInfo(path=path, error=str(exc))
    extra: dict[str, Any] = {"metadata_json": read_metadata_json(path.parent / METADATA_JSON),
                             "image_records": read_image_records(path.parent / IMAGE_RECORDS)}
    if not info.class_labels:  # a classifier whose labels this file does not give: metadata.json's
        labels, kind = _labels_from_metadata(extra["metadata_json"], info.predicted_feature)
        if labels:
            extra.update(class_labels=labels, class_label_type=kind)
    return replace(info, **extra)


def _labels_from_metadata(meta: dict[str, Any], label_output: str | None) -> tuple[tuple[int | str, ...], str | None]:
    """``classLabels`` of metadata.json, typed by its label output's type (Int64 or String)."""
    labels = meta.get("classLabels")
    if not isinstance(labels, list) or not labels or not all(isinstance(v, str) for v in labels):
        return (), None
    schema = meta.get("outputSchema")
    kinds = [o.get("type") for o in (schema if isinstance(schema, list) else [])
             if isinstance(o, dict) and o.get("name") == label_output and o.get("type") in ("Int64", "String")]
    if kinds[:1] == ["Int64"]:
        try:
            return tuple(int(v) for v in labels), "Int64"
        except ValueError:
            return (), None
    return tuple(labels), "String"


def read_metadata_json(path: Path) -> dict[str, Any]:
    """A bundle's ``metadata.json`` (a one-element list of one object); {} when absent or not as observed."""
    import json

    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_SIZE + 1)
        doc = json.loads(data) if len(data) <= MAX_SIZE else None
    except (OSError, ValueError, RecursionError):
        return {}
    if isinstance(doc, list) and len(doc) == 1:
        doc = doc[0]
    return doc if isinstance(doc, dict) else {}


def read_image_records(path: Path) -> tuple[tuple[str, float], ...]:
    """``model/coremldata.bin``'s records (input name, float32); empty when absent or not as observed."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(1 << 16)
    except OSError:
        return ()
    records, pos = [], 0
    while pos < len(data):
        if pos + 16 > len(data):
            return ()
        one, length = struct.unpack_from("<QQ", data, pos)
        if one != 1 or length > 256 or pos + 16 + length + 4 > len(data):
            return ()
        name = data[pos + 16:pos + 16 + length].decode("utf-8", "backslashreplace")
        records.append((name, struct.unpack_from("<f", data, pos + 16 + length)[0]))
        pos += 16 + length + 4
    return tuple(records)
