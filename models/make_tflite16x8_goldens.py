#!/usr/bin/env python
"""TFLite 16x8 goldens: the convnet and recurrent fixtures in TFLite's 16x8 mode (int16
activations, int8 weights), the reference point of issue 19's int16 activations.

Run by hand, never in CI, with the Python that made the fixtures (tensorflow 2.21, keras 3,
tf_keras 2.21)::

    /path/to/venv-with-tf/bin/python models/make_tflite16x8_goldens.py [--only a_k3,b_tfk2]
    /path/to/venv-with-tf/bin/python models/make_tflite16x8_goldens.py --table   # no TensorFlow

Each fixture is converted and run in a child process of its own (TF_USE_LEGACY_KERAS=1 for
the tf.keras 2 files; the converter kills its process on some recurrent models), which writes
``<name>.tflite16x8.npz`` next to the fixture (and ``<name>.16x8.tflite`` when it is under
KEEP_TFLITE bytes); a child that dies leaves the npz with the error. The existing fixture files
are read, never written. The script ends by printing the comparison table and rewriting
models/README.md (make_models.write_readme(), which takes readme_section() from here).

The recipe (convert_16x8, also used by bench/peers.py's tflite_16x8 runner): TFLiteConverter
with Optimize.DEFAULT, supported_ops = [EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_
INT8] alone (an op without a 16x8 kernel is an error, not a float fallback), representative
dataset = the fixture's own ``x_calib`` one sample at a time (the data fixnet's quantize gets),
float input and output kept. Convnets: ``from_keras_model`` (for Keras 3 files, the
``model.export()`` SavedModel if that fails), as the int8 fixtures. Recurrent fixtures: first a
batch-1 ``tf.function`` with the fixture's sequence length, as make_recurrent_models.py made
their int8 .tflite; where that fails (on every one of them: ROUTES, unrolled_copy), a copy of
the model with its recurrent layers unrolled, same weights, batch 1. Outputs: one test sample
at a time with the reference kernels (OpResolverType.BUILTIN_REF), ``reset_all_variables()``
before each sample of a recurrent model. Times: CPU time of the calling thread (the
interpreters run on it, num_threads=1), which the other tenants of a shared machine do not
stretch as they stretch wall time.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_models import HERE, WRITERS  # noqa: E402

CNN_FAMILIES = ("mobilenetv2", "resnet_small", "kws_dscnn", "mobilenet_small", "cnn_digits")
RNN_FAMILIES = ("rnn_gru", "rnn_gru_ra0", "rnn_lstm", "rnn_simplernn", "rnn_bilstm",
                "rnn_stacked", "rnn_variants", "rnn_sensor", "rnn_text", "rnn_kws")
FIXTURES = tuple(f"{fam}_{suffix}" for fam in CNN_FAMILIES + RNN_FAMILIES
                 for suffix, _ in WRITERS.values())
NPZ_SUFFIX = ".tflite16x8.npz"
TFLITE_SUFFIX = ".16x8.tflite"
KEEP_TFLITE = 300 << 10        # a 16x8 .tflite at most this large is kept next to the fixture
OPS_SET = "EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8"
# the interpreters compared and timed: name -> OpResolverType member ("AUTO": the default
# interpreter, XNNPACK delegate first, optimised builtin kernels for what it does not take)
RESOLVERS = {"ref": "BUILTIN_REF", "builtin": "BUILTIN_WITHOUT_DEFAULT_DELEGATES",
             "default": "AUTO"}
TIMED = ("ref", "default")     # timed for the 16x8 and the int8 model, interleaved
ROUNDS, SAMPLE_S = 21, 0.02


def log(name, msg):
    print(f"[{name}] {msg}", flush=True)


# --------------------------------------------------------------------------- conversion
def is_recurrent(name):
    return name.startswith("rnn_")


def representative(calib):
    """The representative dataset: the calibration samples one at a time (token ids as
    int32, anything else float32)."""
    dtype = np.int32 if np.issubdtype(calib.dtype, np.integer) else np.float32

    def gen():
        for i in range(len(calib)):
            yield [calib[i:i + 1].astype(dtype)]
    return gen


def configure_16x8(tf, conv, calib, int16_io=False):
    """The 16x8 settings on converter `conv`; int16_io: int16 codes in (a float input) and
    out instead of floats (bench/peers.py, which times every integer runtime codes in, codes
    out)."""
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative(calib)
    conv.target_spec.supported_ops = [getattr(tf.lite.OpsSet, OPS_SET)]
    if int16_io:
        if not np.issubdtype(calib.dtype, np.integer):
            conv.inference_input_type = tf.int16
        conv.inference_output_type = tf.int16
    return conv


def serving_fn(tf, model, shape, dtype):
    """tf.function of the model on a fixed input signature named x; outputs keyed out_00,
    out_01, ... in Keras order (make_recurrent_models.serving_fn's signature)."""
    @tf.function(input_signature=[tf.TensorSpec(shape, dtype, name="x")])
    def fn(x):
        ys = model(x, training=False)
        ys = list(ys) if isinstance(ys, (list, tuple)) else [ys]
        return {f"out_{i:02d}": y for i, y in enumerate(ys)}
    return fn


# how a model is converted: "keras" (from_keras_model; the convnets), "function" (a batch-1
# tf.function with the calibration data's sequence length, as the int8 recurrent fixtures were
# made), "unrolled" (a copy of a recurrent model with every RNN layer unrolled, then
# from_keras_model: see unrolled_copy)
ROUTES = ("keras", "function", "unrolled")


def convert_16x8(tf, model, calib, route, keras3, int16_io=False):
    """(16x8 .tflite bytes, how it was converted) of a Keras model by `route` (ROUTES); raises
    what the converter raises. `calib`: the calibration inputs (one input); `keras3`: a Keras 3
    model (may need the SavedModel route); `int16_io`: see configure_16x8."""
    if route == "function":
        dtype = tf.int32 if np.issubdtype(calib.dtype, np.integer) else tf.float32
        fn = serving_fn(tf, model, (1,) + calib.shape[1:], dtype)
        conv = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()],
                                                               model)
        return (configure_16x8(tf, conv, calib, int16_io).convert(),
                "from_concrete_functions(batch 1, fixed length)")
    how = ""
    if route == "unrolled":
        model, how = unrolled_copy(model, calib), "unrolled copy (batch 1, fixed length), "
    try:
        conv = tf.lite.TFLiteConverter.from_keras_model(model)
        return (configure_16x8(tf, conv, calib, int16_io).convert(),
                how + "from_keras_model")
    except Exception:
        if not keras3:
            raise
    import shutil
    tmp = tempfile.mkdtemp(prefix="fixnet_export_")
    try:
        model.export(os.path.join(tmp, "sm"), verbose=False)
        conv = tf.lite.TFLiteConverter.from_saved_model(os.path.join(tmp, "sm"))
        return (configure_16x8(tf, conv, calib, int16_io).convert(),
                how + "from_saved_model(model.export())")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def unrolled_copy(model, calib):
    """The same network with every recurrent layer (also inside Bidirectional) unrolled, on a
    batch-1 input of calib's shape, with the same weights. The 16x8 converter fails on every
    recurrent fixture as they are (no 16x8 UNIDIRECTIONAL_SEQUENCE_LSTM; Keras 3's loops fail
    in calibration on READ_VARIABLE; tf.keras 2 GRU / SimpleRNN loops crash it); unrolled, the
    steps are FULLY_CONNECTED / LOGISTIC / TANH / MUL / ADD, which have 16x8 kernels. The copy's
    outputs are checked against the model's on calib's first samples."""
    keras = sys.modules[type(model).__module__.split(".")[0]]   # keras or tf_keras
    rnn = (keras.layers.LSTM, keras.layers.GRU, keras.layers.SimpleRNN)

    def clone(layer):
        cfg = layer.get_config()
        if isinstance(layer, rnn):
            cfg["unroll"] = True
        elif isinstance(layer, keras.layers.Bidirectional):
            for part in ("layer", "backward_layer"):
                if cfg.get(part):
                    cfg[part]["config"]["unroll"] = True
        return layer.__class__.from_config(cfg)
    dtype = "int32" if np.issubdtype(calib.dtype, np.integer) else "float32"
    inp = keras.Input(shape=calib.shape[1:], batch_size=1, dtype=dtype)
    copy = keras.models.clone_model(model, input_tensors=inp, clone_function=clone)
    copy.set_weights(model.get_weights())
    x = calib[:8]
    for a, b in zip(_as_list(model.predict(x, verbose=0)),
                    _as_list(copy.predict(x, verbose=0, batch_size=1))):
        diff = float(np.abs(np.asarray(a) - np.asarray(b)).max())
        assert diff <= 1e-4 * max(1.0, float(np.abs(a).max())), f"unrolled copy differs by {diff}"
    return copy


