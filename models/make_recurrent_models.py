#!/usr/bin/env python
"""Generate the recurrent fixtures (SimpleRNN, GRU, LSTM, Bidirectional, Embedding, ...).

Run by hand, never in CI, with the same Python as make_models.py::

    /path/to/venv-with-tf/bin/python models/make_recurrent_models.py [--only rnn_gru,rnn_text]

Without ``--writer`` the script re-invokes itself once per Keras writer (Keras 3 ->
``*_k3.*``, tf.keras 2 with TF_USE_LEGACY_KERAS=1 -> ``*_tfk2.*``), then rewrites
models/README.md through ``make_models.write_readme()``.

Per model ``<name>_<k3|tfk2>``: ``.h5`` (``model.save``), ``.keras`` (Keras 3 only),
``.tflite`` (full-integer int8, when the converter makes a model that runs), ``.npz``
(data, Keras float goldens, int8 peer outputs). The int8 peers:

* TFLite: full-integer int8 (Optimize.DEFAULT, representative dataset = the calibration
  samples, TFLITE_BUILTINS_INT8, int8 input/output), converted from a batch-1
  ``tf.function`` concrete function with a fixed sequence length (the converter fuses
  Keras LSTMs into UNIDIRECTIONAL_SEQUENCE_LSTM only then). Run with the reference
  kernels. A converter or run-time failure is recorded (``tflite_error``), not fatal.
* ONNX Runtime: tf2onnx (``from_function`` of the same tf.function, batch dimension
  free) + ``onnxruntime.quantization.quantize_static`` (QDQ, int8 activations and
  weights, per-channel, calibration samples, MinMax). Made for every model, not only
  where TFLite fails, so the loader can compare against the better peer. Outputs
  ``ort_int8`` (``ort_int8_<i>`` for several outputs); ``ort_error`` on failure.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_models import HERE, SEED, WRITERS, load_split  # noqa: E402
import fixture_common as fc  # noqa: E402

BATCH = 32
LR = 3e-3
ONNX_KEEP_LIMIT = 200 << 10    # .onnx files larger than this are deleted after use
DIGIT_SEQ = ("rnn_gru", "rnn_gru_ra0", "rnn_lstm", "rnn_simplernn", "rnn_bilstm", "rnn_stacked")
MODELS = DIGIT_SEQ + ("rnn_variants", "rnn_sensor", "rnn_text", "rnn_kws")
# epochs and the minimum test accuracy (classifiers; output 0) or maximum test MAE (rnn_sensor)
TRAIN = {
    "rnn_gru": (25, 0.90), "rnn_gru_ra0": (25, 0.90), "rnn_lstm": (25, 0.90),
    "rnn_simplernn": (25, 0.88), "rnn_bilstm": (20, 0.90), "rnn_stacked": (25, 0.90),
    "rnn_variants": (25, 0.85), "rnn_sensor": (15, 0.25), "rnn_text": (40, 0.85),
    "rnn_kws": (20, 0.90),
}
VARIANT_STEPS = 10           # rnn_variants: 8 image rows + 2 all-zero steps (masked)
TEXT_LEN = 40                # rnn_text: tokens per sample (left-padded with 0)
SENSOR_LEN, SENSOR_LEN2 = 24, 16

ARCH = {
    "rnn_gru": ("(8, 8)", "GRU(32) [reset_after=True] → Dense(10,softmax)"),
    "rnn_gru_ra0": ("(8, 8)", "GRU(32, reset_after=False) → Dense(10,softmax)"),
    "rnn_lstm": ("(8, 8)", "LSTM(32) → Dense(10,softmax)"),
    "rnn_simplernn": ("(8, 8)", "SimpleRNN(32) [tanh] → Dense(10,softmax)"),
    "rnn_bilstm": ("(8, 8)", "Bidirectional(LSTM(16), merge_mode=concat) → Dense(10,softmax)"),
    "rnn_stacked": ("(8, 8)", "LSTM(24, return_sequences=True) → LSTM(24) → Dense(10,softmax)"),
    "rnn_variants": ("(10, 8)", "Masking(0.0) `mask` → 5 heads, each → Dense(10,softmax): "
                     "`bi_sum` Bidirectional(LSTM(12), sum); `bi_mul` Bidirectional(GRU(12, "
                     "reset_after=False), mul); `bi_ave` Bidirectional(SimpleRNN(12), ave); "
                     "`lstm_back` LSTM(16, go_backwards=True, recurrent_activation=hard_sigmoid); "
                     "`gru_hs` GRU(16, recurrent_activation=hard_sigmoid, return_sequences=True) → "
                     "GlobalAveragePooling1D (masked mean); plus an encoder-decoder: `enc` LSTM(16, "
                     "return_state=True) → [o, h, c]; RepeatVector(4)(o) → `dec` LSTM(16, "
                     "return_sequences=True, unroll=True)(·, initial_state=[h, c]) → "
                     "TimeDistributed(Dense(8)) `rows` (4, 8) (regression on the means of row pairs). "
                     "Outputs in Keras order: out_bi_sum, out_bi_mul, out_bi_ave, out_lstm_back, "
                     "out_gru_hs, rows"),
    "rnn_sensor": ("(None, 2)", "LSTM(24) → Dense(8,relu) → Dense(1) (next value of channel 0)"),
    "rnn_text": ("(40,) int tokens", "Embedding(200, 16, mask_zero=False) → GRU(32) → Dense(10,softmax)"),
    "rnn_kws": ("(49, 10)", "Conv1D(16,5,strides=2,relu) → LSTM(32) → Dense(10,softmax)"),
}


# --------------------------------------------------------------------------- data
def variants_seq(x8):
    """(N, 8, 8) -> (N, 10, 8): the 8 rows plus 2 all-zero steps, placed at the end
    (even index), split 1+1 front/back (index % 4 == 1) or at the front (index % 4 == 3)."""
    n = len(x8)
    out = np.zeros((n, VARIANT_STEPS, 8), np.float32)
    for i in range(n):
        front = {0: 0, 2: 0, 1: 1, 3: 2}[i % 4]
        out[i, front:front + 8] = x8[i]
    return out


def row_pair_means(x8):
    return x8.reshape(len(x8), 4, 2, 8).mean(axis=2).astype(np.float32)


def text_tokens(x8):
    """Digits as 'sentences': one token per inked pixel (value >= 4/16) in raster order,
    token = 1 + 3 * (row * 8 + col) + (level - 1), level = 1..3 (value 4-7, 8-11, 12-16
    of 16); vocabulary 1..192 of input_dim 200 (0 = padding, never masked). Left-padded
    with 0 / truncated (keeping the last tokens) to TEXT_LEN."""
    v = np.round(x8 * 16).astype(np.int64)
    out = np.zeros((len(x8), TEXT_LEN), np.int64)
    for i in range(len(x8)):
        toks = []
        for r in range(8):
            for c in range(8):
                if v[i, r, c] >= 4:
                    level = 1 if v[i, r, c] < 8 else 2 if v[i, r, c] < 12 else 3
                    toks.append(1 + 3 * (r * 8 + c) + level - 1)
        toks = toks[-TEXT_LEN:]
        out[i, TEXT_LEN - len(toks):] = toks
    return out


def sensor_data():
    """A seeded two-channel 'sensor' series: channel 0 = three sines (periods 17, 41, 97
    samples, random phases) + N(0, 0.1²) noise + a slow drift; channel 1 = a temperature-like
    slow sine + N(0, 0.05²). Windows of SENSOR_LEN steps (stride 3); the target is channel 0
    one step after the window. Train / calibration / test windows come from disjoint,
    consecutive stretches of the series."""
    rng = np.random.default_rng(SEED)
    n = 6000
    t = np.arange(n, dtype=np.float64)
    ph = rng.uniform(0, 2 * np.pi, 4)
    ch0 = (0.8 * np.sin(2 * np.pi * t / 17 + ph[0]) + 0.5 * np.sin(2 * np.pi * t / 41 + ph[1])
           + 0.3 * np.sin(2 * np.pi * t / 97 + ph[2]) + 0.2 * np.sin(2 * np.pi * t / 1500)
           + rng.normal(0, 0.1, n))
    ch1 = 0.6 * np.sin(2 * np.pi * t / 700 + ph[3]) + rng.normal(0, 0.05, n)
    series = np.stack([ch0, ch1], axis=1).astype(np.float32)

    def windows(lo, hi, stride):
        starts = np.arange(lo, hi - SENSOR_LEN - 1, stride)
        x = np.stack([series[s:s + SENSOR_LEN] for s in starts])
        y = np.array([series[s + SENSOR_LEN, 0] for s in starts], np.float32)[:, None]
        return x, y

    xtr, ytr = windows(0, 4000, 3)
    xca, _ = windows(4000, 4800, 4)
    xte, yte = windows(4800, 6000, 6)
    return xtr, ytr, xca, xte, yte


# --------------------------------------------------------------------------- models
def build(keras, name):
    L = keras.layers
    if name in DIGIT_SEQ:
        core = {
            "rnn_gru": lambda: [L.GRU(32)],
            "rnn_gru_ra0": lambda: [L.GRU(32, reset_after=False)],
            "rnn_lstm": lambda: [L.LSTM(32)],
            "rnn_simplernn": lambda: [L.SimpleRNN(32)],
            "rnn_bilstm": lambda: [L.Bidirectional(L.LSTM(16))],
            "rnn_stacked": lambda: [L.LSTM(24, return_sequences=True), L.LSTM(24)],
        }[name]()
        return keras.Sequential([keras.Input(shape=(8, 8)), *core, L.Dense(10, activation="softmax")])
    if name == "rnn_variants":
        inp = keras.Input(shape=(VARIANT_STEPS, 8))
        m = L.Masking(mask_value=0.0, name="mask")(inp)
        heads = [
            L.Bidirectional(L.LSTM(12), merge_mode="sum", name="bi_sum")(m),
            L.Bidirectional(L.GRU(12, reset_after=False), merge_mode="mul", name="bi_mul")(m),
            L.Bidirectional(L.SimpleRNN(12), merge_mode="ave", name="bi_ave")(m),
            L.LSTM(16, go_backwards=True, recurrent_activation="hard_sigmoid", name="lstm_back")(m),
            L.GlobalAveragePooling1D(name="gap")(
                L.GRU(16, recurrent_activation="hard_sigmoid", return_sequences=True, name="gru_hs")(m)),
        ]
        outs = [L.Dense(10, activation="softmax", name=f"out_{n}")(h)
                for n, h in zip(("bi_sum", "bi_mul", "bi_ave", "lstm_back", "gru_hs"), heads)]
        o, h, c = L.LSTM(16, return_state=True, name="enc")(inp)
        d = L.LSTM(16, return_sequences=True, unroll=True, name="dec")(
            L.RepeatVector(4, name="repeat")(o), initial_state=[h, c])
        rows = L.TimeDistributed(L.Dense(8), name="rows")(d)
        return keras.Model(inp, outs + [rows])
    if name == "rnn_sensor":
        return keras.Sequential([keras.Input(shape=(None, 2)), L.LSTM(24),
                                 L.Dense(8, activation="relu"), L.Dense(1)])
    if name == "rnn_text":
        return keras.Sequential([keras.Input(shape=(TEXT_LEN,), dtype="int32"),
                                 L.Embedding(200, 16, mask_zero=False), L.GRU(32),
                                 L.Dense(10, activation="softmax")])
    if name == "rnn_kws":
        return keras.Sequential([keras.Input(shape=(49, 10)),
                                 L.Conv1D(16, 5, strides=2, activation="relu"), L.LSTM(32),
                                 L.Dense(10, activation="softmax")])
    raise KeyError(name)


def data_for(tf, name, split):
    """(x_train, y_train (fit target), x_calib, x_test, labels dict, extra npz entries)."""
    x_train, y_train, x_calib, x_test, y_test = split
    if name in DIGIT_SEQ:
        return x_train, y_train, x_calib, x_test, {"y_test": y_test}, {}
    if name == "rnn_variants":
        fit_y = [y_train] * 5 + [row_pair_means(x_train)]
        return (variants_seq(x_train), fit_y, variants_seq(x_calib), variants_seq(x_test),
                {"y_test": y_test, "y_test_5": row_pair_means(x_test)}, {})
    if name == "rnn_text":
        return (text_tokens(x_train), y_train, text_tokens(x_calib), text_tokens(x_test),
                {"y_test": y_test}, {})
    if name == "rnn_kws":
        import make_cnn_models as mc
        return (mc.prepare(tf, "kws_conv1d", x_train), y_train, mc.prepare(tf, "kws_conv1d", x_calib),
                mc.prepare(tf, "kws_conv1d", x_test), {"y_test": y_test}, {})
    if name == "rnn_sensor":
        xtr, ytr, xca, xte, yte = sensor_data()
        return xtr, ytr, xca, xte, {"y_test": yte}, {}
    raise KeyError(name)


# --------------------------------------------------------------------------- peers
def serving_fn(tf, model, shape, dtype):
    """tf.function of the model on a fixed input signature; outputs keyed out_00, out_01, ..."""
    @tf.function(input_signature=[tf.TensorSpec(shape, dtype, name="x")])
    def fn(x):
        ys = fc.as_list(model(x, training=False))
        return {f"out_{i:02d}": y for i, y in enumerate(ys)}
    return fn


def tflite_peer(ctx, model, name, xs, xc, kf, dtype):
    """Convert from a batch-1 concrete function and run; returns npz entries (never raises)."""
    tf, writer = ctx["tf"], ctx["writer"]
    tfl_path = os.path.join(HERE, name + ".tflite")
    fc.remove(tfl_path)
    npz = {}
    stage = "conversion"
    try:
        fn = serving_fn(tf, model, (1,) + xs.shape[1:], dtype)
        cf = fn.get_concrete_function()

        def representative_dataset():
            for i in range(len(xc)):
                yield [xc[i:i + 1].astype(np.float32 if dtype == tf.float32 else np.int32)]

        conv = tf.lite.TFLiteConverter.from_concrete_functions([cf], model)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative_dataset
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if dtype == tf.float32:
            conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
        tfl = conv.convert()
        stage = "float check"
        npz.update(tflite_float_check(tf, cf, model, xs, kf))
        stage = "run"
        interp = tf.lite.Interpreter(model_content=tfl)
        runner = interp.get_signature_runner()
        sig_in, sig_out = runner.get_input_details(), runner.get_output_details()
        by_in = {d["index"]: d for d in interp.get_input_details()}
        by_out = {d["index"]: d for d in interp.get_output_details()}
        assert list(sig_in) == ["x"], list(sig_in)
        okeys = [f"out_{i:02d}" for i in range(len(kf))]
        assert set(sig_out) == set(okeys), (list(sig_out), okeys)
        ins = [by_in[sig_in["x"]["index"]]]
        outs = [by_out[sig_out[k]["index"]] for k in okeys]
        ops = sorted({d["op_name"] for d in interp._get_ops_details()})
        if dtype != tf.float32:    # integer tokens go in as they are
            ins_check = ins[0]["dtype"]
            assert ins_check in (np.int32, np.int64), ins_check
            raw = run_int_tokens(tf, tfl, xs, ins[0], outs)
            xq = None
        else:
            try:
                xq, raw = fc.run_tflite(tf, tfl, [xs], ins, outs, "BUILTIN_REF",
                                           reset_variables=True)
                kernels = "BUILTIN_REF"
            except (ValueError, RuntimeError) as exc:
                npz["tflite_ref_error"] = np.str_(str(exc).splitlines()[0])
                kernels = "BUILTIN_WITHOUT_DEFAULT_DELEGATES"
                xq, raw = fc.run_tflite(tf, tfl, [xs], ins, outs, kernels, reset_variables=True)
            npz["tflite_kernels"] = np.str_(kernels)
    except Exception as exc:  # recorded, not fatal
        lines = [ln for ln in f"{type(exc).__name__}: {exc}".splitlines() if ln.strip()]
        short = f"{stage}: " + "\n".join(lines[:12])
        fc.log(writer, f"{name}: TFLITE {stage.upper()} FAILED: {short[:400]}")
        return {"tflite_error": np.str_(short)}
    with open(tfl_path, "wb") as f:
        f.write(tfl)
    multi = len(kf) > 1
    sfx = (lambda k, i: f"{k}_{i}") if multi else (lambda k, i: k)
    if xq is not None:
        s, z = ins[0]["quantization"]
        npz["tflite_input_int8"] = xq[0]
        npz["tflite_input_scale"] = np.float32(s)
        npz["tflite_input_zero_point"] = np.int64(z)
    for i, (r, d) in enumerate(zip(raw, outs)):
        s, z = d["quantization"]
        deq = ((r.astype(np.float32) - np.float32(z)) * np.float32(s)).astype(np.float32)
        npz[sfx("tflite_int8", i)] = deq
        npz[sfx("tflite_int8_raw", i)] = r
        npz[sfx("tflite_output_scale", i)] = np.float32(s)
        npz[sfx("tflite_output_zero_point", i)] = np.int64(z)
        fc.log(writer, f"{name}: output {i}: SQNR tflite int8 vs keras float {fc.sqnr_db(kf[i], deq):.2f} dB")
    npz["tflite_converter"] = np.str_("from_concrete_functions(batch 1, fixed length)")
    npz["tflite_ops"] = np.array(ops)
    fused = [o for o in ops if "SEQUENCE" in o]
    fc.log(writer, f"{name}: tflite {len(tfl)} bytes, ops {ops}")
    npz["tflite_fused_sequence_ops"] = np.array(fused if fused else [""])
    return npz


def tflite_float_check(tf, cf, model, xs, kf):
    """Convert the same concrete function without quantization and run it on x_test: shows
    whether a poor int8 result comes from the graph conversion or from the int8 scheme."""
    try:
        conv = tf.lite.TFLiteConverter.from_concrete_functions([cf], model)
        interp = tf.lite.Interpreter(model_content=conv.convert(), num_threads=1)
        sig = next(iter(interp._get_full_signature_list().values()))
        sig_in = {k: {"index": v} for k, v in sig["inputs"].items()}
        sig_out = {k: {"index": v} for k, v in sig["outputs"].items()}
        interp.allocate_tensors()
        got = [[] for _ in kf]
        for i in range(len(xs)):
            interp.reset_all_variables()   # see fc.run_tflite: fused sequence ops keep state
            interp.set_tensor(sig_in["x"]["index"], xs[i:i + 1])
            interp.invoke()
            for j in range(len(kf)):
                got[j].append(interp.get_tensor(sig_out[f"out_{j:02d}"]["index"])[0])
        sq = [fc.sqnr_db(k, np.stack(g)) for k, g in zip(kf, got)]
        return {"tflite_float_sqnr_db": np.array(sq, np.float64)}
    except Exception as exc:
        return {"tflite_float_error": np.str_(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")}


def run_int_tokens(tf, tfl, xs, ind, outs):
    interp = tf.lite.Interpreter(model_content=tfl, num_threads=1,
                                 experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_REF)
    interp.allocate_tensors()
    raw = [np.empty((len(xs),) + tuple(d["shape"][1:]), np.int8) for d in outs]
    for i in range(len(xs)):
        interp.reset_all_variables()
        interp.set_tensor(ind["index"], xs[i:i + 1].astype(ind["dtype"]))
        interp.invoke()
        for j, d in enumerate(outs):
            raw[j][i] = interp.get_tensor(d["index"])[0]
    return raw


def ort_peer(ctx, model, name, xs, xc, kf, dtype, extra_inputs=()):
    """tf2onnx + quantize_static (QDQ, int8); returns npz entries (never raises)."""
    tf, writer = ctx["tf"], ctx["writer"]
    tmp = tempfile.mkdtemp(prefix="fixnet_onnx_")
    npz = {}
    stage = "tf2onnx"
    try:
        import onnxruntime as ort
        import tf2onnx
        from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                              quantize_static)
        seq = None if name == "rnn_sensor" else xs.shape[1]
        fn = serving_fn(tf, model, (None, seq) + xs.shape[2:], dtype)
        fpath = os.path.join(tmp, "float.onnx")
        tf2onnx.convert.from_function(fn, input_signature=fn.input_signature, opset=17,
                                      output_path=fpath)
        npt = np.float32 if dtype == tf.float32 else np.int32

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.it = iter(range(len(xc)))

            def get_next(self):
                i = next(self.it, None)
                return None if i is None else {"x": xc[i:i + 1].astype(npt)}

        stage = "quantize_static"
        qpath = os.path.join(HERE, name + "_ort_int8.onnx")
        fc.remove(qpath)
        quantize_static(fpath, qpath, Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True)
        stage = "run"
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        sess = ort.InferenceSession(qpath, so, providers=["CPUExecutionProvider"])
        onames = [o.name for o in sess.get_outputs()]
        order = sorted(range(len(onames)), key=lambda j: onames[j])
        assert len(onames) == len(kf), onames
        import onnx
        qm = onnx.load(qpath)
        op_types = sorted({n.op_type for n in qm.graph.node})

        def run(x):
            got = sess.run(None, {"x": x.astype(npt)})
            return [np.asarray(got[j], np.float32) for j in order]
        res = run(xs)
        for xi, suf in extra_inputs:
            try:
                for i, o in enumerate(run(xi)):
                    npz[f"ort_int8{suf}" if len(kf) == 1 else f"ort_int8{suf}_{i}"] = o
            except Exception as exc:  # e.g. a time dimension tf2onnx fixed
                msg = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
                fc.log(writer, f"{name}: ORT on x_test{suf} failed: {msg[:300]}")
                npz[f"ort_error{suf}"] = np.str_(msg)
    except Exception as exc:  # recorded, not fatal
        lines = [ln for ln in f"{type(exc).__name__}: {exc}".splitlines() if ln.strip()]
        short = f"{stage}: " + "\n".join(lines[:12])
        fc.log(writer, f"{name}: ORT {stage.upper()} FAILED: {short[:400]}")
        shutil.rmtree(tmp, ignore_errors=True)
        return {"ort_error": np.str_(short)}
    shutil.rmtree(tmp, ignore_errors=True)
    size = os.path.getsize(qpath)
    if size > ONNX_KEEP_LIMIT:
        os.remove(qpath)
    for i, o in enumerate(res):
        assert o.shape == kf[i].shape, (o.shape, kf[i].shape)
        npz["ort_int8" if len(kf) == 1 else f"ort_int8_{i}"] = o
        fc.log(writer, f"{name}: output {i}: SQNR ORT int8 vs keras float {fc.sqnr_db(kf[i], o):.2f} dB")
    npz["ort_version"] = np.str_(ort.__version__)
    npz["tf2onnx_version"] = np.str_(tf2onnx.__version__)
    npz["ort_ops"] = np.array(op_types)
    npz["ort_onnx_bytes"] = np.int64(size)
    fc.log(writer, f"{name}: ORT int8 QDQ model {size} bytes, ops {op_types}")
    return npz


def run_peer_process(ctx, peer, model_path, name, io):
    """Run one peer in a child process (the TFLite converter segfaults on some recurrent
    models, e.g. tf.keras 2 GRU and SimpleRNN); returns its npz entries, or an error entry
    when the child dies."""
    writer = ctx["writer"]
    tmp = tempfile.mkdtemp(prefix="fixnet_peer_")
    try:
        io_path, out_path = os.path.join(tmp, "io.npz"), os.path.join(tmp, "out.npz")
        np.savez(io_path, **io)
        cmd = [sys.executable, os.path.abspath(__file__), "--writer", writer, "--peer", peer,
               "--peer-args", json.dumps([model_path, name, io_path, out_path])]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        for ln in proc.stdout.splitlines():
            print(ln, flush=True)
        if proc.returncode == 0 and os.path.exists(out_path):
            with np.load(out_path) as d:
                return {k: d[k] for k in d.files}
        how = (f"killed by signal {-proc.returncode}" if proc.returncode < 0
               else f"exit code {proc.returncode}")
        tail = [ln for ln in proc.stderr.splitlines()
                if ln.strip() and not ln.startswith(("W0000", "I0000", "WARNING: All log"))
                and "cuInit" not in ln and "use_unbounded_threadpool" not in ln]
        msg = f"{peer} process {how} (the converter crashed): " + " | ".join(tail[-3:])[:400]
        fc.log(writer, f"{name}: {msg}")
        if peer == "tflite":
            fc.remove(os.path.join(HERE, name + ".tflite"))
            return {"tflite_error": np.str_(msg)}
        fc.remove(os.path.join(HERE, name + "_ort_int8.onnx"))
        return {"ort_error": np.str_(msg)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def peer_child(writer, peer, model_path, name, io_path, out_path):
    tf, keras, keras_version = fc.import_keras(writer)
    ctx = dict(tf=tf, keras=keras, writer=writer, keras_version=keras_version)
    model = keras.models.load_model(model_path, compile=False)
    with np.load(io_path) as d:
        io = {k: d[k] for k in d.files}
    xs, xc = io["xs"], io["xc"]
    kf = [io[f"kf_{i}"] for i in range(int(io["n_out"]))]
    dtype = tf.int32 if np.issubdtype(xs.dtype, np.integer) else tf.float32
    if peer == "tflite":
        res = tflite_peer(ctx, model, name, xs, xc, kf, dtype)
    else:
        more = [(v, k[len("more"):]) for k, v in io.items() if k.startswith("more")]
        res = ort_peer(ctx, model, name, xs, xc, kf, dtype, more)
    np.savez(out_path, **res)


# --------------------------------------------------------------------------- one fixture
def make_rnn_fixture(ctx, model, name, x_test, x_calib, labels, extra, more_tests=()):
    """Write <name>.h5 (+ .keras for Keras 3), <name>.tflite when it works, <name>.npz.

    ``more_tests``: [(x, suffix)] further test inputs (other sequence lengths); their Keras
    outputs are stored as ``keras_float<suffix>`` and their inputs as ``x_test<suffix>``."""
    tf, keras, writer = ctx["tf"], ctx["keras"], ctx["writer"]
    t0 = time.time()
    dtype = tf.int32 if np.issubdtype(x_test.dtype, np.integer) else tf.float32
    npt = np.int32 if dtype == tf.int32 else np.float32
    xs, xc = x_test.astype(npt), x_calib.astype(npt)
    in_names, out_names = fc.keras_io_names(model)
    kf = [np.asarray(o, np.float32) for o in fc.as_list(model.predict(xs, verbose=0, batch_size=32))]
    assert len(kf) == len(out_names)
    more = [(x.astype(npt), s, [np.asarray(o, np.float32) for o in
                                fc.as_list(model.predict(x.astype(npt), verbose=0, batch_size=32))])
            for x, s in more_tests]

    paths = [os.path.join(HERE, name + ".h5")]
    if writer == "keras3":
        paths.append(os.path.join(HERE, name + ".keras"))
    reload_errors = {}
    for p in paths:
        fc.remove(p)
        model.save(p)
        assert os.path.getsize(p) < fc.SIZE_LIMIT, (p, os.path.getsize(p))
        try:
            re = keras.models.load_model(p, compile=False)
        except Exception as exc:
            # Keras 3's legacy .h5 writer serializes the mask of a Masking layer as an
            # op-layer call (`NotEqual`) it cannot read back; the .keras file must reload
            if not (writer == "keras3" and p.endswith(".h5")):
                raise
            msg = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
            fc.log(writer, f"{os.path.basename(p)}: KERAS CANNOT RELOAD ITS OWN FILE: {msg[:300]}")
            reload_errors["keras_h5_reload_error"] = np.str_(msg)
            continue
        for x, ref in [(xs, kf)] + [(x, k) for x, _, k in more]:
            again = [np.asarray(o) for o in fc.as_list(re.predict(x, verbose=0, batch_size=32))]
            diff = max(float(np.abs(a - b).max()) for a, b in zip(again, ref))
            assert diff <= 1e-6, f"{p}: reloaded model differs by {diff}"
        fc.log(writer, f"{os.path.basename(p)}: reload max abs diff {diff:.3g}")

    multi = len(kf) > 1
    sfx = (lambda k, i: f"{k}_{i}") if multi else (lambda k, i: k)
    npz = {"x_test": xs, "x_calib": xc}
    npz.update(labels)
    for i, o in enumerate(kf):
        npz[sfx("keras_float", i)] = o
    for x, s, k in more:
        npz["x_test" + s] = x
        for i, o in enumerate(k):
            npz[sfx("keras_float" + s, i)] = o
    npz["keras_input_names"] = np.array(in_names)
    npz["keras_output_names"] = np.array(out_names)
    io = dict(xs=xs, xc=xc, n_out=np.int64(len(kf)), **{f"kf_{i}": o for i, o in enumerate(kf)},
              **{f"more{s}": x for x, s, _ in more})
    for peer in ("tflite", "ort"):
        npz.update(run_peer_process(ctx, peer, paths[-1], name, io))
    npz.update(reload_errors)
    npz.update(extra)
    npz["writer"] = np.str_(writer)
    npz["keras_version"] = np.str_(ctx["keras_version"])
    npz["tf_version"] = np.str_(tf.__version__)
    npz_path = os.path.join(HERE, name + ".npz")
    np.savez_compressed(npz_path, **npz)
    assert os.path.getsize(npz_path) < fc.SIZE_LIMIT, npz_path
    fc.log(writer, f"{name}: done in {time.time() - t0:.1f} s (h5 {fc.file_size(paths[0])} B, "
                   f"npz {fc.file_size(npz_path)} B, tflite {fc.file_size(os.path.join(HERE, name + '.tflite'))} B)")
    return kf


# --------------------------------------------------------------------------- worker
def run_writer(writer, only):
    suffix, _ = WRITERS[writer]
    tf, keras, keras_version = fc.import_keras(writer)
    ctx = dict(tf=tf, keras=keras, writer=writer, keras_version=keras_version)
    split = load_split()
    for name in MODELS:
        if only and name not in only:
            continue
        t0 = time.time()
        base = f"{name}_{suffix}"
        fc.fresh_session(tf, keras)
        xtr, ytr, xca, xte, labels, extra = data_for(tf, name, split)
        model = build(keras, name)
        epochs, limit = TRAIN[name]
        if name == "rnn_variants":
            model.compile(optimizer=keras.optimizers.Adam(LR),
                          loss=["sparse_categorical_crossentropy"] * 5 + ["mse"])
        elif name == "rnn_sensor":
            model.compile(optimizer=keras.optimizers.Adam(LR), loss="mse")
        else:
            model.compile(optimizer=keras.optimizers.Adam(LR), loss="sparse_categorical_crossentropy")
        model.fit(xtr, ytr, epochs=epochs, batch_size=BATCH, shuffle=True, verbose=0)
        fc.log(writer, f"{base}: trained {epochs} epochs in {time.time() - t0:.1f} s")
        extra = dict(extra, n_params=np.int64(model.count_params()), epochs=np.int64(epochs))
        more = []
        if name == "rnn_sensor":
            more = [(xte[:, -SENSOR_LEN2:], f"_len{SENSOR_LEN2}")]
        kf = make_rnn_fixture(ctx, model, base, xte, xca, labels, extra, more)
        if name == "rnn_sensor":
            mae = float(np.abs(kf[0] - labels["y_test"]).mean())
            base_mae = float(np.abs(xte[:, -1, :1] - labels["y_test"]).mean())
            fc.log(writer, f"{base}: keras float test MAE {mae:.4f} (last-value baseline {base_mae:.4f})")
            assert mae <= limit and mae < base_mae, (base, mae, base_mae)
        else:
            accs = [float(np.mean(k.argmax(1) == labels["y_test"])) for k in kf if k.shape[-1] == 10 and k.ndim == 2]
            fc.log(writer, f"{base}: keras float test acc {accs} ({time.time() - t0:.1f} s in all)")
            assert min(accs) >= limit, f"{base}: accuracy {accs} < {limit}"


# --------------------------------------------------------------------------- README
README_TEXT = """
## Recurrent fixtures (`make_recurrent_models.py`)

