"""What Core ML adds around a network (``convert --with-preprocessing``), on MNISTClassifier's real weights.

The independent expectation is the digit itself: digits rendered with
several fonts (white on black, 28 x 28, as the model's description asks)
must be classified correctly, at least 9 of 10 per font; the label output
must be the argmax of the probabilities mapped through the class labels;
and the preprocessed model must equal the plain conversion fed pixel / 255.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import assert_close
from test_wild_next import _fixture, copy_bundle

from neuralhash.cli import main
from neuralhash.convert import convert
from neuralhash.errors import ConversionError
from neuralhash.espresso import load_model, read_coremldata
from neuralhash.reference import run as reference_run
from neuralhash.hashing.runtime import make_session

FONT_DIRS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"), Path("/System/Library/Fonts"))
FONT_NAMES = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "DejaVuSans-Bold.ttf",
              "DejaVuSerif-Italic.ttf", "DejaVuSansCondensed.ttf")


def fonts() -> list:
    """(label, Pillow font at 20 px): the system's DejaVu faces that exist, and Pillow's own default font."""
    from PIL import ImageFont, features

    found = []
    for name in FONT_NAMES:
        path = next((p for d in FONT_DIRS if d.is_dir() for p in d.rglob(name)), None)
        if path is not None:
            found.append((name, ImageFont.truetype(str(path), 20)))
    if features.check("freetype2"):
        found.append(("Pillow default", ImageFont.load_default(size=20)))
    return found


def digits(font) -> np.ndarray:
    """0-9 drawn white on black, centred in 28 x 28: uint8 [10, 28, 28, 1] as Core ML's grey image."""
    from PIL import Image, ImageDraw

    out = []
    for d in range(10):
        image = Image.new("L", (28, 28), 0)
        draw = ImageDraw.Draw(image)
        box = draw.textbbox((0, 0), str(d), font=font)
        draw.text(((28 - (box[2] - box[0])) / 2 - box[0], (28 - (box[3] - box[1])) / 2 - box[1]), str(d),
                  fill=255, font=font)
        out.append(np.asarray(image))
    return np.stack(out)[..., None]


@pytest.fixture(scope="module")
def mnist():
    model = load_model(_fixture("MNISTClassifier"))
    return model, convert(model, with_preprocessing=True)


def test_the_description_is_read(mnist):
    model, _ = mnist
    info = model.bundle_info
    assert info.class_labels == tuple(range(10)) and info.class_label_type == "Int64"
    assert (info.predicted_feature, info.predicted_probabilities, info.probabilities_blob) == \
        ("classLabel", "labelProbabilities", "labelProbabilities")
    # metadata.json agrees with coremldata.bin's labels; model/coremldata.bin's last record is the graph's scale
    assert [int(v) for v in info.metadata_json["classLabels"]] == list(info.class_labels)
    assert info.image_records[-1] == ("image", pytest.approx(1 / 255))
    assert np.float32(info.image_records[-1][1]) == np.float32(model.transform_params["image"]["scale"])


def test_interface_of_the_converted_classifier(mnist):
    _, proto = mnist
    session = make_session(proto)
    (i,) = session.get_inputs()
    assert (i.name, i.shape, i.type) == ("image", ["batch", 28, 28, 1], "tensor(uint8)")
    assert [(o.name, o.shape, o.type) for o in session.get_outputs()] == [
        ("classLabel", ["batch"], "tensor(int64)"), ("labelProbabilities", ["batch", 10], "tensor(float)")]
    props = {p.key: p.value for p in proto.metadata_props}
    interface = json.loads(props["neuralhash.coreml_interface"])
    assert interface["classifier"]["labels"] == list(range(10))
    assert interface["image_inputs"][0]["color_space"] == "grayscale"
    description = json.loads(props["neuralhash.coreml_description"])
    assert description["metadata_json"]["modelType"]["name"] == "MLModelType_neuralNetworkClassifier"


@pytest.mark.parametrize("label,font", fonts(), ids=lambda v: v if isinstance(v, str) else "")
def test_rendered_digits_are_classified(mnist, label, font):
    _, proto = mnist
    x = digits(font)
    predicted, probabilities = make_session(proto).run(None, {"image": x})
    assert (predicted == np.arange(10)).sum() >= 9, f"{label}: {predicted.tolist()}"
    np.testing.assert_array_equal(predicted, np.argmax(probabilities, axis=1))  # labels 0-9 in order
    assert_close(probabilities.sum(axis=1), np.ones(10), rtol=1e-5)


