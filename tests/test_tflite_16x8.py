"""fixnet.load of TFLite's 16x8 files (int16 activations, int8 weights, int64 biases; made by
models/make_tflite16x8_goldens.py): the int16 outputs equal TFLite's reference kernels'
(``OpResolverType.BUILTIN_REF``, stored in models/tflite/<name>.16x8.npz as ``out_ref``) on
every value, every intermediate tensor TFLite computed (``t<index>``, first inputs) equals the
step's oracle fed TFLite's own inputs, the kernels equal the oracle, the model saves to .fxn,
and what is not mapped for 16x8 is refused naming the operators (fixnet/tflite/int16.py)."""
import json
import os

import numpy as np
import pytest

import fixnet
from conftest import fixture_path
from fixnet.tflite.steps16 import (Tflite16DenseStep, Tflite16SoftmaxStep, dense16_reference,
                                   lut_lookup16, softmax16_params, softmax16_reference,
                                   softmax16_tables)

import tflite  # noqa: E402,F401  (the test extra's parser: a missing one fails here, not skips)

TFLITE_DIR = os.path.join(os.path.dirname(fixture_path("x")), "tflite")
# every 16x8 convnet file (QUANTIZE, CONV_2D, DEPTHWISE_CONV_2D, MAX/AVERAGE_POOL_2D, MEAN,
# ADD, RESHAPE and the shape ops before it, FULLY_CONNECTED, SOFTMAX, DEQUANTIZE)
BIT_EXACT = [f"{n}_{w}" for n in ("cnn_digits", "kws_dscnn", "mobilenet_small", "resnet_small")
             for w in ("k3", "tfk2")]