Trained by real Keras (both writers) for the recurrent layers of issue 11. Data:

* `rnn_gru`, `rnn_gru_ra0`, `rnn_lstm`, `rnn_simplernn`, `rnn_bilstm`, `rnn_stacked`: the
  digits of the MLP split (1237 train / 200 calibration / 360 test, seed 1234), each 8×8
  image (scaled /16) read as 8 time steps (rows) of 8 features.
* `rnn_variants`: the same images as 10 steps: the 8 rows plus 2 all-zero steps, at the end
  (even sample index), one in front and one behind (index % 4 == 1) or both in front
  (index % 4 == 3), so `Masking(0.0)` skips them (an image row that is all zero is masked
  too). Five classification heads (y_test) and a sequence output `rows` (4, 8) trained to
  the means of row pairs (`y_test_5`), decoded from the encoder's `return_state` states.
* `rnn_sensor`: a seeded two-channel series (channel 0: sines of periods 17, 41, 97, a slow
  drift and N(0, 0.1²) noise; channel 1: a slow sine + noise); windows of 24 steps, target =
  channel 0 one step later (`y_test`, float (N, 1)); train / calibration / test windows from
  disjoint stretches. The time dimension is `None`: `x_test` has 24 steps, `x_test_len16`
  (the last 16 steps of the same windows) has its own `keras_float_len16`. Both peers are
  fixed at 24 steps: the TFLite function by construction; the ONNX model, although exported
  with a free time dimension, refuses 16 steps ("Got invalid dimensions for input: x",
  recorded as `ort_error_len16`).
