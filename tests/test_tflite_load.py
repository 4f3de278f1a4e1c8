"""fixnet.load of an int8 .tflite file: the model TFLite's converter wrote, run on fixnet's
kernels with TFLite's scales, zero points and integer rules, gives TFLite's reference kernels'
int8 outputs (``OpResolverType.BUILTIN_REF``, stored in the fixture's .npz as
``tflite_int8_raw`` for ``tflite_input_int8``) bit for bit; the kernels equal the oracle,
checked execution agrees, the overflow proof holds, the model saves to .fxn, and what fixnet
cannot run is refused in one error that lists every operator."""
import os

import numpy as np
import pytest

import fixnet
from conftest import fixture_path

import tflite  # noqa: E402,F401  (the test extra's parser: a missing one fails here, not skips)

# the int8 .tflite fixtures whose every op fixnet runs (models/*.tflite; the others hold ops
# not mapped yet, see test_unsupported_operators_are_listed_together)
BIT_EXACT = ["cnn_digits_k3", "cnn_digits_tfk2", "concat_branches_k3", "concat_branches_tfk2",
             "dead_digits_k3", "dead_digits_tfk2", "kws_dscnn_k3", "kws_dscnn_tfk2", "mlp_func_k3",
             "mlp_func_tfk2",
             "mlp_seq_k3", "mlp_seq_tfk2", "mobilenet_small_k3", "mobilenet_small_tfk2",
             "resnet_small_k3", "resnet_small_tfk2",
             "kws_conv1d_k3", "kws_conv1d_tfk2", "layers_channels_first_k3",
             "layers_channels_first_tfk2", "layers_conv1d_k3", "layers_conv1d_tfk2",
             "layers_conv2d_k3", "layers_conv2d_tfk2", "layers_depthwise_k3",
             "layers_depthwise_tfk2", "layers_noise_norm_k3", "layers_noise_norm_tfk2",
             "layers_padding_reshape_k3", "layers_padding_reshape_tfk2",
             "layers_mobilenetv3_small_k3", "layers_mobilenetv3_small_tfk2",
             "layers_tensor_ops_k3", "layers_tensor_ops_tfk2",
             pytest.param("mobilenetv2_k3", marks=pytest.mark.slow),
             pytest.param("mobilenetv2_tfk2", marks=pytest.mark.slow)]


def golden(name):
    with np.load(fixture_path(name, ".npz")) as z:
        return z["tflite_input_int8"], z["tflite_int8_raw"], str(z["tflite_kernels"])


@pytest.mark.parametrize("name", BIT_EXACT)
def test_tflite_file_gives_tflite_reference_outputs_bit_for_bit(name):
    qm = fixnet.load(fixture_path(name, ".tflite"))
    x, want, kernels = golden(name)
    assert kernels == "BUILTIN_REF"
    got = qm.predict(x, output="int8")
    np.testing.assert_array_equal(got, want.reshape(got.shape))


@pytest.mark.parametrize("name", ["cnn_digits_k3", "kws_dscnn_k3", "mlp_func_tfk2",
                                  "concat_branches_k3", "resnet_small_tfk2", "kws_conv1d_k3",
                                  "layers_conv2d_tfk2", "layers_noise_norm_k3",
                                  "layers_padding_reshape_tfk2", "layers_mobilenetv3_small_k3",
                                  "layers_tensor_ops_tfk2", "layers_upsampling1d_k3"])
def test_tflite_model_kernels_oracle_checked_run_and_fxn_agree(name, tmp_path):
    qm = fixnet.load(fixture_path(name, ".tflite"))
    x = golden(name)[0][:24]
    got = qm.predict(x, output="int8")
    np.testing.assert_array_equal(qm.predict_oracle(x), got)
    np.testing.assert_array_equal(qm.predict(x, output="int8", check_overflow=True), got)
    assert qm.overflow_report().proven
    qm.save(tmp_path / "m.fxn")
    back = fixnet.load(tmp_path / "m.fxn")
    np.testing.assert_array_equal(back.predict(x, output="int8"), got)
    # float inputs are quantized with the input tensor's scale and zero point, as TFLite's
    # converter quantized the fixture's test inputs
    spec = qm.tensors[qm.inputs[0]]
    assert spec.qparams.bits == 8 and spec.shape == x.shape[1:]


