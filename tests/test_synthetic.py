"""The synthetic NeuralHash v3b: same graph and shapes as Apple's, realistic weights, calibrated hashes.

Apple's files are read from ``../shared/fixtures/neuralhash-v3b`` (never
copied); the tests that need them skip when that folder is absent.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from neuralhash.errors import NeuralHashError
from neuralhash.espresso import WeightsFile, load_model, read_json_file
from neuralhash.espresso.container import decode_container
from neuralhash.espresso.model import shapes_document
from neuralhash.espresso.writer import graph_document
from neuralhash.hashing.seed import default_seed_matrix
from neuralhash.reference import run
from neuralhash.demo.synthetic import (
    FEATURE_BLOB,
    OUTPUT_BLOB,
    TRANSFORM_PARAMS,
    build_neuralhash_v3b,
    calibrate,
    neuralhash_v3b_layers,
    neuralhash_v3b_shapes,
    preprocess_image,
    sample_image_paths,
    synthetic_blobs,
    write_neuralhash_v3b,
)

PARAMETERS = 1_809_246
TYPE_COUNTS = {"elementwise": 118, "convolution": 54, "batchnorm": 35, "pool": 10, "activation": 6, "inner_product": 2}
F16_RENAMES = {"blob_weights_f16": "blob_weights", "w_f16_t": "blob_weights"}


def _typed(value):
    """JSON text with sorted keys: equal only when values *and* JSON types agree (3 vs 3.0, true vs 1)."""
    return json.dumps(value, sort_keys=True)


def _hash_bits(outputs: np.ndarray) -> np.ndarray:
    """NEURALHASH.md steps 5-6 for a batch of 128-d outputs."""
    matrix = default_seed_matrix()
    return (outputs.reshape(len(outputs), -1).astype(np.float32) @ matrix.T) >= 0


def _hamming(bits: np.ndarray) -> list[int]:
    return [int((bits[i] != bits[j]).sum()) for i, j in itertools.combinations(range(len(bits)), 2)]


# -- the graph against Apple's ------------------------------------------------------------------


def test_float32_layers_equal_apple_field_by_field(real_dir):
    real = read_json_file(real_dir / "NeuralHashv3b-current.espresso.net")[0]["layers"]
    ours = neuralhash_v3b_layers("float32")
    assert len(ours) == len(real) == 225
    for index, (mine, theirs) in enumerate(zip(ours, real)):
        where = f"layer #{index} {theirs['name']!r}"
        assert mine["name"] == theirs["name"], where
        assert sorted(mine) == sorted(theirs), f"{where}: fields differ"
        for key in theirs:
            assert _typed(mine[key]) == _typed(theirs[key]), f"{where}: field {key!r}"
        assert mine == theirs, where


def test_shapes_equal_apple_shape_file(real_dir):
    real = read_json_file(real_dir / "NeuralHashv3b-current.espresso.shape")[0]
    ours = neuralhash_v3b_shapes()
    assert ours == {blob: (e["n"], e["k"], e["h"], e["w"]) for blob, e in real["layer_shapes"].items()}
    assert shapes_document(ours) == real


def test_written_float32_files_decode_to_apple_documents(real_dir, tmp_path):
    """Whole documents, top-level fields and transform_params included."""
    sources = write_neuralhash_v3b(tmp_path, calibrate=False)
    for ours, name in ((sources.net, "net"), (sources.shape, "shape")):
        theirs = read_json_file(real_dir / f"NeuralHashv3b-current.espresso.{name}")[0]
        assert read_json_file(ours)[0] == theirs
    assert load_model(tmp_path).transform_params == load_model(real_dir, require_weights=False).transform_params


# -- structure facts that hold without Apple's files --------------------------------------------


@pytest.mark.parametrize("precision", ["float32", "float16"])
def test_architecture_facts(precision):
    model = build_neuralhash_v3b(precision)
    counts = Counter(layer.type for layer in model.layers if layer.type != "input")
    assert dict(counts) == TYPE_COUNTS
    assert model.inputs == ["image"] and model.outputs == [OUTPUT_BLOB]
    assert model.layers[-1].is_output and model.layers[-1].params["attributes"] == {"is_output": 1}
    ids = sorted(ref.id for layer in model.layers for ref in layer.blob_refs().values())
    assert ids == list(range(1, 224, 2))
    assert model.parameter_count() == PARAMETERS
    assert model.shapes["image"].nkhw == (1, 3, 360, 360)
    assert model.shapes[OUTPUT_BLOB].nkhw == (1, 128, 1, 1)
    assert model.shapes[FEATURE_BLOB].nkhw == (1, 500, 1, 1)
    assert model.transform_params == TRANSFORM_PARAMS
    assert TRANSFORM_PARAMS["image"]["scale"] == 0.00784313725490196
    # every layer's inferred shape is in the shape table, and every table entry is a blob of the graph
    assert set(model.shapes) == {"image"} | {layer.top for layer in model.layers}


def test_constants_are_apples_float32_values():
    layers = neuralhash_v3b_layers()
    bn = next(layer for layer in layers if layer["type"] == "batchnorm")
    assert bn["training_eps"] == 9.999999974752427e-07 == float(np.float32(1e-6))
    assert bn["training_momentum"] == 0.8999999761581421 == float(np.float32(0.9))
    alphas = {layer["alpha"] for layer in layers if layer["type"] == "elementwise" and layer["operation"] == 3}
    assert alphas == {0.1666666716337204} == {float(np.float32(1 / 6))}


def test_float16_variant_layout():
    f32, f16 = neuralhash_v3b_layers("float32"), neuralhash_v3b_layers("float16")
    assert len(f16) == 226
    first = f16[0]
    assert first["type"] == "input" and first["name"] == first["top"] == "image" and "bottom" not in first
    for mine, ref in zip(f16[1:], f32):
        assert {F16_RENAMES.get(k, k): v for k, v in mine.items()} == ref
    convs = [layer for layer in f16 if layer["type"] == "convolution"]
    assert all("blob_weights_f16" in c and "blob_weights" not in c for c in convs)
    assert all(("blob_biases" in c) == bool(c["has_biases"]) for c in convs)
    fc1, fc2 = (layer for layer in f16 if layer["type"] == "inner_product")
    assert "blob_weights_f16" in fc1 and "w_f16_t" in fc2 and "blob_biases" in fc1 and "blob_biases" in fc2
    with pytest.raises(ValueError, match="precision"):
        neuralhash_v3b_layers("float64")


# -- weights --------------------------------------------------------------------------------------


def _canonical(key: str, blob: np.ndarray) -> np.ndarray:
    """A stored blob in the layout EspressoModel.tensor returns."""
    value = blob.astype(np.float32)
    return value.T if key == "w_f16_t" else value


def test_synthetic_blobs_scale_and_dtypes():
    layers = neuralhash_v3b_layers("float16")
    blobs = synthetic_blobs(layers, seed=0)
    assert sorted(blobs) == list(range(1, 224, 2))
    for layer in layers:
        for key in ("blob_weights_f16", "w_f16_t"):
            if key in layer:
                assert blobs[layer[key]].dtype == np.float16
        for key in ("blob_biases", "blob_batchnorm_params"):
            if key in layer:
                assert blobs[layer[key]].dtype == np.float32
        if layer["type"] == "batchnorm":
            params = blobs[layer["blob_batchnorm_params"]]
            assert params.shape == (layer["C"], 4)
            assert np.all(params[:, 2] == 0) and np.all(params[:, 3] == 1)
    by_name = {layer["name"]: layer for layer in layers}
    big = by_name["stem/MobilenetV3/Conv2d_12/Conv2D"]  # 432 x 72 x 1 x 1, fan-in 72
    kernel = blobs[big["blob_weights_f16"]].astype(np.float64)
    assert kernel.shape == (432, 72, 1, 1)
    assert kernel.std() == pytest.approx(np.sqrt(2 / 72), rel=0.05) and abs(kernel.mean()) < 0.06 * kernel.std()
    fc1 = by_name[FEATURE_BLOB]
    assert blobs[fc1["blob_weights_f16"]].shape == (500, 1280)
    assert blobs[by_name[OUTPUT_BLOB]["w_f16_t"]].shape == (500, 128)
    final_norm = "stem/MobilenetV3/Conv2d_12/InstanceNorm/instancenorm/add_1"
    norms = [layer for layer in layers if layer["type"] == "batchnorm"]
    scales = np.concatenate([blobs[layer["blob_batchnorm_params"]][:, 0] for layer in norms if layer["name"] != final_norm])
    assert scales.mean() == pytest.approx(1.0, rel=0.02) and scales.std() == pytest.approx(0.1, rel=0.1)
    wide = blobs[by_name[final_norm]["blob_batchnorm_params"]]  # reaches hard-swish's non-quadratic range
    assert wide[:, 0].mean() == pytest.approx(3.0, rel=0.05) and wide[:, 1].std() == pytest.approx(1.0, rel=0.15)
    biases = np.concatenate([blobs[layer["blob_biases"]] for layer in layers if "blob_biases" in layer])
    assert np.abs(biases).max() < 0.2


def test_synthetic_blobs_are_deterministic_and_float16_is_rounded_float32():
    f32 = synthetic_blobs(neuralhash_v3b_layers("float32"), seed=3)
    f16 = synthetic_blobs(neuralhash_v3b_layers("float16"), seed=3)
    again = synthetic_blobs(neuralhash_v3b_layers("float16"), seed=3)
    other = synthetic_blobs(neuralhash_v3b_layers("float32"), seed=4)
    assert all(np.array_equal(f16[i], again[i]) for i in f16)
    assert not np.array_equal(f32[1], other[1])
    fc2 = neuralhash_v3b_layers("float16")[-1]
    for blob_id, value in f16.items():
        expected = f32[blob_id].astype(value.dtype)
        if blob_id == fc2["w_f16_t"]:
            expected = expected.T
        assert np.array_equal(value, expected), blob_id


@pytest.mark.parametrize("precision", ["float32", "float16"])
def test_written_model_round_trips(tmp_path, precision):
    sources = write_neuralhash_v3b(tmp_path, precision=precision, seed=1, calibrate=False)
    prefix = "NeuralHashv3b-current" if precision == "float32" else "NeuralHashv3b_fp16-current"
    assert sources.net.name == f"{prefix}.espresso.net"
    assert sources.weights.name == f"{prefix}.espresso.weights"
    layers = neuralhash_v3b_layers(precision)
    blobs = synthetic_blobs(layers, seed=1)

    # graph and shape files are pbze containers that decode to the documents
    graph = graph_document(layers, storage=sources.weights.name, transform_params=TRANSFORM_PARAMS)
    for path, doc in ((sources.net, graph), (sources.shape, shapes_document(neuralhash_v3b_shapes()))):
        data = path.read_bytes()
        assert data[:4] == b"pbze" and data[28:32] == b"bvx2"
        assert json.loads(decode_container(data, source=path.name)) == doc

    weights = WeightsFile.read(sources.weights)
    assert len(weights.entries) == 112
    bytes_per_value = {"float32": 4, "float16": 2}
    model = load_model(tmp_path)
    assert model.parameter_count() == PARAMETERS
    assert model.inputs == ["image"] and model.outputs == [OUTPUT_BLOB]
    payload = 0
    for layer in model.layers:
        for role, ref in layer.blob_refs().items():
            stored = blobs[ref.id]
            assert ref.dtype == str(stored.dtype)
            payload += ref.count * bytes_per_value[ref.dtype]
            tensor = model.tensor(layer, role)
            assert tensor.dtype == np.float32
            assert np.array_equal(tensor, _canonical(ref.field, stored))  # float16 upcast is exact
    assert payload == weights.payload_bytes
    if precision == "float32":
        assert payload == 4 * PARAMETERS  # 7,236,984 bytes, as Apple's
    else:
        assert model.layers[0].type == "input"


def test_in_memory_model_equals_written_model(tmp_path):
    built = build_neuralhash_v3b("float16", seed=2)
    write_neuralhash_v3b(tmp_path, precision="float16", seed=2, calibrate=False)
    loaded = load_model(tmp_path)
    assert [layer.params for layer in built.layers] == [layer.params for layer in loaded.layers]
    for a, b in zip(built.layers, loaded.layers):
        for role in a.blob_refs():
            assert np.array_equal(built.tensor(a, role), loaded.tensor(b, role))


def test_uncompressed_files_are_plain_json(tmp_path):
    sources = write_neuralhash_v3b(tmp_path, compressed=False, calibrate=False)
    assert sources.net.read_bytes()[:1] == b"{"
    assert json.loads(sources.shape.read_bytes()) == shapes_document(neuralhash_v3b_shapes())
    assert load_model(tmp_path).parameter_count() == PARAMETERS


# -- sample images ------------------------------------------------------------------------------


def test_sample_images():
    paths = sample_image_paths()
    assert 4 <= len(paths) <= 6
    arrays = []
    for path in paths:
        assert path.suffix in (".png", ".jpg") and path.stat().st_size < 60_000
        with Image.open(path) as img:
            assert 256 <= img.width <= 400 and 192 <= img.height <= 300
        x = preprocess_image(path)
        assert x.shape == (3, 360, 360) and x.dtype == np.float32
        assert -1.0 <= x.min() and x.max() <= 1.0
        arrays.append(x)
    for a, b in itertools.combinations(arrays, 2):
        assert np.abs(a - b).mean() > 0.1  # visually different


def test_preprocess_image_is_the_reference_pipeline():
    path = sample_image_paths()[0]
    with Image.open(path) as img:
        rgb = img.convert("RGB").resize((360, 360), Image.BICUBIC)
    expected = (np.asarray(rgb, dtype=np.float32) / 255.0 * 2.0 - 1.0).transpose(2, 0, 1)
    assert np.array_equal(preprocess_image(path), expected)
    with Image.open(path) as img:
        assert np.array_equal(preprocess_image(img), expected)


# -- calibration ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.stack([preprocess_image(p) for p in sample_image_paths()])


@pytest.fixture(scope="module")
def calibrated(images):
    """(layers, raw blobs, calibrated blobs, outputs of the calibrated model on the sample images)."""
    layers = neuralhash_v3b_layers("float32")
    raw = synthetic_blobs(layers)
    blobs = calibrate(layers, raw, images, shapes=neuralhash_v3b_shapes())
    model = build_from(layers, blobs)
    outputs = run(model, images)[OUTPUT_BLOB].reshape(len(images), -1)
    return layers, raw, blobs, outputs


def build_from(layers, blobs):
    from neuralhash.espresso import EspressoModel

    return EspressoModel.from_layers(layers, blobs, neuralhash_v3b_shapes(), TRANSFORM_PARAMS)


def test_uncalibrated_network_gives_nearly_equal_outputs(images):
    """Why calibration exists: a random network barely tells the images apart."""
    model = build_neuralhash_v3b("float32")
    outputs = run(model, images)[OUTPUT_BLOB].reshape(len(images), -1).astype(np.float64)
    assert (outputs.std(axis=0) / np.abs(outputs).mean(axis=0)).mean() < 0.5


def test_calibrated_outputs_are_standardised(calibrated):
    layers, raw, blobs, outputs = calibrated
    out = outputs.astype(np.float64)
    assert np.abs(out.mean(axis=0)).max() < 1e-3 * out.std(axis=0).min()
    assert out.std(axis=0) == pytest.approx(np.ones(128), rel=1e-3)
    # only the last layer's weights and biases changed
    last = layers[-1]
    changed = {i for i in raw if not np.array_equal(raw[i], blobs[i])}
    assert changed == {last["blob_weights"], last["blob_biases"]}
    assert blobs[last["blob_weights"]].dtype == np.float32 and blobs[last["blob_biases"]].dtype == np.float32


def test_calibrated_hashes_differ_clearly(calibrated):
    *_, outputs = calibrated
    distances = _hamming(_hash_bits(outputs))
    assert len(distances) == len(sample_image_paths()) * (len(sample_image_paths()) - 1) // 2
    assert min(distances) >= 24, distances  # 96 bits; 34..70 with seed 0


def test_calibrated_float16_files(tmp_path, images):
    write_neuralhash_v3b(tmp_path, precision="float16")  # calibrate=True by default
    model = load_model(tmp_path)
    last = model.layers[-1]
    assert last.weights.field == "w_f16_t" and last.transposed
    outputs = run(model, images)[OUTPUT_BLOB].reshape(len(images), -1).astype(np.float64)
    assert np.abs(outputs.mean(axis=0)).max() < 1e-3 * outputs.std(axis=0).min()
    assert outputs.std(axis=0) == pytest.approx(np.ones(128), rel=5e-3)  # after rounding to float16
    assert min(_hamming(_hash_bits(outputs))) >= 24


def test_calibrate_rejects_degenerate_input(images):
    layers = neuralhash_v3b_layers("float32")
    blobs = synthetic_blobs(layers)
    with pytest.raises(NeuralHashError, match="at least two"):
        calibrate(layers, blobs, images[:1])
    with pytest.raises(NeuralHashError, match="same features"):
        calibrate(layers, blobs, np.stack([images[0], images[0]]))
