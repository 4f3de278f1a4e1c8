"""The numeric contract: what quantize() produces, and the static overflow proof."""
import warnings

import h5py
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import fixnet
from fixnet import oracle
from fixnet.ops.dense import DenseStep
from fixnet.quant.qparams import qparams_from_range, quantize_weights
from conftest import fixture_data, fixture_path


@pytest.fixture(scope="module")
def seq():
    d = fixture_data("mlp_seq_k3")
    fm = fixnet.load(fixture_path("mlp_seq_k3"))
    return d, fm, fm.quantize(d["x_calib"])


@settings(max_examples=300, deadline=None)
@given(st.floats(-1e4, 1e4), st.floats(-1e4, 1e4))
def test_activation_range_contains_zero_exactly_and_covers_the_range(a, b):
    lo, hi = min(a, b), max(a, b)
    qp = qparams_from_range(lo, hi)
    assert -128 <= qp.zero_point <= 127
    assert qp.scale > 0
    rlo, rhi = qp.real_range
    # real 0.0 is exactly the zero-point code
    assert qp.dequantize(qp.zero_point) == 0.0
    # the range is covered up to the half step lost to the zero point's rounding
    assert rlo <= min(lo, 0.0) + qp.scale and rhi >= max(hi, 0.0) - qp.scale


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 8), st.integers(1, 40), st.floats(1e-4, 1e3))
def test_weights_are_symmetric_per_channel_in_minus127_127(c, k, mag):
    rng = np.random.default_rng(c * 1000 + k)
    w = rng.normal(size=(c, k)) * mag * rng.uniform(0.01, 1, size=(c, 1))
    q, scale = quantize_weights(w)
    assert q.dtype == np.int8 and q.min() >= -127 and q.max() <= 127
    assert np.all(np.abs(q).max(axis=1) == 127)        # each channel uses its full range
    assert np.all(np.abs(q * scale[:, None] - w) <= scale[:, None] / 2 + 1e-12)


def test_per_tensor_weights_option(seq):
    d, fm, _ = seq
    qm = fm.quantize(d["x_calib"], per_channel=False)
    for s in qm.steps:
        if isinstance(s, DenseStep):
            assert np.abs(s.w_q).max() == 127
            assert np.unique(np.abs(s.w_q).max(axis=1)).size > 1   # one scale for all channels
    assert (qm.predict(d["x_test"]).argmax(1) == d["y_test"]).mean() >= 0.95


def test_quantized_steps_follow_the_contract(seq):
    d, fm, qm = seq
    dense = [s for s in qm.steps if isinstance(s, DenseStep)]
    assert len(dense) == 3                                   # BatchNorm folded, ReLUs fused, no Dropout
    assert [s.op for s in qm.steps] == ["dense", "dense", "dense", "softmax"]
    for s in dense:
        assert s.w_q.dtype == np.int8 and s.w_q.min() >= -127
        assert s.bias.dtype == np.int32
        assert np.all((s.m0 >= 2 ** 30) | (s.m0 == 0)) and s.m0.dtype == np.int32
    # the first two layers carry a ReLU: their clamp starts at the zero point (real 0.0)
    for s in dense[:2]:
        assert s.act_min == s.out_zp
    assert dense[2].act_min == -128
    sm = qm.output_qparams[0]                     # probabilities: 0.0 and 1.0 both exact
    assert (sm.scale, sm.zero_point) == (float(np.float32(1 / 255)), -128)


def test_zero_point_term_is_folded_into_the_bias(seq):
    # acc = bias + sum (x_q - x_zp) w_q  ==  (bias - x_zp sum w_q) + sum x_q w_q
    # (plain rounding and no bias correction, so the bias codes are round(b / (s_x s_w)))
    d, fm, _ = seq
    qm = fm.quantize(d["x_calib"], bias_correction=False, weight_rounding="nearest")
    s = qm.steps[0]
    x_qp = qm.input_qparams[0]
    x_q = x_qp.quantize(d["x_test"][:20]).astype(np.int64)
    w = s.w_q.astype(np.int64)
    kernel = fm.graph.nodes[0].weights["kernel"].astype(np.float64)
    w_scale = np.abs(kernel).max(axis=0) / 127
    b_true = oracle.round_half_away(fm.graph.nodes[0].weights["bias"] / (x_qp.scale * w_scale))
    acc_true = b_true + (x_q - x_qp.zero_point) @ w.T
    assert np.array_equal(oracle.dense_accumulators(x_q.astype(np.int8), s.w_q, s.bias), acc_true)