def test_fully_connected_rounds_once_and_conv_twice():
    """TFLite 2.21's reference FULLY_CONNECTED rounds the exact product once (ties away from
    zero), its CONV_2D / DEPTHWISE_CONV_2D gemmlowp's way, twice: the converted steps say so."""
    qm = fixnet.load(fixture_path("cnn_digits_k3", ".tflite"))
    rounding = {s.op: getattr(s, "rounding", "double") for s in qm.steps}
    assert rounding["dense"] == "single" and rounding["conv2d"] == "double"


def test_unsupported_operators_are_listed_together():
    with pytest.raises(fixnet.UnsupportedLayerError) as e:
        fixnet.load(fixture_path("layers_activations_k3", ".tflite"))
    msg = str(e.value)
    assert msg.startswith(fixture_path("layers_activations_k3", ".tflite"))
    listed = [line for line in msg.splitlines()[1:] if line.strip().startswith("operator ")]
    assert len(listed) >= 2 and "EXP" in msg and "SELECT_V2" in msg


def test_a_float_model_is_refused_naming_why(tmp_path):
    # a FULLY_CONNECTED with float weights: not an int8 model
    from test_tflite_reader import build
    path = tmp_path / "fc.tflite"
    path.write_bytes(build(weight_type="FLOAT32", weight_bytes=np.zeros(12, np.float32).tobytes(),
                           scales=(0.5,)))
    with pytest.raises(fixnet.FixnetError, match="FULLY_CONNECTED"):
        fixnet.load(path)


def test_a_built_fully_connected_model_runs_as_the_integer_rule_says(tmp_path):
    """The test-built FULLY_CONNECTED (tests/test_tflite_reader.build: x (1, 4) at scale 0.1,
    zero point -3; weights 0..11 per channel; bias 1, -2, 3; y at 0.2, zero point 5), computed
    here from the file's numbers with exact rationals."""
    from fractions import Fraction
    from test_tflite_reader import build
    path = tmp_path / "fc.tflite"
    path.write_bytes(build())
    qm = fixnet.load(path)
    x = np.array([[-128, -3, 7, 127]], np.int8)
    w = np.arange(12).reshape(3, 4)
    scales = np.float32([0.5, 0.25, 0.125])
    out = []
    for c in range(3):
        acc = int(np.dot(x[0].astype(int) + 3, w[c])) + [1, -2, 3][c]
        m = Fraction(float(np.float32(0.1))) * Fraction(float(scales[c])) / Fraction(float(np.float32(0.2)))
        v = acc * m
        r = int(abs(v) + Fraction(1, 2)) * (1 if v >= 0 else -1)
        out.append(max(-128, min(127, 5 + r)))
    assert qm.predict(x, output="int8").tolist() == [out]


