"""int16 activations end to end: whole models and mixed ones run bit-exactly with the oracle,
convert where types meet, keep the overflow proof, save and load, and are at least as accurate
as TFLite's 16x8 mode on the same calibration."""
import dataclasses
import os

import numpy as np
import pytest

import fixnet
from fixnet.metrics import sqnr_db

from conftest import fixture_data, fixture_path, rewrite_fxn_manifest

ACCURACY = ("mobilenetv2_k3", "resnet_small_k3", "kws_dscnn_k3")
CONVNETS = ("mobilenetv2_k3", "resnet_small_k3", "kws_dscnn_k3", "cnn_digits_k3",
            "mobilenet_small_k3", "layers_merge_k3", "layers_pooling_k3", "layers_activations_k3",
            "concat_branches_k3", "mlp_seq_k3")


def inputs(d, split, n):
    """The fixture's ``split`` ("x_calib"/"x_test") inputs: an array, or a list of one per
    input (x_calib_0, x_calib_1, ...)."""
    if split in d:
        return d[split][:n]
    return [d[f"{split}_{i}"][:n] for i in range(len(d)) if f"{split}_{i}" in d]


_MODELS = {}


def quantized(name, n_calib=64, **settings):
    """(FloatModel, QuantizedModel, fixture data), made once per module run for the same
    arguments (quantizing MobileNetV2 takes seconds; several tests read the same models)."""
    key = (name, n_calib, repr(sorted(settings.items())))
    if key not in _MODELS:
        d = fixture_data(name)
        fm = fixnet.load(fixture_path(name))
        _MODELS[key] = (fm, fm.quantize(inputs(d, "x_calib", n_calib), progress=False,
                                        **settings), d)
    return _MODELS[key]


# the convnets of the accuracy tests are calibrated on all their calibration samples, as
# TFLite's converter was for the goldens
FULL = 200


@pytest.mark.parametrize("name", CONVNETS)
def test_all_int16_runs_bit_exactly_with_the_oracle(name):
    fm, qm, d = quantized(name, FULL if name in ACCURACY else 64, activations="int16")
    x = inputs(d, "x_test", 16)
    int16_steps = [s for s in qm.steps if s.bits == 16]
    assert int16_steps, "no layer ran int16"
    as_list = (lambda v: v if isinstance(v, list) else [v])
    got, oracle = as_list(qm.predict(x)), as_list(qm.predict_oracle(x))
    checked = as_list(qm.predict(x, check_overflow=True))   # int64 accumulators, no wrap
    for t, g, o, c in zip(qm.outputs, got, oracle, checked):
        qp = qm.tensors[t].qparams
        np.testing.assert_array_equal(g, qp.dequantize(o))
        np.testing.assert_array_equal(c, g)
        assert o.dtype == qp.dtype
    assert qm.overflow_report().proven


@pytest.mark.parametrize("name", ["mobilenetv2_k3", "resnet_small_k3", "kws_dscnn_k3"])
def test_int16_is_more_accurate_than_int8(name):
    fm, q8, d = quantized(name, FULL)
    _, q16, _ = quantized(name, FULL, activations="int16")
    x, ref = d["x_test"][:64], d["keras_float"][:64]
    s8, s16 = sqnr_db(ref, q8.predict(x)), sqnr_db(ref, q16.predict(x))
    assert s16 > s8 + 1.0, (s8, s16)     # int8 weights bound the gain (38 -> 40 dB on resnet)


def tflite16x8(name):
    path = fixture_path(name, ".tflite16x8.npz")
    if not os.path.exists(path):
        return None
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize("name", list(ACCURACY) + [
    pytest.param(n, marks=pytest.mark.slow)
    for n in ("mobilenetv2_tfk2", "resnet_small_tfk2", "kws_dscnn_tfk2")])
