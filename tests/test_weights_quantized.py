"""Weights as compiled models store them: zero padding, uint8 quantization, non-finite values.

Every model is built through the real weights encoder and reader
(``EspressoModel.from_layers``); dequantised values are checked against the
formula written out here in numpy, independently of ``quantization.py``.
"""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from neuralhash.convert import convert
from neuralhash.errors import GraphError, WeightsError
from neuralhash.espresso import EspressoModel, encode_weights, load_model
from neuralhash.espresso.writer import write_espresso
from conftest import assert_close  # noqa: E402

SHAPES = {"x": (1, 3, 5, 5)}


def _conv(**extra):
    layer = {"type": "convolution", "name": "c", "bottom": "x", "top": "y", "C": 4, "K": 3, "Nx": 3, "Ny": 3,
             "n_groups": 1, "pad_mode": 1, "has_biases": 1, "blob_biases": 3}
    layer.update(extra)
    return layer


def _fc(**extra):
    layer = {"type": "inner_product", "name": "fc", "bottom": "x", "top": "y", "nB": 75, "nC": 6, "has_biases": 0}
    layer.update(extra)
    return layer


RNG = np.random.default_rng(7)
Q_CONV = RNG.integers(0, 256, (4, 3, 3, 3), dtype=np.uint8)
SCALE = np.array([0.01, -0.5, 2.0, 1e-3], np.float32)
BIAS = np.array([-1.0, 0.25, 3.0, 0.0], np.float32)
BIASES = np.array([0.5, -0.5, 1.0, 0.0], np.float32)


# -- zero-padded entries ----------------------------------------------------------------


def test_zero_padded_entry_is_accepted():
    kernel = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)
    padded = np.concatenate([BIASES, np.zeros(12, np.float32)])  # 4 biases in a 16-value entry
    model = EspressoModel.from_layers([_conv(blob_weights=1)], {1: kernel, 3: padded}, SHAPES)
    assert np.array_equal(model.tensor(model.layers[0], "biases"), BIASES)
    assert np.array_equal(model.tensor(model.layers[0], "weights"), kernel)


def test_padding_that_is_not_zero_names_layer_and_both_counts():
    padded = np.concatenate([BIASES, np.array([0, 0, 7], np.float32)])
    with pytest.raises(WeightsError, match=r"layer 'c' \(convolution\): blob_biases 3 holds 28 bytes = 7 float32 "
                                           r"values, the layer expects 4 \[4\], and the 12 extra bytes are not all zero"):
        EspressoModel.from_layers([_conv(blob_weights=1)], {1: np.ones((4, 3, 3, 3), np.float32), 3: padded}, SHAPES)


def test_short_entry_stays_an_error():
    with pytest.raises(WeightsError, match="blob_biases 3 holds 12 bytes = 3 float32 values, the layer expects 4"):
        EspressoModel.from_layers([_conv(blob_weights=1)],
                                  {1: np.ones((4, 3, 3, 3), np.float32), 3: BIASES[:3]}, SHAPES)


# -- W_U8 with per-channel scale and bias ---------------------------------------------------


def _affine_expected(q, scale, bias):
    # w[c, ...] = q[c, ...] * scale[c] + bias[c], computed in float64 then rounded once
    shape = (-1,) + (1,) * (q.ndim - 1)
    return (q.astype(np.float64) * scale.astype(np.float64).reshape(shape)
            + bias.astype(np.float64).reshape(shape)).astype(np.float32)


def test_w_u8_convolution_in_the_weights_object():
    layer = _conv(weights={"W_U8": 5, "per_ch_qscale": 7, "per_ch_qbias": 9})
    model = EspressoModel.from_layers([layer], {5: Q_CONV, 7: SCALE, 9: BIAS, 3: BIASES}, SHAPES)
    got = model.tensor(model.layers[0], "weights")
    assert got.dtype == np.float32 and got.shape == (4, 3, 3, 3)
    np.testing.assert_allclose(got, _affine_expected(Q_CONV, SCALE, BIAS), rtol=1e-6, atol=0)
    assert model.parameter_count() == Q_CONV.size + BIASES.size