# models/tflite/ (models/make_tflite_fixtures.py): the fixtures converted with int8 and with
# uint8 inputs and outputs, with TFLite's reference outputs (out_ref) and, for int8io, every
# intermediate tensor of the first inputs (t<index>)
TFLITE_DIR = os.path.join(os.path.dirname(fixture_path("x")), "tflite")
# (layers_upsampling_tfk2: TRANSPOSE_CONV, Cropping as STRIDED_SLICE, RESIZE_NEAREST_NEIGHBOR,
# RESIZE_BILINEAR; layers_upsampling1d_k3: TILE, and TRANSPOSE_CONV's output shape computed
# by SHAPE -> STRIDED_SLICE -> RESHAPE -> CONCATENATION; layers_mobilenetv3_small: a
# squeeze-and-excite gate broadcast by MUL)
CONVERTED = [f"{n}_{w}.{io}" for n in ("cnn_digits", "concat_branches", "kws_dscnn", "mlp_func",
                                        "mlp_seq", "mobilenet_small", "resnet_small",
                                        # rank-3 tensors, dilated convolutions written as
                                        # SPACE_TO_BATCH_ND -> conv -> BATCH_TO_SPACE_ND,
                                        # constant operands, REDUCE_MAX
                                        "kws_conv1d", "layers_conv1d", "layers_conv2d",
                                        "layers_depthwise", "layers_pooling",
                                        # MAXIMUM / MINIMUM, MUL by a scalar (average)
                                        "layers_merge", "multi_io",
                                        # TRANSPOSE, rank-3 PAD, per-channel SUB / MUL
                                        "layers_channels_first", "layers_padding_reshape",
                                        "layers_noise_norm",
                                        # a float NEG between DEQUANTIZE and QUANTIZE
                                        "layers_tensor_ops")
             for w in ("k3", "tfk2") for io in ("int8io", "uint8io")] + \
            [f"{n}.{io}" for n in ("layers_upsampling_tfk2", "layers_upsampling1d_k3")
             for io in ("int8io", "uint8io")] + \
            [f"layers_mobilenetv3_small_{w}.int8io" for w in ("k3", "tfk2")] + \
            [pytest.param(f"mobilenetv2_{w}.int8io", marks=pytest.mark.slow) for w in ("k3", "tfk2")]


def converted(stem):
    with np.load(os.path.join(TFLITE_DIR, stem + ".npz"), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def model_io(d, qm):
    """The fixture's inputs in qm.inputs' order, and {qm output: TFLite's reference output}
    (a model with several inputs or outputs stores them as input_<i>, out_ref_<i>: i is the
    position in tflite_input_names, and for outputs the Keras output's, those the converter
    dropped skipped)."""
    in_names = [str(n) for n in d["tflite_input_names"]]
    xs = [d["input"]] if "input" in d else \
        [d[f"input_{in_names.index(t.split('#')[0])}"] for t in qm.inputs]
    # TFLite's reference kernels' outputs; where its reference resolver could not run the
    # file (ref_error: layers_upsampling1d_k3's TILE version 3), its builtin kernels', the
    # kernels the stored tensors come from too (tensors_kernels)
    ref = "out_ref" if "ref_error" not in d else "out_builtin"
    if ref in d:
        return xs, {qm.outputs[0]: d[ref]}
    dropped = set(str(n) for n in d.get("dropped_outputs", []))
    keep = [i for i, n in enumerate(d["keras_output_names"]) if str(n) not in dropped]
    out_names = [str(n) for n in d["tflite_output_names"]]
    want = {t: d[f"{ref}_{keep[out_names.index(t.split('#')[0])]}"] for t in qm.outputs}
    return xs, want


@pytest.mark.parametrize("stem", CONVERTED)
def test_converted_file_gives_tflite_reference_outputs_and_tensors(stem):
    """The whole model's outputs (int8, or uint8 codes for a uint8-I/O file) on 64 inputs,
    and, for int8 I/O, every tensor TFLite's reference kernels computed on the first inputs,
    step by step (the oracle fed TFLite's own inputs of each step: the model's inputs and
    the stored intermediate tensors)."""
    d = converted(stem)
    qm = fixnet.load(os.path.join(TFLITE_DIR, stem + ".tflite"))
    kind = str(d["output_dtype"][0])
    assert kind in ("int8", "uint8") and set(str(k) for k in d["output_dtype"]) == {kind}
    xs, want = model_io(d, qm)
    assert all(x.dtype == np.dtype(kind) for x in xs)
    got = qm.predict(xs if len(xs) > 1 else xs[0], output=kind)
    got = got if isinstance(got, list) else [got]
    for t, g in zip(qm.outputs, got):
        np.testing.assert_array_equal(g, want[t].reshape(g.shape), err_msg=t)
    if "t0" not in d and not any(k.startswith("t") and k[1:].isdigit() for k in d):
        return
    import json
    names = {t["name"]: t["index"] for t in json.loads(str(d["tensors"]))}
    n = min(len(d[k]) for k in d if k.startswith("t") and k[1:].isdigit())
    for t, x in zip(qm.inputs, xs):         # int8 I/O: the model's inputs are int8 codes
        d.setdefault(f"t{names[t]}", x[:n])
    checked, own = 0, {}        # own: tensors fixnet adds (a transposed conv's zero insertion)
    for s in qm.steps:
        keys = [f"t{names.get(t, -1)}" for t in s.inputs + s.outputs]
        if not all(k in d or t in own for k, t in zip(keys, s.inputs)):
            continue
        ins = [d[k] if k in d else own[t] for k, t in zip(keys, s.inputs)]
        n = ins[0].shape[0]
        ins = [x.reshape((n,) + qm.tensors[t].shape) for x, t in zip(ins, s.inputs)]
        for o, k, t in zip(s.oracle(ins), keys[len(s.inputs):], s.outputs):
            if t not in names:
                own[t] = o
            elif k in d:
                np.testing.assert_array_equal(o.reshape(d[k].shape), d[k],
                                              err_msg=f"{s.name} ({s.op})")
                checked += 1
    assert checked >= len([s for s in qm.steps if not s.alias and s.outputs[0] in names]) - 1


def test_files_fixnet_cannot_run_are_refused_with_the_reasons():
    """Every other converted file (ops not mapped yet: SPLIT, EXP / LOG / SELECT_V2 / NEG,
    PRELU, float ops inside, tensors whose static shapes the file leaves wrong) is refused
    with one UnsupportedLayerError naming the file and its operators, never another error."""
    import glob
    supported = {p if isinstance(p, str) else p.values[0] for p in CONVERTED}
    refused = 0
    paths = sorted(glob.glob(os.path.join(TFLITE_DIR, "*.tflite")))
    for path in paths:
        stem = os.path.basename(path)[:-len(".tflite")]
        if stem in supported:
            continue
        with pytest.raises(fixnet.UnsupportedLayerError) as e:
            fixnet.load(path)
        assert str(e.value).startswith(path) and "operator " in str(e.value)
        refused += 1
    assert refused >= 1 and refused + len(supported) == len(paths)    # every CONVERTED exists


EDGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models",
                    "tflite", "edge")