def test_any_batch_size_and_chunking(seq):
    d, _, qm = seq
    x = np.concatenate([d["x_test"]] * 2)               # 720 rows: several 256-row passes
    full = qm.predict(x)
    assert full.shape == (720, 10) and full.dtype == np.float32
    for n in (0, 1, 7, 256, 257):
        assert np.array_equal(qm.predict(x[:n]), full[:n])
    # arenas are reused: running again gives the same answer
    assert np.array_equal(qm.predict(x[:7]), full[:7])


def test_int8_input_is_taken_as_quantized(seq):
    d, _, qm = seq
    x = d["x_test"][:50]
    xq = qm.input_qparams[0].quantize(x)
    assert np.array_equal(qm.predict(xq, output="int8"), qm.predict(x, output="int8"))
    out = qm.predict(x)
    raw = qm.predict(x, output="int8")
    assert raw.dtype == np.int8
    assert np.array_equal(out, qm.output_qparams[0].dequantize(raw))


def test_float64_and_noncontiguous_input(seq):
    d, _, qm = seq
    x = d["x_test"][:40]
    ref = qm.predict(x)
    assert np.array_equal(qm.predict(x.astype(np.float64)), ref)
    xt = np.asfortranarray(x)
    assert np.array_equal(qm.predict(xt), ref)
    assert np.array_equal(qm.predict(x[::2]), ref[::2])


def test_calibration_as_list_of_batches_or_generator(seq):
    d, fm, qm = seq
    batches = [d["x_calib"][i:i + 50] for i in range(0, 200, 50)]
    qm2 = fm.quantize(batches)
    qm3 = fm.quantize(b for b in batches)
    x = d["x_test"]
    assert np.array_equal(qm2.predict(x, output="int8"), qm.predict(x, output="int8"))
    assert np.array_equal(qm3.predict(x, output="int8"), qm.predict(x, output="int8"))


def _set_bias(path, layer, dataset, value):
    with h5py.File(path, "r+") as f:
        ds = f[f"model_weights/{layer}/{dataset}"]
        b = np.array(ds)
        b[3] = value
        ds[...] = b


def _wide_dense_graph(k=300, c=4):
    """x [k] -> Dense(k -> c) with every weight 1.0 and no bias."""
    from fixnet.graph import Graph, Node
    w = {"kernel": np.ones((k, c)), "bias": np.zeros(c)}
    node = Node("wide", "dense", ["x"], ["y"], {}, w, "wide", "Dense")
    return Graph(["x"], ["y"], [node], {"x": (k,), "y": (c,)})


def test_overflow_risk_names_the_layer():
    # weights whose worst case alone breaks the proof: 300 inputs, every code 127, and an
    # output range so narrow that the multiplier saturates (left shift 9):
    # 128 * 127 * 300 * 2^9 > 2^31. Widening is for biases; this is the overflow check's.
    from fixnet.quant.quantizer import build_quantized_model
    g = _wide_dense_graph()
    ranges = {"x": (-1.0, 1.0), "y": (-1e-5, 1e-5)}
    with pytest.raises(fixnet.OverflowRiskError, match=r"layer 'wide'.*channel 0"):
        build_quantized_model(g, ranges)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        qm = build_quantized_model(g, ranges, on_overflow_risk="warn")
    assert any("wide" in str(x.message) for x in w)
    rep = qm.overflow_report()
    assert not rep.proven
    bad = [r for r in rep if not r["proven"]]
    assert [r["layer"] for r in bad] == ["wide"] and bad[0]["headroom_bits"] <= 0
    assert "NO" in str(rep)
    assert qm.steps[0].widened == ()


