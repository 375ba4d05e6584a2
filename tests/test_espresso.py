"""Reading Espresso files: real-file decoding, and every kind of bad input."""

from __future__ import annotations

import hashlib
import json
import struct

import numpy as np
import pytest

from neuralhash.errors import ContainerError, GraphError, NeuralHashError, WeightsError
from neuralhash.espresso import EspressoModel, WeightsFile, encode_container, encode_weights, load_model, locate
from neuralhash.espresso.container import decode_container
from neuralhash.espresso.model import decode_json_bytes, read_json_file

# Published in shared/fixtures/neuralhash-v3b/README.md.
NET_DECODED = (128297, "c193f7ed2768b2666412f2fc159d2e306b750936484c5c314aa9e15bdc11d0e4")
SHAPE_DECODED = (33861, "f4fe7e9d854fd0f0585a732bd5a8dcb7de8dfcbbd946d68c10e821b9691b1db8")


def _conv(name="c", bottom="x", top="y", **extra):
    layer = {"type": "convolution", "name": name, "bottom": bottom, "top": top, "C": 2, "K": 3, "Nx": 3, "Ny": 3,
             "n_groups": 1, "pad_mode": 1, "has_biases": 1, "blob_weights": 1, "blob_biases": 3}
    layer.update(extra)
    return layer


def _conv_blobs():
    return {1: np.ones((2, 3, 3, 3), np.float32), 3: np.zeros(2, np.float32)}


# -- real files -----------------------------------------------------------------------


@pytest.mark.parametrize("suffix,expected", [("net", NET_DECODED), ("shape", SHAPE_DECODED)])
def test_real_containers_decode_to_published_bytes(real_dir, suffix, expected):
    data = (real_dir / f"NeuralHashv3b-current.espresso.{suffix}").read_bytes()
    decoded = decode_container(data, source=suffix)
    assert (len(decoded), hashlib.sha256(decoded).hexdigest()) == expected


def test_real_graph_facts(real_dir):
    model = load_model(real_dir, require_weights=False)
    assert len(model.layers) == 225
    assert model.layer_types() == {"elementwise": 118, "convolution": 54, "batchnorm": 35, "pool": 10,
                                   "activation": 6, "inner_product": 2}
    assert model.inputs == ["image"] and model.outputs == ["leaf/logits"]
    assert model.shapes["image"].nkhw == (1, 3, 360, 360)
    assert model.shapes["leaf/logits"].nkhw == (1, 128, 1, 1)
    refs = {ref.id: ref.count for layer in model.layers for ref in layer.blob_refs().values()}
    assert sorted(refs) == list(range(1, 224, 2))
    assert sum(refs.values()) == 1_809_246
    assert model.transform_params["image"]["scale"] == pytest.approx(2 / 255)
    assert model.parameter_count() is None  # no weights file


def test_locate_any_prefix_and_explicit_file(real_dir, tmp_path):
    sources = locate(real_dir)
    assert sources.net.name == "NeuralHashv3b-current.espresso.net"
    assert sources.seed is not None and sources.weights is None
    assert locate(real_dir / "NeuralHashv3b-current.espresso.shape").net == sources.net
    # a bundle-style prefix with plain JSON files
    (tmp_path / "model.espresso.net").write_bytes(decode_json_bytes(sources.net.read_bytes(), source="net"))
    (tmp_path / "model.espresso.shape").write_bytes(decode_json_bytes(sources.shape.read_bytes(), source="shape"))
    plain = load_model(tmp_path, require_weights=False)
    assert len(plain.layers) == 225


def test_locate_errors(tmp_path):
    with pytest.raises(NeuralHashError, match="no \\*.espresso.net"):
        locate(tmp_path)
    for prefix in ("a", "b"):
        (tmp_path / f"{prefix}.espresso.net").write_text("{}")
    with pytest.raises(NeuralHashError, match="several models"):
        locate(tmp_path)
    other = tmp_path / "notes.txt"
    other.write_text("")
    with pytest.raises(NeuralHashError, match="not an Espresso file"):
        locate(other)
    with pytest.raises(NeuralHashError, match="no such file"):
        locate(tmp_path / "missing")