* `rnn_text`: digits as token "sentences" (not natural text): one token per inked pixel
  (value ≥ 4/16) in raster order, token = 1 + 3·(row·8 + col) + level − 1 with 3 intensity
  levels, left-padded with 0 (an ordinary token, `mask_zero=False`) to 40; `x_test` is int32.
* `rnn_kws`: the (49, 10) MFCC-like inputs of `kws_conv1d` (bilinear resize of the digits,
  rounded to 2⁻¹⁰, `make_cnn_models.prepare`).

Training: Adam(3e-3), batch 32, epochs as listed. Files: `.h5` (both writers), `.keras`
(Keras 3), `.tflite` when TFLite produced a working model, `.npz` (MLP key layout; several
outputs get `_<i>` suffixes, see above), `<name>_ort_int8.onnx` (the quantized ONNX model) when
≤ 200 KiB. The script asserts each `.h5` / `.keras` reloads to `keras_float` within 1e-6.

Int8 peers, both stored where they work:
* **TFLite** full-integer int8 (Optimize.DEFAULT, calibration samples as representative
  dataset, TFLITE_BUILTINS_INT8, int8 in/out; `rnn_text`'s token input stays int32),
  converted from a batch-1 `tf.function` concrete function with a fixed sequence length
  (`tflite_converter`); run with the reference kernels (`tflite_kernels`). npz keys as for
  the other fixtures plus `tflite_ops` and `tflite_fused_sequence_ops`. A converter or
  run-time failure leaves no `.tflite` and a `tflite_error` string.
* **ONNX Runtime** static int8: `tf2onnx.convert.from_function` (opset 17) of the same
  function with a free batch dimension, `quantize_static` (QDQ, QInt8 activations and
  weights, per-channel, MinMax over the calibration samples): `ort_int8` (`ort_int8_<i>`),
  `ort_ops` (op types of the quantized graph), or `ort_error`.

SQNR = 10·log10(Σf² / Σ(f − q)²) against `keras_float` (several outputs: per output, `/`
separated); top-1 = agreement of the int8 argmax with the float argmax (output 0).
`tflite_float_sqnr_db` in the `.npz`: the same concrete function converted without
quantization, against Keras float (shows the graph conversion itself is right, ~130 dB).

Problems met (TensorFlow 2.21):
* **TFLite sequence ops keep state across `invoke()`.** The fused
  UNIDIRECTIONAL_SEQUENCE_LSTM holds its hidden and cell state in variable tensors; run one
  sample after another without `interpreter.reset_all_variables()` and each sample starts
  from the previous one's final state (for `rnn_lstm_tfk2`: −1.4 dB, 18 % top-1 agreement,
  in float as in int8). The script resets before every sample
  (`fixture_common.run_tflite(..., reset_variables=True)`); a peer run without it is wrong,
  not the int8 scheme.
