"""Shared machinery of ``make_cnn_models.py`` and ``make_layer_models.py``.

The MLP fixtures are made by ``make_models.py``'s own code, which this module only
borrows constants and helpers from (it changes nothing there). What lives here:

* ``run_writers(script)`` -- re-invoke a generator script once per Keras writer, in a
  fresh process with the same environment ``make_models.py`` uses;
* ``import_keras(writer)`` -- (tf, keras, keras_version) for the writer;
* ``make_fixture(...)`` -- given a built (trained or randomly initialised) model and
  its data: ``model.predict``, ``model.save(<name>.h5)``, reload check, full-integer
  int8 TFLite conversion, TFLite reference-kernel run, ``<name>.npz``.

Multi-input / multi-output models: every list is stored with a ``_<i>`` suffix in
Keras order (``model.inputs`` / ``model.outputs``): ``x_test_0, x_test_1, ...,
keras_float_0, keras_float_1, tflite_int8_raw_0, tflite_output_scale_1, ...``.
Single-input single-output models use the unsuffixed MLP key layout.
"""
import os
import subprocess
import sys
import time

import numpy as np

from make_models import HERE, WRITERS, quantize_input, seed_everything

SIZE_LIMIT = 1 << 20


def log(writer, msg):
    print(f"[{writer}] {msg}", flush=True)


# --------------------------------------------------------------------------- processes
def run_writers(script, extra_args=(), env_override=None):
    """Run ``script --writer W`` for every writer, each in its own process."""
    for writer, (_, extra_env) in WRITERS.items():
        env = dict(os.environ)
        env.update(extra_env)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        env.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # plain kernels, reproducible numbers
        env.update(env_override or {})
        env["PYTHONHASHSEED"] = "0"
        cmd = [sys.executable, os.path.abspath(script), "--writer", writer, *extra_args]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, env=env, check=True)


def writers_main(script, doc, run_writer):
    """main() of a fixture script whose only option is --writer: with it, make that writer's
    fixtures here; without, run the script once per writer (run_writers), then rewrite
    models/README.md."""
    import argparse
    import time

    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--writer", choices=sorted(WRITERS))
    args = ap.parse_args()
    if args.writer:
        run_writer(args.writer)
        return
    t0 = time.time()
    run_writers(script)
    import make_models
    make_models.write_readme()
    print(f"{os.path.basename(script)}: {time.time() - t0:.0f} s", flush=True)


def import_keras(writer):
    import tensorflow as tf

    if writer == "keras3":
        import keras
        keras_version = keras.__version__
        assert keras_version.startswith("3."), keras_version
    else:
        import tf_keras
        keras = tf.keras
        keras_version = tf_keras.__version__
        assert keras.layers.Dense is tf_keras.layers.Dense, "TF_USE_LEGACY_KERAS=1 not honoured"
        assert keras_version.startswith("2."), keras_version
    log(writer, f"tensorflow {tf.__version__}, keras {keras_version}")
    return tf, keras, keras_version


def fresh_session(tf, keras):
    """Same seeding sequence as make_models.py, before every model."""
    seed_everything(tf)
    keras.backend.clear_session()
    seed_everything(tf)


# --------------------------------------------------------------------------- helpers
def as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


def keras_io_names(model):
    """Names of the layers that make model.inputs / model.outputs, in Keras order."""
    if hasattr(model, "input_names"):  # tf.keras 2
        return list(model.input_names), list(model.output_names)
    return ([t._keras_history[0].name for t in model.inputs],
            [t._keras_history[0].name for t in model.outputs])


