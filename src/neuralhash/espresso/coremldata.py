"""``coremldata.bin``: the model description inside a compiled ``.mlmodelc`` bundle.

No public document describes this file. What three real files
(``fixtures/coreml-wild``) show, and what this reader relies on (*unverified*
beyond them; anything else is reported as unreadable, never guessed at):

====== ================================================================
offset content
====== ================================================================
0      little-endian u32 500
28     u64 length L, then L bytes of ASCII: the model kind (``generic``)
36+L   four u64 words of unknown meaning, then a u64 length D
68+L   D bytes: a protobuf ``CoreML.Specification.ModelDescription``
       (Core ML's public ``Model.proto``): inputs, outputs and their
       types (image size and colour space, array shape and type), the
       predicted feature names, metadata (author, licence, user keys)
then   optionally u64 500, u64 count, count x (u64 length, bytes): the
       output names again
====== ================================================================

The description is parsed with the protobuf runtime against the subset of
Core ML's schema declared below (field numbers from Apple's public
``FeatureTypes.proto`` / ``Model.proto``); unknown fields are skipped.
Class labels and image scale / bias are not in these files (Espresso keeps
the preprocessing in the graph's ``transform_params``): ``class_labels``
stays empty until a file shows where they are.
"""

from __future__ import annotations

import os
import struct
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import CoreMLDataError

FILENAME = "coremldata.bin"
MAX_SIZE = 16 * 1024 * 1024  # a description with thousands of labels is far below this
_TAG = 500
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
    model_kind: str = ""
    inputs: tuple[FeatureInfo, ...] = ()
    outputs: tuple[FeatureInfo, ...] = ()
    predicted_feature: str | None = None
    predicted_probabilities: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    output_names: tuple[str, ...] = ()
    class_labels: tuple[str, ...] = ()
    error: str | None = None

    @property
    def readable(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the ONNX metadata's ``neuralhash.coreml_description``)."""
        out = asdict(self)
        del out["path"]  # where the user keeps the bundle is no part of the model
        for key in ("inputs", "outputs"):
            out[key] = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in f.items() if v not in (None, (), "")}
                        for f in out[key]]
        out["output_names"] = list(self.output_names)
        out["class_labels"] = list(self.class_labels)
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
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("nhcoreml.ModelDescription"))


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

    if size < 4 or struct.unpack_from("<I", data, 0)[0] != _TAG:
        first = struct.unpack_from("<I", data, 0)[0] if size >= 4 else None
        raise CoreMLDataError(f"{source}: layout not recognised (first word {first}, expected {_TAG}): "
                              "this reader knows only the layout of the files it was checked on")
    kind_len = u64(_KIND_AT, "model kind length")
    start = _KIND_AT + 8
    if kind_len > _MAX_KIND or start + kind_len > size:
        raise CoreMLDataError(f"{source}: model kind length {kind_len} does not fit the file ({size} bytes)")
    kind_bytes = data[start:start + kind_len]
    if not kind_bytes.isascii() or not kind_bytes.decode("ascii").isprintable():
        raise CoreMLDataError(f"{source}: the model kind at byte {start} is not printable text")
    desc_at = start + kind_len + 4 * 8
    desc_len = u64(desc_at, "description length")
    body = desc_at + 8
    if desc_len > size - body:
        raise CoreMLDataError(f"{source}: description of {desc_len} bytes at byte {body} runs past the end ({size} bytes)")
    message = _description_class()()
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
    return BundleInfo(
        path=path,
        model_kind=kind_bytes.decode("ascii"),
        inputs=tuple(_feature(f) for f in message.input),
        outputs=tuple(_feature(f) for f in message.output),
        predicted_feature=message.predictedFeatureName or None,
        predicted_probabilities=message.predictedProbabilitiesName or None,
        metadata=metadata,
        output_names=_tail_names(data, body + desc_len),
    )


def _tail_names(data: bytes, at: int) -> tuple[str, ...]:
    """The optional list of names after the description (empty when absent or not as observed)."""
    size = len(data)
    if at + 16 > size or struct.unpack_from("<Q", data, at)[0] != _TAG:
        return ()
    count = struct.unpack_from("<Q", data, at + 8)[0]
    pos = at + 16
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
    return info
