"""Every CNN and layer-coverage fixture made by real Keras (both writers): the float path
against Keras, the int8 path against Keras float *and* against TensorFlow Lite's int8 on the
same inputs, and the Cython kernels against the oracle.

Issue bar: float within 1e-5 (relative to the output's magnitude) of Keras; int8 top-1 agreement
with Keras float no more than 0.5 point below TFLite int8's; output SQNR against float no more
than 1 dB below TFLite int8's.
"""
import numpy as np
import pytest

import fixnet
from conftest import MODELS, as_list, fixture_data, fixture_path, sqnr_db
import os

CASES = sorted(f[:-4] for f in os.listdir(MODELS)
               if f.endswith(".npz") and not f.startswith(("mlp_", "layers_channels_first"))
               and os.path.exists(os.path.join(MODELS, f[:-4] + ".h5")))


@pytest.fixture(scope="module", params=CASES)
def case(request):
    name = request.param
    d = fixture_data(name)
    fm = fixnet.load(fixture_path(name))
    xs = as_list(d, "x_test")
    calib = as_list(d, "x_calib")
    qm = fm.quantize(calib[0] if len(calib) == 1 else calib)
    return name, d, fm, qm, xs


def _outs(v):
    return v if isinstance(v, list) else [v]


def test_float_path_matches_keras(case):
    name, d, fm, _, xs = case
    got = _outs(fm.predict(xs[0] if len(xs) == 1 else xs))
    for g, ref in zip(got, as_list(d, "keras_float")):
        assert g.shape == ref.shape
        err = np.abs(g.astype(np.float64) - ref).max() / max(np.abs(ref).max(), 1e-30)
        assert err <= 1e-5, f"{name}: max error {err:.2e} relative to the output's magnitude"


def test_int8_agreement_and_sqnr_versus_tflite(case):
    name, d, _, qm, xs = case
    if "tflite_error" in d or not as_list(d, "tflite_int8"):
        pytest.skip(f"TFLite could not convert {name}: {d.get('tflite_error')}")
    got = _outs(qm.predict(xs[0] if len(xs) == 1 else xs))
    for g, ref, tfl in zip(got, as_list(d, "keras_float"), as_list(d, "tflite_int8")):
        ours, theirs = sqnr_db(ref, g), sqnr_db(ref, tfl)
        assert ours >= theirs - 1.0, f"{name}: SQNR {ours:.2f} dB vs TFLite {theirs:.2f} dB"
        if "y_test" in d and ref.ndim == 2 and ref.shape[1] > 1:     # classifiers
            a_ours = (g.argmax(1) == ref.argmax(1)).mean()
            a_tfl = (tfl.argmax(1) == ref.argmax(1)).mean()
            assert a_ours >= a_tfl - 0.005, f"{name}: top-1 agreement {a_ours:.4f} vs TFLite {a_tfl:.4f}"


def test_kernels_bit_exact_with_oracle(case):
    _, _, _, qm, xs = case
    x = xs[0][:16] if len(xs) == 1 else [v[:16] for v in xs]
    for a, b in zip(_outs(qm.predict(x, output="int8")), _outs(qm.predict_oracle(x))):
        np.testing.assert_array_equal(a, b)


def test_overflow_proof(case):
    _, _, _, qm, _ = case
    assert qm.overflow_report().proven


@pytest.mark.parametrize("writer", ["k3", "tfk2"])
def test_channels_first_is_refused_with_a_clear_error(writer):
    with pytest.raises(fixnet.UnsupportedLayerError, match=r"'conv_cf' \(Conv2D\): data_format='channels_first'"):
        fixnet.load(fixture_path(f"layers_channels_first_{writer}"))
