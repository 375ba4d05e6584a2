"""End to end: synthetic NeuralHash files on disk -> reader -> ONNX -> ONNX Runtime == reference."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from neuralhash.cli import main
from neuralhash.convert import HASH_BITS, HASH_PROJECTION, convert
from neuralhash.demo import run_demo
from neuralhash.espresso import load_model
from neuralhash.hashing.seed import default_seed_matrix
from neuralhash.reference import run as reference_run
from neuralhash.hashing.runtime import make_session
from neuralhash.demo.synthetic import write_neuralhash_v3b

from conftest import assert_close


@pytest.fixture(scope="module")
def fp16_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fp16")
    write_neuralhash_v3b(folder, precision="float16", calibrate=False)
    return folder


@pytest.mark.parametrize("optimize", [True, False])
def test_float16_files_convert_and_match_reference(fp16_folder, optimize):
    model = load_model(fp16_folder)
    assert model.sources.net.name == "NeuralHashv3b_fp16-current.espresso.net"
    assert model.layers[0].type == "input" and model.parameter_count() == 1_809_246
    session = make_session(convert(model, optimize=optimize))
    for seed, batch in ((0, 1), (1, 4)):
        x = np.random.default_rng(seed).uniform(-1, 1, (batch, 3, 360, 360)).astype(np.float32)
        ref = reference_run(model, x)["leaf/logits"]
        got = session.run(["leaf/logits"], {"image": x})[0]
        assert got.shape == (batch, 128, 1, 1)
        assert_close(got, ref, 1e-4)


def test_hash_head_on_float16_model(fp16_folder):
    model = load_model(fp16_folder)
    seed = default_seed_matrix()
    session = make_session(convert(model, hash_head=seed))
    x = np.random.default_rng(7).uniform(-1, 1, (2, 3, 360, 360)).astype(np.float32)
    logits, projection, bits = session.run(["leaf/logits", HASH_PROJECTION, HASH_BITS], {"image": x})
    expected = logits.reshape(2, 128) @ seed.T
    assert_close(projection, expected, 1e-5)
    assert bits.dtype == np.uint8 and np.array_equal(bits, (projection >= 0).astype(np.uint8))


def test_cli_convert_is_deterministic_and_carries_metadata(fp16_folder, tmp_path):
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    assert main(["convert", str(fp16_folder), "-o", str(a), "--hash-head"]) == 0
    assert main(["convert", str(fp16_folder), "-o", str(b), "--hash-head"]) == 0
    assert a.read_bytes() == b.read_bytes()
    proto = onnx.load(a)
    onnx.checker.check_model(proto, full_check=True)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert '"scale": 0.00784313725490196' in meta["neuralhash.transform_params"]
    assert set(json.loads(meta["neuralhash.source_sha256"])) == {"net", "shape", "weights"}
    assert [o.name for o in proto.graph.output] == ["leaf/logits", HASH_PROJECTION, HASH_BITS]


def test_demo_verifies_and_separates_images(tmp_path):
    result = run_demo(tmp_path)
    assert result.report.passed
    hashes = [h for _, h in result.hashes]
    assert len(hashes) >= 4 and all(len(h) == 24 for h in hashes)
    ints = [int(h, 16) for h in hashes]
    distances = [bin(x ^ y).count("1") for i, x in enumerate(ints) for y in ints[i + 1:]]
    assert min(distances) >= 20
    # the second run reuses the cached Espresso files and gives the same hashes
    assert [h for _, h in run_demo(tmp_path).hashes] == hashes
