"""verify(): passes on a correct conversion, and names the first diverging layer of a broken one."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from neuralhash.cli import main
from neuralhash.convert import convert
from neuralhash.errors import NeuralHashError
from neuralhash.espresso import EspressoModel, write_espresso
from neuralhash.convert.verify import verify


def _small_model_parts():
    rng = np.random.default_rng(3)
    layers = [
        {"type": "convolution", "name": "conv1", "bottom": "x", "top": "c1", "C": 6, "K": 3, "Nx": 3, "Ny": 3,
         "stride_x": 2, "stride_y": 2, "n_groups": 1, "pad_mode": 1, "has_biases": 0, "blob_weights": 1},
        {"type": "batchnorm", "name": "norm1", "bottom": "c1", "top": "n1", "C": 6, "training": 1,
         "training_instancenorm": 1, "training_eps": 1e-6, "blob_batchnorm_params": 3},
        {"type": "activation", "name": "relu1", "bottom": "n1", "top": "r1", "mode": 0},
        {"type": "convolution", "name": "conv2", "bottom": "r1", "top": "c2", "C": 4, "K": 6, "Nx": 1, "Ny": 1,
         "n_groups": 1, "pad_mode": 2, "has_biases": 1, "blob_weights": 5, "blob_biases": 7},
        {"type": "pool", "name": "gap", "bottom": "c2", "top": "p", "avg_or_max": 0, "is_global": 1,
         "size_x": 6, "size_y": 5},
        {"type": "inner_product", "name": "fc", "bottom": "p", "top": "out", "nB": 4, "nC": 5, "has_biases": 1,
         "blob_weights": 9, "blob_biases": 11, "attributes": {"is_output": 1}},
    ]
    bn = np.stack([rng.normal(1, 0.1, 6), rng.normal(0, 0.1, 6), np.zeros(6), np.ones(6)], 1)
    blobs = {
        1: rng.normal(0, 0.3, (6, 3, 3, 3)).astype(np.float32),
        3: bn.astype(np.float32),
        5: rng.normal(0, 0.4, (4, 6, 1, 1)).astype(np.float32),
        7: rng.normal(0, 0.1, 4).astype(np.float32),
        9: rng.normal(0, 0.5, (5, 4)).astype(np.float32),
        11: rng.normal(0, 0.1, 5).astype(np.float32),
    }
    shapes = {"x": (1, 3, 9, 11), "c1": (1, 6, 5, 6), "n1": (1, 6, 5, 6), "r1": (1, 6, 5, 6),
              "c2": (1, 4, 5, 6), "p": (1, 4, 1, 1), "out": (1, 5, 1, 1)}
    return layers, blobs, shapes


@pytest.fixture(scope="module")
def small_model():
    return EspressoModel.from_layers(*_small_model_parts())


def test_verify_passes_on_faithful_conversion(small_model):
    report = verify(small_model, seeds=(0, 1, 2), batch=2)
    assert report.passed and report.divergence is None
    assert [o.blob for o in report.outputs] == ["out"]
    assert report.outputs[0].max_abs < 1e-5


def test_verify_names_first_diverging_layer(small_model):
    proto = convert(small_model, optimize=False)
    kernel = small_model.tensor(small_model.layer("conv2"), "weights")
    for init in proto.graph.initializer:
        array = numpy_helper.to_array(init)
        if array.shape == kernel.shape and np.array_equal(array, kernel):
            init.CopyFrom(numpy_helper.from_array(array * 1.5, init.name))
            break
    else:
        pytest.fail("conv2's kernel is not an initializer of the converted graph")
    report = verify(small_model, proto, seeds=(0,))
    assert not report.passed
    assert report.divergence is not None
    assert (report.divergence.layer, report.divergence.type) == ("conv2", "convolution")


def test_cli_convert_verify_round_trip(tmp_path, capsys):
    layers, blobs, shapes = _small_model_parts()
    write_espresso(tmp_path / "m", "model", layers=layers, shapes=shapes, blobs=blobs)
    out = tmp_path / "m.onnx"
    assert main(["convert", str(tmp_path / "m"), "-o", str(out), "--hash-head"]) == 1  # 5 outputs, not 128
    assert not out.exists()
    assert main(["convert", str(tmp_path / "m"), "-o", str(out)]) == 0
    onnx.checker.check_model(onnx.load(out), full_check=True)
    assert main(["verify", str(tmp_path / "m"), "--onnx", str(out), "--batch", "2"]) == 0
    assert "PASS" in capsys.readouterr().out


def test_failed_conversion_leaves_no_file(tmp_path, capsys):
    layers, blobs, shapes = _small_model_parts()
    layers[2] = dict(layers[2], mode=4)  # PReLU: not handled
    write_espresso(tmp_path / "m", "model", layers=layers, shapes=shapes, blobs=blobs)
    out = tmp_path / "bad.onnx"
    assert main(["convert", str(tmp_path / "m"), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "relu1" in err and "activation" in err and "4" in err
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["m"]


def test_verify_without_inputs_is_a_usage_error(tmp_path, capsys):
    layers, blobs, shapes = _small_model_parts()
    write_espresso(tmp_path / "m", "model", layers=layers, shapes=shapes, blobs=blobs)
    with pytest.raises(SystemExit) as exc:
        main(["verify", str(tmp_path / "m"), "--seeds", "0"])
    assert exc.value.code == 2
    assert "--seeds 0 needs at least one --image" in capsys.readouterr().err
    image = tmp_path / "photo.png"
    from conftest import draw_image

    draw_image(image, 1)
    assert main(["verify", str(tmp_path / "m"), "--seeds", "0", "--image", str(image)]) == 0
    assert "0 seeded random, 1 image(s)" in capsys.readouterr().out


def test_input_size_is_capped_before_anything_is_allocated(tmp_path, capsys):
    # The shape file claims a 20000 x 20000 input: 4.8 GB as float32 at batch 1.
    layers = [{"type": "activation", "name": "relu", "bottom": "x", "top": "y", "mode": 0}]
    huge = EspressoModel.from_layers(layers, None, {"x": (1, 3, 20000, 20000)})
    with pytest.raises(NeuralHashError, match=r"input blob 'x' of \[1, 3, 20000, 20000\] would take 4,578 MiB.*"
                                              r"limit of 64 MiB \(max_input_size, --max-input-size\)"):
        verify(huge)
    small = EspressoModel.from_layers(layers, None, {"x": (1, 3, 16, 16)})
    assert verify(small, batch=2).passed
    with pytest.raises(NeuralHashError, match=r"\[4, 3, 16, 16\] would take 0 MiB"):
        verify(small, batch=4, max_input_size=1000)
    write_espresso(tmp_path / "m", "model", layers=layers, shapes={"x": (1, 3, 16, 16)}, blobs={})
    assert main(["verify", str(tmp_path / "m"), "--max-input-size", "1000"]) == 1
    assert "--max-input-size" in capsys.readouterr().err
    assert main(["verify", str(tmp_path / "m"), "--max-input-size", "100000"]) == 0