def test_int16_at_least_as_accurate_as_tflite_16x8(name):
    golden = tflite16x8(name)
    assert golden is not None, f"models/{name}.tflite16x8.npz is missing (models/make_tflite16x8_goldens.py)"
    # the same calibration TFLite's converter was given
    fm, qm, d = quantized(name, FULL, activations="int16")
    x, ref = d["x_test"], d["keras_float"]
    ours = sqnr_db(ref, qm.predict(x))
    theirs = sqnr_db(ref, golden["tflite16x8"])
    assert ours >= theirs - 0.25, (ours, theirs)


def test_mixed_model_converts_where_types_meet(tmp_path):
    fm, base, d = quantized("cnn_digits_k3")
    layer = "conv2d_1"
    fm, qm, d = quantized("cnn_digits_k3", overrides={layer: {"activations": "int16"}})
    bits = {s.layer: s.bits for s in qm.steps if s.op != "rescale"}
    assert bits[layer] == 16 and bits["conv2d"] == 8
    converts = [s for s in qm.steps if s.name.endswith("/convert")]
    # int8 -> int16 before the layer, int16 -> int8 after it
    kinds = sorted((qm.tensors[s.inputs[0]].qparams.bits, qm.tensors[s.outputs[0]].qparams.bits)
                   for s in converts)
    assert (8, 16) in kinds and (16, 8) in kinds
    x = d["x_test"][:32]
    got = qm.predict(x, output="int8")
    np.testing.assert_array_equal(got, qm.predict_oracle(x))
    np.testing.assert_array_equal(got, qm.predict(x, output="int8", check_overflow=True))
    # the int8 -> int16 convert is exact: the int16 tensor is the int8 codes minus their zero point
    up = next(s for s in converts if qm.tensors[s.outputs[0]].qparams.bits == 16)
    q8 = qm.tensors[up.inputs[0]].qparams
    assert qm.tensors[up.outputs[0]].qparams.scale == q8.scale
    codes = np.arange(-128, 128, dtype=np.int8)
    np.testing.assert_array_equal(up.oracle([codes])[0], codes.astype(np.int16) - q8.zero_point)
    path = str(tmp_path / "mixed.fxn")
    qm.save(path)
    back = fixnet.load(path)
    np.testing.assert_array_equal(back.predict(x, output="int8"), got)
    assert [s.bits for s in back.steps] == [s.bits for s in qm.steps]


def test_damaged_mixed_files_give_fixnet_errors(tmp_path):
    _, qm, _ = quantized("cnn_digits_k3", overrides={"conv2d_1": {"activations": "int16"}})
    path = str(tmp_path / "mixed.fxn")
    qm.save(path)

    def tensor_bits(m, bits):
        t = next(t for t in m["tensors"] if t["qparams"].get("bits") == 16)
        t["qparams"]["bits"] = bits

    def zero_point(m):
        t = next(t for t in m["tensors"] if t["qparams"].get("bits") == 16)
        t["qparams"]["zero_point"] = 3

    def step_bits(m):
        s = next(s for s in m["steps"] if s["state"].get("bits") == 16)
        s["state"]["bits"] = 8

    for i, edit in enumerate([lambda m: tensor_bits(m, 8), lambda m: tensor_bits(m, 12),
                              zero_point, step_bits,
                              lambda m: m.__setitem__("config", {"activations": "int9"})]):
        bad = str(tmp_path / f"bad{i}.fxn")
        rewrite_fxn_manifest(path, bad, edit)
        with pytest.raises(fixnet.FixnetError):
            fixnet.load(bad)


def test_output_and_input_codes_follow_the_tensor_types():
    fm, qm, d = quantized("mlp_seq_k3", activations="int16")
    x = d["x_test"][:8]
    assert qm.input_qparams[0].bits == 16 and qm.output_qparams[0].bits == 16
    out16 = qm.predict(x, output="int16")
    assert out16.dtype == np.int16
    with pytest.raises(fixnet.ArgumentError, match="int16"):
        qm.predict(x, output="int8")
    codes = qm.input_qparams[0].quantize(x)
    assert codes.dtype == np.int16
    np.testing.assert_array_equal(qm.predict(codes, output="int16"), out16)
    with pytest.raises(fixnet.InputDtypeError, match="int16"):
        qm.predict(codes.astype(np.int8))
    np.testing.assert_allclose(qm.predict(x), qm.output_qparams[0].dequantize(out16))


