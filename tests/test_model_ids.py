"""Model ids (issue 17, item 1): Apple's NeuralHash has one well-known id, float32 or float16,
Espresso or ONNX; the demo and other synthetic models never get it; hashing never imports onnx."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from neuralhash.convert import convert
from neuralhash.espresso import EspressoModel, read_json_file
from neuralhash.hashing import NeuralHash
from neuralhash.hashing.model_ids import (NEURALHASH_V3B, SYNTHETIC_MARK, WELL_KNOWN_MODELS, model_id_of,
                                          structure_digest)
from neuralhash.hashing.seed import default_seed_matrix
from neuralhash.demo.synthetic import (TRANSFORM_PARAMS, neuralhash_v3b_layers, neuralhash_v3b_shapes,
                                  sample_image_paths, synthetic_blobs)

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
def real_graph(real_dir):
    layers = read_json_file(real_dir / "NeuralHashv3b-current.espresso.net")[0]["layers"]
    doc = read_json_file(real_dir / "NeuralHashv3b-current.espresso.shape")[0]
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


@pytest.fixture(scope="module")
def v3b_onnx(tmp_path_factory):
    """An ONNX file with the structure of Apple's v3b and unmarked (stand-in trained) weights."""
    layers = neuralhash_v3b_layers("float16")
    path = tmp_path_factory.mktemp("v3b") / "neuralhash.onnx"
    path.write_bytes(_onnx_bytes(layers, _unmarked(layers, seed=5), neuralhash_v3b_shapes()))
    return path


def test_a_list_labelled_neuralhash_v3b_matches_apples_model(v3b_onnx, tmp_path, monkeypatch, capsys):
    """The README's scenario: a published list imported as NeuralHash v3b hashes (in those words), an
    image hashed with Apple's model: found at distance 0. Unlabelled, the list is skipped, and said so."""
    from neuralhash.cli import main

    monkeypatch.setenv("NEURALHASH_CACHE", str(tmp_path / "cache"))
    image = str(sample_image_paths()[1])
    db = str(tmp_path / "f.db")
    digest = NeuralHash.from_onnx(v3b_onnx).hash(image).hex
    (tmp_path / "published.txt").write_text(f"{digest}  known.jpg\n")
    model = ["--model", str(v3b_onnx)]

    assert main(["index", "import", db, str(tmp_path / "published.txt"), "--list", "unlabelled"]) == 0
    assert main(["index", "add", db, str(sample_image_paths()[0]), *model, "--workers", "0"]) == 0
    capsys.readouterr()
    assert main(["match", db, image, *model, "--max-distance", "0"]) == 0  # (random weights: images 3 bits apart)
    got = capsys.readouterr()
    assert got.out == ""
    assert ("searched 'images' (1) of model neuralhash-v3b; skipped 'unlabelled' (1, holds hashes of model "
            "imported, not neuralhash-v3b)") in got.err
    assert "--model-id neuralhash-v3b" in got.err

    assert main(["index", "import", db, str(tmp_path / "published.txt"), "--list", "published",
                 "--model-id", "NeuralHash-v3b"]) == 0
    capsys.readouterr()
    assert main(["match", db, image, *model, "--jsonl", "--max-distance", "0"]) == 0
    got = capsys.readouterr()
    import json

    found = [json.loads(line) for line in got.out.splitlines()]
    assert [(m["list"], m["path"], m["distance"]) for m in found] == [("published", "known.jpg", 0)]
    assert "searched 'images' (1), 'published' (1) of model neuralhash-v3b; skipped 'unlabelled'" in got.err

    assert main(["models", db]) == 0
    listing = capsys.readouterr().out
    assert listing == ("imported  imported from published.txt\n"
                       "           1  unlabelled\n"
                       f"neuralhash-v3b  {WELL_KNOWN_MODELS['neuralhash-v3b']}\n"
                       "           1  images\n"
                       "           1  published\n")
    assert main(["models", *model]) == 0
    assert capsys.readouterr().out.startswith(f"neuralhash-v3b  ONNX model {v3b_onnx}")


def test_a_model_with_no_list_in_the_database_is_an_error_naming_the_skipped_lists(v3b_onnx, tmp_path,
                                                                                     monkeypatch, capsys):
    from neuralhash.cli import main

    monkeypatch.setenv("NEURALHASH_CACHE", str(tmp_path / "cache"))
    db = str(tmp_path / "f.db")
    (tmp_path / "l.txt").write_text("59a34eabe31910abfb06f308  a.jpg\n")
    assert main(["index", "import", db, str(tmp_path / "l.txt"), "--model-id", "apple-v3b"]) == 0
    capsys.readouterr()
    assert main(["match", db, str(sample_image_paths()[0]), "--model", str(v3b_onnx)]) == 1
    err = capsys.readouterr().err
    assert "searched no list of model neuralhash-v3b; skipped 'l' (1, holds hashes of model apple-v3b" in err
    assert "holds no hashes of model neuralhash-v3b" in err