def _as_list(y):
    return list(y) if isinstance(y, (list, tuple)) else [y]


def converter_settings(how, n_calib):
    return json.dumps({"converter": how, "optimizations": ["DEFAULT"],
                       "supported_ops": [OPS_SET],
                       "representative_dataset": f"x_calib of the fixture, {n_calib} samples "
                                                 "one at a time",
                       "inference_input_type": "float32 (default, kept)",
                       "inference_output_type": "float32 (default, kept)"})


# --------------------------------------------------------------------------- running
def interpreter(tf, tfl, resolver):
    it = tf.lite.Interpreter(
        model_content=tfl, num_threads=1,
        experimental_op_resolver_type=getattr(tf.lite.experimental.OpResolverType, resolver))
    it.allocate_tensors()
    return it


def io_indices(it, out_names=()):
    """(input tensor index, output tensor indices in Keras order). Several outputs: through the
    serving signature, whose output keys are out_00, out_01, ... (a function converted here),
    the Keras output layer names (tf.keras 2) or output_0, output_1, ... (Keras 3)."""
    ins, outs = it.get_input_details(), it.get_output_details()
    assert len(ins) == 1, [d["name"] for d in ins]
    if len(outs) == 1:
        return ins[0]["index"], [outs[0]["index"]]
    sig = next(iter(it._get_full_signature_list().values()))["outputs"]
    for keys in ([f"out_{i:02d}" for i in range(len(outs))], list(out_names),
                 [f"output_{i}" for i in range(len(outs))]):
        if sorted(sig) == sorted(keys):
            return ins[0]["index"], [sig[k] for k in keys]
    raise AssertionError(f"outputs {sorted(sig)} do not match the Keras outputs {out_names}")


