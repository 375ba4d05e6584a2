"""Real compiled Core ML models beyond NeuralHash (``../shared/fixtures/coreml-wild``).

Each check has an expectation that does not come from the converter:
the fixture README's sha256 and declared shapes, the shape file (every
blob), the NumPy reference executor (``verify``), and the mathematics of what
the lowered layers compute: softmax outputs sum to 1 on real photographs, and
SSDOcr's scores (a softmax over 11 classes without the background) sum to at
most 1 per row. Also: a model with gaps gets one error naming all of them,
and ``inspect`` still describes it.
"""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import onnx
import pytest
from conftest import ROOT, assert_close

from neuralhash.cli import main
from neuralhash.convert import convert, unsupported_layers
from neuralhash.errors import UnsupportedLayerError
from neuralhash.espresso import EspressoModel, load_model, write_espresso
from neuralhash.reference import check_shapes
from neuralhash.reference import run as reference_run
from neuralhash.hashing.runtime import make_session
from neuralhash.convert.verify import image_inputs, verify

from conftest import WILD_DIR as WILD  # noqa: E402
MODELS = ("FindFour", "UxModel", "SSDOcr")
RTOL = 1e-5  # float32 sums of probabilities, relative to 1

# ONNX outputs: [batch] + the shape file's entry in its real rank (ESPRESSO.md's reading of entries
# without _rank: features in w, then h; a blob on the sequence axis is rank 5).
OUTPUTS = {
    "FindFour": {"output1": ["batch", 3, 34, 51]},
    "UxModel": {"output1": ["batch", 3, 1, 1]},
    "SSDOcr": {"boxes": ["batch", 3420, 4], "scores": ["batch", 3420, 10], "594": ["batch", 3420, 1, 1, 1]},
}


def _folder(name):
    folder = WILD / f"{name}.mlmodelc"
    if not (folder / "model.espresso.weights").is_file():
        pytest.skip(f"the real models are not present in {WILD}")
    return folder


_LOADED: dict[str, EspressoModel] = {}


def wild(name: str) -> EspressoModel:
    if name not in _LOADED:
        _LOADED[name] = load_model(_folder(name) / "model.espresso.net")
    return _LOADED[name]


def photos() -> list:
    """The sample photos shipped with the package and scikit-image's (Pillow images)."""
    from PIL import Image

    images = [Image.open(p).convert("RGB") for p in sorted((ROOT / "src" / "neuralhash" / "data").iterdir())]
    skimage_data = pytest.importorskip("skimage.data")
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        images.append(Image.fromarray(getattr(skimage_data, name)()))
    return images


def run_ort(proto: onnx.ModelProto, model: EspressoModel, x: np.ndarray, extra: tuple[str, ...] = ()) -> dict:
    """ONNX Runtime's outputs, plus the blobs ``extra`` exposed as outputs."""
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    for blob in extra:
        proto.graph.output.append(onnx.helper.make_tensor_value_info(blob, onnx.TensorProto.FLOAT, None))
    names = [o.name for o in proto.graph.output]
    return dict(zip(names, make_session(proto).run(names, {model.inputs[0]: x})))


@pytest.mark.parametrize("name", MODELS)
def test_fixture_is_the_one_described(name):
    folder = _folder(name)
    table = (WILD / "README.md").read_text()
    for suffix in ("net", "shape", "weights"):
        path = folder / f"model.espresso.{suffix}"
        row = re.search(rf"\| {name}\.mlmodelc/model\.espresso\.{suffix} \| (\d+) \| ([0-9a-f]{{64}}) \|", table)
        assert row, path
        data = path.read_bytes()
        assert len(data) == int(row[1]) and hashlib.sha256(data).hexdigest() == row[2]