* **Keras 3 models never convert**: calibration fails with
  `read_variable.cc: variable != nullptr ... (READ_VARIABLE)` (apparently the Keras 3
  recurrent loop reads its weights as resource variables inside a WHILE); freezing the function first
  (`convert_variables_to_constants_v2`) makes the converter segfault.
* **The converter segfaults** (SIGSEGV, the whole process) on every tf.keras 2 model with a
  GRU or SimpleRNN (`rnn_gru`, `rnn_gru_ra0`, `rnn_simplernn`, `rnn_text`, `rnn_variants`), so each peer runs in a child process
  (`tflite_error` / `ort_error` then say "killed by signal 11").
* **Keras 3 cannot reload its own `rnn_variants_k3.h5`** ("Unknown layer: 'NotEqual'"): the
  config's inbound nodes of every layer after `Masking` carry the mask as a call kwarg,
  `"kwargs": {"mask": {"class_name": "__keras_tensor__", ... "keras_history": ["any", 0, 0]}}`,
  pointing at op-layers (`NotEqual` → `any`) that the legacy `.h5` writer records in no layer
  list. The `.keras` file reloads exactly; the `.npz` records `keras_h5_reload_error`, and the
  peers of every Keras 3 model are made from its `.keras` file. A loader should take the mask
  from the `Masking` layer and ignore the `mask` kwarg.
