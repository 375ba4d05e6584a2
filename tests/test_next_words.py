"""The third search's vocabulary (ESPRESSO.md "Seen in a third search"), each against an independent expectation.

Established from Core ML's published NeuralNetwork.proto (the one-input Add,
ConcatND, SliceStatic, LoadConstant's [1, 1, C, H, W]) and checked here
against NumPy written out by hand; what the specification does not settle
(6-bit packing, general_padding's other fill codes, reduce mode 11,
crop_and_resize's modes) is one clear refusal, by the converter and the
reference executor alike.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close

from neuralhash.convert import convert, unsupported_layers
from neuralhash.errors import GraphError, ShapeMismatchError, UnsupportedLayerError
from neuralhash.espresso import BlobShape, EspressoModel
from neuralhash.reference import run as reference_run
from neuralhash.hashing.runtime import make_session


def _both(model, feeds, optimize=True):
    """(reference outputs, ONNX Runtime outputs) by name."""
    ref = reference_run(model, feeds)
    proto = convert(model, optimize=optimize)
    names = [o.name for o in proto.graph.output]
    feeds = feeds if isinstance(feeds, dict) else {model.inputs[0]: feeds}
    return ref, dict(zip(names, make_session(proto).run(names, feeds)))


def test_one_input_add_is_x_plus_alpha():
    layers = [{"type": "elementwise", "name": "e", "bottom": "x", "top": "y", "operation": 0, "alpha": -1}]
    model = EspressoModel.from_layers(layers, None, {"x": (1, 2, 3, 4)})
    x = np.random.default_rng(0).standard_normal((3, 2, 3, 4)).astype(np.float32)
    ref, got = _both(model, x)
    np.testing.assert_array_equal(ref["y"], x - 1)
    assert_close(got["y"], x - 1, rtol=1e-6)
    with pytest.raises(UnsupportedLayerError, match="beta"):
        convert(EspressoModel.from_layers([dict(layers[0], beta=2)], None, {"x": (1, 2, 3, 4)}))


def test_general_concat_along_an_nd_axis():
    """Rank-3 blobs [k, h, w]: nd axis 2 is w (and -2 is h)."""
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 3, 4, 5)).astype(np.float32), rng.standard_normal((2, 3, 4, 2)).astype(np.float32)
    layer = {"type": "general_concat", "name": "c", "bottom": "a,b", "top": "y", "nd_mode": True, "axis": 2}
    shapes = {"a": BlobShape(1, 3, 4, 5, rank=4), "b": BlobShape(1, 3, 4, 2, rank=4),
              "y": BlobShape(1, 3, 4, 7, rank=4)}
    model = EspressoModel.from_layers([dict(layer, axis=-1)], None, shapes)
    ref, got = _both(model, {"a": a, "b": b})
    np.testing.assert_array_equal(ref["y"], np.concatenate([a, b], axis=3))
    np.testing.assert_array_equal(got["y"], np.concatenate([a, b], axis=3))
    shapes3 = {"a": BlobShape(1, 1, 4, 5, rank=3), "b": BlobShape(1, 1, 2, 5, rank=3), "y": BlobShape(1, 1, 6, 5, rank=3)}
    model = EspressoModel.from_layers([dict(layer, axis=0)], None, shapes3)  # rank 3: axis 0 is k... of [k, h, w]
    a3, b3 = a[:, :1, :, :], rng.standard_normal((2, 1, 2, 5)).astype(np.float32)
    with pytest.raises(ShapeMismatchError):  # axis 0 of a rank-3 blob is k: 1 + 1 is not the shape file's 1
        convert(model)
    model = EspressoModel.from_layers([dict(layer, axis=1)], None, shapes3)  # axis 1 of rank 3 is h
    ref, got = _both(model, {"a": a3.reshape(2, 4, 5), "b": b3.reshape(2, 2, 5)})
    want = np.concatenate([a3, b3], axis=2).reshape(2, 6, 5)
    np.testing.assert_array_equal(ref["y"], want)
    np.testing.assert_array_equal(got["y"], want)
    with pytest.raises(UnsupportedLayerError, match="nd_mode 0"):
        convert(EspressoModel.from_layers([dict(layer, nd_mode=False)], None, shapes))


def test_general_slice_is_numpy_slicing():
    x = np.arange(2 * 6 * 5 * 4, dtype=np.float32).reshape(2, 6, 5, 4)
    layer = {"type": "general_slice", "name": "s", "bottom": "x", "top": "y", "use_static_sizes": False,
             "begin_k": 1, "end_k": -1, "stride_k": 2, "begin_h": 0, "end_h": 3, "end_mask_w": 1, "begin_w": -3}
    model = EspressoModel.from_layers([layer], None, {"x": (1, 6, 5, 4), "y": (1, 2, 3, 3)})
    want = x[:, 1:-1:2, 0:3, -3:]
    for optimize in (True, False):
        ref, got = _both(model, x, optimize)
        np.testing.assert_array_equal(ref["y"], want)
        np.testing.assert_array_equal(got["y"], want)
    squeezed = dict(layer, begin_h=2, end_h=3, squeeze_mask_h=1)  # h cut to one row, squeezed: the data do not move
    model = EspressoModel.from_layers([squeezed], None, {"x": (1, 6, 5, 4), "y": BlobShape(1, 1, 2, 3, rank=3)})
    ref, got = _both(model, x)
    np.testing.assert_array_equal(got["y"].reshape(2, 2, 3), x[:, 1:-1:2, 2, -3:])
    np.testing.assert_array_equal(ref["y"], got["y"])
    for bad, match in ((dict(layer, stride_k=-1), "stride_k -1"), (dict(layer, begin_n=1), "batch axis"),
                       (dict(layer, begin_k=4, end_k=4), "leave nothing")):
        m = EspressoModel.from_layers([bad], None, {"x": (1, 6, 5, 4)})
        assert match in unsupported_layers(m)["s"]
        with pytest.raises(UnsupportedLayerError, match=match):
            reference_run(m, x)


def test_second_input_feeds_a_dense_layer():
    """A style transfer's second input (one value) scales a convolution's channels through a dense layer."""
    rng = np.random.default_rng(2)
    w, dense = rng.standard_normal((4, 3, 1, 1)).astype(np.float32), rng.standard_normal((4, 1)).astype(np.float32)
    layers = [
        {"type": "convolution", "name": "c", "bottom": "image", "top": "f", "C": 4, "K": 3, "Nx": 1, "Ny": 1,
         "blob_weights": 1},
        {"type": "inner_product", "name": "d", "bottom": "index", "top": "g", "nB": 1, "nC": 4, "blob_weights": 2},
        {"type": "elementwise", "name": "m", "bottom": "f,g", "top": "y", "operation": 1},
    ]
    shapes = {"image": (1, 3, 5, 5), "index": BlobShape(1, 1, 1, 1, rank=1), "y": (1, 4, 5, 5)}
    model = EspressoModel.from_layers(layers, {1: w, 2: dense}, shapes)
    assert model.inputs == ["image", "index"]
    image, index = rng.standard_normal((3, 3, 5, 5)).astype(np.float32), np.array([0.5, -1, 2], np.float32)
    ref, got = _both(model, {"image": image, "index": index})
    want = np.einsum("ck,nkhw->nchw", w[:, :, 0, 0], image) * (index[:, None] * dense[:, 0])[:, :, None, None]
    assert_close(ref["y"], want, rtol=1e-5)
    assert_close(got["y"], want, rtol=1e-5)


def test_load_constant_with_n_other_than_1_is_refused():
    layer = {"type": "load_constant", "name": "k", "top": "c", "constant_blob": 1, "k": 2, "h": 1, "w": 1, "n": 2}
    add = {"type": "elementwise", "name": "a", "bottom": "x,c", "top": "y", "operation": 0}
    model = EspressoModel.from_layers([layer, add], {1: np.ones(2, np.float32)}, {"x": (1, 2, 1, 1), "c": (1, 2, 1, 1)})
    with pytest.raises(UnsupportedLayerError, match="n 2"):
        convert(model)
    with pytest.raises(UnsupportedLayerError, match="n 2"):
        reference_run(model, np.zeros((1, 2, 1, 1), np.float32))
    ok = EspressoModel.from_layers([dict(layer, n=1), add], {1: np.array([1, 2], np.float32)},
                                   {"x": (1, 2, 1, 1), "c": (1, 2, 1, 1)})
    x = np.zeros((3, 2, 1, 1), np.float32)
    ref, got = _both(ok, x)
    np.testing.assert_array_equal(got["y"], x + np.array([1, 2], np.float32).reshape(1, 2, 1, 1))


@pytest.mark.parametrize("layer,shapes,match", [
    ({"type": "general_padding", "name": "p", "bottom": "x", "top": "y", "pad_fill_mode": 2, "pad_t": 1},
     {"x": (1, 1, 3, 3)}, "pad_fill_mode 2 is not supported.*reflects or replicates"),
    ({"type": "reduce", "name": "r", "bottom": "x", "top": "y", "mode": 11, "axis_mode": 4, "use_version": 1},
     {"x": (1, 3, 3, 3)}, "mode 11 is not supported.*ARGMAX 9"),
    ({"type": "crop_and_resize", "name": "cr", "bottom": "x", "top": "y", "target_size_h": 2, "target_size_w": 2,
      "grid_sampling_mode": 1}, {"x": (1, 1, 3, 3)}, "crop_and_resize.*not evidenced"),
])
def test_what_the_specification_does_not_settle_is_refused(layer, shapes, match):
    model = EspressoModel.from_layers([layer], None, shapes)
    assert list(unsupported_layers(model)) == [layer["name"]]
    with pytest.raises(UnsupportedLayerError, match=match):
        convert(model)
    with pytest.raises(UnsupportedLayerError):
        reference_run(model, np.zeros((1, *shapes["x"][1:]), np.float32))


def test_six_bit_weights_name_their_width():
    layer = {"type": "convolution", "name": "c", "bottom": "x", "top": "y", "C": 2, "K": 1, "Nx": 1, "Ny": 1,
             "weights": {"W_U6": 5, "per_ch_qscale": 9, "per_ch_qbias": 7}}
    with pytest.raises(GraphError, match=r"'W_U6': 6-bit quantized weights are not supported.*not evidenced"):
        EspressoModel.from_layers([layer], {5: b"\0", 7: b"\0" * 8, 9: b"\0" * 8}, {"x": (1, 1, 2, 2)})


def test_declared_outputs_are_the_outputs(tmp_path):
    """A flagged is_output blob that the description does not declare is internal (a later layer reads it)."""
    import json
    import shutil

    from conftest import WILD_DIR
    from neuralhash.espresso import load_model

    src = WILD_DIR / "MNISTClassifier.mlmodelc"
    if not (src / "model.espresso.weights").is_file():
        pytest.skip("MNISTClassifier is not present")
    dst = tmp_path / "m.mlmodelc"
    shutil.copytree(src, dst)
    for p in dst.rglob("*"):
        p.chmod(0o644 if p.is_file() else 0o755)
    graph = json.loads((dst / "model.espresso.net").read_text())
    graph["layers"][6]["attributes"] = {"is_output": 1}  # the flatten
    (dst / "model.espresso.net").write_text(json.dumps(graph))
    assert load_model(dst).outputs == ["labelProbabilities"]
    (dst / "coremldata.bin").unlink()
    assert load_model(dst).outputs == ["drawing_flatten0_reshape0", "labelProbabilities"]