@pytest.mark.parametrize("optimize", [True, False], ids=["optimized", "no-optimize"])
@pytest.mark.parametrize("name", MODELS)
def test_converts_with_every_shape_checked(name, optimize):
    model = wild(name)
    assert unsupported_layers(model) == {}
    proto = convert(model, optimize=optimize)  # checks every blob against the shape file
    onnx.checker.check_model(proto, full_check=True)
    got = {o.name: [d.dim_value or d.dim_param for d in o.type.tensor_type.shape.dim] for o in proto.graph.output}
    assert got == OUTPUTS[name]
    shape = model.shapes[model.inputs[0]]
    assert [d.dim_value or d.dim_param for d in proto.graph.input[0].type.tensor_type.shape.dim] == \
        ["batch", shape.k, shape.h, shape.w]


@pytest.mark.parametrize("name", MODELS)
def test_reference_blobs_match_every_shape_entry(name):
    model = wild(name)
    shape = model.shapes[model.inputs[0]]
    x = np.random.default_rng(0).uniform(-1, 1, (1, *shape.onnx_dims)).astype(np.float32)
    kept = reference_run(model, x, keep=True)
    assert set(model.shapes) <= set(kept)  # every entry is a blob the executor produced...
    check_shapes(model, kept)  # ...of the entry's shape, seq included
    for blob, entry in model.shapes.items():
        assert kept[blob].size == int(np.prod(entry.view)), blob


@pytest.mark.parametrize("name", MODELS)
def test_verify_at_batch_1_and_3(name):
    model = wild(name)
    report = verify(model, seeds=(0,), batch=3)
    assert report.passed, report.divergence
    literal = verify(model, seeds=(), images=photos()[:1], optimize=False)
    assert literal.passed, literal.divergence


@pytest.fixture(scope="module")
def photo_batches():
    """Per model: the converted graph and every photo resized and scaled for its input, as one batch."""
    out = {}
    for name in MODELS:
        model = wild(name)
        x = np.concatenate([x for _, x in image_inputs(photos(), model)])
        out[name] = (model, convert(model), x)
    return out


def test_findfour_softmax_sums_to_one_at_every_location(photo_batches):
    model, proto, x = photo_batches["FindFour"]
    probs = run_ort(proto, model, x)["output1"].astype(np.float64)
    assert probs.shape == (len(x), 3, 34, 51) and (probs >= 0).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=RTOL)


def test_uxmodel_softmax_sums_to_one(photo_batches):
    model, proto, x = photo_batches["UxModel"]
    probs = run_ort(proto, model, x)["output1"].astype(np.float64)
    assert probs.shape == (len(x), 3, 1, 1) and (probs >= 0).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=RTOL)


def test_ssdocr_lowered_softmax_and_scores(photo_batches):
    model, proto, x = photo_batches["SSDOcr"]
    # "588" is the lowered softmax (exp, reduce over k, inverse, multiply) over the 11 classes
    got = run_ort(proto, model, x, extra=("588",))
    full = got["588"].astype(np.float64)
    assert full.shape == (len(x), 3420, 11, 1, 1)
    np.testing.assert_allclose(full.sum(axis=2), 1.0, rtol=RTOL)
    scores = got["scores"].astype(np.float64)
    assert scores.shape == (len(x), 3420, 10) and (scores >= 0).all()
    assert (scores.sum(axis=2) <= 1 + RTOL).all()
    assert_close(scores, full[:, :, 1:, 0, 0], rtol=RTOL)  # background dropped
    assert_close(got["594"].reshape(len(x), 3420), scores.sum(axis=2), rtol=RTOL)
    assert np.isfinite(got["boxes"]).all()


# -- a model with gaps -------------------------------------------------------------------------


def _gappy(tmp_path, name="gappy", with_c=True):
    layers = [
        {"type": "activation", "name": "a", "bottom": "x", "top": "a", "mode": 0},
        {"type": "rnn_arch", "name": "lstm", "bottom": "a", "top": "b", "hidden_size": 4},
        {"type": "elementwise", "name": "odd", "bottom": "b", "top": "c", "operation": 57, "alpha": 1.0},
        {"type": "activation", "name": "prelu", "bottom": "c", "top": "d", "mode": 4},
        {"type": "activation", "name": "last", "bottom": "d", "top": "y", "mode": 0},
    ]
    shapes = {blob: (1, 2, 3, 3) for blob in ("x", "a", "b", "c", "d", "y") if with_c or blob != "c"}
    return write_espresso(tmp_path / name, "model", layers=layers, shapes=shapes, blobs={})