def sample_call(it, x1, recurrent, out_names=()):
    """One batch-1 call of interpreter `it` on the sample x1 (shape (1, ...)): (reset the
    variable tensors of a recurrent model), set, invoke, get every output (in Keras order:
    `out_names`, see io_indices)."""
    i_in, i_outs = io_indices(it, out_names)
    x1 = np.ascontiguousarray(x1, it.get_input_details()[0]["dtype"])

    def call():
        if recurrent:
            it.reset_all_variables()
        it.set_tensor(i_in, x1)
        it.invoke()
        return [it.get_tensor(j) for j in i_outs]
    return call


def run_samples(it, x, recurrent, out_names=()):
    """The outputs of `it` on every sample of x, one at a time: a list (one per output, in
    Keras order) of float32 arrays."""
    got = None
    for i in range(len(x)):
        ys = sample_call(it, x[i:i + 1], recurrent, out_names)()
        if got is None:
            got = [np.empty((len(x),) + y.shape[1:], np.float32) for y in ys]
        for g, y in zip(got, ys):
            g[i] = y[0]
    return got


def median_times_us(calls, rounds=ROUNDS, sample_s=SAMPLE_S):
    """Median batch-1 time per call (us) of each callable, as (CPU time of this thread, wall
    time) dicts: warmed up, then `rounds` rounds in which each runs once (a sample: enough
    back-to-back calls to last sample_s), in an order rotated every round so that drift and
    other load hit all alike. The interpreters run on the calling thread (num_threads=1), so
    its CPU time is their work, which other tenants of a shared machine do not stretch."""
    names = list(calls)
    inner = {}
    for n in names:
        for _ in range(3):
            calls[n]()
        t = time.thread_time()
        calls[n]()
        inner[n] = max(1, int(sample_s / max(time.thread_time() - t, 1e-6)))
    cpu, wall = {n: [] for n in names}, {n: [] for n in names}
    for r in range(rounds):
        for n in names[r % len(names):] + names[:r % len(names)]:
            t, w = time.thread_time(), time.perf_counter()
            for _ in range(inner[n]):
                calls[n]()
            cpu[n].append((time.thread_time() - t) / inner[n])
            wall[n].append((time.perf_counter() - w) / inner[n])
    return ({n: statistics.median(s) * 1e6 for n, s in cpu.items()},
            {n: statistics.median(s) * 1e6 for n, s in wall.items()})