def test_bias_near_or_beyond_int32_widens_the_channel(copy_fixture):
    # a bias of 2^31 - 1000 steps (fits int32, but the proof fails) or of 1e9 (beyond int32):
    # the channel's weight scale is widened, the model quantizes with a proof, the report
    # lists the channel, and the int8 network follows the float one (class 3 everywhere)
    d = fixture_data("mlp_seq_tfk2")
    fm = fixnet.load(fixture_path("mlp_seq_tfk2"))
    qm = fm.quantize(d["x_calib"])
    s = qm.steps[2]                                      # dense_2, 32 -> 10
    kernel = fm.graph.nodes[-2].weights["kernel"]
    in_scale = qm.tensors[s.inputs[0]].qparams.scale
    w_scale = np.abs(kernel[:, 3]).max() / 127
    for value in ((2 ** 31 - 1000) * in_scale * w_scale, 1e9):
        p = copy_fixture("mlp_seq_tfk2")
        _set_bias(p, "dense_2", "dense_2/bias:0", value)
        fm = fixnet.load(p)
        qm = fm.quantize(d["x_calib"])
        assert qm.overflow_report().proven
        (w,) = qm.steps[2].widened
        assert w.channel == 3 and w.bias == pytest.approx(value) and w.scale > w.natural_scale
        rep = qm.report(d["x_test"][:20]).to_dict()
        assert [(r["layer"], r["channel"]) for r in rep["widened_channels"]] == [("dense_2", 3)]
        x = d["x_test"]
        assert np.all(fm.predict(x).argmax(1) == 3)      # the float network: class 3 always
        assert np.all(qm.predict(x).argmax(1) == 3)


def test_overflow_report_structure(seq):
    _, _, qm = seq
    rep = qm.overflow_report().to_dict()
    assert rep["proven"]
    names = [r["layer"] for r in rep["layers"]]
    assert names == ["dense", "dense_1", "dense_2", "dense_2"]
    for r in rep["layers"]:
        assert r["worst_abs"] < 2 ** 31 and r["headroom_bits"] > 0
    # the dense bound is |bias| + 128 * sum|w_q| per channel: check it independently
    s = qm.steps[0]
    worst = np.abs(s.bias.astype(np.int64)) + 128 * np.abs(s.w_q.astype(np.int64)).sum(1)
    assert rep["layers"][0]["worst_abs"] == int(worst.max())


@pytest.mark.parametrize("kernel, strides, padding, pointwise", [
    ((1, 1), (1, 1), "valid", True),
    ((1, 1), (1, 1), "same", True),
    ((1, 1), (2, 2), "valid", False),
    ((3, 3), (1, 1), "same", False),
])
def test_pointwise_conv_runs_on_the_dense_kernel_bit_exactly(kernel, strides, padding, pointwise, tmp_path):
    from fixnet.graph import Graph, Node
    from fixnet.ops.conv import ConvStep
    from fixnet.quant.quantizer import quantize_graph
    rng = np.random.default_rng(5)
    attrs = {"rank": 2, "kernel_size": kernel, "strides": strides, "dilation": (1, 1),
             "padding": padding, "groups": 1, "clamp": (0.0, 6.0)}
    w = {"kernel": rng.normal(0, 0.3, size=kernel + (24, 40)), "bias": rng.normal(0, 0.1, size=40)}
    g = Graph(["x"], ["y"], [Node("c", "conv2d", ["x"], ["y"], attrs, w, "c", "Conv2D")],
              {"x": (7, 9, 24), "y": None})
    from fixnet.ops import op_for
    g.shapes["y"] = op_for(g.nodes[0]).infer_shapes(g.nodes[0], [(7, 9, 24)])[0]
    x = rng.normal(size=(5, 7, 9, 24)).astype(np.float32)
    qm = quantize_graph(g, x, progress=False)
    (step,) = [s for s in qm.steps if isinstance(s, ConvStep)]
    assert step.is_pointwise() == pointwise
    np.testing.assert_array_equal(qm.predict(x, output="int8"), qm.predict_oracle(x))
    qm.save(tmp_path / "m.fxn")
    np.testing.assert_array_equal(fixnet.load(tmp_path / "m.fxn").predict(x, output="int8"),
                                  qm.predict(x, output="int8"))
