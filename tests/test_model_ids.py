"""Model ids (issue 17, item 1): Apple's NeuralHash has one well-known id, float32 or float16,
Espresso or ONNX; the demo and other synthetic models never get it; hashing never imports onnx."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from neuralhash.convert import convert
from neuralhash.espresso import EspressoModel, read_json_file
from neuralhash.hashing import NeuralHash
from neuralhash.hashing.model_ids import NEURALHASH_V3B, SYNTHETIC_MARK, model_id_of, structure_digest
from neuralhash.hashing.seed import default_seed_matrix
from neuralhash.synthetic import (TRANSFORM_PARAMS, neuralhash_v3b_layers, neuralhash_v3b_shapes,
                                  sample_image_paths, synthetic_blobs)

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "fixtures" / "neuralhash-v3b"


def _unmarked(layers, seed=0):
    """Synthetic weights without the synthetic mark: what trained weights look like to the id."""
    blobs = synthetic_blobs(layers, seed)
    stem = next(layer for layer in layers if layer.get("type") == "convolution" and layer["bottom"] == "image")
    key = int(stem.get("blob_weights", stem.get("blob_weights_f16")))
    assert np.array_equal(blobs[key][0].astype(np.float32), SYNTHETIC_MARK)  # every synthetic model is marked
    blobs[key] = blobs[key].copy()
    blobs[key][0] = np.random.default_rng(7).standard_normal(SYNTHETIC_MARK.shape).astype(blobs[key].dtype)
    return blobs


def _onnx_bytes(layers, blobs, shapes, transform_params=TRANSFORM_PARAMS, **options) -> bytes:
    model = EspressoModel.from_layers(layers, blobs, shapes, transform_params)
    return convert(model, **options).SerializeToString(deterministic=True)


@pytest.fixture(scope="module")
def real_graph():
    if not (REAL / "NeuralHashv3b-current.espresso.net").is_file():
        pytest.skip("Apple's v3b graph file is not in ../shared/fixtures")
    layers = read_json_file(REAL / "NeuralHashv3b-current.espresso.net")[0]["layers"]
    doc = read_json_file(REAL / "NeuralHashv3b-current.espresso.shape")[0]
    shapes = {blob: (e["n"], e["k"], e["h"], e["w"]) for blob, e in doc["layer_shapes"].items()}
    return layers, shapes


def test_apples_graph_gets_the_well_known_id(real_graph):
    layers, shapes = real_graph
    data = _onnx_bytes(layers, _unmarked(layers), shapes)
    assert model_id_of(data, default_seed_matrix()) == NEURALHASH_V3B
    # Another seed, or the synthetic mark, and the id is a digest: the name is never claimed falsely.
    other_seed = np.random.RandomState(2).randn(96, 128).astype(np.float32)
    assert len(model_id_of(data, other_seed)) == 64
    marked = _onnx_bytes(layers, synthetic_blobs(layers), shapes)
    assert structure_digest(marked) == structure_digest(data)
    assert len(model_id_of(marked, default_seed_matrix())) == 64


@pytest.mark.parametrize("precision", ["float32", "float16"])
def test_both_precisions_and_onnx_files_get_the_well_known_id(precision, tmp_path):
    layers = neuralhash_v3b_layers(precision)
    blobs = _unmarked(layers, seed=3)
    with_head = _onnx_bytes(layers, blobs, neuralhash_v3b_shapes(), hash_head=default_seed_matrix())
    assert model_id_of(with_head, default_seed_matrix()) == NEURALHASH_V3B
    path = tmp_path / "v3b.onnx"
    path.write_bytes(with_head)
    assert NeuralHash.from_onnx(path).model_id == NEURALHASH_V3B


def test_the_demo_never_gets_apples_id(tmp_path):
    ids = {NeuralHash.demo(cache_dir=tmp_path).model_id}
    from neuralhash.demo import demo_model_dir

    ids.add(NeuralHash.from_espresso(demo_model_dir(tmp_path, "float16"), cache_dir=tmp_path).model_id)
    assert NEURALHASH_V3B not in ids
    assert all(len(i) == 64 and int(i, 16) >= 0 for i in ids)
    assert len(ids) == 2  # the float16 demo is calibrated on its own: another network, another id


def test_hashing_imports_no_onnx(tmp_path):
    """Item 12: `neuralhash hash` runs ONNX Runtime only; the onnx package (a second of start-up) is
    imported to convert and to compute an id once, never to hash with a model already seen."""
    image = str(sample_image_paths()[0])
    script = ("import sys\nfrom neuralhash.cli import main\n"
              f"code = main(['hash', '--model', 'demo', '--workers', '0', {image!r}])\n"
              "print('ONNX' if 'onnx' in sys.modules else 'NO-ONNX', code, file=sys.stderr)\n")
    env = {**os.environ, "NEURALHASH_CACHE": str(tmp_path)}
    first = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    again = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert again.stderr.strip().endswith("NO-ONNX 0"), again.stderr
    assert again.stdout == first.stdout and len(again.stdout.split()[0]) == 24