# --------------------------------------------------------------------------- one fixture
def load_keras(tf, name):
    """The fixture's model in the Keras that wrote it (TF_USE_LEGACY_KERAS=1 set by the
    parent for *_tfk2), from its .h5, else its .keras (Keras 3 cannot read back every .h5 it
    wrote). Returns (model, keras version, the file read)."""
    if name.endswith("_tfk2"):
        import tf_keras as keras
        assert tf.keras.layers.Dense is keras.layers.Dense, "TF_USE_LEGACY_KERAS=1 not honoured"
    else:
        import keras
    errors = []
    for ext in (".h5", ".keras"):
        path = os.path.join(HERE, name + ext)
        if not os.path.exists(path):
            continue
        try:
            return keras.models.load_model(path, compile=False), keras.__version__, name + ext
        except Exception as exc:  # noqa: BLE001 - try the next file
            errors.append(f"{name + ext}: {type(exc).__name__}: {str(exc).splitlines()[0]}")
    raise RuntimeError("; ".join(errors))


def short_error(stage, exc):
    lines = [ln for ln in f"{type(exc).__name__}: {exc}".splitlines() if ln.strip()]
    return f"{stage}: " + "\n".join(lines[:12])


def compare(a, b):
    """(number of differing output values, max |difference|) of two lists of outputs."""
    return (sum(int(np.sum(x != y)) for x, y in zip(a, b)),
            max(float(np.abs(x - y).max()) for x, y in zip(a, b)))


def child(name, out_path, route):
    """Convert fixture `name` by `route` (ROUTES), run and time it; write its npz entries to
    out_path."""
    import tensorflow as tf

    d = np.load(os.path.join(HERE, name + ".npz"))
    recurrent = is_recurrent(name)
    x_test, x_calib = d["x_test"], d["x_calib"]
    names = [str(n) for n in d["keras_output_names"]] if "keras_output_names" in d else []
    res = {"tf_version": np.str_(tf.__version__), "numpy_version": np.str_(np.__version__),
           "python_version": np.str_(platform.python_version()),
           "machine": np.str_(platform.machine())}
    stage = "load"
    try:
        model, keras_version, read = load_keras(tf, name)
        res["keras_version"], res["keras_file"] = np.str_(keras_version), np.str_(read)
        stage = "conversion"
        t0 = time.time()
        tfl, how = convert_16x8(tf, model, x_calib, route, name.endswith("_k3"))
        log(name, f"converted ({how}) in {time.time() - t0:.0f} s, {len(tfl)} bytes")
        res["tflite16x8_converter_settings"] = np.str_(converter_settings(how, len(x_calib)))
        res["tflite16x8_bytes"] = np.int64(len(tfl))
        stage = "run (BUILTIN_REF)"
        ref = interpreter(tf, tfl, RESOLVERS["ref"])
        res["tflite16x8_ops"] = np.array(sorted({o["op_name"] for o in ref._get_ops_details()}))
        res["tflite16x8_tensor_types"] = np.array(sorted(
            {np.dtype(t["dtype"]).name for t in ref.get_tensor_details()}))
        outs = run_samples(ref, x_test, recurrent, names)
    except Exception as exc:  # noqa: BLE001 - the error is the result
        res["tflite16x8_error"] = np.str_(short_error(stage, exc))
        log(name, f"FAILED: {str(res['tflite16x8_error'])[:400]}")
        np.savez(out_path, **res)
        return 0
    sfx = (lambda i: "") if len(outs) == 1 else (lambda i: f"_{i}")
    for i, y in enumerate(outs):
        res["tflite16x8" + sfx(i)] = y
    res["tflite16x8_kernels"] = np.str_(RESOLVERS["ref"])
    log(name, f"ops {', '.join(map(str, res['tflite16x8_ops']))}; tensor types "
              f"{', '.join(map(str, res['tflite16x8_tensor_types']))}")

    # the other interpreters on the same 16x8 model: do they run it, and alike?
    its = {"ref": ref}
    for kind in ("builtin", "default"):
        try:
            its[kind] = interpreter(tf, tfl, RESOLVERS[kind])
            n, mx = compare(outs, run_samples(its[kind], x_test, recurrent, names))
            res[f"tflite16x8_{kind}_vs_ref"] = np.str_(
                "identical" if n == 0 else f"{n} values differ, max |diff| {mx:.3g}")
        except Exception as exc:  # noqa: BLE001 - recorded
            its.pop(kind, None)
            res[f"tflite16x8_{kind}_vs_ref"] = np.str_(short_error("failed", exc))
        log(name, f"16x8 with {RESOLVERS[kind]}: {res[f'tflite16x8_{kind}_vs_ref']}")

    res.update(timings(tf, name, d, its, recurrent, names))
    path = os.path.join(HERE, name + TFLITE_SUFFIX)
    if len(tfl) <= KEEP_TFLITE:
        with open(path, "wb") as f:
            f.write(tfl)
        res["tflite16x8_file"] = np.str_(name + TFLITE_SUFFIX)
    elif os.path.exists(path):
        os.remove(path)
    np.savez(out_path, **res)
    return 0


