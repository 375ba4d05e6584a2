"""The second search's real models (``../shared/fixtures/coreml-wild``, ESPRESSO.md "Seen in eleven more").

MNISTClassifier (real weights: pad_mode 4, a classifier description),
SentimentalAnalysisModelFP16 (structure only: an embedding table, an LSTM,
optional state inputs; synthetic weights of the declared shapes are written
here) and mutated copies of them. Expectations come from outside the
converter: the shape file, the NumPy reference executor, the weights as
written, and identities (explicit pads of 1 reproduce pad_mode 4; an
embedding row is the weights' column; channels-last flatten is a transpose
then a flatten). ``inspect``'s verdict must equal ``convert``'s outcome on
every fixture and on every mutated copy.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from conftest import WILD_DIR as WILD
from conftest import assert_close

from neuralhash.cli import main
from neuralhash.convert import convert, unsupported_layers
from neuralhash.errors import GraphError, UnsupportedLayerError
from neuralhash.espresso import BlobShape, EspressoModel, encode_weights, load_model
from neuralhash.reference import check_shapes
from neuralhash.reference import run as reference_run
from neuralhash.hashing.runtime import make_session
from neuralhash.convert.verify import verify

RTOL = 1e-5


def _fixture(name: str, needs_weights: bool = True):
    folder = WILD / f"{name}.mlmodelc"
    if not (folder / "model.espresso.net").is_file() or (needs_weights and not (folder / "model.espresso.weights").is_file()):
        pytest.skip(f"{name} is not present in {WILD}")
    return folder


def copy_bundle(src, dst, edit=None, *, bundle_files: bool = True):
    """A copy of a bundle folder; ``edit(layers)`` mutates its graph's layers in place."""
    dst.mkdir(parents=True)
    for path in src.rglob("*"):
        if path.is_file() and (bundle_files or path.name.startswith("model.espresso.")):
            target = dst / path.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    if edit is not None:
        net = dst / "model.espresso.net"
        graph = json.loads(net.read_text())
        edit(graph["layers"])
        net.write_text(json.dumps(graph))
    return dst


def _layer(layers, name):
    return next(layer for layer in layers if layer["name"] == name)


def sentiment_with_weights(tmp_path, edit=None, *, bundle_files: bool = True, seed: int = 0):
    """SentimentalAnalysisModelFP16's own files plus synthetic float16 weights of the declared shapes.

    The LSTM's blobs are not written: no layout for them is evidenced. Returns (folder, table [nC, nB]).
    """
    folder = copy_bundle(_fixture("SentimentalAnalysisModelFP16", needs_weights=False), tmp_path / "sentiment.mlmodelc",
                         edit, bundle_files=bundle_files)
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((300, 36815)).astype(np.float16)  # [nC, nB], Core ML's embedding layout
    blobs = {1: table, 9: np.array([0.25], np.float32), 11: (rng.standard_normal((1, 100)) / 10).astype(np.float16)}
    (folder / "model.espresso.weights").write_bytes(encode_weights(blobs))
    return folder, table.astype(np.float32)


def _without_lstm(layers):
    layers[:] = [layer for layer in layers if layer["type"] != "rnn_arch"]


# -- MNISTClassifier ----------------------------------------------------------------------


@pytest.mark.parametrize("optimize", [True, False])
def test_mnist_converts_with_every_blob_as_the_shape_file_says(optimize):
    model = load_model(_fixture("MNISTClassifier"))
    proto = convert(model, optimize=optimize)  # checks every blob against the shape file
    assert [o.name for o in proto.graph.output] == ["labelProbabilities"]
    x = np.random.default_rng(0).uniform(0, 1, (2, 28, 28)).astype(np.float32)
    kept = reference_run(model, x, keep=True)
    assert set(model.shapes) <= set(kept)
    check_shapes(model, kept)
    out = make_session(proto).run(None, {"image": x})[0]
    assert_close(out, kept["labelProbabilities"], rtol=1e-4)
    assert_close(out.sum(axis=1).ravel(), np.ones(2), rtol=RTOL)  # a softmax


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("optimize", [True, False])
def test_mnist_verifies(batch, optimize):
    report = verify(load_model(_fixture("MNISTClassifier")), seeds=(0, 1), batch=batch, optimize=optimize)
    assert report.passed, report.divergence


def _explicit_pads(layers):
    for layer in layers:
        if layer["type"] == "convolution":
            layer.update(pad_mode=0, pad_t=1, pad_b=1, pad_l=1, pad_r=1)


