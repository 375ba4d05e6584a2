"""`demo` names the synthetic model wherever a model is named (issue 17, item 9): inspect, convert,
verify take it as SRC, and hashing with it after `neuralhash demo` runs the ONNX file the demo wrote."""

from __future__ import annotations

import json

import onnx
import pytest

from neuralhash.cli import main
from neuralhash.demo import demo_model_dir, run_demo
from neuralhash.hashing import NeuralHash


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NEURALHASH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_inspect_convert_and_verify_take_demo(cache, tmp_path, capsys):
    assert main(["inspect", "demo", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["layers"] == 225 and info["inputs"] == {"image": [1, 3, 360, 360]}
    out = tmp_path / "demo.onnx"
    assert main(["convert", "demo", "-o", str(out)]) == 0
    assert onnx.load(str(out)).graph.output[0].name == "leaf/logits"
    assert main(["verify", "demo", "--seeds", "1"]) == 0
    assert "PASS" in capsys.readouterr().out
    assert (demo_model_dir(cache) / "NeuralHashv3b-current.espresso.net").is_file()


def test_hashing_with_the_demo_after_neuralhash_demo_converts_nothing(cache, monkeypatch):
    result = run_demo(cache)

    def no_conversion(*_):
        raise AssertionError("the demo was converted a second time")

    monkeypatch.setattr("neuralhash.hashing.model._convert_to_bytes", no_conversion)
    nh = NeuralHash.demo(cache_dir=cache)
    assert nh.onnx_path == result.onnx_path and nh.is_synthetic
    assert [nh.hash(p).hex for p, _ in result.hashes] == [h for _, h in result.hashes]
    # The same model as converted from the Espresso files: the same id.
    monkeypatch.undo()
    assert NeuralHash.from_espresso(result.espresso_dir, cache_dir=cache).model_id == nh.model_id