def test_w_u8_inner_product_top_level_keys_and_padding():
    q = RNG.integers(0, 256, (6, 75), dtype=np.uint8)
    scale = RNG.uniform(-0.1, 0.1, 6).astype(np.float32)
    bias = RNG.uniform(-1, 1, 6).astype(np.float32)
    padded_q = np.concatenate([q.ravel(), np.zeros(5, np.uint8)])  # zero padding is accepted here too
    model = EspressoModel.from_layers([_fc(W_U8=1, per_ch_qscale=2, per_ch_qbias=4)],
                                      {1: padded_q, 2: scale, 4: bias}, {"x": (1, 3, 5, 5)})
    np.testing.assert_allclose(model.tensor(model.layers[0], "weights"), _affine_expected(q, scale, bias), rtol=1e-6)


def test_w_u8_companion_of_the_wrong_size_names_both_counts():
    layer = _conv(weights={"W_U8": 5, "per_ch_qscale": 7, "per_ch_qbias": 9})
    with pytest.raises(WeightsError, match=r"layer 'c' \(convolution\): per_ch_qscale 7 holds 12 bytes = 3 float32 "
                                           r"values, the layer expects 4"):
        EspressoModel.from_layers([layer], {5: Q_CONV, 7: SCALE[:3], 9: BIAS, 3: BIASES}, SHAPES)
    with pytest.raises(WeightsError, match=r"W_U8 5 holds 100 bytes = 100 uint8 values, the layer expects 108"):
        EspressoModel.from_layers([layer], {5: Q_CONV.ravel()[:100], 7: SCALE, 9: BIAS, 3: BIASES}, SHAPES)


def test_w_u8_without_its_companions_is_an_error():
    with pytest.raises(GraphError, match="'W_U8' needs 'per_ch_qbias'"):
        EspressoModel.from_layers([_conv(weights={"W_U8": 5, "per_ch_qscale": 7})], {5: Q_CONV, 7: SCALE}, SHAPES)
    with pytest.raises(GraphError, match="both 'blob_weights' and the quantized 'W_U8'"):
        EspressoModel.from_layers([_conv(blob_weights=1, weights={"W_U8": 5, "per_ch_qscale": 7, "per_ch_qbias": 9})],
                                  {1: np.ones((4, 3, 3, 3), np.float32), 5: Q_CONV, 7: SCALE, 9: BIAS, 3: BIASES},
                                  SHAPES)


def test_w_u8_overflowing_float32_is_refused():
    layer = _conv(weights={"W_U8": 5, "per_ch_qscale": 7, "per_ch_qbias": 9})
    huge = np.array([3e38, 1, 1, 1], np.float32)
    with pytest.raises(WeightsError, match="beyond float32"):
        EspressoModel.from_layers([layer], {5: Q_CONV, 7: huge, 9: BIAS, 3: BIASES}, SHAPES)


# -- quantization_lut_weights_blob + quantization_ranges_blob --------------------------------


def test_lut_ranges_convolution():
    low = np.array([-1.0, -0.25, 0.0, -3.0], np.float32)
    high = np.array([1.0, 0.75, 0.5, -2.0], np.float32)
    ranges = np.concatenate([low, high])
    layer = _conv(quantization_lut_weights_blob=5, quantization_ranges_blob=7)
    model = EspressoModel.from_layers([layer], {5: Q_CONV, 7: ranges, 3: BIASES}, SHAPES)
    got = model.tensor(model.layers[0], "weights")
    expected = np.empty((4, 3, 3, 3), np.float64)
    for c in range(4):  # min + q / 255 * (max - min), channel by channel
        expected[c] = low[c] + Q_CONV[c].astype(np.float64) / 255.0 * (float(high[c]) - float(low[c]))
    assert_close(got, expected.astype(np.float32), rtol=1e-6)
    assert got[0].min() >= -1.0 and got[3].max() <= -2.0  # values stay inside each channel's range


def test_lut_ranges_that_contradict_the_reading_fail_loudly():
    ranges = np.array([1, 0, 0, 0, 0, 1, 1, 1], np.float32)  # channel 0: min 1 > max 0
    layer = _conv(quantization_lut_weights_blob=5, quantization_ranges_blob=7)
    with pytest.raises(WeightsError, match="channel 0 has minimum 1 above maximum 0"):
        EspressoModel.from_layers([layer], {5: Q_CONV, 7: ranges, 3: BIASES}, SHAPES)
    with pytest.raises(WeightsError, match=r"quantization_ranges_blob 7 holds 24 bytes = 6 float32 values, "
                                           r"the layer expects 8"):
        EspressoModel.from_layers([layer], {5: Q_CONV, 7: ranges[:6], 3: BIASES}, SHAPES)
    with pytest.raises(GraphError, match="'quantization_ranges_blob' without the quantized weights"):
        EspressoModel.from_layers([_conv(blob_weights=1, quantization_ranges_blob=7)],
                                  {1: np.ones((4, 3, 3, 3), np.float32), 7: ranges, 3: BIASES}, SHAPES)