def test_pad_mode_4_is_explicit_symmetric_padding(tmp_path):
    """The identity ESPRESSO.md reports: pad_mode 4 on these 3x3 stride-1 kernels is a pad of 1 on each side."""
    src = _fixture("MNISTClassifier")
    same = load_model(src)
    explicit = load_model(copy_bundle(src, tmp_path / "explicit.mlmodelc", _explicit_pads))
    x = np.random.default_rng(1).uniform(0, 1, (3, 28, 28)).astype(np.float32)
    want = reference_run(explicit, x)["labelProbabilities"]
    assert_close(reference_run(same, x)["labelProbabilities"], want, rtol=1e-6)
    got = make_session(convert(same)).run(None, {"image": x})[0]
    assert_close(got, want, rtol=1e-4)


def _stride2_conv(layers):
    _layer(layers, "drawing_conv1_fwd").update(stride_x=2, stride_y=2)


def test_pad_mode_4_with_odd_padding_is_refused_naming_the_axis(tmp_path):
    """conv1 with stride 2 on 14 x 14: 'same' needs a padding of 1, and no file shows which side takes it."""
    model = load_model(copy_bundle(_fixture("MNISTClassifier"), tmp_path / "s2.mlmodelc", _stride2_conv))
    gaps = unsupported_layers(model)
    assert "drawing_conv1_fwd" in gaps
    assert "pad_mode 4" in gaps["drawing_conv1_fwd"] and "height of 14" in gaps["drawing_conv1_fwd"]
    assert "not evidenced" in gaps["drawing_conv1_fwd"]
    with pytest.raises(UnsupportedLayerError, match="pad_mode 4"):
        reference_run(model, np.zeros((1, 28, 28), np.float32))


def test_pad_mode_4_with_stride_2_and_even_padding_converts():
    """7 x 7, 3 x 3 window, stride 2: output 4, padding 2 = 1 + 1 (no side to choose)."""
    layers = [{"type": "convolution", "name": "c", "bottom": "x", "top": "y", "C": 2, "K": 1, "Nx": 3, "Ny": 3,
               "stride_x": 2, "stride_y": 2, "pad_mode": 4, "blob_weights": 1}]
    w = np.random.default_rng(2).standard_normal((2, 1, 3, 3)).astype(np.float32)
    model = EspressoModel.from_layers(layers, {1: w}, {"x": (1, 1, 7, 7), "y": (1, 2, 4, 4)})
    x = np.random.default_rng(3).standard_normal((2, 1, 7, 7)).astype(np.float32)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    want = np.zeros((2, 2, 4, 4))
    for i in range(4):
        for j in range(4):  # the convolution by hand
            want[:, :, i, j] = np.einsum("nkab,ckab->nc", xp[:, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3], w)
    assert_close(reference_run(model, x)["y"], want, rtol=1e-6)
    assert_close(make_session(convert(model)).run(None, {"x": x})[0], want, rtol=1e-4)


def test_flatten_mode_1_is_channels_last(tmp_path):
    layers = [{"type": "flatten", "name": "f", "bottom": "x", "top": "y", "mode": 1}]
    model = EspressoModel.from_layers(layers, None, {"x": (1, 3, 2, 4), "y": (1, 24, 1, 1)})
    x = np.arange(2 * 24, dtype=np.float32).reshape(2, 3, 2, 4)
    want = x.transpose(0, 2, 3, 1).reshape(2, 24, 1, 1)  # (h, w, k) order
    np.testing.assert_array_equal(reference_run(model, x)["y"], want)
    for optimize in (True, False):
        np.testing.assert_array_equal(make_session(convert(model, optimize=optimize)).run(None, {"x": x})[0], want)
    with pytest.raises(UnsupportedLayerError, match=r"'f' \(flatten\): mode 3"):
        convert(EspressoModel.from_layers([dict(layers[0], mode=3)], None, {"x": (1, 3, 2, 4)}))


# -- SentimentalAnalysisModelFP16 -----------------------------------------------------------


def test_sentiment_inputs_outputs_and_the_lstm_refusal_first(tmp_path, capsys):
    folder, _ = sentiment_with_weights(tmp_path)
    model = load_model(folder)
    # the optional state inputs of coremldata.bin are graph inputs; the declared outputs are the outputs
    assert model.inputs == ["input1", "lstm_11_h_in", "lstm_11_c_in"]
    assert model.outputs == ["sentiment", "lstm_11_h_out", "lstm_11_c_out"]
    assert list(unsupported_layers(model)) == ["lstm_11"]
    with pytest.raises(UnsupportedLayerError) as exc:
        convert(model)
    assert str(exc.value).startswith("layer 'lstm_11' (rnn_arch): layer type 'rnn_arch' is not supported")
    assert main(["inspect", str(folder)]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].startswith("unsupported  layer 'lstm_11' (rnn_arch)")
    assert "rnn_arch           1  no" in text and "inner_product      2  yes" in text
    assert main(["convert", str(folder), "-o", str(tmp_path / "s.onnx")]) == 1
    assert capsys.readouterr().err.startswith("neuralhash: error: layer 'lstm_11' (rnn_arch)")
    assert not (tmp_path / "s.onnx").exists()