def _one_layer(node, shapes):
    from fixnet.graph import Graph
    return Graph(["x"], ["y"], [node], shapes)


def test_int16_dense_whose_int32_proof_fails_accumulates_in_int64(tmp_path):
    from fixnet.graph import Node
    from fixnet.quant.quantizer import build_quantized_model, make_config
    k, c = 4096, 4
    rng = np.random.default_rng(3)
    w = {"kernel": np.ones((k, c)), "bias": rng.normal(0, 8, c)}
    g = _one_layer(Node("wide", "dense", ["x"], ["y"], {}, w, "wide", "Dense"),
                   {"x": (k,), "y": (c,)})
    qm = build_quantized_model(g, {"x": (-1.0, 1.0), "y": (-4096.0, 4096.0)},
                               config=make_config(activations="int16"))
    (step,) = qm.steps
    assert (step.bits, step.acc_bits) == (16, 64) and not qm.kept_int8
    # the proof: int32 cannot hold the worst case, int64 (below 2^47) does, stated per layer
    (rec,) = qm.overflow_report()
    assert rec["accumulator"] == "int64" and rec["worst_abs"] >= 2 ** 31 and rec["proven"]
    assert "int64" in str(qm.overflow_report())
    # the largest inputs: sums far beyond int32, the kernel equal to the oracle and checked run
    x = np.concatenate([np.ones((2, k)), -np.ones((2, k)), rng.uniform(-1, 1, (4, k))])
    x = x.astype(np.float32)
    codes = qm.predict(x, output="int16")
    np.testing.assert_array_equal(codes, qm.predict_oracle(x))
    np.testing.assert_array_equal(qm.predict(x, check_overflow=True), qm.predict(x))
    assert max(r["max_abs_accumulator"] for r in qm.last_check) >= 2 ** 31
    # against the float layer (clipped to the output's range): input and output rounding and
    # the 16-bit multiplier stay within two output steps
    out_qp = qm.output_qparams[0]
    ref = np.clip(x.astype(np.float64) @ w["kernel"] + w["bias"], *out_qp.real_range)
    assert np.abs(qm.predict(x) - ref).max() <= 2 * out_qp.scale
    # saved and loaded: still int64, same outputs; a damaged acc_bits is a FixnetError
    qm.save(tmp_path / "wide.fxn")
    back = fixnet.load(tmp_path / "wide.fxn")
    assert back.steps[0].acc_bits == 64
    np.testing.assert_array_equal(back.predict(x, output="int16"), codes)
    for bad in (48, True, "64"):
        rewrite_fxn_manifest(tmp_path / "wide.fxn", tmp_path / "bad.fxn",
                             lambda m: m["steps"][0]["state"].__setitem__("acc_bits", bad))
        with pytest.raises(fixnet.FixnetError, match="acc_bits"):
            fixnet.load(tmp_path / "bad.fxn")


def test_int16_conv2d_whose_int32_proof_fails_accumulates_in_int64():
    from fixnet.graph import Node
    from fixnet.quant.quantizer import build_quantized_model, make_config
    attrs = {"rank": 2, "kernel_size": (3, 3), "strides": (1, 1), "dilation": (1, 1),
             "padding": "same", "groups": 1, "clamp": None}
    w = {"kernel": np.ones((3, 3, 512, 3)), "bias": np.zeros(3)}
    g = _one_layer(Node("c", "conv2d", ["x"], ["y"], attrs, w, "c", "Conv2D"),
                   {"x": (4, 5, 512), "y": (4, 5, 3)})
    qm = build_quantized_model(g, {"x": (-1.0, 1.0), "y": (-4608.0, 4608.0)},
                               config=make_config(activations="int16"))
    (step,) = qm.steps
    assert (step.bits, step.acc_bits) == (16, 64) and qm.overflow_report().proven
    rng = np.random.default_rng(4)
    x = np.sign(rng.uniform(-1, 1, (3, 4, 5, 512))).astype(np.float32)
    x[0] = 1.0
    np.testing.assert_array_equal(qm.predict(x, output="int16"), qm.predict_oracle(x))
    np.testing.assert_array_equal(qm.predict(x, check_overflow=True), qm.predict(x))


