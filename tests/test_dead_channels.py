"""Dead and near-dead channels: filters whose weights decayed to ~1e-34 (or 0) while their bias
is not small. Their weight scale is widened until the int32 bias fits with an overflow proof
(fixnet.quant.qparams.quantize_channels); they then output their bias, as the float network
does. Fixtures: models/make_dead_models.py (real Keras, TFLite int8 goldens)."""
import warnings

import numpy as np
import pytest

import fixnet
from fixnet import oracle
from fixnet.graph import Graph, Node
from fixnet.quant.qparams import (ACC_INPUT_MAX, MULTIPLIER_SATURATES, WIDEN_TARGET,
                                  left_shift_of, qparams_from_range, quantize_channels,
                                  requant_multipliers)
from fixnet.quant.quantizer import build_quantized_model, quantize_graph
from conftest import fixture_data, fixture_path, sqnr_db, top1_versus_peer

DEAD_FIXTURES = ["dead_digits_k3", "dead_digits_tfk2"]
WEIGHTED_OPS = ("dense", "conv2d", "depthwise_conv2d", "affine")


@pytest.fixture(scope="module", params=DEAD_FIXTURES)
def dead(request):
    name = request.param
    d = fixture_data(name)
    fm = fixnet.load(fixture_path(name))
    qm = fm.quantize(d["x_calib"])                 # the defaults: nothing special asked for
    return name, d, fm, qm


def expected_dead(d):
    """[(layer, channel)] the generator made dead; never empty (else every loop over it and
    every comparison with it would pass on a fixture that has no dead channel)."""
    out = sorted((s.split(":")[0], int(s.split(":")[1])) for s in d["dead_channels"])
    assert out, "the fixture lists no dead channel"
    return out


def listed(rep):
    return sorted((r["layer"], r["channel"]) for r in rep["widened_channels"])


def test_fixture_has_dead_filters_as_the_generator_says(dead):
    # the .h5 holds what make_dead_models.py wrote: kernels 1e-30, 1e-34 or 0 in those channels
    name, d, fm, _ = dead
    kernels = {n.layer: n.weights["kernel"] for n in fm.graph.nodes if "kernel" in n.weights}
    for layer, c in expected_dead(d):
        k = kernels[layer]
        col = k[:, :, c, :] if k.ndim == 4 and layer == "dw" else k[..., c]
        assert np.abs(col).max() <= 1e-30, (name, layer, c)


def test_float_output_matches_keras(dead):
    name, d, fm, _ = dead
    got = fm.predict(d["x_test"])
    ref = d["keras_float"]
    err = np.abs(got.astype(np.float64) - ref).max() / np.abs(ref).max()
    assert err <= 1e-5, f"{name}: max error {err:.2e}"


def test_int8_accuracy_and_sqnr_within_tflite(dead):
    name, d, _, qm = dead
    assert "tflite_error" not in d, f"TFLite could not convert {name}"
    ref, tfl, y = d["keras_float"], d["tflite_int8"], d["y_test"]
    got = qm.predict(d["x_test"])
    ours, theirs = sqnr_db(ref, got), sqnr_db(ref, tfl)
    assert ours >= theirs - 1.0, f"{name}: SQNR {ours:.2f} dB vs TFLite {theirs:.2f} dB"
    # top-1 no more than 0.5 point below TFLite's, else the paired sign test on the same
    # samples must not show fixnet worse (conftest.top1_versus_peer): against Keras float's
    # top-1, and against the labels
    ok, msg = top1_versus_peer(got.argmax(1), tfl.argmax(1), ref.argmax(1))
    assert ok, f"{name}: agreement with Keras float, {msg}"
    ok, msg = top1_versus_peer(got.argmax(1), tfl.argmax(1), y)
    assert ok, f"{name}: accuracy on the labels, {msg}"


def test_report_lists_exactly_the_dead_channels(dead):
    name, d, _, qm = dead
    rep = qm.report(d["x_test"][:32])
    recs = rep.to_dict()["widened_channels"]
    assert listed(rep.to_dict()) == expected_dead(d), name
    for r in recs:
        assert r["derived"] is False
        assert r["scale"] > r["natural_scale"] >= 0.0
        assert 0.25 <= abs(r["bias"]) <= 0.8 + 1e-6         # the generator's biases / betas
    text = str(rep)
    assert "widened" in text
    for layer, c in expected_dead(d):
        assert any(layer in line and f" {c} " in line for line in text.splitlines()), (layer, c)