def test_quantized_model_converts_to_its_dequantised_float_twin():
    """The converter sees float32 weights: ONNX Runtime gives the float model's outputs."""
    x = RNG.standard_normal((2, 3, 5, 5)).astype(np.float32)
    quant = EspressoModel.from_layers([_conv(weights={"W_U8": 5, "per_ch_qscale": 7, "per_ch_qbias": 9})],
                                      {5: Q_CONV, 7: SCALE, 9: BIAS, 3: BIASES}, SHAPES)
    twin = EspressoModel.from_layers([_conv(blob_weights=1)],
                                     {1: _affine_expected(Q_CONV, SCALE, BIAS), 3: BIASES}, SHAPES)
    outputs = []
    for model in (quant, twin):
        proto = convert(model)
        session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        outputs.append(session.run(None, {"x": x})[0])
    np.testing.assert_array_equal(outputs[0], outputs[1])


# -- non-finite values are refused when the model loads ---------------------------------------


@pytest.mark.parametrize("dtype,key", [(np.float32, "blob_weights"), (np.float16, "blob_weights_f16")])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_weights_name_layer_and_field(dtype, key, bad):
    kernel = np.ones((4, 3, 3, 3), dtype)
    kernel[2, 1, 0, 2] = bad
    with pytest.raises(WeightsError, match=rf"layer 'c' \(convolution\): {key} 1 holds a non-finite value .* "
                                           r"at element 65\)"):
        EspressoModel.from_layers([_conv(**{key: 1})], {1: kernel, 3: BIASES}, SHAPES)


def test_non_finite_bias_and_quantization_scale():
    with pytest.raises(WeightsError, match="blob_biases 3 holds a non-finite value"):
        EspressoModel.from_layers([_conv(blob_weights=1)],
                                  {1: np.ones((4, 3, 3, 3), np.float32), 3: np.array([0, np.nan, 0, 0], np.float32)},
                                  SHAPES)
    with pytest.raises(WeightsError, match="per_ch_qscale 7 holds a non-finite value"):
        EspressoModel.from_layers([_conv(weights={"W_U8": 5, "per_ch_qscale": 7, "per_ch_qbias": 9})],
                                  {5: Q_CONV, 7: np.array([1, 1, np.inf, 1], np.float32), 9: BIAS, 3: BIASES},
                                  SHAPES)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_layer_parameter_in_a_file_names_layer_and_field(tmp_path, literal):
    layers = [_conv(blob_weights=1), {"type": "elementwise", "name": "scale", "bottom": "y", "top": "z",
                                      "operation": 3, "alpha": 12345.5}]
    sources = write_espresso(tmp_path, "m", layers=layers, shapes=SHAPES, compressed=False,
                             blobs={1: np.ones((4, 3, 3, 3), np.float32), 3: BIASES})
    sources.net.write_text(sources.net.read_text().replace("12345.5", literal))
    with pytest.raises(GraphError, match=r"layer 'scale' \(elementwise\): field 'alpha' is -?(nan|inf)"):
        load_model(tmp_path)
    lenient = load_model(tmp_path, strict=False)  # what inspect sees: the problem, listed
    assert any("field 'alpha'" in p for p in lenient.problems)


def test_non_finite_transform_params_are_refused(tmp_path):
    sources = write_espresso(tmp_path, "m", layers=[_conv(blob_weights=1)], shapes=SHAPES, compressed=False,
                             blobs={1: np.ones((4, 3, 3, 3), np.float32), 3: BIASES},
                             transform_params={"image": {"scale": 0.5}})
    sources.net.write_text(sources.net.read_text().replace("0.5", "NaN"))
    with pytest.raises(GraphError, match=r"transform_params: field 'image.scale' is nan"):
        load_model(tmp_path)
    assert json.loads(sources.net.read_text())["transform_params"]["image"]["scale"] != 0.5
