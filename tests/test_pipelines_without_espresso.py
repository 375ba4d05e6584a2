"""Pipelines of non-neural Core ML stages (SentimentPolarity, and a Create ML image classifier's shape).

Each stage's ``coremldata.bin`` opens with the number of its Core ML model type
(Model.proto's oneof: 400 glmClassifier, 602 featureVectorizer, 603
dictVectorizer, 2002 visionFeaturePrint...). The stages' own descriptions
must chain (each stage reads what the one before writes, the last gives the
pipeline's outputs); every command names the model types and none advises
converting "the whole pipeline" when no stage can be.
"""

from __future__ import annotations

import json
import shutil
import struct

import pytest
from conftest import WILD_DIR

from neuralhash.cli import main
from neuralhash.errors import PipelineError
from neuralhash.espresso import load_model, pipeline_stages, read_coremldata

SENTIMENT = WILD_DIR / "SentimentPolarity.mlmodelc"


def _needs(folder):
    if not (folder / "coremldata.bin").is_file():
        pytest.skip(f"{folder} is not present")
    return folder


def test_stage_types_are_read_and_chain():
    folder = _needs(SENTIMENT)
    top = read_coremldata(folder / "coremldata.bin")
    leaves = [folder / "model0" / "model0", folder / "model0" / "model1", folder / "model1"]
    infos = [read_coremldata(p / "coremldata.bin") for p in leaves]
    assert top.model_type_name == "pipelineClassifier"
    assert read_coremldata(folder / "model0" / "coremldata.bin").model_type_name == "pipeline"
    assert [i.model_type_name for i in infos] == ["dictVectorizer", "featureVectorizer", "glmClassifier"]
    assert [i.model_type for i in infos] == [603, 602, 400]
    assert infos[0].inputs[0].name == top.inputs[0].name == "input"
    for before, after in zip(infos, infos[1:]):  # each stage reads what the one before writes
        assert before.outputs[0].name == after.inputs[0].name
    assert infos[1].outputs[0].shape == infos[2].inputs[0].shape == (16043,)
    assert [o.name for o in infos[2].outputs] == [o.name for o in top.outputs] == ["classLabel", "classProbability"]
    assert top.predicted_feature == infos[2].predicted_feature == "classLabel"


def test_every_command_names_the_model_types(tmp_path, capsys):
    folder = _needs(SENTIMENT)
    assert main(["inspect", str(folder)]) == 0
    text = capsys.readouterr().out
    assert "model0 (pipeline: dictVectorizer, featureVectorizer)" in text and "model1 (glmClassifier)" in text
    assert "no stage is an Espresso network" in text
    assert main(["inspect", str(folder), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [s["model_type"] for s in info["stages"]] == ["pipeline", "glmClassifier"]
    for command in (["convert", str(folder), "-o", str(tmp_path / "s.onnx")], ["verify", str(folder)]):
        assert main(command) == 1
        err = capsys.readouterr().err
        assert "glmClassifier" in err and "dictVectorizer" in err and "no stage is an Espresso network" in err
        assert "whole pipeline" not in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())


def _stage_of_type(src, dst, number: int):
    """A copy of a spec stage whose first word says another Core ML model type."""
    dst.mkdir(parents=True)
    data = bytearray((src / "coremldata.bin").read_bytes())
    data[:4] = struct.pack("<I", number)
    (dst / "coremldata.bin").write_bytes(bytes(data))


def test_built_in_feature_extractor_is_named(tmp_path, capsys):
    """A Create ML image classifier: model0 is Apple's feature extractor (2002), absent from the bundle."""
    folder = _needs(SENTIMENT)
    bundle = tmp_path / "ImageClassifier.mlmodelc"
    shutil.copyfile(folder / "coremldata.bin", (bundle.mkdir() or bundle) / "coremldata.bin")
    _stage_of_type(folder / "model1", bundle / "model0", 2002)
    _stage_of_type(folder / "model1", bundle / "model1", 400)
    assert [s.model_type for s in pipeline_stages(bundle)] == ["visionFeaturePrint", "glmClassifier"]
    with pytest.raises(PipelineError) as exc:
        load_model(bundle)
    message = str(exc.value)
    assert "model0 (visionFeaturePrint: Apple's built-in model, not in the bundle)" in message
    assert "whole pipeline" not in message
    assert main(["convert", str(bundle), "-o", str(tmp_path / "x.onnx")]) == 1
    assert "visionFeaturePrint: Apple's built-in model, not in the bundle" in capsys.readouterr().err


def test_mixed_pipeline_points_at_its_espresso_stage(tmp_path, capsys):
    folder = _needs(SENTIMENT)
    mnist = WILD_DIR / "MNISTClassifier.mlmodelc"
    if not (mnist / "model.espresso.weights").is_file():
        pytest.skip("MNISTClassifier is not present")
    bundle = tmp_path / "Mixed.mlmodelc"
    shutil.copytree(mnist, bundle / "model0")
    _stage_of_type(folder / "model1", bundle / "model1", 400)
    with pytest.raises(PipelineError) as exc:
        load_model(bundle)
    message = str(exc.value)
    assert "address an Espresso stage as" in message and "model0" in message
    assert "cannot be converted: model1 (glmClassifier) is not an Espresso network" in message
    assert "or convert the whole pipeline" not in message
    assert main(["convert", str(bundle), "-o", str(tmp_path / "m.onnx")]) == 1
    assert "stage 1 (model1) has no Espresso model (glmClassifier)" in capsys.readouterr().err
    assert main(["convert", str(bundle / "model0"), "-o", str(tmp_path / "m0.onnx")]) == 0
