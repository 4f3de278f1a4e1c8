"""Input and output types (float32, int8, uint8 in; float32, int8, uint8 out) and the
dequantized weights."""
import numpy as np
import pytest

import fixnet
from conftest import fixture_data, fixture_path


@pytest.fixture(scope="module")
def cnn():
    d = fixture_data("cnn_digits_tfk2")
    fm = fixnet.load(fixture_path("cnn_digits_tfk2"))
    return d, fm, fm.quantize(d["x_calib"])


def test_uint8_input_is_int8_codes_plus_128(cnn):
    d, _, qm = cnn
    x = d["x_test"][:20]
    q = qm.input_qparams[0].quantize(x)
    u = (q.astype(np.int16) + 128).astype(np.uint8)
    assert np.array_equal(qm.predict(u, output="int8"), qm.predict(q, output="int8"))
    assert np.array_equal(qm.predict(u), qm.predict(x))


def test_output_types_agree(cnn):
    d, _, qm = cnn
    x = d["x_test"][:20]
    i8 = qm.predict(x, output="int8")
    u8 = qm.predict(x, output="uint8")
    f32 = qm.predict(x)
    assert i8.dtype == np.int8 and u8.dtype == np.uint8 and f32.dtype == np.float32
    assert np.array_equal(u8.astype(np.int16) - 128, i8)
    qp = qm.output_qparams[0]
    assert np.array_equal(f32, ((i8.astype(np.float64) - qp.zero_point) * qp.scale).astype(np.float32))
    assert np.array_equal(qm.predict(x, output="uint8", check_overflow=True), u8)


def test_dequantized_weights_are_the_float_weights_to_within_half_a_step(cnn):
    # with plain rounding and no clipping, each reconstructed weight is the float weight to
    # within half of its channel's step max|w_c| / 127 (computed here from the float weights)
    d, fm, _ = cnn
    qm = fm.quantize(d["x_calib"], bias_correction=False, weight_rounding="nearest")
    deq = qm.dequantized_weights()
    nodes = {n.name: n for n in qm.float_graph.nodes}
    assert len(deq) >= 4
    for name, w in deq.items():
        ref = nodes[name].weights["kernel"].astype(np.float64)
        assert w["kernel"].shape == ref.shape
        flat = ref.reshape(-1, ref.shape[-1])                 # output channel last (Keras)
        step = np.abs(flat).max(axis=0) / 127
        err = np.abs(w["kernel"].reshape(flat.shape) - flat)
        assert np.all(err <= step / 2 * (1 + 1e-6) + 1e-7), name
        b = nodes[name].weights["bias"]
        assert np.abs(w["bias"] - b).max() <= 1e-3 * max(np.abs(b).max(), 1.0), name