def test_int16_layer_without_int64_kernel_whose_proof_fails_stays_int8():
    from fixnet.graph import Node
    from fixnet.quant.quantizer import build_quantized_model, make_config
    # a 23x23 depthwise window of large weights: 529 taps of 2^15 * 127 pass 2^31, and
    # depthwise has no int64 kernel (its windows are short everywhere else)
    attrs = {"rank": 2, "kernel_size": (23, 23), "strides": (1, 1), "dilation": (1, 1),
             "padding": "valid", "clamp": None}
    w = {"kernel": np.ones((23, 23, 2, 1)), "bias": np.zeros(2)}
    g = _one_layer(Node("dw", "depthwise_conv2d", ["x"], ["y"], attrs, w, "dw", "DepthwiseConv2D"),
                   {"x": (23, 23, 2), "y": (1, 1, 2)})
    qm = build_quantized_model(g, {"x": (-1.0, 1.0), "y": (-529.0, 529.0)},
                               config=make_config(activations="int16"))
    assert [s.bits for s in qm.steps] == [8]
    assert qm.kept_int8 and qm.kept_int8[0][0] == "dw" and "2^31" in qm.kept_int8[0][1]
    assert qm.overflow_report().proven


def test_mobilenetv2_classifier_runs_int16_with_int64_accumulators():
    fm, qm, d = quantized("mobilenetv2_k3", FULL, activations="int16")
    wide = [s.layer for s in qm.steps if getattr(s, "acc_bits", 32) == 64]
    assert wide == ["predictions"] and not qm.kept_int8
    assert [r["accumulator"] for r in qm.overflow_report()
            if r["layer"] in wide and r["op"] == "dense"] == ["int64"]


def test_target_sqnr_moves_the_fewest_layers_that_meet_it():
    d = fixture_data("kws_dscnn_k3")
    fm = fixnet.load(fixture_path("kws_dscnn_k3"))
    calib, val = d["x_calib"][:64], d["x_test"][:64]
    ref = fm.predict(val)
    q8 = fm.quantize(calib, progress=False)
    q16 = fm.quantize(calib, activations="int16", progress=False)
    s8, s16 = sqnr_db(ref, q8.predict(val)), sqnr_db(ref, q16.predict(val))
    target = (s8 + s16) / 2
    qm = fm.quantize(calib, target_sqnr=target, validation=val, progress=False)
    a = qm.adjustment
    assert a.reached and a.after >= target and a.before == pytest.approx(s8)
    assert sqnr_db(ref, qm.predict(val)) == pytest.approx(a.after)
    assert 0 < len(a.int16_layers) < a.candidates
    assert {s.layer for s in qm.steps if s.bits == 16 and s.op != "rescale"} == set(a.int16_layers)
    # one fewer layer of the ranking (with the range methods it kept) does not meet it
    methods = {n: {"method": m} for n, m in a.range_methods.items()}
    fewer = fm.quantize(calib, progress=False, overrides={
        **methods, **{n: {"activations": "int16"} for n in a.int16_layers[:-1]}})
    assert sqnr_db(ref, fewer.predict(val)) < target
    assert qm.config.target_sqnr == target and "int16" in qm.config.describe()
    assert "met" in a.summary()
    # out of reach: says so, returns the model within 0.5 dB of all-int16
    far = fm.quantize(calib, target_sqnr=s16 + 20, validation=val, progress=False)
    assert not far.adjustment.reached
    assert far.adjustment.after >= far.adjustment.all_int16 - 0.5
    assert "NOT reachable" in far.adjustment.summary()


