#!/usr/bin/env python
"""TFLite int8 goldens for the non-linear ops fixnet runs with TFLite's own semantics
(fixnet/oracle/tflite.py): one tiny Keras model per op and input scale, converted to a
full-integer int8 .tflite, run on inputs that cover every int8 code.

Run by hand, never in CI, with a Python that has tensorflow 2.21 and tf_keras::

    /path/to/venv-with-tf/bin/python models/make_tflite_op_goldens.py [--only softmax_c10_s4,...]

Writes models/tflite/ops/<name>.tflite and <name>.npz. The npz holds:

* ``x``: int8 [N, C], the input codes the interpreters were given (elementwise ops: one row
  of all 256 codes; softmax: random rows of codes, rows of equal codes, rows with one code far
  above the rest, and for C = 2 every pair of codes);
* ``y_ref``: int8 [N, C], TFLite's reference kernels (OpResolverType.BUILTIN_REF);
* ``opt_index``, ``opt_value``: where (flat indices into ``y_ref``) and what the builtin optimized
  kernels without delegates (BUILTIN_WITHOUT_DEFAULT_DELEGATES) gave when it differs from
  ``y_ref`` (``y_opt``: ``y_ref`` with those values put in; ``goldens_output``);
* ``auto_index``, ``auto_value``: the same for the interpreter's default (AUTO: builtin
  kernels, XNNPACK delegate applied);
* ``op``: the TFLite op name (the model holds that one op alone, checked here);
* ``in_scale``, ``in_zero_point``, ``out_scale``, ``out_zero_point``: the tensors' quantization
  as the interpreter reports it (the tests read it from the .tflite too);
* ``options``: JSON of the op options that matter (softmax beta, leaky relu alpha, ...);
* ``tf_version``.

The representative data for the converter is Gaussian with standard deviation ``spread`` (and
mean ``shift``), so the input scale and zero point vary from model to model.
"""
import argparse
import json
import os
import sys
import zlib

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "tflite", "ops")

# name: (layer maker key, channels, spread, shift, options)
CASES = {}
for c in (2, 10, 35, 1000):
    for s in (1, 4, 16):
        CASES[f"softmax_c{c}_s{s}"] = ("softmax", c, float(s), 0.0, {"beta": 1.0})
CASES["softmax_c10_s0p25"] = ("softmax", 10, 0.25, 0.0, {"beta": 1.0})
CASES["softmax_c35_s64"] = ("softmax", 35, 64.0, 3.0, {"beta": 1.0})
for s, shift in ((1.0, 0.0), (3.0, 0.0), (8.0, 2.0), (0.5, -0.3)):
    tag = f"s{str(s).replace('.', 'p')}"
    CASES[f"sigmoid_{tag}"] = ("sigmoid", 256, s, shift, {})
    CASES[f"tanh_{tag}"] = ("tanh", 256, s, shift, {})
    CASES[f"hard_swish_{tag}"] = ("hard_swish", 256, s, shift, {})
    CASES[f"elu_{tag}"] = ("elu", 256, s, shift, {})
    CASES[f"relu6_{tag}"] = ("relu6", 256, s, shift, {})
for alpha in (0.1, 0.3):
    for s, shift in ((1.0, 0.0), (4.0, 1.0)):
        tag = f"a{str(alpha).replace('.', 'p')}_s{str(s).replace('.', 'p')}"
        CASES[f"leaky_relu_{tag}"] = ("leaky_relu", 256, s, shift, {"alpha": alpha})
CASES["gelu_s1p0"] = ("gelu", 256, 1.0, 0.0, {"approximate": False})
CASES["gelu_tanh_s2p0"] = ("gelu_tanh", 256, 2.0, 0.5, {"approximate": True})

EXPECTED_OP = {"softmax": "SOFTMAX", "sigmoid": "LOGISTIC", "tanh": "TANH",
               "hard_swish": "HARD_SWISH", "elu": "ELU", "relu6": "RELU6",
               "leaky_relu": "LEAKY_RELU", "gelu": "GELU", "gelu_tanh": "GELU"}


def build(tf, kind, channels, options):
    import tf_keras as keras
    inp = keras.Input(shape=(channels,), name="x")
    if kind == "softmax":
        out = keras.layers.Softmax()(inp)
    elif kind == "sigmoid":
        out = keras.layers.Activation("sigmoid")(inp)
    elif kind == "tanh":
        out = keras.layers.Activation("tanh")(inp)
    elif kind == "hard_swish":
        out = keras.layers.Lambda(lambda t: t * tf.nn.relu6(t + 3.0) * (1.0 / 6.0))(inp)
    elif kind == "elu":
        out = keras.layers.ELU()(inp)
    elif kind == "relu6":
        out = keras.layers.ReLU(max_value=6.0)(inp)
    elif kind == "leaky_relu":
        out = keras.layers.LeakyReLU(alpha=options["alpha"])(inp)
    elif kind in ("gelu", "gelu_tanh"):
        approximate = options["approximate"]
        out = keras.layers.Lambda(lambda t: tf.nn.gelu(t, approximate=approximate))(inp)
    else:
        raise ValueError(kind)
    return keras.Model(inp, out)


def convert(tf, model, calib):
    def representative_dataset():
        for i in range(len(calib)):
            yield [calib[i:i + 1]]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative_dataset
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return conv.convert()