def test_missing_weights_file_is_reported(tmp_path):
    (tmp_path / "m.espresso.net").write_text(json.dumps({"layers": [_conv()]}))
    with pytest.raises(WeightsError, match="no weights file"):
        load_model(tmp_path)


# -- the container ----------------------------------------------------------------------


def _container(payload=b'{"a": 1}'):
    return bytearray(encode_container(payload))


def test_container_round_trip():
    payload = json.dumps({"layers": list(range(5000))}).encode()
    assert decode_container(bytes(_container(payload))) == payload


def test_wrong_magic():
    data = _container()
    data[:4] = b"pbzx"
    with pytest.raises(ContainerError, match="wrong magic"):
        decode_container(bytes(data), source="f.net")


def test_truncated_container():
    data = bytes(_container(b"x" * 1000))
    with pytest.raises(ContainerError, match="header declares an LZFSE stream"):
        decode_container(data[:-5])
    with pytest.raises(ContainerError, match="shorter than"):
        decode_container(data[:20])


@pytest.mark.parametrize("delta", [-1, 1, 1000])
def test_lying_decoded_length(delta):
    data = _container(b'{"k": "' + b"v" * 300 + b'"}')
    declared = struct.unpack_from(">I", data, 16)[0]
    struct.pack_into(">I", data, 16, declared + delta)
    with pytest.raises(ContainerError, match="declares"):
        decode_container(bytes(data))


def test_lying_stream_length():
    data = _container()
    struct.pack_into(">I", data, 24, 10_000)
    with pytest.raises(ContainerError, match="LZFSE stream of 10000 bytes"):
        decode_container(bytes(data))


def test_decoded_size_cap_is_checked_before_decoding():
    data = bytes(_container(b"{" + b" " * 100_000 + b"}"))
    with pytest.raises(ContainerError, match="above the limit"):
        decode_container(data, max_decoded_size=50_000)


def test_lzfse_garbage():
    data = _container(b"{" + b"0123456789" * 50 + b"}")
    for i in range(40, len(data) - 8):
        data[i] ^= 0x5A
    with pytest.raises(ContainerError):
        decode_container(bytes(data))
    stream = b"bvx2" + b"\xff" * 40
    bad = encode_container(b"{}")[:24] + struct.pack(">I", len(stream)) + stream
    with pytest.raises(ContainerError):
        decode_container(bad)


def test_json_that_is_not_an_object(tmp_path):
    with pytest.raises(GraphError, match="neither a compressed"):
        decode_json_bytes(b"[1, 2]", source="x.net")
    path = tmp_path / "m.espresso.net"
    path.write_bytes(encode_container(b"[1, 2, 3]"))
    (tmp_path / "m.espresso.weights").write_bytes(encode_weights({}))
    with pytest.raises(GraphError, match="should be an object"):
        load_model(tmp_path)
    path.write_bytes(b'{"layers": [1, 2')
    with pytest.raises(GraphError, match="not valid JSON"):
        read_json_file(path)


# -- the graph ---------------------------------------------------------------------------


def test_layer_missing_field_names_layer_and_field():
    layer = _conv()
    del layer["Nx"]
    with pytest.raises(GraphError, match=r"layer 'c' \(convolution\): missing field 'Nx'"):
        EspressoModel.from_layers([layer], _conv_blobs(), {"x": (1, 3, 5, 5)})
    with pytest.raises(GraphError, match="field 'C' should be an integer"):
        EspressoModel.from_layers([_conv(C="two")], _conv_blobs(), {"x": (1, 3, 5, 5)})


def test_bottom_that_nothing_produces():
    layers = [_conv(), {"type": "elementwise", "name": "add", "bottom": "y,ghost", "top": "z", "operation": 0}]
    with pytest.raises(GraphError, match="layer 'add' reads blob 'ghost', which no layer produces"):
        EspressoModel.from_layers(layers, _conv_blobs(), {"x": (1, 3, 5, 5)})


def test_bottom_read_before_produced():
    layers = [{"type": "input", "name": "x", "top": "x"},
              {"type": "activation", "name": "r", "bottom": "late", "top": "z", "mode": 0},
              _conv(top="late")]
    with pytest.raises(GraphError, match="reads blob 'late' before layer 'c' produces it"):
        EspressoModel.from_layers(layers, _conv_blobs(), {"x": (1, 3, 5, 5)})


