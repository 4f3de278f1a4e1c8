"""Every bundled Keras fixture, both writers: the float path against Keras, the int8 path against
float and against TensorFlow Lite's int8 results, and the Cython kernels against the oracle."""
import numpy as np
import pytest

import fixnet
from conftest import FIXTURES, fixture_data, fixture_path


@pytest.fixture(scope="module", params=FIXTURES)
def case(request):
    name = request.param
    d = fixture_data(name)
    fm = fixnet.load(fixture_path(name))
    qm = fm.quantize(d["x_calib"])
    return name, d, fm, qm


def test_fixture_set_covers_both_writers():
    writers = {str(fixture_data(n)["writer"]) for n in FIXTURES}
    assert writers == {"keras3", "tfkeras2"}
    assert len(FIXTURES) >= 4


def test_float_path_matches_keras_within_1e5_relative(case):
    _, d, fm, _ = case
    y = fm.predict(d["x_test"])
    ref = d["keras_float"]
    assert y.dtype == np.float32 and y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=0)


def test_int8_accuracy_within_one_point_of_float(case):
    _, d, fm, qm = case
    acc_float = (fm.predict(d["x_test"]).argmax(1) == d["y_test"]).mean()
    acc_int8 = (qm.predict(d["x_test"]).argmax(1) == d["y_test"]).mean()
    assert acc_int8 >= acc_float - 0.01, (acc_float, acc_int8)


def test_top1_agreement_with_tflite_int8_at_least_99_percent(case):
    _, d, _, qm = case
    agree = (qm.predict(d["x_test"]).argmax(1) == d["tflite_int8"].argmax(1)).mean()
    assert agree >= 0.99, agree


def test_int8_outputs_nearly_bit_exact_with_tflite_reference_kernels(case):
    # same numeric contract as TFLite's integer reference kernels: the int8 softmax codes agree
    # bit for bit almost everywhere (differences come from float rounding of parameters)
    # with TFLite's own choices (min/max ranges, no bias correction) the same integers result
    _, d, fm, _ = case
    qm = fm.quantize(d["x_calib"], method="minmax", bias_correction=False, weight_rounding="nearest",
                     softmax_levels=256)
    raw = qm.predict(d["x_test"], output="int8").astype(np.int32)
    diff = np.abs(raw - d["tflite_int8_raw"].astype(np.int32))
    assert qm.output_qparams[0].scale == pytest.approx(float(d["tflite_output_scale"]))
    assert qm.output_qparams[0].zero_point == int(d["tflite_output_zero_point"])
    assert (diff == 0).mean() >= 0.99
    assert (diff <= 2).mean() >= 0.998


def test_input_quantization_matches_tflite(case):
    # with min/max ranges the input is quantized exactly as TFLite's converter does it
    _, d, fm, _ = case
    qp = fm.quantize(d["x_calib"], method="minmax", progress=False).input_qparams[0]
    assert qp.scale == pytest.approx(float(d["tflite_input_scale"]), rel=1e-6)
    assert qp.zero_point == int(d["tflite_input_zero_point"])
    assert np.array_equal(qp.quantize(d["x_test"]), d["tflite_input_int8"])


def test_default_input_quantization_is_exact_on_the_digit_grid(case):
    # digits pixels are k/16: the default picks an input scale (1/240) that holds every one of
    # them exactly, where min/max's 1/255 rounds most of them
    _, d, _, qm = case
    qp = qm.input_qparams[0]
    x = d["x_test"]
    assert qp.scale == pytest.approx(1 / 240) and qp.zero_point == -128
    codes = qp.quantize(x).astype(np.int64)
    np.testing.assert_array_equal(codes + 128, np.round(x * 16).astype(np.int64) * 15)


def test_cython_kernels_bit_exact_with_oracle_on_fixture(case):
    _, d, _, qm = case
    x = d["x_test"]
    assert np.array_equal(qm.predict(x, output="int8"), qm.predict_oracle(x))


def test_overflow_proof_holds_for_every_layer(case):
    _, _, _, qm = case
    rep = qm.overflow_report()
    assert rep.proven
    assert len(rep) >= 3
    assert all(r["headroom_bits"] > 0 for r in rep)