def test_target_met_by_a_range_method_moves_no_layer_to_int16():
    # on the digits convnet, conv2d_1's output range by "mse" instead of "auto"'s per-tensor
    # choice gains about 5 dB at the output: cheaper than any int16 layer
    d = fixture_data("cnn_digits_k3")
    fm = fixnet.load(fixture_path("cnn_digits_k3"))
    calib, val = d["x_calib"][:64], d["x_test"][:64]
    ref = fm.predict(val)
    s8 = sqnr_db(ref, fm.quantize(calib, progress=False).predict(val))
    qm = fm.quantize(calib, target_sqnr=s8 + 1.0, validation=val, progress=False)
    a = qm.adjustment
    assert a.reached and a.range_methods and a.int16_layers == []
    assert all(s.bits == 8 for s in qm.steps)
    assert "range method changed" in a.summary()
    assert sqnr_db(ref, qm.predict(val)) == pytest.approx(a.after) and a.after >= s8 + 1.0
    # the config it returns says so, and rebuilds the same model
    assert {n: m for n, m in a.range_methods.items()} == {
        n: qm.config.layer_value("method", n) for n in a.range_methods}
    again = fm.quantize(calib, dataclasses.replace(qm.config, target_sqnr=None), progress=False)
    np.testing.assert_array_equal(again.predict(val), qm.predict(val))


def test_report_has_types_and_an_adjust_section():
    fm, qm, d = quantized("cnn_digits_k3")
    r = qm.report(d["x_test"][:32])
    assert {rec["type"] for rec in r} == {"int8"}
    adj = r.to_dict()["adjust"]
    assert adj and all(a["gain_db"] == pytest.approx(a["sqnr_db"] - a["base_db"]) for a in adj)
    assert adj == sorted(adj, key=lambda a: -a["sqnr_db"])
    assert "adjust: output SQNR with one layer moved to int16" in str(r)


def test_int16_global_average_pool_over_more_than_516_pixels_stays_int16():
    from fixnet.graph import Node
    from fixnet.quant.quantizer import build_quantized_model, make_config
    attrs = {"kind": "avg", "rank": 2, "keepdims": False}
    g = _one_layer(Node("gap", "global_pool", ["x"], ["y"], attrs, {}, "gap", "GlobalAveragePooling2D"),
                   {"x": (40, 30, 3), "y": (3,)})
    qm = build_quantized_model(g, {"x": (-2.0, 2.0), "y": (-2.0, 2.0)},
                               config=make_config(activations="int16"))
    (step,) = qm.steps
    assert step.bits == 16 and not qm.kept_int8 and qm.overflow_report().proven
    x = np.random.default_rng(5).uniform(-2, 2, (4, 40, 30, 3)).astype(np.float32)
    x[0] = 2.0                                   # the largest sum: 1200 pixels of 32767
    np.testing.assert_array_equal(qm.predict(x, output="int16"), qm.predict_oracle(x))
    np.testing.assert_array_equal(qm.predict(x, check_overflow=True), qm.predict(x))
    assert np.abs(qm.predict(x) - x.mean(axis=(1, 2))).max() <= qm.output_qparams[0].scale


def test_multipliers_saturate_where_the_output_type_ends():
    from fixnet.oracle import multiply_by_quantized_multiplier
    from fixnet.quant.qparams import requant_multipliers
    (m8,), (s8,) = requant_multipliers(1000.0, "test")
    (m16,), (s16,) = requant_multipliers(1000.0, "test", bits=16)
    assert m8 * 2.0 ** (s8 - 31) == 256.0           # int8: every v != 0 is beyond int8 anyway
    assert m16 * 2.0 ** (s16 - 31) == 1000.0        # int16: 1000 * v is still inside int16
    assert multiply_by_quantized_multiplier(7, m16, s16) == 7000
    (m,), (s,) = requant_multipliers(1e6, "test", bits=16)
    assert m * 2.0 ** (s - 31) == 65536.0