def test_overflow_proof_holds_with_headroom_on_widened_channels(dead):
    _, d, _, qm = dead
    assert qm.overflow_report().proven
    checked = 0
    for s in qm.steps:
        if not getattr(s, "widened", ()):
            continue
        b = s.overflow_bound()
        for w in s.widened:
            assert b.worst[w.channel] <= WIDEN_TARGET           # a bit below 2^31 to spare
            checked += 1
    assert checked == len(expected_dead(d))


def _step_rows(s):
    from fixnet.dequantize import weight_rows
    return weight_rows(s)


def test_widening_survives_rounding_and_bias_correction(dead):
    # the scale the step's multiplier applies is the widened one (adaptive rounding and bias
    # correction did not undo it); the dead channels' weights are all 0 and their int32 bias
    # is the real bias in steps of input_scale * widened scale, within the bias correction
    from fixnet.dequantize import effective_weight_scale
    _, d, _, qm = dead
    checked = 0
    for s in qm.steps:
        if not getattr(s, "widened", ()):
            continue
        checked += len(s.widened)
        s_in = qm.tensors[s.inputs[0]].qparams.scale
        s_w = effective_weight_scale(s, qm.tensors)
        rows = _step_rows(s)
        for w in s.widened:
            assert s_w[w.channel] == pytest.approx(w.scale, rel=1e-8)
            assert not rows[w.channel].any()
            bias_code = int(s.bias[w.channel])
            assert abs(bias_code) <= WIDEN_TARGET
            assert bias_code * s_in * w.scale == pytest.approx(w.bias, rel=1e-6)
    assert checked == len(expected_dead(d))


def test_dead_channels_output_their_bias(dead):
    # on any int8 input, a dead channel's int8 output is its (clamped) bias to within one step
    _, d, _, qm = dead
    rng = np.random.default_rng(0)
    checked = 0
    for s in qm.steps:
        if not getattr(s, "widened", ()):
            continue
        shape = qm.tensors[s.inputs[0]].shape
        x = rng.integers(-128, 128, size=(8,) + shape).astype(np.int8)
        (y,) = s.oracle([x])
        qp = qm.tensors[s.outputs[0]].qparams
        lo, hi = qp.dequantize(np.int8(s.act_min)), qp.dequantize(np.int8(s.act_max))
        real = qp.dequantize(y).reshape(-1, y.shape[-1])
        for w in s.widened:
            want = float(np.clip(w.bias, lo, hi))
            assert np.abs(real[:, w.channel] - want).max() <= qp.scale * 1.0001, (s.layer, w.channel)
            checked += 1
    assert checked == len(expected_dead(d))


def test_kernels_bit_exact_with_oracle_on_dead_model(dead):
    _, d, _, qm = dead
    x = d["x_test"]
    np.testing.assert_array_equal(qm.predict(x, output="int8"), qm.predict_oracle(x))


@pytest.mark.parametrize("options", [dict(weight_rounding="nearest"), dict(bias_correction=False),
                                     dict(per_channel=False), dict(weight_clipping="mse")])
def test_other_quantize_options_widen_the_same_channels(options):
    d = fixture_data("dead_digits_k3")
    fm = fixnet.load(fixture_path("dead_digits_k3"))
    qm = fm.quantize(d["x_calib"], **options)
    assert qm.overflow_report().proven
    got = sorted((s.layer, w.channel) for s in qm.steps for w in getattr(s, "widened", ()))
    if options.get("per_channel") is False:
        # one weight scale per tensor: the live channels' scale holds every bias here
        assert got == []
    else:
        assert got == expected_dead(d)
    assert sqnr_db(d["keras_float"], qm.predict(d["x_test"])) >= sqnr_db(d["keras_float"], d["tflite_int8"]) - 3.0