def _load_sqnr_db():
    """fixnet/metrics.py's sqnr_db, the project's one definition, loaded by path: these scripts
    run where fixnet is not built (the TensorFlow venv)."""
    import importlib.util
    path = os.path.join(os.path.dirname(HERE), "fixnet", "metrics.py")
    spec = importlib.util.spec_from_file_location("fixnet_metrics", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.sqnr_db


sqnr_db = _load_sqnr_db()


def file_size(path):
    return os.path.getsize(path) if os.path.exists(path) else None


def remove(path):
    if os.path.exists(path):
        os.remove(path)


# --------------------------------------------------------------------------- TFLite
def convert_tflite(tf, model, writer, calib, in_names):
    """Full-integer int8 conversion exactly as make_models.py does it.

    ``calib`` is the list of calibration arrays in Keras input order. One input:
    the representative dataset yields ``[x[i:i+1]]`` (as for the MLPs); several
    inputs: it yields ``{keras_input_name: x[i:i+1]}`` -- the converter orders its
    inputs by signature name, not in Keras order, so a list would be misassigned.
    """
    n = len(calib[0])

    def representative_dataset():
        for i in range(n):
            if len(calib) == 1:
                yield [calib[0][i:i + 1].astype(np.float32)]
            else:
                yield {name: c[i:i + 1].astype(np.float32) for name, c in zip(in_names, calib)}

    def configure(conv):
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative_dataset
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
        return conv

    try:
        return configure(tf.lite.TFLiteConverter.from_keras_model(model)).convert(), "from_keras_model"
    except Exception as exc:
        if writer != "keras3":
            raise
        log(writer, f"from_keras_model failed ({str(exc).splitlines()[0][:200]}); using model.export()")
        import shutil
        import tempfile
        tmp = tempfile.mkdtemp(prefix="fixnet_export_")
        try:
            model.export(os.path.join(tmp, "sm"), verbose=False)
            tfl = configure(tf.lite.TFLiteConverter.from_saved_model(os.path.join(tmp, "sm"))).convert()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return tfl, "from_saved_model(model.export())"


def tflite_io_map(tf, tfl, in_names, out_names, in_shapes, out_shapes):
    """Map Keras inputs/outputs to TFLite tensors.

    Inputs: the serving signature's input keys are the Keras input names (both writers).
    Outputs: tf.keras 2 keys them by output layer name, Keras 3 by ``output_<i>`` in
    Keras order; anything else falls back to a unique shape match. Every match is
    checked against the Keras shape. Returns (input details, output details), each a
    list in Keras order of the interpreter's tensor details.
    """
    interp = tf.lite.Interpreter(model_content=tfl)
    runner = interp.get_signature_runner()
    sig_in, sig_out = runner.get_input_details(), runner.get_output_details()
    by_index_in = {d["index"]: d for d in interp.get_input_details()}
    by_index_out = {d["index"]: d for d in interp.get_output_details()}

    def fits(d, shp):
        # a dimension TFLite only knows at run time (-1 in shape_signature; Keras 3's
        # UpSampling2D lowers to a dynamic-shape repeat) matches any Keras size
        s = d.get("shape_signature", d["shape"])[1:]
        return len(s) == len(shp) and all(a in (b, -1) for a, b in zip(s, shp))

    def pick(sig, names, shapes, what):
        keys = list(sig)
        if len(keys) == 1 and len(names) == 1:
            chosen, how = [keys[0]], "only"
        elif set(keys) == set(names):
            chosen, how = list(names), "name"
        elif set(keys) == {f"output_{i}" for i in range(len(names))}:
            chosen, how = [f"output_{i}" for i in range(len(names))], "output_<i>"
        else:
            chosen, how = [], "shape"
            for shp in shapes:
                cand = [k for k in keys if fits(sig[k], shp)]
                assert len(cand) == 1, f"ambiguous {what} shape {shp}: {cand}"
                chosen.append(cand[0])
        for k, shp in zip(chosen, shapes):
            assert fits(sig[k], shp), (what, k, sig[k]["shape"], shp)
        return chosen, how

    ikeys, ihow = pick(sig_in, in_names, in_shapes, "input")
    okeys, ohow = pick(sig_out, out_names, out_shapes, "output")
    ins = [by_index_in[sig_in[k]["index"]] for k in ikeys]
    outs = [by_index_out[sig_out[k]["index"]] for k in okeys]
    return ins, outs, ikeys, okeys, f"inputs by {ihow}, outputs by {ohow}"


def run_tflite(tf, tfl, xs, ins, outs, resolver, reset_variables=False):
    """Run one sample at a time; returns (quantized inputs, raw int8 outputs).

    ``reset_variables``: call ``interpreter.reset_all_variables()`` before every sample.
    Needed for recurrent models: TFLite's fused sequence ops (UNIDIRECTIONAL_SEQUENCE_LSTM)
    keep their hidden and cell state in variable tensors that persist across ``invoke()``,
    so without a reset each sample starts from the previous sample's final state."""
    interp = tf.lite.Interpreter(
        model_content=tfl, num_threads=1,
        experimental_op_resolver_type=getattr(tf.lite.experimental.OpResolverType, resolver))
    interp.allocate_tensors()
    for d in ins + outs:
        assert d["dtype"] == np.int8, d
    xq = [quantize_input(x, *d["quantization"]) for x, d in zip(xs, ins)]
    n = len(xs[0])
    raw = [None] * len(outs)
    for i in range(n):
        if reset_variables:
            interp.reset_all_variables()
        for q, d in zip(xq, ins):
            interp.set_tensor(d["index"], q[i:i + 1])
        interp.invoke()
        for j, d in enumerate(outs):
            y = interp.get_tensor(d["index"])[0]
            if raw[j] is None:      # shapes as run (a dynamic dimension is known only now)
                raw[j] = np.empty((n,) + y.shape, np.int8)
            raw[j][i] = y
    return xq, raw


# --------------------------------------------------------------------------- one fixture
def make_fixture(ctx, model, name, x_test, x_calib, y_test=None, extra=None,
                 size_limit=SIZE_LIMIT, predict_batch=32, tflite_drop_outputs=(),
                 include_optimizer=True):
    """Write <name>.h5, <name>.tflite (unless conversion fails) and <name>.npz.

    ``ctx``: dict(tf=, keras=, writer=, keras_version=). ``x_test``/``x_calib``: array
    or list of arrays in Keras input order. ``y_test``: labels (array, or dict of
    extra npz entries). ``extra``: more npz entries. ``tflite_drop_outputs``: names of
    Keras outputs left out of the TFLite model (it is converted from a sub-model of the
    same layers without them; the npz then has no tflite_* entries for their index).
    ``include_optimizer=False``: ``model.save(path, include_optimizer=False)`` (no
    ``optimizer_weights`` group; used where Adam's moments would triple the file).
    Returns the Keras float outputs (list, Keras order) and the reloaded model.
    """
    tf, keras, writer = ctx["tf"], ctx["keras"], ctx["writer"]
    t0 = time.time()
    xs, xc = [np.asarray(x, np.float32) for x in as_list(x_test)], \
        [np.asarray(x, np.float32) for x in as_list(x_calib)]
    in_names, out_names = keras_io_names(model)
    assert len(in_names) == len(xs), (in_names, len(xs))
    feed = xs[0] if len(xs) == 1 else xs
    kf = [np.asarray(o, np.float32) for o in as_list(model.predict(feed, verbose=0, batch_size=predict_batch))]
    assert len(kf) == len(out_names)
    for o in kf:
        assert np.all(np.isfinite(o)), name

    h5_path = os.path.join(HERE, name + ".h5")
    remove(h5_path)
    if include_optimizer:
        model.save(h5_path)
    else:
        model.save(h5_path, include_optimizer=False)
    assert os.path.getsize(h5_path) < size_limit, (h5_path, os.path.getsize(h5_path))
    reloaded = keras.models.load_model(h5_path, compile=False)
    again = [np.asarray(o) for o in as_list(reloaded.predict(feed, verbose=0, batch_size=predict_batch))]
    diff = max(float(np.abs(a - b).max()) for a, b in zip(again, kf))
    log(writer, f"{name}: reload max abs diff {diff:.3g}")
    assert diff <= 1e-6, f"{name}: reloaded model differs by {diff}"

    multi = len(xs) > 1 or len(kf) > 1
    sfx = (lambda k, i: f"{k}_{i}") if multi else (lambda k, i: k)
    npz = {}
    for i, (a, b) in enumerate(zip(xs, xc)):
        npz[sfx("x_test", i)] = a
        npz[sfx("x_calib", i)] = b
    if y_test is not None:
        if isinstance(y_test, dict):
            npz.update(y_test)
        else:
            npz["y_test"] = np.asarray(y_test, np.int64)
    for i, o in enumerate(kf):
        npz[sfx("keras_float", i)] = o
    npz["keras_input_names"] = np.array(in_names)
    npz["keras_output_names"] = np.array(out_names)

    tfl_path = os.path.join(HERE, name + ".tflite")
    remove(tfl_path)
    keep = [i for i, n in enumerate(out_names) if n not in tflite_drop_outputs]
    assert len(keep) == len(out_names) - len(tflite_drop_outputs), tflite_drop_outputs
    tmodel = model
    if tflite_drop_outputs:
        tmodel = keras.Model(model.inputs, [model.outputs[i] for i in keep])
        npz["tflite_dropped_outputs"] = np.array(list(tflite_drop_outputs))
        log(writer, f"{name}: outputs {list(tflite_drop_outputs)} left out of the TFLite model")
    try:
        tfl, how = convert_tflite(tf, tmodel, writer, xc, in_names)
    except Exception as exc:  # recorded, not fatal
        msg = f"{type(exc).__name__}: {exc}"
        lines = [ln for ln in msg.splitlines() if ln.strip()]
        short = "\n".join(lines[:12])
        log(writer, f"{name}: TFLITE CONVERSION FAILED: {short[:600]}")
        npz["tflite_error"] = np.str_(short)
        tfl = None
    if tfl is not None:
        with open(tfl_path, "wb") as f:
            f.write(tfl)
        ins, outs, ikeys, okeys, mapping = tflite_io_map(
            tf, tfl, in_names, [out_names[i] for i in keep], [x.shape[1:] for x in xs],
            [kf[i].shape[1:] for i in keep])
        kernels = "BUILTIN_REF"
        try:
            xq, raw = run_tflite(tf, tfl, xs, ins, outs, kernels)
        except (ValueError, RuntimeError) as exc:
            # the reference op resolver lacks a few int8 kernels (e.g. ELU): fall back to the
            # optimized builtin kernels without delegate, and record it
            npz["tflite_ref_error"] = np.str_(str(exc).splitlines()[0])
            log(writer, f"{name}: BUILTIN_REF cannot run this model ({str(exc).splitlines()[0]}); "
                        f"using BUILTIN_WITHOUT_DEFAULT_DELEGATES")
            kernels = "BUILTIN_WITHOUT_DEFAULT_DELEGATES"
            xq, raw = run_tflite(tf, tfl, xs, ins, outs, kernels)
        _, raw_auto = run_tflite(tf, tfl, xs, ins, outs, "AUTO")
        ndiff = sum(int(np.sum(a != b)) for a, b in zip(raw, raw_auto))
        maxd = max(int(np.abs(a.astype(np.int16) - b).max()) for a, b in zip(raw, raw_auto))
        log(writer, f"{name}: tflite via {how}, {len(tfl)} bytes; {mapping}; default interpreter "
                    f"(XNNPACK) vs {kernels}: {ndiff} differing int8 outputs, max |diff| {maxd}")
        for i, (q, d) in enumerate(zip(xq, ins)):
            s, z = d["quantization"]
            npz[sfx("tflite_input_int8", i)] = q
            npz[sfx("tflite_input_scale", i)] = np.float32(s)
            npz[sfx("tflite_input_zero_point", i)] = np.int64(z)
        for i, r, d in zip(keep, raw, outs):
            s, z = d["quantization"]
            deq = ((r.astype(np.float32) - np.float32(z)) * np.float32(s)).astype(np.float32)
            npz[sfx("tflite_int8", i)] = deq
            npz[sfx("tflite_int8_raw", i)] = r
            npz[sfx("tflite_output_scale", i)] = np.float32(s)
            npz[sfx("tflite_output_zero_point", i)] = np.int64(z)
            log(writer, f"{name}: output {i} ({out_names[i]}): SQNR tflite int8 vs keras float "
                        f"{sqnr_db(kf[i], deq):.2f} dB")
        npz["tflite_input_names"] = np.array([d["name"] for d in ins])
        tnames, tkeys = [""] * len(kf), [""] * len(kf)
        for i, d, k in zip(keep, outs, okeys):
            tnames[i], tkeys[i] = d["name"], k
        npz["tflite_output_names"] = np.array(tnames)
        npz["tflite_input_signature_keys"] = np.array(ikeys)
        npz["tflite_output_signature_keys"] = np.array(tkeys)
        npz["tflite_io_mapping"] = np.str_(mapping)
        npz["tflite_converter"] = np.str_(how)
        npz["tflite_kernels"] = np.str_(kernels)
        npz["tflite_xnnpack_vs_ref_ndiff"] = np.int64(ndiff)
    npz.update(extra or {})
    npz["writer"] = np.str_(writer)
    npz["keras_version"] = np.str_(ctx["keras_version"])
    npz["tf_version"] = np.str_(tf.__version__)
    npz_path = os.path.join(HERE, name + ".npz")
    np.savez_compressed(npz_path, **npz)
    for p in (npz_path, tfl_path):
        if os.path.exists(p):
            assert os.path.getsize(p) < size_limit, (p, os.path.getsize(p))
    log(writer, f"{name}: done in {time.time() - t0:.1f} s (h5 {file_size(h5_path)} B, "
                f"npz {file_size(npz_path)} B, tflite {file_size(tfl_path)} B)")
    return kf, reloaded
