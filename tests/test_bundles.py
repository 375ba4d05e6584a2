"""Compiled Core ML bundles: found by contents, pipelines, ML Programs, coremldata.bin; inspect on odd models."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import onnx
import pytest

from neuralhash.cli import main
from neuralhash.convert import convert
from neuralhash.errors import CoreMLDataError, MLProgramError, PipelineError
from neuralhash.espresso import load_model, pipeline_stages
from neuralhash.espresso.coremldata import parse_coremldata, read_coremldata
from neuralhash.espresso.writer import write_espresso

from conftest import WILD_DIR as WILD  # noqa: E402
BUNDLES = ["FindFour", "UxModel", "SSDOcr"]


@pytest.fixture(scope="module")
def wild() -> Path:
    if not all((WILD / f"{name}.mlmodelc" / "coremldata.bin").is_file() for name in BUNDLES):
        pytest.skip(f"the real compiled models are not present in {WILD}")
    return WILD


def _write_model(folder: Path, channels: int = 2, prefix: str = "model") -> None:
    """A one-convolution Espresso model: [3, 4, 4] -> [channels, 4, 4]."""
    rng = np.random.default_rng(channels)
    layer = {"type": "convolution", "name": "conv", "bottom": "x", "top": "y", "C": channels, "K": 3, "Nx": 1,
             "Ny": 1, "n_groups": 1, "pad_mode": 0, "has_biases": 0, "blob_weights": 1}
    write_espresso(folder, prefix, layers=[layer], shapes={"x": (1, 3, 4, 4), "y": (1, channels, 4, 4)},
                   blobs={1: rng.standard_normal((channels, 3, 1, 1)).astype(np.float32)}, compressed=False)


# -- coremldata.bin ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", BUNDLES)
def test_real_coremldata_agrees_with_the_shape_file(wild, name):
    """The description's image size and output shapes are the shape file's, read independently."""
    model = load_model(wild / f"{name}.mlmodelc")
    info = model.bundle_info
    assert info is not None and info.readable, info
    assert info.model_kind == "generic"
    assert [f.name for f in info.inputs] == model.inputs
    (image,) = info.inputs
    shape = model.shapes[image.name]
    assert (image.kind, image.height, image.width, image.color_space) == ("image", shape.h, shape.w, "RGB")
    assert sorted(f.name for f in info.outputs) == sorted(model.outputs) == sorted(info.output_names)
    for feature in info.outputs:
        assert feature.kind == "multiArray"
        if feature.shape:  # the CardScan classifiers give [k, h, w] with size-1 axes dropped
            s = model.shapes[feature.name]
            assert list(feature.shape) == [d for d in (s.k, s.h, s.w) if d != 1] or list(feature.shape) == [s.k, s.h, s.w]


def test_real_coremldata_details(wild):
    ux = read_coremldata(wild / "UxModel.mlmodelc" / "coremldata.bin")
    assert ux.metadata == {"user_defined": {"coremltoolsVersion": "3.3"}}
    assert ux.outputs[0].shape == (3,) and ux.outputs[0].data_type == "double"
    ssd = read_coremldata(wild / "SSDOcr.mlmodelc" / "coremldata.bin")
    assert [f.data_type for f in ssd.outputs] == ["float32"] * 3
    assert "3420, 10" in ssd.outputs[0].description


def test_unreadable_coremldata_is_reported_not_raised(tmp_path, capsys):
    _write_model(tmp_path)
    (tmp_path / "coremldata.bin").write_bytes(b"\x01\x02garbage")
    model = load_model(tmp_path)
    assert model.bundle_info is not None and not model.bundle_info.readable
    assert "layout not recognised" in model.bundle_info.error
    assert main(["inspect", str(tmp_path)]) == 0
    assert "coremldata.bin not readable: " in capsys.readouterr().out
    with pytest.raises(CoreMLDataError):
        parse_coremldata(b"\xf4\x01\x00\x00" + b"\xff" * 40)


def test_coremldata_lying_lengths(wild):
    data = bytearray((wild / "FindFour.mlmodelc" / "coremldata.bin").read_bytes())
    kind_len = struct.unpack_from("<Q", data, 28)[0]
    desc_at = 36 + kind_len + 32
    for lie in (len(data), 2**63, 2**64 - 1):
        bad = bytearray(data)
        struct.pack_into("<Q", bad, desc_at, lie)
        with pytest.raises(CoreMLDataError, match="runs past the end"):
            parse_coremldata(bytes(bad))
    bad = bytearray(data)
    struct.pack_into("<Q", bad, 28, 2**64 - 1)
    with pytest.raises(CoreMLDataError, match="model kind length"):
        parse_coremldata(bytes(bad))


def test_description_goes_into_the_onnx_metadata(wild, tmp_path):
    bundle = tmp_path / "AnyName"  # no .mlmodelc suffix: found by its contents
    _write_model(bundle)
    shutil.copy(wild / "UxModel.mlmodelc" / "coremldata.bin", bundle / "coremldata.bin")
    proto = convert(load_model(bundle))
    props = {p.key: p.value for p in proto.metadata_props}
    description = json.loads(props["neuralhash.coreml_description"])
    assert description["inputs"][0]["name"] == "input1" and description["inputs"][0]["width"] == 224
    assert description["metadata"]["user_defined"]["coremltoolsVersion"] == "3.3"
    (bundle / "coremldata.bin").unlink()
    proto = convert(load_model(bundle))
    assert "neuralhash.coreml_description" not in {p.key for p in proto.metadata_props}


# -- pipelines and ML Programs ------------------------------------------------------------------


@pytest.fixture()
def pipeline(tmp_path) -> Path:
    root = tmp_path / "Pipe.mlmodelc"
    _write_model(root / "model0", channels=2)
    _write_model(root / "model1", channels=5)
    (root / "model1" / "coremldata.bin").write_bytes(b"")
    (root / "coremldata.bin").write_bytes(b"")
    return root


def test_pipeline_is_named_with_its_stages(pipeline):
    with pytest.raises(PipelineError, match=r"Pipe.mlmodelc: a pipeline of 2 stages, not one model: "
                                            r"model0 \(espresso\), model1 \(espresso\); address one stage as "
                                            r".*Pipe.mlmodelc/model0") as info:
        load_model(pipeline)
    assert [s.index for s in info.value.stages] == [0, 1]
    stage = load_model(pipeline / "model1")  # a stage is addressed by its folder
    assert stage.shapes["y"].k == 5
    assert [s.kind for s in pipeline_stages(pipeline)] == ["espresso", "espresso"]


def test_pipeline_converts_stage_by_stage(pipeline, tmp_path, capsys):
    out = tmp_path / "out" / "pipe.onnx"
    out.parent.mkdir()
    assert main(["convert", str(pipeline), "-o", str(out)]) == 0
    written = sorted(p.name for p in out.parent.iterdir())
    assert written == ["pipe.stage0.onnx", "pipe.stage1.onnx"]
    for index, channels in ((0, 2), (1, 5)):
        proto = onnx.load(str(out.parent / f"pipe.stage{index}.onnx"))
        assert proto.graph.output[0].type.tensor_type.shape.dim[1].dim_value == channels
    assert main(["inspect", str(pipeline)]) == 0
    assert "stage 1" in capsys.readouterr().out


def test_pipeline_with_a_failing_stage_says_which_and_writes_nothing(pipeline, tmp_path, capsys):
    net = pipeline / "model1" / "model.espresso.net"
    net.write_text(net.read_text().replace('"convolution"', '"mystery_op"'))
    out = tmp_path / "pipe.onnx"
    assert main(["convert", str(pipeline), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "stage 1 (model1) fails: layer 'conv' (mystery_op)" in err and "Traceback" not in err
    assert not list(tmp_path.glob("pipe*"))
    assert main(["convert", str(pipeline), "-o", "-"]) == 1
    assert "one ONNX file per stage" in capsys.readouterr().err


def test_ml_program_is_named(tmp_path, capsys):
    bundle = tmp_path / "New.mlmodelc"
    (bundle / "weights").mkdir(parents=True)
    (bundle / "model.mil").write_text("program(1.0)\n")
    (bundle / "weights" / "weight.bin").write_bytes(b"\0" * 64)
    with pytest.raises(MLProgramError, match=r"an ML Program \(model.mil\), not an Espresso model"):
        load_model(bundle)
    assert main(["convert", str(bundle), "-o", str(tmp_path / "x.onnx")]) == 1
    assert "an ML Program (model.mil)" in capsys.readouterr().err


# -- inspect never fails half-way ------------------------------------------------------------------


def _reject_constant(name):
    raise ValueError(f"bare {name} in JSON output")


def test_inspect_json_is_valid_with_odd_transform_params_and_layers(tmp_path, capsys):
    _write_model(tmp_path)
    net = tmp_path / "model.espresso.net"
    doc = json.loads(net.read_text())
    doc["transform_params"] = {"image": {"scale": "two", "bias_r": 10**400, "bias_g": [1], "is_network_bgr": 1}}
    doc["layers"].append({"type": "pool", "name": "odd", "bottom": "y", "top": "z", "avg_or_max": "max"})
    doc["layers"].append({"type": "elementwise", "name": "nan", "bottom": "z", "top": "w", "operation": 3,
                          "alpha": 1.5})
    net.write_text(json.dumps(doc).replace("1.5", "NaN"))
    assert main(["inspect", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "pixel * 'two'" in text and "problem      layer 'odd' (pool): field 'avg_or_max'" in text
    assert "field 'alpha' is nan" in text
    assert main(["inspect", "--json", str(tmp_path)]) == 0
    info = json.loads(capsys.readouterr().out, parse_constant=_reject_constant)
    assert info["transform_params"]["image"]["bias_r"] == 10**400
    assert info["layer_types"] == {"convolution": 1, "elementwise": 1, "pool": 1}
    assert len(info["problems"]) == 2


def test_inspect_json_replaces_non_finite_numbers_with_strings(tmp_path, capsys):
    _write_model(tmp_path)
    net = tmp_path / "model.espresso.net"
    doc = json.loads(net.read_text())
    doc["transform_params"] = {"image": {"scale": 0.25, "bias_r": 0.5, "bias_g": 0.75}}
    net.write_text(json.dumps(doc).replace("0.25", "NaN").replace("0.5", "Infinity").replace("0.75", "-Infinity"))
    assert main(["inspect", "--json", str(tmp_path)]) == 0
    info = json.loads(capsys.readouterr().out, parse_constant=_reject_constant)
    assert info["transform_params"]["image"] == {"scale": "NaN", "bias_r": "Infinity", "bias_g": "-Infinity"}
    assert main(["inspect", str(tmp_path)]) == 0
    assert "pixel * nan + (inf -inf 0), RGB" in capsys.readouterr().out
    assert main(["convert", str(tmp_path), "-o", str(tmp_path / "x.onnx")]) == 1  # refused outside inspect
    assert "transform_params: field 'image.scale' is nan" in capsys.readouterr().err


@pytest.mark.parametrize("name", BUNDLES)
def test_inspect_json_on_real_bundles(wild, name, capsys):
    assert main(["inspect", "--json", str(wild / f"{name}.mlmodelc")]) == 0
    info = json.loads(capsys.readouterr().out, parse_constant=_reject_constant)
    assert info["coreml"]["inputs"][0]["kind"] == "image"
    assert info["problems"] == [] and info["parameters"] > 0


def test_pipeline_stage_without_an_espresso_model(pipeline, tmp_path, capsys):
    (pipeline / "model2").mkdir()
    (pipeline / "model2" / "coremldata.bin").write_bytes(b"")  # a non-neural stage (a classifier's labels...)
    with pytest.raises(PipelineError, match=r"model2 \(no Espresso model\)"):
        load_model(pipeline)
    assert main(["convert", str(pipeline), "-o", str(tmp_path / "p.onnx")]) == 1
    assert "stage 2 (model2) has no Espresso model" in capsys.readouterr().err
    assert not list(tmp_path.glob("p*.onnx"))
