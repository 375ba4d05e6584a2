"""Fuzzing the Espresso readers: bad input may only ever raise a NeuralHashError.

Random bytes and mutated real / synthetic files (bit flips, inserted and
deleted bytes, truncation, rewritten header fields) go through the container
decoder, the JSON front end, the weights parser and the whole loading path;
random edits of real layer objects (deleted fields, fields of the wrong type)
go through ``EspressoModel.from_documents``. Anything but a NeuralHashError
escaping is a bug. Apple's files are read from ``../shared`` when present.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neuralhash.errors import GraphError, NeuralHashError
from neuralhash.espresso import EspressoModel, WeightsFile, encode_container, encode_weights, load_model
from neuralhash.espresso.container import decode_container
from neuralhash.espresso.model import decode_json_bytes, shapes_document
from neuralhash.espresso.writer import graph_document
from neuralhash.demo.synthetic import neuralhash_v3b_layers, neuralhash_v3b_shapes, synthetic_blobs

from conftest import REAL_DIR, REAL_NET, REAL_SHAPE

# NEURALHASH_FUZZ_EXAMPLES=5000 for a deeper (slower) search.
FUZZ = settings(
    max_examples=int(os.environ.get("NEURALHASH_FUZZ_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)

# -- inputs --------------------------------------------------------------------------------

_LAYERS = {p: neuralhash_v3b_layers(p) for p in ("float32", "float16")}
_SHAPES = neuralhash_v3b_shapes()
_SHAPE_DOC = shapes_document(_SHAPES)


def _graph_doc(precision: str) -> dict:
    return graph_document(_LAYERS[precision], storage="x.espresso.weights")


def _json(doc) -> bytes:
    return json.dumps(doc, indent=2, sort_keys=True).encode()


def _small_graph_json() -> bytes:
    """A few layers: keeps per-example decoding cheap."""
    doc = _graph_doc("float32")
    doc["layers"] = doc["layers"][:6]
    return _json(doc)


SYNTHETIC_CONTAINERS = {
    "synthetic-net-f32": encode_container(_json(_graph_doc("float32"))),
    "synthetic-net-f16": encode_container(_json(_graph_doc("float16"))),
    "synthetic-shape": encode_container(_json(_SHAPE_DOC)),
    "synthetic-small": encode_container(_small_graph_json()),
}


def _real(path: Path) -> bytes:
    if not path.is_file():
        pytest.skip(f"Apple's NeuralHash structure files are not present in {REAL_DIR}")
    return path.read_bytes()


def _base(name: str) -> bytes:
    if name == "real-net":
        return _real(REAL_NET)
    if name == "real-shape":
        return _real(REAL_SHAPE)
    return SYNTHETIC_CONTAINERS[name]


BASES = ["real-net", "real-shape", *SYNTHETIC_CONTAINERS]

# A mutation is a tuple; positions are taken modulo the current length.
_u32 = st.one_of(st.integers(0, 2**32 - 1), st.sampled_from([0, 1, 28, 64, 2**31, 2**32 - 1]))
mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 2**20), st.integers(0, 7)),
    st.tuples(st.just("set"), st.integers(0, 2**20), st.integers(0, 255)),
    st.tuples(st.just("insert"), st.integers(0, 2**20), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("delete"), st.integers(0, 2**20), st.integers(1, 64)),
    st.tuples(st.just("truncate"), st.integers(0, 2**20)),
    st.tuples(st.just("u32be"), st.sampled_from([16, 24]), _u32),
    st.tuples(st.just("u64le"), st.just(8), st.integers(0, 2**64 - 1)),
    st.tuples(st.just("magic"), st.sampled_from([b"pbzf", b"bvx2", b"\0\0\0\0", b"{   "])),
    # inside the LZFSE stream's first block header (byte 28 on): its magic and size fields
    st.tuples(st.just("set"), st.integers(28, 28 + 40), st.integers(0, 255)),
)


def mutate(data: bytes, mutations) -> bytes:
    buf = bytearray(data)
    for m in mutations:
        kind = m[0]
        if kind in ("flip", "set", "insert", "delete") and not buf and kind != "insert":
            continue
        if kind == "flip":
            buf[m[1] % len(buf)] ^= 1 << m[2]
        elif kind == "set":
            buf[m[1] % len(buf)] = m[2]
        elif kind == "insert":
            pos = m[1] % (len(buf) + 1)
            buf[pos:pos] = m[2]
        elif kind == "delete":
            pos = m[1] % len(buf)
            del buf[pos : pos + m[2]]
        elif kind == "truncate":
            del buf[m[1] % (len(buf) + 1) :]
        elif kind == "u32be" and len(buf) >= m[1] + 4:
            buf[m[1] : m[1] + 4] = struct.pack(">I", m[2])
        elif kind == "u64le" and len(buf) >= 16:
            buf[8:16] = struct.pack("<Q", m[2])
        elif kind == "magic" and len(buf) >= 4:
            buf[0:4] = m[1]
    return bytes(buf)


def only_neuralhash_errors(fn, *args, **kwargs):
    """Call fn; a NeuralHashError is a fine outcome, anything else propagates and fails the test."""
    try:
        return fn(*args, **kwargs)
    except NeuralHashError:
        return None


# -- container and JSON front end ----------------------------------------------------------


@FUZZ
@given(data=st.binary(max_size=512))
def test_random_bytes_through_decoders(data):
    only_neuralhash_errors(decode_container, data)
    only_neuralhash_errors(decode_json_bytes, data, source="fuzz")
    # the same bytes behind each front-end prefix
    for prefix in (b"pbze", b"{", b"\xef\xbb\xbf{", b"pbze\0\0\0\0" + struct.pack("<Q", 64)):
        only_neuralhash_errors(decode_container, prefix + data)
        only_neuralhash_errors(decode_json_bytes, prefix + data, source="fuzz")


@FUZZ
@given(data=st.binary(max_size=256), decoded_len=_u32, stream_magic=st.sampled_from([b"bvx2", b"bvxn", b"bvx-", b"bvx1", b"bvx$"]))
def test_crafted_headers_through_decode_container(data, decoded_len, stream_magic):
    stream = stream_magic + data
    header = b"pbze" + bytes(4) + struct.pack("<Q", 64) + struct.pack(">I", decoded_len) + bytes(4)
    out = only_neuralhash_errors(decode_container, header + struct.pack(">I", len(stream)) + stream)
    if out is not None:
        assert len(out) == decoded_len


@pytest.mark.parametrize("base", BASES)
@FUZZ
@given(mutations=st.lists(mutation, min_size=1, max_size=4))
def test_mutated_containers(base, mutations):
    data = mutate(_base(base), mutations)
    decoded = only_neuralhash_errors(decode_json_bytes, data, source="fuzz")
    out = only_neuralhash_errors(decode_container, data)
    if out is not None:
        assert decoded == out
        # the declared length is never exceeded, whatever the stream says
        assert len(out) == struct.unpack_from(">I", data, 16)[0]


# -- weights ------------------------------------------------------------------------------------

_SMALL_WEIGHTS = encode_weights(
    {1: np.arange(6, dtype=np.float32), 3: np.ones(4, np.float16), 5: b""}, empty_ids=(2, 4)
)


@pytest.fixture(scope="module")
def synthetic_weights_bytes() -> bytes:
    return encode_weights(synthetic_blobs(_LAYERS["float16"], seed=0))


def _check_weights_file(data: bytes):
    weights = only_neuralhash_errors(WeightsFile.from_bytes, data, source="fuzz")
    if weights is not None:
        end = 0
        for entry in weights.entries.values():
            assert weights.blob(entry.id).size == entry.length
            end = max(end, entry.offset + entry.length)
        assert end <= len(data)
    return weights


@FUZZ
@given(data=st.binary(max_size=512))
def test_random_bytes_through_weights(data):
    _check_weights_file(data)


@FUZZ
@given(
    entries=st.lists(st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 64)), max_size=8),
    count_delta=st.integers(-2, 2),
    length_lie=st.sampled_from([0, 0, 1, -1, 2**63, 2**64 - 64]),
    extra=st.binary(max_size=16),
)
def test_structured_weights_tables(entries, count_delta, length_lie, extra):
    count = max(0, len(entries) + count_delta)
    table = b"".join(struct.pack("<QQ", i, n) for i, n in entries)
    if entries:
        i, n = entries[0]
        table = struct.pack("<QQ", i, (n + length_lie) % 2**64) + table[16:]
    payload = bytes(sum(n for _, n in entries))
    _check_weights_file(struct.pack("<Q", count) + table + payload + extra)


@FUZZ
@given(mutations=st.lists(mutation, min_size=1, max_size=4), head=st.booleans())
def test_mutated_weights_files(synthetic_weights_bytes, mutations, head):
    base = synthetic_weights_bytes if head else _SMALL_WEIGHTS
    if head:
        # keep the mutations in the blob table (the first 2 KB), where the structure lives
        table_end = 8 + 16 * struct.unpack_from("<Q", base)[0]
        mutations = [(m[0], m[1] % table_end, *m[2:]) if m[0] in ("flip", "set", "insert", "delete") else m
                     for m in mutations]
    _check_weights_file(mutate(base, mutations))


# -- the whole load path -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def written_model(tmp_path_factory):
    """A small synthetic float16 model's files (first 6 layers), written once."""
    layers = _LAYERS["float16"][:7]
    blobs = synthetic_blobs(layers)
    graph = _json(graph_document(layers, storage="m.espresso.weights"))
    shapes = _json(shapes_document({k: v for k, v in _SHAPES.items() if k in {lay["top"] for lay in layers}}))
    files = {
        "net": encode_container(graph),
        "net-plain": graph,
        "shape": encode_container(shapes),
        "weights": encode_weights(blobs),
    }
    return tmp_path_factory.mktemp("fuzz-model"), files