def golden(name):
    with np.load(os.path.join(TFLITE_DIR, name + ".16x8.npz"), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def tflite_quantize16(x, scale):
    """TFLite's QUANTIZE float32 -> int16 (reference AffineQuantize): round(x / scale) in
    float32, ties away from zero, clamped. (predict does the same for a .tflite model's float
    inputs, input_rounding "tflite"; this independent copy checks it.)"""
    q = (np.float32(x) / np.float32(scale)).astype(np.float64)
    t = np.trunc(q)
    r = t + np.where(np.abs(q - t) >= 0.5, np.sign(q), 0.0)
    return np.clip(r, -32768, 32767).astype(np.int16)


def load(name):
    return fixnet.load(fixture_path(name, ".16x8.tflite"))


def codes_of(qm, d):
    return tflite_quantize16(d["input"], qm.tensors[qm.inputs[0]].qparams.scale)


@pytest.mark.parametrize("name", BIT_EXACT)
def test_16x8_file_gives_tflite_reference_outputs_and_tensors(name):
    """The int16 outputs on the 64 inputs, their dequantized floats, and every tensor TFLite's
    reference kernels computed on the first inputs, step by step (each step's oracle fed
    TFLite's own input tensors)."""
    d = golden(name)
    assert str(d["variant"]) == "16x8" and str(d["tensors_kernels"]) == "BUILTIN_REF"
    qm = load(name)
    x = codes_of(qm, d)
    names = {t["name"]: t["index"] for t in json.loads(str(d["tensors"]))}
    np.testing.assert_array_equal(x[:len(d["t0"])].reshape(d["t0"].shape),
                                  d[f"t{names[qm.inputs[0]]}"])       # TFLite's QUANTIZE
    got = qm.predict(x, output="int16")
    assert got.dtype == np.int16
    np.testing.assert_array_equal(got, d["out_ref"].reshape(got.shape))
    # float inputs: predict quantizes them as TFLite's QUANTIZE does (float32 division)
    np.testing.assert_array_equal(qm.predict(np.float32(d["input"]), output="int16"), got)
    np.testing.assert_array_equal(qm.predict(x), d["out_ref_float"].reshape(got.shape))
    checked = 0
    for s in qm.steps:
        keys = [f"t{names.get(t, -1)}" for t in s.inputs + s.outputs]
        if not all(k in d for k in keys[:len(s.inputs)]):
            continue
        ins = [d[k] for k in keys[:len(s.inputs)]]
        n = ins[0].shape[0]
        ins = [v.reshape((n,) + qm.tensors[t].shape) for v, t in zip(ins, s.inputs)]
        for o, k in zip(s.oracle(ins), keys[len(s.inputs):]):
            np.testing.assert_array_equal(o.reshape(d[k].shape), d[k], err_msg=f"{s.name} ({s.op})")
            checked += 1
    assert checked == len(qm.steps)         # every step's output is one of TFLite's tensors


@pytest.mark.parametrize("name", ["cnn_digits_k3", "kws_dscnn_tfk2", "mobilenet_small_k3",
                                  "resnet_small_tfk2"])
def test_16x8_kernels_oracle_checked_run_and_fxn_agree(name, tmp_path):
    """On the fixture's inputs and on int16 codes over the whole range (large accumulators,
    clamping): kernels = oracle = checked run; the overflow proof holds; .fxn gives the same."""
    qm = load(name)
    d = golden(name)
    rng = np.random.default_rng(16)
    for x in (codes_of(qm, d)[:16],
              rng.integers(-32768, 32768, (4,) + qm.input_shapes[0], dtype=np.int16)):
        got = qm.predict(x, output="int16")
        np.testing.assert_array_equal(qm.predict_oracle(x), got)
        np.testing.assert_array_equal(qm.predict(x, output="int16", check_overflow=True), got)
    assert qm.overflow_report().proven
    assert {s.bits for s in qm.steps} == {16}
    path = str(tmp_path / "m.fxn")
    qm.save(path)
    back = fixnet.load(path)
    np.testing.assert_array_equal(back.predict(x, output="int16"), got)
    np.testing.assert_array_equal(back.predict(codes_of(qm, d), output="int16"), d["out_ref"])


def test_16x8_steps_are_tflites_kernels():
    """The TFLite-specific 16x8 steps: CONV_2D and DEPTHWISE_CONV_2D on fixnet's int64 wide
    convolution, FULLY_CONNECTED and SOFTMAX as Tflite16DenseStep / Tflite16SoftmaxStep."""
    qm = load("kws_dscnn_k3")
    convs = [s for s in qm.steps if s.op == "conv2d"]
    assert len(convs) == 7 and all(s.acc_bits == 64 for s in convs)
    assert sum(s.groups > 1 for s in convs) == 3            # the depthwise convolutions
    assert [type(s) for s in qm.steps[-2:]] == [Tflite16DenseStep, Tflite16SoftmaxStep]


def test_depthwise_as_a_grouped_convolution_gives_the_depthwise_sums():
    """DEPTHWISE_CONV_2D runs as a grouped conv2d (one group per input channel): the same
    accumulators as the depthwise oracle, for depth multipliers 1 and 2, strides, padding."""
    from fixnet import oracle
    from fixnet.tflite.int16 import depthwise_as_grouped
    rng = np.random.default_rng(3)
    for mult, stride, pads in ((1, 1, (1, 1)), (2, 2, (0, 1)), (3, 1, (0, 0))):
        c = 3
        x = rng.integers(-32768, 32768, (2, 7, 6, c)).astype(np.int16)
        w = rng.integers(-127, 128, (1, 3, 3, c * mult)).astype(np.int8)
        bias = rng.integers(-1000, 1000, c * mult).astype(np.int32)
        common = dict(stride_h=stride, stride_w=stride, dilation_h=1, dilation_w=1,
                      pad_top=pads[0], pad_left=pads[1], pad_value=0, out_zp=0,
                      act_min=-32768, act_max=32767)
        oh, ow = (7 + 2 * pads[0] - 3) // stride + 1, (6 + 2 * pads[1] - 3) // stride + 1
        want = oracle.depthwise_conv2d_accumulators(x, w[0], bias, dict(common,
                                                    depth_multiplier=mult), out_h=oh, out_w=ow)
        got = oracle.conv2d_accumulators(x, depthwise_as_grouped(w), bias,
                                         dict(common, groups=c), out_h=oh, out_w=ow)
        np.testing.assert_array_equal(got, want)


def test_16x8_files_with_ops_not_mapped_are_refused_naming_them():
    """The unrolled recurrent 16x8 files (UNPACK, SPLIT, LOGISTIC, TANH, MUL, ...; batch-1
    graphs whose RESHAPE moves values across the batch axis) are refused in one error that
    names the file and each operator with its reason."""
    path = fixture_path("rnn_simplernn_k3", ".16x8.tflite")
    with pytest.raises(fixnet.UnsupportedLayerError) as e:
        fixnet.load(path)
    msg = str(e.value)
    assert msg.startswith(path)
    assert "UNPACK" in msg and "not implemented for 16x8 files (int16 activations)" in msg
    assert "TANH" in msg


def test_softmax16_tables_are_tflites():
    """TFLite's 513-entry int16 tables (LUTPopulateInt16<double>): exp on [-10, 0] and
    1 / (1 + x) on [0, 1] at output scale 1/32768, clamped to int16; the lookup interpolates
    the 7 low bits."""
    exp_lut, recip_lut = softmax16_tables()
    assert exp_lut.shape == recip_lut.shape == (513,)
    assert exp_lut[512] == 32767 and 0 <= exp_lut[0] <= 2          # exp(0) = 1, exp(-10)
    assert np.all(np.diff(exp_lut.astype(int)) >= 0)
    assert recip_lut[0] == 32767 and recip_lut[512] == 16384       # 1/(1+0), 1/(1+1)
    assert np.all(np.diff(recip_lut.astype(int)) <= 0)
    x = np.arange(-32768, 32768, 97)
    got = lut_lookup16(x, exp_lut)
    idx = 256 + (x >> 7)
    assert np.all((got >= np.minimum(exp_lut[idx], exp_lut[idx + 1]))
                  & (got <= np.maximum(exp_lut[idx], exp_lut[idx + 1])))
    assert np.array_equal(lut_lookup16(np.array([-32768, 32767 - 127]),
                                       exp_lut), exp_lut[[0, 511]])


def test_softmax16_reference_values():
    """Equal logits give 1/C; a dominant logit takes nearly all (the table clamps exp below
    -10 to exp(-10), about 1.5 / 32768, so the others keep a code or two); rows are
    independent."""
    m, s = softmax16_params(np.float32(0.001))
    x = np.array([[5, 5, 5, 5], [30000, -30000, -30000, -30000], [0, 0, 0, 0]], np.int16)
    y = softmax16_reference(x, m, s)
    assert np.all(np.abs(y[0] - 8192) <= 2) and np.array_equal(y[0], y[2])
    assert y[1, 0] >= 32760 and np.all((y[1, 1:] >= 1) & (y[1, 1:] <= 2))
    step = Tflite16SoftmaxStep("s", "s", ["x"], ["y"], m, s, 4)
    out = np.zeros_like(x)
    step.bind({"x": x, "y": out})()
    np.testing.assert_array_equal(out, y)
    np.testing.assert_array_equal(step.oracle([x])[0], y)


def test_dense16_reference_rounds_the_double_product_half_away_from_zero():
    """FULLY_CONNECTED 16x8: (int32) round(double(acc) * scale), C round()."""
    w = np.array([[1], [2]], np.int8)
    scales = np.array([2.5, 0.25])
    x = np.array([[1], [-1], [3]], np.int16)
    y = dense16_reference(x, w, np.array([0, 0], np.int64), scales, -32768, 32767)
    assert y.tolist() == [[3, 1], [-3, -1], [8, 2]]      # 2.5, 0.5, -2.5, -0.5, 7.5, 1.5
    step = Tflite16DenseStep("d", "d", ["x"], ["y"], w, np.zeros(2, np.int64), scales, -5, 5)
    out = np.zeros((3, 2), np.int16)
    step.bind({"x": x, "y": out})()
    assert out.tolist() == [[3, 1], [-3, -1], [5, 2]]


def test_16x8_mode_needs_int16_activations_and_no_int8_ones():
    """A file is converted by the 16x8 rules when its computed tensors hold int16 and no int8
    or uint8 (int8 weights are constants); a file mixing the two keeps the int8 rules, which
    refuse its int16 tensors as before."""
    from types import SimpleNamespace
    from fixnet.tflite.convert import Converter

    def model(*kinds):
        return SimpleNamespace(tensors=[SimpleNamespace(index=i, name=f"t{i}", type=t, data=d)
                                        for i, (t, d) in enumerate(kinds)], operators=[])
    w = np.zeros(4, np.int8)
    assert Converter(model(("INT16", None), ("INT8", w), ("INT64", w))).int16
    assert not Converter(model(("INT8", None), ("INT16", None), ("INT8", w))).int16
    assert not Converter(model(("INT8", None), ("INT8", w), ("INT32", w))).int16