def timings(tf, name, d, its16, recurrent, names):
    """Median batch-1 time (us) of the 16x8 model and of the fixture's int8 .tflite (when it
    has one) in the interpreters of TIMED, interleaved in the same rounds."""
    x16 = d["x_test"][:1]
    calls = {f"16x8_{k}": sample_call(its16[k], x16, recurrent, names)
             for k in TIMED if k in its16}
    int8_path, errors = os.path.join(HERE, name + ".tflite"), {}
    if os.path.exists(int8_path) and "tflite_error" not in d:
        with open(int8_path, "rb") as f:
            tfl8 = f.read()
        # int8 input codes as the fixture stored them; token ids as they are
        x8 = d["tflite_input_int8"][:1] if "tflite_input_int8" in d else d["x_test"][:1]
        for k in TIMED:
            try:
                it8 = interpreter(tf, tfl8, RESOLVERS[k])
            except Exception as exc:  # noqa: BLE001 - e.g. an op the reference kernels lack
                errors[f"time_int8_{k}_error"] = np.str_(short_error("interpreter", exc))
                continue
            calls[f"int8_{k}"] = sample_call(it8, x8, recurrent,
                                             [f"out_{i:02d}" for i in range(len(names))])
    cpu, wall = median_times_us(calls)
    log(name, "batch-1 median CPU time: " + ", ".join(f"{k} {v:.0f} us" for k, v in cpu.items()))
    res = {f"time_us_{k}": np.float64(v) for k, v in cpu.items()}
    res.update(errors)
    res.update({f"wall_us_{k}": np.float64(v) for k, v in wall.items()})
    res["timing"] = np.str_(
        f"time_us_*: median CPU time of the calling thread per call, wall_us_*: median wall "
        f"time; {ROUNDS} interleaved rounds, batch 1, num_threads=1, test sample 0; load "
        f"average {os.getloadavg()[0]:.1f} at the end on {os.cpu_count()} CPUs")
    return res


def run_child(name, route):
    """Run the child of fixture `name` (conversion `route`) in a fresh process with its
    writer's environment; returns its npz entries, or the error of a child that died."""
    suffix = name.rsplit("_", 1)[1]
    env = dict(os.environ)
    env.update(next(extra for sfx, extra in WRITERS.values() if sfx == suffix))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    env["PYTHONHASHSEED"] = "0"
    with tempfile.TemporaryDirectory(prefix="fixnet_16x8_") as tmp:
        out = os.path.join(tmp, "out.npz")
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", name,
                               "--route", route, "--out", out],
                              env=env, capture_output=True, text=True)
        for ln in proc.stdout.splitlines():
            print(ln, flush=True)
        if proc.returncode == 0 and os.path.exists(out):
            with np.load(out) as d:
                return {k: d[k] for k in d.files}
    how = (f"killed by signal {-proc.returncode}" if proc.returncode < 0
           else f"exit code {proc.returncode}")
    tail = [ln for ln in proc.stderr.splitlines() if ln.strip()
            and not ln.startswith(("W0000", "I0000", "WARNING: All log"))
            and "cuInit" not in ln and "use_unbounded_threadpool" not in ln]
    died = " (the converter crashed)" if proc.returncode < 0 else ""
    msg = f"16x8 process {how}{died}: " + " | ".join(tail[-3:])[:400]
    log(name, msg)
    stale = os.path.join(HERE, name + TFLITE_SUFFIX)
    if os.path.exists(stale):
        os.remove(stale)
    return {"tflite16x8_error": np.str_(msg)}