def test_preprocessing_is_the_scale_of_the_plain_conversion(mnist):
    """uint8 pixels p through the interface == the plain network on p / 255 (and the reference executor)."""
    model, proto = mnist
    x = np.random.default_rng(0).integers(0, 256, (3, 28, 28, 1), dtype=np.uint8)
    _, probabilities = make_session(proto).run(None, {"image": x})
    scaled = (x[..., 0].astype(np.float32) * np.float32(1 / 255))
    plain = make_session(convert(model)).run(None, {"image": scaled})[0].reshape(3, 10)
    assert_close(probabilities, plain, rtol=1e-5)
    assert_close(probabilities, reference_run(model, scaled)["labelProbabilities"].reshape(3, 10), rtol=1e-4)


def test_with_preprocessing_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "mnist.onnx"
    assert main(["convert", str(_fixture("MNISTClassifier")), "-o", str(out), "--with-preprocessing",
                 "--no-optimize"]) == 0
    assert "outputs classLabel, labelProbabilities" in capsys.readouterr().out
    x = digits(fonts()[-1][1])
    predicted, _ = make_session(onnx.load(out)).run(None, {"image": x})
    assert (predicted == np.arange(10)).sum() >= 9


def _string_labels(folder: Path) -> None:
    """Make the copy's coremldata.bin leave its labels unread (another encoding code) and give metadata.json
    String labels: the labels then come from metadata.json."""
    data = bytearray((folder / "coremldata.bin").read_bytes())
    at = data.index(struct.pack("<QQ", 403, 101))
    data[at + 8:at + 16] = struct.pack("<Q", 102)
    (folder / "coremldata.bin").write_bytes(bytes(data))
    meta = json.loads((folder / "metadata.json").read_text())
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    meta[0]["classLabels"] = names
    for o in meta[0]["outputSchema"]:
        if o["name"] == "classLabel":
            o["type"] = "String"
    (folder / "metadata.json").write_text(json.dumps(meta))


def test_string_labels_from_metadata_json(tmp_path):
    folder = copy_bundle(_fixture("MNISTClassifier"), tmp_path / "strings.mlmodelc")
    _string_labels(folder)
    info = read_coremldata(folder / "coremldata.bin")
    assert info.class_label_type == "String" and info.class_labels[2] == "two"
    proto = convert(load_model(folder), with_preprocessing=True)
    predicted, _ = make_session(proto).run(None, {"image": digits(fonts()[-1][1])})
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    assert sum(p == n for p, n in zip(predicted.tolist(), names)) >= 9


def test_a_scale_that_disagrees_is_refused(tmp_path):
    folder = copy_bundle(_fixture("MNISTClassifier"), tmp_path / "scale.mlmodelc")
    records = bytearray((folder / "model" / "coremldata.bin").read_bytes())
    records[-4:] = struct.pack("<f", 0.5)
    (folder / "model" / "coremldata.bin").write_bytes(bytes(records))
    model = load_model(folder)
    with pytest.raises(ConversionError, match="model/coremldata.bin gives the scale 0.5"):
        convert(model, with_preprocessing=True)
    convert(model)  # the network itself still converts; its metadata says what is wrong
    assert "error" in json.loads({p.key: p.value for p in convert(model).metadata_props}
                                 ["neuralhash.coreml_interface"])


def test_nothing_to_add_is_one_error(tmp_path, capsys):
    folder = _fixture("FindFour")  # its description has an image input: that is added; a model without any is refused
    from test_wild_next import sentiment_with_weights, _without_lstm

    plain, _ = sentiment_with_weights(tmp_path, _without_lstm, bundle_files=False)
    assert main(["convert", str(plain), "-o", str(tmp_path / "x.onnx"), "--with-preprocessing"]) == 1
    assert "no coremldata.bin" in capsys.readouterr().err
    assert main(["convert", str(folder), "-o", str(tmp_path / "f.onnx"), "--with-preprocessing"]) == 0


def test_inspect_shows_the_classifier_and_the_grey_input(capsys):
    assert main(["inspect", str(_fixture("MNISTClassifier"))]) == 0
    text = capsys.readouterr().out
    assert "transform    pixel * 0.003921568859 + (0 0 0), grayscale" in text
    assert "classifier: 10 Int64 class labels (0, 1, 2, 3, 4, 5, 6, 7, 8, 9) -> 'classLabel'" in text