@pytest.mark.parametrize("name", ["fc_rank4_input"])
def test_edited_files_in_shapes_older_converters_wrote_give_tflite_reference_outputs(name):
    """models/make_tflite_edge_cases.py's files (a converted fixture edited into a shape that
    real files hold, TFLite's outputs recorded on it): fc_rank4_input is a FULLY_CONNECTED
    reading a [1, H, W, C] tensor with no RESHAPE before it, which TFLite flattens itself."""
    qm = fixnet.load(os.path.join(EDGE, name + ".tflite"))
    with np.load(os.path.join(EDGE, name + ".npz")) as z:
        x, want = z["x"], z["y_ref"]
    got = qm.predict(x, output="int8")
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(qm.predict_oracle(x), got)


def test_report_without_a_float_model_gives_each_layers_own_error_from_the_files_numbers():
    """qm.report on a .tflite (no float network): a FULLY_CONNECTED's SQNR is its int8 output
    against the same layer in float from the file's own numbers (dequantized input, weights
    and bias with their scales, ReLU), computed here independently of fixnet's folded biases
    and multipliers."""
    from fixnet.metrics import sqnr_db
    from fixnet.tflite import read_tflite

    path = os.path.join(os.path.dirname(EDGE), "mlp_seq_k3.int8io.tflite")
    qm = fixnet.load(path)
    x = np.load(fixture_path("mlp_seq_k3", ".npz"))["x_test"][:200]
    report = qm.report(x)
    assert report.reference == "layer" and report.to_dict()["reference"] == "layer"
    assert "no float model" in str(report)
    rec = {r["tensor"]: r for r in report}

    m = read_tflite(path)
    op = m.operators[0]
    assert op.op == "FULLY_CONNECTED" and op.options["fused_activation_function"] == "RELU"
    (xi, wi, bi), (yi,) = op.inputs[:3], op.outputs
    q = {i: m.tensors[i].quantization for i in (xi, wi, bi, yi)}
    xq = qm.tensors[qm.inputs[0]].qparams.quantize(x)
    x_real = (xq.astype(np.float64) - q[xi].zero_point[0]) * q[xi].scale[0]
    w_real = m.tensors[wi].data.astype(np.float64) * q[wi].scale[:, None]
    b_real = m.tensors[bi].data.astype(np.float64) * q[bi].scale
    want_real = np.maximum(x_real @ w_real.T + b_real, 0.0)
    name = m.tensors[yi].name
    # the layer's int8 output, as the report saw it: run the first step alone on the input
    step = qm.steps[0]
    assert step.outputs == [name]
    y = step.oracle([xq])[0].reshape(len(x), -1)
    y_real = (y.astype(np.float64) - q[yi].zero_point[0]) * q[yi].scale[0]
    want = float(sqnr_db(want_real, y_real))
    assert rec[name]["sqnr_db"] == pytest.approx(want, abs=0.05)
    assert 30 < want < 60 and rec[name]["clipped"] == pytest.approx(
        float(np.mean(want_real > (127 - q[yi].zero_point[0] + 0.5) * q[yi].scale[0])))
    # every weighted layer and the elementwise ones have their own figure; softmax has none
    for r in report:
        assert (r["sqnr_db"] is not None) == (r["op"] in ("dense", "conv2d", "depthwise_conv2d",
                                                          "add", "rescale",
                                                          "global_average_pool")), r