def test_unknown_type_is_kept_for_inspection():
    layers = [_conv(), {"type": "mystery_op", "name": "m", "bottom": "y", "top": "z", "knob": 3}]
    model = EspressoModel.from_layers(layers, _conv_blobs(), {"x": (1, 3, 5, 5)})
    assert model.layer_types() == {"convolution": 1, "mystery_op": 1}
    assert model.outputs == ["z"]


# -- the weights file ----------------------------------------------------------------------


def test_weights_round_trip_and_views():
    blobs = {1: np.arange(6, dtype=np.float32), 3: np.arange(4, dtype=np.float16), 9: b""}
    wf = WeightsFile.from_bytes(encode_weights(blobs, empty_ids=(2, 4)))
    assert sorted(wf.entries) == [1, 2, 3, 4, 9]
    assert np.array_equal(wf.blob(1).view("<f4"), blobs[1])
    assert np.array_equal(wf.blob(3).view("<f2"), blobs[3])
    assert wf.blob(2).size == 0
    assert not wf.blob(1).flags.writeable


def test_weights_table_larger_than_file():
    data = bytearray(encode_weights({1: np.ones(4, np.float32)}))
    struct.pack_into("<Q", data, 0, 1_000_000)
    with pytest.raises(WeightsError, match="declares 1000000 blob entries"):
        WeightsFile.from_bytes(bytes(data))


def test_weights_payloads_must_add_up():
    data = encode_weights({1: np.ones(4, np.float32)})
    with pytest.raises(WeightsError, match="declares 16 payload bytes, the file holds 12"):
        WeightsFile.from_bytes(data[:-4])
    with pytest.raises(WeightsError, match="file holds 20"):
        WeightsFile.from_bytes(data + b"\0" * 4)


def test_weights_duplicate_ids():
    data = bytearray(encode_weights({1: b"abcd", 3: b"efgh"}))
    struct.pack_into("<Q", data, 8 + 16, 1)
    with pytest.raises(WeightsError, match="blob id 1 is listed more than once"):
        WeightsFile.from_bytes(bytes(data))


def test_missing_blob_names_layer():
    with pytest.raises(WeightsError, match=r"layer 'c' \(convolution\): blob_biases 3 names a blob that is not"):
        EspressoModel.from_layers([_conv()], {1: np.ones((2, 3, 3, 3), np.float32)}, {"x": (1, 3, 5, 5)})


def test_blob_of_wrong_length_names_both_counts():
    blobs = _conv_blobs()
    blobs[1] = np.ones(50, np.float32)
    with pytest.raises(WeightsError, match=r"blob_weights 1 holds 200 bytes = 50 float32 values, the layer expects 54"):
        EspressoModel.from_layers([_conv()], blobs, {"x": (1, 3, 5, 5)})


def test_float16_payload_under_float32_key_is_an_error_not_a_guess():
    blobs = _conv_blobs()
    blobs[1] = np.ones((2, 3, 3, 3), np.float16)
    with pytest.raises(WeightsError, match="27 float32 values, the layer expects 54"):
        EspressoModel.from_layers([_conv()], blobs, {"x": (1, 3, 5, 5)})


def test_float16_weights_upcast_exactly():
    kernel = np.random.default_rng(0).standard_normal((2, 3, 3, 3)).astype(np.float16)
    layer = _conv()
    layer["blob_weights_f16"] = layer.pop("blob_weights")
    model = EspressoModel.from_layers([layer], {1: kernel, 3: np.zeros(2, np.float32)}, {"x": (1, 3, 5, 5)})
    got = model.tensor(model.layers[0], "weights")
    assert got.dtype == np.float32 and np.array_equal(got, kernel.astype(np.float32))


def test_transposed_inner_product_weights():
    w = np.arange(12, dtype=np.float16).reshape(4, 3)  # stored [nB=4, nC=3]
    layer = {"type": "inner_product", "name": "fc", "bottom": "x", "top": "y", "nB": 4, "nC": 3,
             "has_biases": 0, "w_f16_t": 1}
    model = EspressoModel.from_layers([layer], {1: w}, {"x": (1, 4, 1, 1)})
    assert np.array_equal(model.tensor(model.layers[0], "weights"), w.T.astype(np.float32))