* `rnn_bilstm_tfk2`: the reference op resolver has no REVERSE_V2 version 3 kernel ("Didn't find
  op for builtin opcode 'REVERSE_V2' version '3'"), so it runs with
  `BUILTIN_WITHOUT_DEFAULT_DELEGATES` (`tflite_kernels`, `tflite_ref_error`).
* ONNX Runtime's QDQ quantization leaves the ONNX `LSTM` / `GRU` op (or tf2onnx's `Loop`, where it
  does not recognise the cell: Keras 3 GRU, both SimpleRNNs, GRU(reset_after=False)) in float between DequantizeLinear / QuantizeLinear: only the
  Dense / MatMul parts and the tensors between ops are int8 (`ort_ops`). The ONNX `LSTM` /
  `GRU` take their W / R / B as float initializers, and a `Loop` body (float MatMul, Tanh)
  is not quantized at all. `rnn_variants_*_ort_int8.onnx` (> 200 KiB) is not kept.
* `.h5` files include the Adam state (as the other trained fixtures), hence `rnn_variants_*.h5`
  ~300 KiB; `rnn_kws_*.npz` are ~0.4-0.5 MiB (the (49, 10) inputs, as for `kws_conv1d`).
"""


def readme_section():
    """Markdown for models/README.md, from the .npz files present (no TensorFlow)."""
    import fixture_stats as fs
    arch_rows, rows = [], []
    for name in MODELS:
        d0 = fs._load(f"{name}_k3") or fs._load(f"{name}_tfk2")
        params = f"{int(d0['n_params']):,}" if d0 is not None and "n_params" in d0 else "?"
        inp, text = ARCH[name]
        arch_rows.append(f"| `{name}_{{k3,tfk2}}` | {inp} | {text} | {params} | {TRAIN[name][0]} |")
        for writer, (suffix, _) in WRITERS.items():
            base = f"{name}_{suffix}"
            d = fs._load(base)
            if d is None:
                rows.append(f"| `{base}` | not generated | | | | | | |")
                continue
            kf = [f for f, _ in fs.outputs(d)]
            y = d["y_test"]
            if name == "rnn_sensor":
                quality = f"MAE {float(np.abs(kf[0] - y).mean()):.4f}"
            else:
                quality = f"acc {np.mean(kf[0].argmax(1) == y):.4f}"

            def peer(key):
                qs = [d.get(key if len(kf) == 1 else f"{key}_{i}") for i in range(len(kf))]
                if any(q is None for q in qs):
                    return "—", "—"
                sq = " / ".join(f"{fs.sqnr_db(f, q):.1f}" for f, q in zip(kf, qs))
                top = "—" if name == "rnn_sensor" else f"{np.mean(qs[0].argmax(1) == kf[0].argmax(1)):.4f}"
                return sq, top

            tsq, ttop = peer("tflite_int8")
            osq, otop = peer("ort_int8")
            notes = []
            if "tflite_error" in d:
                msg = " ".join(s.strip() for s in str(d["tflite_error"]).splitlines()[:2])
                notes.append(f"TFLite failed: `{msg[:220]}`")
            elif "tflite_ops" in d:
                fused = [o for o in d["tflite_ops"] if "SEQUENCE" in str(o)]
                notes.append("TFLite ops: " + (", ".join(fused) if fused else "no fused sequence op"))
            if "ort_error" in d:
                msg = " ".join(s.strip() for s in str(d["ort_error"]).splitlines()[:2])
                notes.append(f"ORT failed: `{msg[:220]}`")
            elif "ort_ops" in d:
                rec = [o for o in d["ort_ops"] if o in ("LSTM", "GRU", "RNN", "Loop", "Scan")]
                notes.append("ONNX recurrent ops: " + (", ".join(rec) if rec else "none (unrolled)"))
            sizes = " / ".join(fs._kb(fs._size(base + e)) for e in (".h5", ".keras", ".tflite", ".npz"))
            rows.append(f"| `{base}` | {quality} | {tsq} | {ttop} | {osq} | {otop} | {sizes} | "
                        f"{'; '.join(notes)} |")
    return "\n".join([
        README_TEXT.rstrip("\n"), "",
        "| model | input | architecture | params | epochs |",
        "| --- | --- | --- | --- | --- |",
        *arch_rows, "",
        "| model | Keras float (test) | TFLite int8 SQNR dB | TFLite top-1 | ORT int8 SQNR dB | ORT top-1 | "
        "sizes .h5 / .keras / .tflite / .npz | notes |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *rows,
    ]) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--writer", choices=sorted(WRITERS))
    ap.add_argument("--only", default="", help="comma-separated model names (default: all)")
    ap.add_argument("--peer", choices=("tflite", "ort"), help=argparse.SUPPRESS)
    ap.add_argument("--peer-args", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peer:
        peer_child(args.writer, args.peer, *json.loads(args.peer_args))
        return
    only = [s for s in args.only.split(",") if s]
    for s in only:
        assert s in MODELS, s
    if args.writer:
        run_writer(args.writer, only)
        return
    t0 = time.time()
    fc.run_writers(__file__, ["--only", args.only] if only else [])
    import make_models
    make_models.write_readme()
    print(f"make_recurrent_models.py: {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