def test_a_file_whose_accumulators_cannot_be_proven_is_reported_as_such(tmp_path):
    """mlp_seq_k3.int8io.tflite with its first FULLY_CONNECTED's bias of channel 0 edited to
    2^31 - 50: it loads (fixnet runs what the file says), the overflow proof says NO for that
    layer (qm.overflow_report(), fixnet inspect), and checked execution stops on an input that
    does wrap its accumulator."""
    import subprocess
    import sys
    from fixnet.tflite import read_tflite

    src = os.path.join(os.path.dirname(EDGE), "mlp_seq_k3.int8io.tflite")
    data = bytearray(open(src, "rb").read())
    m = read_tflite(src)
    op = m.operators[0]
    bias = m.tensors[op.inputs[2]].data.astype("<i4")
    pos = bytes(data).find(bias.tobytes())
    assert pos > 0 and bytes(data).count(bias.tobytes()) == 1
    edited = bias.copy()
    edited[0] = 2 ** 31 - 50
    data[pos:pos + bias.nbytes] = edited.tobytes()
    path = tmp_path / "overflow.tflite"
    path.write_bytes(bytes(data))

    qm = fixnet.load(path)
    report = qm.overflow_report()
    assert not report.proven
    bad = [r for r in report if not r["proven"]]
    assert [r["layer"] for r in bad] == [qm.steps[0].layer]
    out = subprocess.run([sys.executable, "-m", "fixnet.cli", "inspect", str(path)],
                         capture_output=True, text=True, timeout=120, cwd=str(tmp_path),
                         env=dict(os.environ, PYTHONPATH=os.path.dirname(
                             os.path.dirname(fixnet.__file__))))
    assert out.returncode == 0, out.stderr
    assert "does NOT hold for 1 layer" in out.stdout and qm.steps[0].layer in out.stdout
    # the input that drives channel 0's sum up: the largest code where its weight is positive
    w = m.tensors[op.inputs[1]].data[0]
    x = np.where(w > 0, 127, -128).astype(np.int8)[None]
    with pytest.raises(fixnet.FixnetError, match="overflow|wrap|int32"):
        qm.predict(x, output="int8", check_overflow=True)


