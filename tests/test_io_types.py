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


def test_dequantized_weights_reproduce_the_int8_network(cnn):
    # a float network running the reconstructed weights tracks the int8 network more closely
    # than the original float network does
    from fixnet import reference
    d, fm, qm = cnn
    x = d["x_test"][:100]
    deq = qm.dequantized_weights()
    g = qm.float_graph
    assert set(deq) <= {n.name for n in g.nodes} and len(deq) >= 4
    import copy
    g2 = copy.deepcopy(g)
    for n in g2.nodes:
        if n.name in deq:
            w = deq[n.name]
            n.weights = dict(n.weights, kernel=w["kernel"].astype(np.float64), bias=w["bias"].astype(np.float64))
            assert w["kernel"].shape == g.nodes[[m.name for m in g.nodes].index(n.name)].weights["kernel"].shape
    y_int8 = qm.predict(x)
    y_deq = reference.run(g2, [x])[0]
    y_orig = reference.run(g, [x])[0]
    assert np.abs(y_deq - y_int8).mean() < np.abs(y_orig - y_int8).mean()