def make(name):
    """Write <name>.tflite16x8.npz: convnets by from_keras_model; recurrent fixtures first as
    their int8 .tflite was made (a batch-1 function), then, where that fails (it does on every
    one here), from their unrolled copy (`tflite16x8_direct_error` keeps the first error)."""
    t0 = time.time()
    if not is_recurrent(name):
        res = run_child(name, "keras")
    else:
        res = run_child(name, "function")
        if "tflite16x8_error" in res:
            direct = res["tflite16x8_error"]
            res = run_child(name, "unrolled")
            res["tflite16x8_direct_error"] = direct
    d = np.load(os.path.join(HERE, name + ".npz"))
    res["writer"] = d["writer"]
    if "keras_version" not in res:
        res["keras_version"] = d["keras_version"]
    path = os.path.join(HERE, name + NPZ_SUFFIX)
    np.savez_compressed(path, **res)
    log(name, f"wrote {os.path.basename(path)} ({os.path.getsize(path)} B) in "
              f"{time.time() - t0:.0f} s")


# --------------------------------------------------------------------------- the table
def _load(name):
    import fixture_stats as fs
    d = fs._load(name)
    path = os.path.join(HERE, name + NPZ_SUFFIX)
    if d is None or not os.path.exists(path):
        return d, None
    with np.load(path) as g:
        return d, {k: g[k] for k in g.files}


def quality(kf, ys):
    """(worst output's SQNR in dB against Keras float, top-1 agreement with Keras float on
    output 0, or None for a one-value output)."""
    from fixture_common import sqnr_db
    sq = min(sqnr_db(k, y) for k, y in zip(kf, ys))
    top1 = (float(np.mean(ys[0].argmax(1) == kf[0].argmax(1)))
            if kf[0].ndim == 2 and kf[0].shape[1] > 1 else None)
    return sq, top1


def outputs_of(d, key):
    """The outputs stored under `key` (key or key_<i>), in Keras order, or None."""
    if key in d:
        return [d[key]]
    ys, i = [], 0
    while f"{key}_{i}" in d:
        ys.append(d[f"{key}_{i}"])
        i += 1
    return ys or None


def table_rows():
    """One row per fixture: [name, int8 SQNR, int8 top-1, 16x8 SQNR, 16x8 top-1, gain,
    time ratios, note]."""
    import fixture_stats as fs

    def fmt(q):
        return ("—", "—") if q is None else (
            f"{q[0]:.1f}", "—" if q[1] is None else f"{100 * q[1]:.1f}%")
    rows = []
    for name in FIXTURES:
        d, g = _load(name)
        if g is None:
            rows.append([f"`{name}`", "not generated"] + [""] * 7)
            continue
        kf = [k for k, _ in fs.outputs(d)]
        y8, y16 = outputs_of(d, "tflite_int8"), outputs_of(g, "tflite16x8")
        q8 = quality(kf, y8) if y8 and len(y8) == len(kf) else None
        q16 = quality(kf, y16) if y16 else None
        gain = f"{q16[0] - q8[0]:+.1f}" if q8 and q16 else "—"

        def ratio(k):
            a, b = g.get(f"time_us_16x8_{k}"), g.get(f"time_us_int8_{k}")
            return f"{float(a) / float(b):.1f}x" if a is not None and b is not None else "—"
        rows.append([f"`{name}`", *fmt(q8), *fmt(q16), gain, ratio("default"), ratio("ref"),
                     row_note(d, g)])
    return rows


def row_note(d, g):
    """The notes cell: what failed, the conversion route of a recurrent fixture, where the
    other interpreters' outputs differ from the reference kernels', the default interpreter's
    times."""
    notes = []
    if "tflite16x8_error" in g:
        msg = " ".join(s.strip() for s in str(g["tflite16x8_error"]).splitlines()[:2])
        notes.append(f"16x8 failed: `{msg[:200]}`")
    elif "unrolled" in str(g.get("tflite16x8_converter_settings", "")):
        notes.append("16x8 of the unrolled copy")
    if "tflite_error" in d:
        notes.append("no int8 .tflite (its converter failed)")
    vs = {k: str(g.get(f"tflite16x8_{k}_vs_ref", "")).splitlines()[0][:120]
          for k in ("builtin", "default") if f"tflite16x8_{k}_vs_ref" in g}
    if len(set(vs.values())) == 1 and "identical" not in vs.values():
        notes.append(f"builtin kernels and default interpreter vs REF: {vs['builtin']}")
    elif len(set(vs.values())) > 1:
        notes += [f"{RESOLVERS[k]} vs REF: {v}" for k, v in vs.items() if v != "identical"]
    if "time_us_16x8_default" in g:
        t = [f"16x8 {float(g['time_us_16x8_default']) / 1e3:.2f} ms"]
        if "time_us_int8_default" in g:
            t.append(f"int8 {float(g['time_us_int8_default']) / 1e3:.2f} ms")
        notes.append("default interpreter: " + ", ".join(t))
    if "tflite16x8_error" not in g and len(outputs_of(d, "keras_float") or []) > 1:
        notes.append("SQNR: the worst output's")
    return "; ".join(notes).replace("|", "\\|")       # a | would end the Markdown cell