@FUZZ
@given(target=st.sampled_from(["net", "net-plain", "shape", "weights"]),
       mutations=st.lists(mutation, min_size=1, max_size=3))
def test_mutated_files_through_load_model(written_model, target, mutations):
    folder, files = written_model
    chosen = dict(files)
    chosen[target] = mutate(files[target], mutations)
    (folder / "m.espresso.net").write_bytes(chosen["net-plain" if target == "net-plain" else "net"])
    (folder / "m.espresso.shape").write_bytes(chosen["shape"])
    (folder / "m.espresso.weights").write_bytes(chosen["weights"])
    model = only_neuralhash_errors(load_model, folder)
    if model is not None:
        for layer in model.layers:
            for role in layer.blob_refs():
                assert model.tensor(layer, role).dtype == np.float32


# -- layer objects --------------------------------------------------------------------------------

json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64),
    st.sampled_from([10**400, -(10**400)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(["", "image", ",", "a,b", "stem/MobilenetV3/Conv2d_0/Conv2D"]),
)
json_value = st.recursive(
    json_scalar,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6,
)
layer_edit = st.one_of(
    st.tuples(st.just("delete"), st.integers(0, 10**6), st.integers(0, 10**6)),
    st.tuples(st.just("set"), st.integers(0, 10**6), st.integers(0, 10**6), json_value),
    st.tuples(st.just("add"), st.integers(0, 10**6), st.sampled_from(
        ["blob_weights_f16", "w_f16_t", "b_f32", "stride_x", "n_groups", "attributes", "dilation_x", "nd_axis",
         "W_U8", "per_ch_qscale", "per_ch_qbias", "quantization_lut_weights_blob", "quantization_ranges_blob",
         "weights"]),
        json_value),
    st.tuples(st.just("retype"), st.integers(0, 10**6), st.sampled_from(
        ["convolution", "batchnorm", "elementwise", "activation", "pool", "inner_product", "input", "softmax",
         "softmax_nd", "concat", "flatten", "reshape", "transpose", "upsample", "load_constant", "bogus"])),
    st.tuples(st.just("replace"), st.integers(0, 10**6), json_value),
    st.tuples(st.just("drop"), st.integers(0, 10**6)),
)


def _real_or_synthetic_layers(source: str) -> list[dict]:
    if source == "real":
        from neuralhash.espresso import read_json_file

        _real(REAL_NET)
        return read_json_file(REAL_NET)[0]["layers"]
    return _LAYERS[source]


def edit_layers(layers: list[dict], edits) -> list:
    out = [dict(layer) for layer in layers]
    for e in edits:
        if not out:
            break
        i = e[1] % len(out)
        layer = out[i]
        if e[0] == "replace":
            out[i] = e[2]
        elif e[0] == "drop":
            del out[i]
        elif not isinstance(layer, dict):
            continue
        elif e[0] in ("delete", "set") and layer:
            key = sorted(layer)[e[2] % len(layer)]
            if e[0] == "delete":
                del layer[key]
            else:
                layer[key] = e[3]
        elif e[0] == "add":
            layer[e[2]] = e[3]
        elif e[0] == "retype":
            layer["type"] = e[2]
    return out


@pytest.fixture(scope="module")
def weights_by_precision() -> dict[str, WeightsFile]:
    return {p: WeightsFile.from_bytes(encode_weights(synthetic_blobs(_LAYERS[p])), source="fuzz")
            for p in ("float32", "float16")}


@pytest.mark.parametrize("source", ["real", "float32", "float16"])
@FUZZ
@given(edits=st.lists(layer_edit, min_size=1, max_size=4), with_weights=st.booleans())
def test_edited_layers_through_from_documents(source, weights_by_precision, edits, with_weights):
    layers = _real_or_synthetic_layers(source)
    graph = graph_document(layers, storage="x")
    graph["layers"] = edit_layers(layers, edits)
    weights = weights_by_precision["float16" if source == "float16" else "float32"] if with_weights else None
    model = only_neuralhash_errors(EspressoModel.from_documents, graph, _SHAPE_DOC, weights)
    if model is not None and weights is not None:
        model.parameter_count()


@FUZZ
@given(graph=json_value, shapes=json_value, layers=st.lists(json_value, max_size=3))
def test_random_documents_through_from_documents(graph, shapes, layers):
    only_neuralhash_errors(EspressoModel.from_documents, graph, shapes)
    only_neuralhash_errors(EspressoModel.from_documents, {"layers": layers}, {"layer_shapes": shapes})
    if isinstance(graph, dict):
        only_neuralhash_errors(EspressoModel.from_documents, dict(graph, layers=layers), None)


@FUZZ
@given(shape_edits=st.dictionaries(st.sampled_from(["n", "k", "h", "w", "_rank"]), json_value, max_size=3),
       blob=st.sampled_from(sorted(_SHAPES)))
def test_edited_shape_entries(shape_edits, blob):
    doc = json.loads(json.dumps(_SHAPE_DOC))
    doc["layer_shapes"][blob].update(shape_edits)
    only_neuralhash_errors(EspressoModel.from_documents, _graph_doc("float32"), doc)


# -- real compiled bundles (coreml-wild) and their coremldata.bin --------------------------------------

from conftest import WILD_DIR as WILD  # noqa: E402
WILD_FILES = ("model.espresso.net", "model.espresso.shape", "model.espresso.weights", "coremldata.bin")
# What loading a 3 MB model may allocate (Python and numpy, as tracemalloc sees them), whatever the files claim.
MEMORY_BOUND = 64 * 1024 * 1024


@pytest.fixture(scope="module", params=["FindFour", "SSDOcr"])
def wild_bundle(request, tmp_path_factory):
    source = WILD / f"{request.param}.mlmodelc"
    if not all((source / name).is_file() for name in WILD_FILES):
        pytest.skip(f"the real compiled models are not present in {WILD}")
    return tmp_path_factory.mktemp(request.param), {name: (source / name).read_bytes() for name in WILD_FILES}


def _bounded(fn, *args, **kwargs):
    """Call fn under tracemalloc; only NeuralHashErrors may escape, and the peak stays under MEMORY_BOUND."""
    import tracemalloc

    tracemalloc.start()
    try:
        return only_neuralhash_errors(fn, *args, **kwargs)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < MEMORY_BOUND, f"{peak} bytes allocated"


@FUZZ
@given(target=st.sampled_from(WILD_FILES), mutations=st.lists(mutation, min_size=1, max_size=3))
def test_mutated_wild_bundles_load_inspect_and_describe(wild_bundle, target, mutations):
    import contextlib
    import io

    from neuralhash.cli import main

    folder, files = wild_bundle
    for name, data in files.items():
        (folder / name).write_bytes(mutate(data, mutations) if name == target else data)
    model = _bounded(load_model, folder)
    if model is not None:
        for layer in model.layers:
            for role in layer.blob_refs():
                assert np.isfinite(model.tensor(layer, role)).all()
    lenient = _bounded(load_model, folder, strict=False)
    if lenient is not None and lenient.bundle_info is not None and lenient.bundle_info.readable:
        json.dumps(lenient.bundle_info.to_json(), allow_nan=False)
    text = io.StringIO()
    with contextlib.redirect_stdout(text), contextlib.redirect_stderr(io.StringIO()):
        rc = main(["inspect", "--json", str(folder)])
    if rc == 0:  # valid JSON, without bare NaN / Infinity
        json.loads(text.getvalue(), parse_constant=lambda name: pytest.fail(f"bare {name}"))


_u64 = st.one_of(st.integers(0, 2**64 - 1), st.sampled_from([0, 1, 7, 500, 2**32, 2**63, 2**64 - 1]))
coremldata_mutation = st.one_of(
    mutation,
    # the length fields this reader trusts least: the model kind's, the description's, the tail's count
    st.tuples(st.just("u64at"), st.sampled_from([4, 12, 20, 28, 43, 67, 75]), _u64),
)


@FUZZ
@given(base=st.sampled_from(["FindFour", "UxModel", "SSDOcr"]), mutations=st.lists(coremldata_mutation, max_size=4),
       tail=st.binary(max_size=64))
def test_mutated_coremldata_gives_only_our_error(base, mutations, tail):
    from neuralhash.espresso.coremldata import parse_coremldata

    path = WILD / f"{base}.mlmodelc" / "coremldata.bin"
    if not path.is_file():
        pytest.skip(f"the real compiled models are not present in {WILD}")
    buf = bytearray(path.read_bytes())
    plain = [m for m in mutations if m[0] != "u64at"]
    for m in mutations:
        if m[0] == "u64at" and len(buf) >= m[1] + 8:
            buf[m[1]:m[1] + 8] = struct.pack("<Q", m[2])
    data = mutate(bytes(buf), plain) + tail
    info = _bounded(parse_coremldata, data)
    if info is not None:
        json.dumps(info.to_json(), allow_nan=False)


@FUZZ
@given(data=st.binary(max_size=2048))
def test_random_bytes_as_coremldata(data):
    from neuralhash.espresso.coremldata import parse_coremldata

    _bounded(parse_coremldata, b"\xf4\x01\x00\x00" + data)
    _bounded(parse_coremldata, data)


# -- regressions found by fuzzing ---------------------------------------------------------------------


def test_huge_integer_in_a_float_field_is_a_graph_error(tmp_path):
    # float(10**400) raised a bare OverflowError from _Fields.float before it was wrapped.
    layer = {"type": "elementwise", "name": "a", "bottom": "image", "top": "a", "operation": 2, "alpha": 10**400}
    (tmp_path / "m.espresso.net").write_text(json.dumps({"layers": [layer]}))
    with pytest.raises(GraphError, match="alpha"):
        load_model(tmp_path, require_weights=False)