def test_sentiment_without_weights_inspect_lists_the_lstm(capsys):
    folder = _fixture("SentimentalAnalysisModelFP16", needs_weights=False)
    assert main(["inspect", str(folder), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert list(info["unsupported"]) == ["lstm_11"]
    assert set(info["inputs"]) == {"input1", "lstm_11_h_in", "lstm_11_c_in"}
    assert info["problems"] == []


@pytest.mark.parametrize("batch", [1, 3])
def test_what_converts_of_sentiment_verifies(tmp_path, batch):
    """Without the LSTM (and its description), the embedding and the dense head convert and verify.

    Its input ``lstm_11_output`` then has a shape entry and no producer: a second graph input.
    """
    folder, table = sentiment_with_weights(tmp_path, _without_lstm, bundle_files=False)
    model = load_model(folder)
    assert model.inputs == ["input1", "lstm_11_output"]
    for optimize in (True, False):
        report = verify(model, seeds=(0, 1), batch=batch, optimize=optimize)
        assert report.passed, report.divergence
    proto = convert(model)
    kinds = {i.name: i.type.tensor_type.elem_type for i in proto.graph.input}
    assert kinds == {"input1": onnx.TensorProto.INT64, "lstm_11_output": onnx.TensorProto.FLOAT}
    index = np.array([0, 36814, 1234][:batch], np.int64)
    state = np.zeros((batch, 100, 1, 1), np.float32)
    got = dict(zip([o.name for o in proto.graph.output],
                   make_session(proto).run(None, {"input1": index, "lstm_11_output": state})))
    # the row of each index is that column of the [nC, nB] table, as written (float16 upcast exactly)
    np.testing.assert_array_equal(got["embedding_13_output"].reshape(batch, 300), table[:, index].T)
    # sigmoid(0 . w + 0.25)
    assert_close(got["sentiment"].ravel(), np.full(batch, 1 / (1 + np.exp(-0.25))), rtol=1e-6)


def test_embedding_refuses_indices_out_of_range(tmp_path):
    folder, _ = sentiment_with_weights(tmp_path, _without_lstm, bundle_files=False)
    model = load_model(folder)
    state = np.zeros((1, 100, 1, 1), np.float32)
    for bad in (-1, 36815, 2.5):
        with pytest.raises(Exception, match="embedding_13"):
            reference_run(model, {"input1": np.array([bad]), "lstm_11_output": state})
    session = make_session(convert(model))
    for bad in (-1, 36815):  # ONNX Runtime refuses too: a negative index is not read from the end
        with pytest.raises(Exception):
            session.run(None, {"input1": np.array([bad], np.int64), "lstm_11_output": state})


def test_embedding_is_the_product_with_a_one_hot_vector():
    """The identity behind Core ML's layout: a lookup equals inner_product (is_lookup 0) on one_hot(index)."""
    rng = np.random.default_rng(4)
    w = rng.standard_normal((5, 7)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    lookup = {"type": "inner_product", "name": "e", "bottom": "x", "top": "y", "nB": 7, "nC": 5,
              "is_lookup": 1, "has_biases": 1, "blob_weights": 1, "blob_biases": 2}
    model = EspressoModel.from_layers([lookup], {1: w, 2: b}, {"x": (1, 1, 1, 1)})
    dense = EspressoModel.from_layers([dict(lookup, is_lookup=0)], {1: w, 2: b}, {"x": (1, 7, 1, 1)})
    index = np.array([3, 0, 6])
    one_hot = np.eye(7, dtype=np.float32)[index].reshape(3, 7, 1, 1)
    want = reference_run(dense, one_hot)["y"]
    assert_close(reference_run(model, index.reshape(3, 1, 1, 1).astype(np.float32))["y"], want, rtol=1e-6)
    got = make_session(convert(model)).run(None, {"x": index.reshape(3, 1, 1, 1)})[0]
    assert_close(got, want, rtol=1e-6)


def test_a_blob_nothing_declares_is_still_an_error(tmp_path):
    """With the bundle's description, a blob read and never produced must be one of its inputs."""
    folder, _ = sentiment_with_weights(tmp_path, _without_lstm)
    with pytest.raises(GraphError, match="reads blob 'lstm_11_output', which no layer produces.*does not declare"):
        load_model(folder)


# -- an array input (not an image) ------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 3])
def test_array_input_verifies(batch):
    """A coremltools-from-TensorFlow style input: an array [128, 128, 1], no image anywhere."""
    rng = np.random.default_rng(5)
    layers = [{"type": "activation", "name": "a", "bottom": "input_1", "top": "t", "mode": 1},
              {"type": "inner_product", "name": "d", "bottom": "t", "top": "y", "nB": 128 * 128, "nC": 3,
               "has_biases": 0, "blob_weights": 1}]
    w = (rng.standard_normal((3, 128 * 128)) / 128).astype(np.float32)
    shapes = {"input_1": BlobShape(1, 128, 128, 1, rank=4), "y": BlobShape(1, 3, 1, 1, rank=4)}
    model = EspressoModel.from_layers(layers, {1: w}, shapes)
    for optimize in (True, False):
        report = verify(model, seeds=(0, 1), batch=batch, optimize=optimize)
        assert report.passed, report.divergence
    x = rng.uniform(-1, 1, (batch, 128, 128, 1)).astype(np.float32)
    want = np.tanh(x.reshape(batch, -1).astype(np.float64)) @ w.T.astype(np.float64)
    assert_close(make_session(convert(model)).run(None, {"input_1": x})[0].reshape(batch, 3), want, rtol=1e-4)


# -- inspect's verdict is convert's outcome ---------------------------------------------------


def _mutations():
    """(name, fixture, edit of its layers or None, needs synthetic sentiment weights)."""
    return [
        ("FindFour", "FindFour", None),
        ("UxModel", "UxModel", None),
        ("SSDOcr", "SSDOcr", None),
        ("MNIST", "MNISTClassifier", None),
        ("MNIST pad_mode 4 stride 2", "MNISTClassifier", _stride2_conv),
        ("MNIST flatten mode 7", "MNISTClassifier", lambda ls: _layer(ls, "drawing_flatten0_reshape0").update(mode=7)),
        ("MNIST pad_mode 3", "MNISTClassifier", lambda ls: _layer(ls, "drawing_conv0_fwd").update(pad_mode=3)),
        ("MNIST lookup on images", "MNISTClassifier", lambda ls: _layer(ls, "drawing_dense1_fwd").update(is_lookup=1)),
        ("MNIST unknown type, no shape", "MNISTClassifier",
         lambda ls: _layer(ls, "drawing_pool0_fwd").update(type="mystery", top="nowhere")
         or _layer(ls, "drawing_conv1_fwd").update(bottom="nowhere")),
        ("MNIST explicit pads", "MNISTClassifier", _explicit_pads),
        ("NeuralHash synthetic float32", "synthetic-float32", None),
        ("NeuralHash synthetic float16", "synthetic-float16", None),
        ("NeuralHash unknown operation", "synthetic-float32",
         lambda ls: next(layer for layer in ls if layer["type"] == "elementwise").update(operation=57)),
        ("Sentiment", "SentimentalAnalysisModelFP16", None),
        ("Sentiment without LSTM", "SentimentalAnalysisModelFP16", _without_lstm),
        ("Sentiment LSTM reads nothing known", "SentimentalAnalysisModelFP16",
         lambda ls: _layer(ls, "dense_15").update(bottom="lstm_11_h_out")),
    ]


@pytest.mark.parametrize("case", _mutations(), ids=lambda c: c[0])
def test_inspect_verdict_is_convert_outcome(case, tmp_path, capsys):
    label, fixture, edit = case
    if fixture == "SentimentalAnalysisModelFP16":
        folder, _ = sentiment_with_weights(tmp_path, edit, bundle_files=edit is not _without_lstm)
    elif fixture.startswith("synthetic-"):
        from neuralhash.demo.synthetic import write_neuralhash_v3b

        folder = tmp_path / "nh"
        sources = write_neuralhash_v3b(folder, precision=fixture.split("-")[1], calibrate=False)
        if edit is not None:
            from neuralhash.espresso import read_json_file

            graph, _ = read_json_file(sources.net)
            edit(graph["layers"])
            sources.net.write_text(json.dumps(graph))
    else:
        folder = copy_bundle(_fixture(fixture), tmp_path / f"{fixture}.mlmodelc", edit)
    assert main(["inspect", str(folder), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    unsupported = info["unsupported"]
    out = tmp_path / "out.onnx"
    code = main(["convert", str(folder), "-o", str(out)])
    err = capsys.readouterr().err
    if not unsupported:
        assert code == 0 and out.exists(), err
        assert all(v == "yes" for v in _verdicts(folder, capsys).values())
    else:
        assert code == 1 and not out.exists()
        for name in unsupported:  # convert names every layer inspect names...
            assert f"layer {name!r}" in err
        named = set(__import__("re").findall(r"layer '([^']+)' \(", err))
        assert named == set(unsupported)  # ...and no other


def _verdicts(folder, capsys) -> dict[str, str]:
    assert main(["inspect", str(folder)]) == 0
    rows = {}
    for line in capsys.readouterr().out.splitlines():
        parts = line.split()
        if len(parts) == 3 and line.startswith("  ") and parts[2] in ("yes", "no", "partly", "unknown"):
            rows[parts[0]] = parts[2]
    return rows