def test_every_gap_is_reported_at_once(tmp_path):
    sources = _gappy(tmp_path)
    model = load_model(sources)
    gaps = unsupported_layers(model)
    assert list(gaps) == ["lstm", "odd", "prelu"]
    assert "rnn_arch" in gaps["lstm"] and "operation 57" in gaps["odd"] and "mode 4" in gaps["prelu"]
    with pytest.raises(UnsupportedLayerError) as exc:
        convert(model)
    message = str(exc.value)
    assert "\n" not in message and message.startswith("3 layers cannot be converted")
    assert all(f"'{name}'" in message for name in gaps)
    out = tmp_path / "gappy.onnx"
    assert main(["convert", str(sources.net), "-o", str(out)]) == 1
    assert not out.exists()
    # A failed layer stands in for its top with the shape file's entry; without one, what reads it
    # is still listed (inspect never says a layer converts when its input cannot), naming that input.
    gaps = unsupported_layers(load_model(_gappy(tmp_path, "no_c", with_c=False)))
    assert list(gaps) == ["lstm", "odd", "prelu"]
    assert "its input" in gaps["prelu"] and "cannot be converted" in gaps["prelu"]


def test_inspect_shows_what_converts(tmp_path, capsys):
    sources = _gappy(tmp_path)
    assert main(["inspect", str(sources.net), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert sorted(info["unsupported"]) == ["lstm", "odd", "prelu"]
    assert main(["inspect", str(sources.net)]) == 0
    text = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[-1] for line in text.splitlines() if line.startswith("  ")}
    assert rows == {"type": "converts", "activation": "partly", "rnn_arch": "no", "elementwise": "no"}


@pytest.mark.parametrize("name", MODELS)
def test_inspect_real_model(name, capsys):
    assert main(["inspect", str(_folder(name) / "model.espresso.net"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["unsupported"] == {}


# -- readings the shape file forces ------------------------------------------------------------


def _edited(name: str, layer_name: str, **fields) -> EspressoModel:
    """The real model with one layer's fields changed (same weights)."""
    from neuralhash.espresso import WeightsFile, read_json_file

    folder = _folder(name)
    graph = read_json_file(folder / "model.espresso.net")[0]
    shape_doc = read_json_file(folder / "model.espresso.shape")[0]
    for layer in graph["layers"]:
        if layer["name"] == layer_name:
            layer.update(fields)
    return EspressoModel.from_documents(graph, shape_doc, WeightsFile.read(folder / "model.espresso.weights"))


def test_transpose_direction_is_the_one_the_shape_file_allows():
    # SSDOcr's "507": axis_h 0, axis_w 2, axis_k 1 (a 3-cycle). Read the other way round (the inverse
    # permutation), {k 33, h 24, w 38} would become {k 38, h 33, w 24}, not the shape file's {k 24, h 38, w 33}.
    from neuralhash.errors import ShapeMismatchError

    inverse = _edited("SSDOcr", "507", axis_h=2, axis_w=1, axis_k=0)
    with pytest.raises(ShapeMismatchError, match=r"'507' \(transpose\)"):
        convert(inverse)


def test_kernel_width_is_nx():
    # FindFour's "resize5" is a 7 x 1 kernel without padding: w 57 -> 51 only if Nx is the width.
    from neuralhash.errors import ShapeMismatchError

    assert wild("FindFour").layer("resize5").kernel_w == 7
    swapped = _edited("FindFour", "resize5", Nx=1, Ny=7)
    with pytest.raises(ShapeMismatchError, match=r"'resize5' \(convolution\)"):
        convert(swapped)