HEADER = ["model", "TFLite int8 SQNR dB", "int8 top-1", "TFLite 16x8 SQNR dB", "16x8 top-1",
          "16x8 gain dB", "time 16x8 / int8 (default interpreter)",
          "time 16x8 / int8 (reference kernels)", "notes"]


def table_markdown():
    rows = table_rows()
    return "\n".join(["| " + " | ".join(HEADER) + " |", "|" + " --- |" * len(HEADER)]
                     + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


README_TEXT = """
## TFLite 16x8 goldens (`make_tflite16x8_goldens.py`)

TFLite's 16x8 mode (int16 activations, symmetric, zero point 0; int8 weights per output
channel; int64 biases) is the reference point for fixnet's int16 activations (issue 19). For
the convnets `mobilenetv2`, `resnet_small`, `kws_dscnn`, `mobilenet_small`, `cnn_digits` and
every recurrent fixture (both writers), the script converts the model with
`supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]`
alone (no float fallback), `Optimize.DEFAULT`, the fixture's own `x_calib` (the calibration
fixnet uses) one sample at a time as representative dataset, float input and output kept
(QUANTIZE / DEQUANTIZE at the ends). Convnets: `from_keras_model` of the `.h5`. Recurrent
fixtures: first as their int8 `.tflite` was made (a batch-1 `tf.function` with the fixture's
sequence length); that fails on all 20 (below), so then from an *unrolled copy*: the same
layers and weights with `unroll=True` on every LSTM / GRU / SimpleRNN (also inside
Bidirectional), on a batch-1 input of the fixture's length (its outputs checked against the
model's), `from_keras_model`. The model runs on `x_test`, one sample at a time, with the
reference kernels (`OpResolverType.BUILTIN_REF`; variable tensors reset before each sample).
Each conversion runs in a child process of its own; an error or a crash is recorded, not
fatal. The fixtures' own files are only read.

Files per fixture `<name>`:

* `<name>.tflite16x8.npz`: `tflite16x8` float32, the 16x8 model's outputs on `x_test` (same
  layout as `keras_float`; `tflite16x8_<i>` for several outputs); `tflite16x8_converter_settings`
  (JSON: how it was converted, ops set, representative dataset, input/output types),
  `tflite16x8_kernels`, `tflite16x8_ops`, `tflite16x8_tensor_types`, `tflite16x8_bytes`;
  `tflite16x8_builtin_vs_ref` and `tflite16x8_default_vs_ref` (whether the optimised builtin
  kernels without a delegate, and the default interpreter, run the 16x8 model, and how their
  outputs differ from the reference kernels'); `time_us_16x8_ref`, `time_us_16x8_default`,
  `time_us_int8_ref`, `time_us_int8_default` (median batch-1 CPU time of the calling thread
  per call, of the 16x8 model and of the fixture's int8 `.tflite`, measured in the same run,
  interleaved; `wall_us_*` the wall times; `timing` says how; `time_int8_<kind>_error` where
  an int8 interpreter does not load); `tf_version`, `keras_version`, `numpy_version`,
  `python_version`, `writer`; `tflite16x8_error` when no 16x8 model ran, and
  `tflite16x8_direct_error` (recurrent fixtures) the batch-1 function's error.
* `<name>.16x8.tflite`: the 16x8 model, kept when it is at most 300 KiB (all but
  `mobilenetv2_*`, ~720 KiB).

Regenerate (about 35 minutes on 2 busy cores; `--only a_k3,b_tfk2` for some fixtures, `--table`
prints the table from the files present, without TensorFlow):

```
/path/to/venv-with-tf/bin/python models/make_tflite16x8_goldens.py
```

Measured on the 360 test samples: SQNR (dB) against `keras_float` (several outputs: the worst
output's), top-1 agreement with Keras float, the gain of 16x8 over int8, and the 16x8 / int8
ratio of batch-1 CPU times in the default interpreter (int8: XNNPACK; 16x8: XNNPACK has no
int16 kernels, so TFLite's builtin kernels run it) and with the reference kernels for both.
"""


def readme_section():
    """Markdown for models/README.md, from the .npz files present (no TensorFlow)."""
    return README_TEXT.lstrip("\n") + "\n" + table_markdown() + NOTES_TEXT


NOTES_TEXT = """
Notes (TensorFlow 2.21, Keras 3.15.1 / tf_keras 2.21; times on a 2-core x86-64 VM shared with
other jobs, load average 6-13 during the run: hence CPU times, which that load does not
stretch, rather than wall times):

* **Every convnet converts** to 16x8 (QUANTIZE, CONV_2D, DEPTHWISE_CONV_2D, ADD, MEAN,
  AVERAGE/MAX_POOL_2D, FULLY_CONNECTED, SOFTMAX, DEQUANTIZE; int16 activations, int8 weights,
  int64 biases). 16x8 gains +8.8 / +9.4 dB on `mobilenetv2` (18-19 dB int8, 27.4-27.5 dB 16x8),
  +1.6 to +5.0 dB on `kws_dscnn`, `mobilenet_small`, `cnn_digits`, and only +0.1 / +0.3 dB on
  `resnet_small` (27 dB both ways: its error does not come from the activations' precision).
* **No recurrent fixture converts as its int8 `.tflite` was made** (`tflite16x8_direct_error`):
  Keras 3 files fail in calibration (`read_variable.cc ... READ_VARIABLE failed to invoke`, as
  their int8 conversion does); tf.keras 2 LSTMs become UNIDIRECTIONAL_SEQUENCE_LSTM, which has
  no 16x8 quantization ("Quantization to 16x8-bit not yet supported for op:
  'UNIDIRECTIONAL_SEQUENCE_LSTM'"; their int8 conversion works); tf.keras 2 GRU, SimpleRNN and
  `rnn_variants` kill the converter (SIGSEGV, as for int8). The **unrolled copies** convert for
  17 of the 20 (FULLY_CONNECTED, LOGISTIC, TANH, MUL, ADD, SUB, SPLIT, UNPACK, ...) and give
  27-48 dB; not `rnn_variants_*` (its Masking lowers to NOT_EQUAL / REDUCE_ANY / CAST /
  SELECT_V2, which have no 16x8 quantization) nor `rnn_text_k3` ("Max and min for dynamic
  tensors should be recorded during calibration" on its int32 token input). `rnn_text_tfk2`
  converts but comes out at 5.4 dB / 80 % top-1 (the float conversion of the same unrolled copy
  gives 132 dB, so the loss is the 16x8 quantization; not looked into further).
* **The default interpreter runs the 16x8 models**: XNNPACK has no int16 kernels, and TFLite's
  optimised builtin kernels run them (outputs and times as with
  `BUILTIN_WITHOUT_DEFAULT_DELEGATES`). They equal the reference kernels on the four small
  convnets, and differ
  from them on `mobilenetv2` (88 / 12 of the 3600 output values, by at most 0.00073, 24 steps of
  the 1/32768 softmax scale) and on every recurrent one but `rnn_gru_*` (4-82 values, at most
  0.0008): the goldens are the reference kernels'.
* **Speed**: in the default interpreter 16x8 takes 6x (`kws_dscnn`) to 21x (`mobilenetv2`) the
  time of int8 (XNNPACK); with the reference kernels for both the two are within 1.0-1.5x, i.e.
  TFLite's builtin 16x8 convolutions are about as fast as its reference ones. On the recurrent
  fixtures the unrolled 16x8 copy is faster than the fused int8 LSTM (0.6-0.8x), a different
  graph, so that ratio says little about int16 arithmetic.
"""


# --------------------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only",
                    help="comma-separated fixture names (default: all of FIXTURES)")
    ap.add_argument("--table", action="store_true",
                    help="only print the table from the .npz files present (no TensorFlow)")
    ap.add_argument("--no-readme", action="store_true", help="do not rewrite models/README.md")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--route", choices=ROUTES, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.out, args.route)
    if not args.table:
        names = args.only.split(",") if args.only else list(FIXTURES)
        unknown = sorted(set(names) - set(FIXTURES))
        if unknown:
            ap.error(f"unknown fixture(s) {unknown}; known: {', '.join(FIXTURES)}")
        t0 = time.time()
        for name in names:
            make(name)
        print(f"{len(names)} fixtures in {time.time() - t0:.0f} s", flush=True)
    print(table_markdown())
    if not args.table and not args.no_readme:
        import make_models
        make_models.write_readme()
    return 0


if __name__ == "__main__":
    sys.exit(main())