def inputs_for(kind, channels, rng, input_scale):
    """int8 [N, C]: elementwise ops one row of every code; softmax rows that cover every code.

    TFLite's reference int8 softmax aborts the process (TFLITE_CHECK on its output shift) when
    a row's exponentials sum to 512 or more (more than 511 classes near the row's maximum):
    rows whose sum is 240 or more are left out."""
    if kind != "softmax":
        return np.arange(-128, 128, dtype=np.int8)[None, :]
    rows = []
    if channels == 2:
        a, b = np.meshgrid(np.arange(-128, 128), np.arange(-128, 128), indexing="ij")
        rows.append(np.stack([a.ravel(), b.ravel()], axis=1))
    else:
        n = {10: 1000, 35: 400, 1000: 60}[channels]
        rows.append(rng.integers(-128, 128, size=(n, channels)))
        # narrow rows: differences small, the part of the exp that matters
        base = rng.integers(-128, 128, size=(n, 1))
        rows.append(np.clip(base + rng.integers(-12, 13, size=(n, channels)), -128, 127))
        # every code as the row maximum, the rest of the row below it
        for m in range(-128, 128, 1 if channels < 257 else 8):   # long rows: fewer (size)
            r = np.full((1, channels), -128)
            r[0, :] = rng.integers(-128, m + 1, size=channels)
            r[0, rng.integers(channels)] = m
            rows.append(r)
        rows.append(np.repeat(np.arange(-128, 128)[:, None], channels, axis=1))  # all equal
    x = np.concatenate(rows)
    exp_sum = np.exp(float(input_scale) * (x - x.max(axis=1, keepdims=True))).sum(axis=1)
    return x[exp_sum < 240].astype(np.int8)


def run(tf, tfl, x, resolver):
    interp = tf.lite.Interpreter(
        model_content=tfl, num_threads=1,
        experimental_op_resolver_type=getattr(tf.lite.experimental.OpResolverType, resolver))
    interp.allocate_tensors()
    din, dout = interp.get_input_details()[0], interp.get_output_details()[0]
    assert din["dtype"] == np.int8 and dout["dtype"] == np.int8, (din, dout)
    batch = x.shape[0]
    if list(din["shape"]) != [batch, x.shape[1]]:
        interp.resize_tensor_input(din["index"], [batch, x.shape[1]])
        interp.allocate_tensors()
    interp.set_tensor(din["index"], x)
    interp.invoke()
    return interp.get_tensor(dout["index"]).copy(), din["quantization"], dout["quantization"]


def goldens_output(npz, which):
    """The int8 outputs of ``which`` ("ref", "opt", "auto") stored in a golden's npz."""
    y = np.array(npz["y_ref"])
    if which != "ref":
        y.ravel()[npz[which + "_index"]] = npz[which + "_value"]
    return y


def ops_of(tf, tfl):
    interp = tf.lite.Interpreter(model_content=tfl)
    return [d["op_name"] for d in interp._get_ops_details()]


def make(tf, name, spec, rng):
    kind, channels, spread, shift, options = spec
    model = build(tf, kind, channels, options)
    calib = (rng.standard_normal((200, channels)) * spread + shift).astype(np.float32)
    tfl = convert(tf, model, calib)
    ops = ops_of(tf, tfl)
    if ops != [EXPECTED_OP[kind]]:
        print(f"{name}: converted to {ops}, not [{EXPECTED_OP[kind]}]: skipped", flush=True)
        return None
    probe = tf.lite.Interpreter(model_content=tfl).get_input_details()[0]["quantization"]
    x = inputs_for(kind, channels, rng, probe[0])
    y_ref, qin, qout = run(tf, tfl, x, "BUILTIN_REF")
    y_opt, _, _ = run(tf, tfl, x, "BUILTIN_WITHOUT_DEFAULT_DELEGATES")
    y_auto, _, _ = run(tf, tfl, x, "AUTO")
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, name + ".tflite"), "wb") as f:
        f.write(tfl)
    opt_index = np.flatnonzero(y_opt != y_ref)
    auto_index = np.flatnonzero(y_auto != y_ref)
    np.savez_compressed(
        os.path.join(OUT, name + ".npz"), x=x, y_ref=y_ref,
        opt_index=opt_index, opt_value=y_opt.ravel()[opt_index],
        auto_index=auto_index, auto_value=y_auto.ravel()[auto_index],
        op=np.str_(ops[0]), in_scale=np.float32(qin[0]), in_zero_point=np.int32(qin[1]),
        out_scale=np.float32(qout[0]), out_zero_point=np.int32(qout[1]),
        options=np.str_(json.dumps(options)), tf_version=np.str_(tf.__version__))
    print(f"{name}: {ops[0]} in ({qin[0]:.6g}, {qin[1]}) out ({qout[0]:.6g}, {qout[1]}); "
          f"{x.shape}; ref != opt on {int(np.sum(y_ref != y_opt))}, "
          f"ref != auto on {int(np.sum(y_ref != y_auto))}", flush=True)
    return name


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated case names")
    args = ap.parse_args()
    import tensorflow as tf
    names = [n for n in CASES if not args.only or n in args.only.split(",")]
    for name in names:
        rng = np.random.default_rng(zlib.crc32(name.encode()))
        make(tf, name, CASES[name], rng)


if __name__ == "__main__":
    sys.exit(main())