@pytest.mark.parametrize("kwargs, message", [
    (dict(weight_type="UINT8", zero_points=(128, 128, 128)), "UINT8 with a zero point"),
    (dict(zero_points=(3, 0, 0)), "asymmetric"),
    (dict(weight_bytes=np.array([-128] + [1] * 11, np.int8).tobytes()), "hold -128"),
])
def test_weights_outside_int8_symmetric_are_refused_naming_why(tmp_path, kwargs, message):
    """TensorFlow 1's uint8 models (asymmetric uint8 weights), asymmetric int8 weights and the
    code -128 (outside TFLite's int8 specification) are refused, naming the weights and why."""
    from test_tflite_reader import build
    path = tmp_path / "w.tflite"
    path.write_bytes(build(**kwargs))
    with pytest.raises(fixnet.UnsupportedLayerError, match=message) as e:
        fixnet.load(path)
    assert "FULLY_CONNECTED" in str(e.value) and "'w'" in str(e.value)


def test_float_inputs_are_quantized_as_tflites_quantize_and_the_fxn_keeps_the_rule(tmp_path):
    """A .tflite model quantizes float inputs by TFLite's QUANTIZE rule (the float32 quotient,
    half away from zero), not fixnet's float64 one: on values whose float32 and float64
    quotients round differently, predict gives TFLite's codes; the .fxn saved from it keeps the
    rule (its manifest's input_rounding), and a damaged value is refused."""
    qm = fixnet.load(fixture_path("tflite/mlp_seq_k3.int8io", ".tflite"))
    assert qm.input_rounding == "tflite"
    qp = qm.tensors[qm.inputs[0]].qparams
    s32 = np.float32(qp.scale)
    # reals whose float32 quotient is exactly k + 0.5 while the float64 one is not
    k = np.arange(0, 250, dtype=np.float64) - (qp.zero_point + 128)     # inside the range
    x = np.float32((k + 0.5) * np.float64(s32))
    q32 = np.float64(x / s32)
    q64 = np.float64(x) / qp.scale
    differ = (np.abs(q32 - np.trunc(q32)) == 0.5) & (np.abs(q64 - np.trunc(q64)) != 0.5)
    assert differ.sum() > 10
    row = np.resize(x[differ], 64)[None].astype(np.float32)
    want = np.clip(np.sign(np.float64(row / s32)) * np.floor(np.abs(np.float64(row / s32)) + 0.5)
                   + qp.zero_point, -128, 127).astype(np.int8)
    assert not np.array_equal(want, qp.quantize(row))       # fixnet's own rule differs here
    np.testing.assert_array_equal(qm.input_codes(row), want)
    np.testing.assert_array_equal(qm.predict(row, output="int8"), qm.predict(want, output="int8"))
    np.testing.assert_array_equal(qm.predict_oracle(row), qm.predict(want, output="int8"))
    # every other path takes the same codes: checked runs and the report
    np.testing.assert_array_equal(qm.predict(row, output="int8", check_overflow=True),
                                  qm.predict(want, output="int8"))
    assert qm.report(row).to_dict() == qm.report(want).to_dict()
    qm.save(tmp_path / "m.fxn")
    back = fixnet.load(tmp_path / "m.fxn")
    assert back.input_rounding == "tflite"
    np.testing.assert_array_equal(back.predict(row, output="int8"), qm.predict(row, output="int8"))
    # a model quantized by fixnet keeps fixnet's rule, and its file says nothing of it
    fm = fixnet.load(fixture_path("mlp_seq_k3"))
    own = fm.quantize(np.load(fixture_path("mlp_seq_k3", ".npz"))["x_calib"], progress=False)
    assert own.input_rounding == "fixnet"
    # a .fxn whose manifest names another rule is refused, naming the file
    from fxn_files import edit_arrays
    bad = tmp_path / "bad.fxn"
    bad.write_bytes(edit_arrays((tmp_path / "m.fxn").read_bytes(),
                                lambda m, segs: m.__setitem__("input_rounding", "numpy")))
    with pytest.raises(fixnet.ModelFileError, match="bad.fxn.*input_rounding"):
        fixnet.load(bad)