def test_data_free_quantization_widens_the_dead_channels():
    d = fixture_data("dead_digits_tfk2")
    fm = fixnet.load(fixture_path("dead_digits_tfk2"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qm = fm.quantize(None, input_range=(0.0, 1.0))
    assert qm.overflow_report().proven
    got = sorted((s.layer, w.channel) for s in qm.steps for w in getattr(s, "widened", ()))
    assert got == expected_dead(d)
    np.testing.assert_array_equal(qm.predict(d["x_test"][:64], output="int8"),
                                  qm.predict_oracle(d["x_test"][:64]))


def test_fxn_round_trip_derives_the_dead_channels(dead, tmp_path):
    name, d, _, qm = dead
    path = tmp_path / f"{name}.fxn"
    qm.save(path)
    back = fixnet.load(path)
    x = d["x_test"][:64]
    np.testing.assert_array_equal(back.predict(x, output="int8"), qm.predict(x, output="int8"))
    recs = back.report(x).to_dict()["widened_channels"]
    assert recs and all(r["derived"] and r["natural_scale"] is None for r in recs)
    # every dead channel here has all-zero int8 weights: they are found from the integers
    assert listed({"widened_channels": recs}) == expected_dead(d)
    mem = {(r["layer"], r["channel"]): r for r in qm.report(x).to_dict()["widened_channels"]}
    for r in recs:
        m = mem[(r["layer"], r["channel"])]
        assert r["scale"] == pytest.approx(m["scale"], rel=1e-8)
        assert r["bias"] == pytest.approx(m["bias"], rel=1e-6)


# ---- the widening rule itself -------------------------------------------------------------

X_QP = qparams_from_range(0.0, 1.0)           # an image input: 1/255 per step
Y_QP = qparams_from_range(-1.0, 1.0)


def _dense_out(cq, x_q, y_qp=Y_QP):
    return oracle.dense(x_q, cq.w_q.reshape(cq.w_q.shape[0], -1), cq.bias, cq.m0, cq.shift,
                        y_qp.zero_point, -128, 127)


def test_a_dead_channel_quantizes_and_outputs_its_bias():
    rng = np.random.default_rng(1)
    rows = np.stack([np.full(9, 1e-34), rng.normal(0, 0.2, 9)])
    bias = np.array([0.26, -0.1])
    # at max|w|/127 the bias would be ~1e33 steps: the old error
    assert 0.26 / (X_QP.scale * 1e-34 / 127) > 2 ** 31
    cq = quantize_channels(rows, bias, X_QP, Y_QP, "layer 'd' (Dense)")
    (w,) = cq.widened
    assert w.channel == 0 and w.natural_scale == pytest.approx(1e-34 / 127) and w.bias == 0.26
    assert cq.scale[0] == w.scale and not cq.w_q[0].any()
    assert cq.scale[1] == pytest.approx(np.abs(rows[1]).max() / 127)        # live channel untouched
    assert abs(int(cq.bias[0])) <= WIDEN_TARGET
    x = rng.integers(-128, 128, size=(200, 9)).astype(np.int8)
    y = Y_QP.dequantize(_dense_out(cq, x))
    assert np.abs(y[:, 0] - 0.26).max() <= Y_QP.scale                     # its bias, within a step
    ref = X_QP.dequantize(x).astype(np.float64) @ rows[1] - 0.1
    assert np.abs(y[:, 1] - ref).max() <= 3 * Y_QP.scale


def test_zero_weights_with_a_bias_are_widened_and_without_one_are_not():
    rows = np.zeros((3, 4))
    cq = quantize_channels(rows, np.array([0.7, 0.0, -0.258838]), X_QP, Y_QP, "layer 'z' (Dense)")
    assert [w.channel for w in cq.widened] == [0, 2]
    assert all(w.natural_scale == 0.0 for w in cq.widened)
    y = Y_QP.dequantize(_dense_out(cq, np.zeros((1, 4), np.int8)))[0]
    np.testing.assert_allclose(y, [0.7, 0.0, -0.258838], atol=Y_QP.scale / 2 + 1e-9)


def test_a_near_dead_channel_keeps_small_codes_and_its_function():
    # weights ~1e-6 with bias 0.5: at max|w|/127 the bias needs ~1e10 steps; widened, the
    # weights keep a few codes and the channel still computes x . w + b to within rounding
    rng = np.random.default_rng(2)
    row = rng.normal(0, 1e-6, 64)
    rows = row[None]
    cq = quantize_channels(rows, np.array([0.5]), X_QP, Y_QP, "layer 'n' (Dense)")
    (w,) = cq.widened
    assert w.scale > w.natural_scale
    x = rng.integers(-128, 128, size=(100, 64)).astype(np.int8)
    acc_worst = abs(int(cq.bias[0])) + ACC_INPUT_MAX * int(np.abs(cq.w_q[0].astype(np.int64)).sum())
    assert acc_worst << left_shift_of(X_QP.scale * cq.scale[0] / Y_QP.scale) <= WIDEN_TARGET
    y = Y_QP.dequantize(_dense_out(cq, x))[:, 0]
    ref = X_QP.dequantize(x).astype(np.float64) @ row + 0.5
    assert np.abs(y - ref).max() <= Y_QP.scale


def test_a_bias_that_fits_is_left_alone():
    rng = np.random.default_rng(3)
    rows = rng.normal(0, 0.1, (8, 27))
    bias = rng.normal(0, 0.5, 8)
    cq = quantize_channels(rows, bias, X_QP, Y_QP, "layer 'ok' (Conv2D)")
    assert cq.widened == ()
    np.testing.assert_allclose(cq.scale, np.abs(rows).max(axis=1) / 127)


def test_adaptive_codes_never_break_a_widened_channels_proof():
    # a rounding callback that returns the largest codes it may: with a saturating multiplier
    # (left shift 9) they would break the widened channel's proof, so it keeps its nearest
    # codes; the live channel takes them
    y_qp = qparams_from_range(-1e-9, 1e-9)
    rows = np.stack([np.full(16, 1e-34), np.full(16, 0.05)])
    bias = np.array([0.6, 0.0])
    cq = quantize_channels(rows, bias, X_QP, y_qp, "layer 'a' (Dense)",
                           round_codes=lambda flat, scale: np.full(flat.shape, 127.0))
    assert [w.channel for w in cq.widened] == [0]
    assert int(cq.shift[0]) == 9
    assert not cq.w_q[0].any() and np.all(cq.w_q[1] == 127)


def test_non_finite_weights_or_bias_are_quantization_errors_naming_the_layer():
    for rows, bias in ((np.array([[np.inf, 1.0]]), np.zeros(1)), (np.array([[np.nan, 1.0]]), None),
                       (np.ones((1, 2)), np.array([np.inf]))):
        with pytest.raises(fixnet.QuantizationError, match=r"layer 'bad' \(Dense\)"):
            quantize_channels(rows, bias, X_QP, Y_QP, "layer 'bad' (Dense)")


# ---- requantization multipliers at the edges of the fixed-point range ----------------------

def _int8_out(acc, m0, shift, zp):
    return np.clip(zp + oracle.multiply_by_quantized_multiplier(acc, m0, shift), -128, 127)


@pytest.mark.parametrize("real", [256.0, 300.0, 2.0 ** 30, 1.2e14, 1e300])
def test_large_multipliers_saturate_exactly_as_the_real_one(real):
    (m0,), (shift,) = requant_multipliers([real], "layer 'big' (Dense)")
    assert (int(m0), int(shift)) == (2 ** 30, 9)
    assert MULTIPLIER_SATURATES == 256.0
    acc = np.arange(-3000, 3001, dtype=np.int64)
    for zp in (-128, -5, 0, 127):
        exact = np.clip(zp + np.sign(acc) * np.minimum(np.abs(acc) * min(real, 1e6), 1e6), -128, 127)
        np.testing.assert_array_equal(_int8_out(acc, m0, shift, zp), exact)


@pytest.mark.parametrize("real", [2.0 ** -33, 1e-12, 1e-300, 0.0])
def test_tiny_multipliers_are_zero_and_so_is_the_exact_result(real):
    (m0,), (shift,) = requant_multipliers([real], "layer 'tiny' (Dense)")
    assert int(m0) == 0
    acc = np.array([-(2 ** 31) + 1, -12345, 0, 777, 2 ** 31 - 1], np.int64)
    assert np.all(np.abs(acc * real) < 0.5)
    np.testing.assert_array_equal(_int8_out(acc, m0, shift, 3), np.full(acc.shape, 3))


@pytest.mark.parametrize("real", [2.0 ** -31, 1e-5, 0.3, 1.0, 7.5, 255.0])
def test_ordinary_multipliers_are_unchanged(real):
    (m0,), (shift,) = requant_multipliers([real], "layer 'ok' (Dense)")
    assert int(m0) * 2.0 ** (int(shift) - 31) == pytest.approx(real, rel=2 ** -30)
    assert (int(m0), int(shift)) == oracle.quantize_multiplier(real)


@pytest.mark.parametrize("real", [np.nan, np.inf, -1.0])
def test_unrepresentable_multipliers_are_quantization_errors_naming_the_layer(real):
    with pytest.raises(fixnet.QuantizationError, match=r"layer 'conv2d_5' \(Conv2D\)"):
        requant_multipliers([0.5, real], "layer 'conv2d_5' (Conv2D)")


def _dense_graph(kernel, bias, name="d"):
    k, c = kernel.shape
    node = Node(name, "dense", ["x"], ["y"], {}, {"kernel": kernel, "bias": bias}, name, "Dense")
    return Graph(["x"], ["y"], [node], {"x": (k,), "y": (c,)})


@pytest.mark.parametrize("magnitude", [1e-38, 1e-30, 1e30, 1e38, 1e300, np.inf])
def test_extreme_weights_quantize_or_raise_a_fixnet_error(magnitude):
    # damaged or extreme files: never a bare ValueError / OverflowError from the multiplier
    rng = np.random.default_rng(4)
    kernel = rng.normal(0, 1, (6, 3)) * magnitude
    bias = np.array([0.5, -0.3, 0.0])
    g = _dense_graph(kernel, bias)
    x = rng.uniform(0, 1, (50, 6)).astype(np.float32)
    try:
        qm = quantize_graph(g, x, progress=False)
    except fixnet.FixnetError as e:
        assert "'d'" in str(e)
        return
    assert qm.overflow_report().proven
    np.testing.assert_array_equal(qm.predict(x, output="int8"), qm.predict_oracle(x))


def test_output_range_far_below_the_product_of_scales_saturates_without_error():
    # requantization factor ~1e14 (the damaged-file case): a representable, saturating step
    g = _dense_graph(np.full((4, 2), 1e10), np.zeros(2))
    qm = build_quantized_model(g, {"x": (0.0, 1.0), "y": (-1e-3, 1e-3)}, on_overflow_risk="warn")
    s = qm.steps[0]
    assert np.all(s.shift <= 30)
    x = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(qm.predict(x, output="int8"), qm.predict_oracle(x))


def test_a_dead_affine_channel_is_widened_too():
    # a BatchNormalization with nothing to fold into becomes an affine step: a channel whose
    # scale decayed to 1e-34 with offset 0.5 outputs 0.5
    node = Node("bn", "affine", ["x"], ["y"], {}, {"scale": np.array([1e-34, 1.5, 0.0]),
                                                  "offset": np.array([0.5, -0.2, 0.3])}, "bn",
                "BatchNormalization")
    g = Graph(["x"], ["y"], [node], {"x": (4, 3), "y": (4, 3)})
    rng = np.random.default_rng(6)
    x = rng.uniform(-1, 1, (40, 4, 3)).astype(np.float32)
    qm = quantize_graph(g, x, progress=False)
    (s,) = qm.steps
    assert [w.channel for w in s.widened] == [0, 2]
    assert qm.overflow_report().proven
    y = qm.predict(x)
    ref = x.astype(np.float64) * [1e-34, 1.5, 0.0] + [0.5, -0.2, 0.3]
    step = qm.tensors["y"].qparams.scale
    assert np.abs(y - ref).max() <= step
    np.testing.assert_array_equal(qm.predict(x, output="int8"), qm.predict_oracle(x))


def test_a_concat_input_far_below_the_output_scale_maps_to_the_zero_point():
    # a concat input whose scale is below 2^-32 of the output's (found by the fuzz campaign):
    # its factor underflows, and every one of its codes becomes the output zero point; it is
    # still requantized (its zero point differs from the output's), not copied
    node = Node("cat", "concat", ["a", "b"], ["y"], {"axis": -1}, {}, "cat", "Concatenate")
    g = Graph(["a", "b"], ["y", "a"], [node], {"a": (3,), "b": (2,), "y": (5,)})
    qm = build_quantized_model(g, {"a": (-1e-9, 1e-9), "b": (0.0, 1e3), "y": (0.0, 1e3)})
    rng = np.random.default_rng(7)
    xa = rng.integers(-128, 128, (20, 3)).astype(np.int8)
    xb = rng.integers(-128, 128, (20, 2)).astype(np.int8)
    y, _ = qm.predict([xa, xb], output="int8")
    y_oracle, _ = qm.predict_oracle([xa, xb])
    np.testing.assert_array_equal(y, y_oracle)
    assert np.all(y[:, :3] == qm.tensors["y"].qparams.zero_point)


def test_a_range_beyond_float32_is_a_quantization_error():
    # weights of 3e38 (a damaged file) make activations that float64 holds but the float32
    # outputs of predict cannot: refused at quantize time instead of returning inf
    with pytest.raises(fixnet.QuantizationError, match="too wide for float32"):
        qparams_from_range(-3e38, 3e38)
    qp = qparams_from_range(-1e38, 1e38)
    assert np.all(np.isfinite(qp.dequantize(np.arange(-128, 128))))
