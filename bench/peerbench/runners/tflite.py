"""TensorFlow Lite: the fixture's int8 .tflite in the three interpreters of catalog.TFLITE_KINDS
(XNNPACK, builtin, reference kernels), from `tensorflow`, `ai_edge_litert` or `tflite_runtime`;
for a recurrent fixture without an int8 .tflite, a FLOAT .tflite converted at run time; and
TFLite's 16x8 mode (int16 activations, int8 weights; issue 19), converted at run time. Both
conversions run in a child process (the converter kills its process on some recurrent
models)."""
import importlib.util
import os
import pathlib
import sys
import tempfile
import warnings

import numpy as np

from ..catalog import MODELS_DIR, TFLITE_16X8_KINDS, TFLITE_FLOAT_KINDS, TFLITE_KINDS
from ..text import first_line
from .base import Runner, Unavailable, import_tensorflow, module_version
from .children import read_spec, run_child, write_spec


def tflite_interpreter_api(which, threads):
    """(Interpreter class, OpResolverType, where it came from)."""
    order = ["tensorflow", "ai_edge_litert", "tflite_runtime"] if which == "auto" else [which]
    missing = []
    for source in order:
        try:
            if source == "tensorflow":
                tf = import_tensorflow(threads)
                warnings.filterwarnings("ignore", message=r".*tf.lite.Interpreter is deprecated")
                return (tf.lite.Interpreter, tf.lite.experimental.OpResolverType,
                        f"tensorflow {tf.__version__}")
            if source == "ai_edge_litert":
                from ai_edge_litert import interpreter as lit
            else:
                from tflite_runtime import interpreter as lit
            return lit.Interpreter, lit.OpResolverType, f"{source} {module_version(source)}"
        except (ImportError, Unavailable):
            missing.append(source)
    raise Unavailable("not installed (" + ", ".join(missing) + ")")


def tflite_runners(m, want, which, threads, model=None, xs=None, kinds=TFLITE_KINDS):
    """The TFLite runners of `kinds` on `model` (a path or the .tflite's bytes; default the
    fixture's int8 .tflite, fed `xs`, default its int8 test inputs). Returns (made, failed):
    failed = [(key, label, why)] for a kind that does not build or run (the reference kernels
    lack an op, say); a missing interpreter raises Unavailable.

    A recurrent fixture's .tflite is a batch-1 function whose fused sequence ops
    (UNIDIRECTIONAL_SEQUENCE_LSTM) keep their state in variable tensors across invoke():
    one call runs its samples one by one, each after interpreter.reset_all_variables()."""
    if model is None:
        if not m.tflite.exists() or m.tflite_x is None:
            if m.tflite_error is not None:
                raise Unavailable("no int8 .tflite (the fixture's converter failed: "
                                  + first_line(m.tflite_error) + ")")
            raise Unavailable(f"no {m.tflite.name} / tflite_input_int8 next to {m.h5.name}")
        model, xs = m.tflite, m.tflite_x
    Interpreter, OpResolverType, source = tflite_interpreter_api(which, threads)
    src = ({"model_content": model} if isinstance(model, (bytes, bytearray))
           else {"model_path": str(model)})
    made, failed = [], []
    for key, label, resolver, how in kinds:
        if key not in want:
            continue
        kw = {} if resolver is None else {
            "experimental_op_resolver_type": getattr(OpResolverType, resolver)}
        try:
            calls, out_q, seq = _interpreter_calls(m, xs, lambda: Interpreter(
                num_threads=threads, **src, **kw))
        except Exception as e:  # noqa: BLE001 - a kind that cannot run is reported
            failed.append((key, label, f"failed: {type(e).__name__}: {first_line(str(e))}"))
            continue
        how_call = ("per sample: reset_all_variables + set_tensor + invoke + get_tensor"
                    if seq else "set_tensor + invoke + get_tensor")
        made.append(Runner(key, label, calls, f"{source}, {how}; {how_call}", out_q))
    return made, failed


def _interpreter_calls(m, xs, make_interpreter):
    """One interpreter per batch size of `m`, fed xs[batch]: (batch -> call, the outputs'
    (scale, zero point), whether a call runs sample by sample). A recurrent fixture's call is
    run once here: the fixture's converter output must run in this TFLite."""
    calls, out_q, seq = {}, None, False
    for n in m.batches:
        interp = make_interpreter()
        inp = interp.get_input_details()[0]
        outs = _tflite_output_order(interp)
        x = xs[n]
        seq = m.kind == "rnn" and int(inp["shape"][0]) == 1
        if seq:
            interp.allocate_tensors()
            calls[n] = _tflite_seq_call(interp, inp["index"], [d["index"] for d in outs], x)
        else:
            if tuple(inp["shape"]) != x.shape:
                interp.resize_tensor_input(inp["index"], list(x.shape))
            interp.allocate_tensors()
            calls[n] = _tflite_call(interp, inp["index"], outs[0]["index"], x)
        qs = [(float(d["quantization"][0]), int(d["quantization"][1]))
              if d["quantization"][0] else None for d in outs]
        out_q = qs[0] if len(qs) == 1 else qs
    if m.kind == "rnn":
        calls[m.timed[0]]()
    return calls, out_q, seq


def _tflite_output_order(interp):
    """Output details in the model's output order: by signature key (out_00, out_01, ... of
    a function converted here) where the signature names them so, else as the interpreter
    lists them."""
    details = interp.get_output_details()
    if len(details) == 1:
        return details
    try:
        sig = interp.get_signature_runner().get_output_details()
    except Exception:  # noqa: BLE001 - no (single) signature: the interpreter's order
        return details
    if sorted(sig) != [f"out_{i:02d}" for i in range(len(details))]:
        return details
    by_index = {d["index"]: d for d in details}
    return [by_index[sig[k]["index"]] for k in sorted(sig)]


def _tflite_call(interp, in_index, out_index, x):
    set_tensor, invoke, get_tensor = interp.set_tensor, interp.invoke, interp.get_tensor

    def call():
        set_tensor(in_index, x)
        invoke()
        return get_tensor(out_index)
    return call


def _tflite_seq_call(interp, in_index, out_indices, x):
    """One call of a batch-1 recurrent model on the samples of `x`: each sample from a zero
    state (reset_all_variables), outputs stacked (a list for several outputs)."""
    reset, set_tensor = interp.reset_all_variables, interp.set_tensor
    invoke, get_tensor = interp.invoke, interp.get_tensor
    samples = [np.ascontiguousarray(x[i:i + 1]) for i in range(x.shape[0])]

    def call():
        ys = [[] for _ in out_indices]
        for xi in samples:
            reset()
            set_tensor(in_index, xi)
            invoke()
            for y, j in zip(ys, out_indices):
                y.append(get_tensor(j))
        res = [np.concatenate(y) for y in ys]
        return res[0] if len(res) == 1 else res
    return call


def tflite_float_runners(m, want, which, threads):
    """TFLite FLOAT of a recurrent fixture that has no int8 .tflite: the Keras model converted
    here (TFLiteConverter.from_concrete_functions of a batch-1 tf.function with the fixture's
    sequence length, no quantization), in a child process: the converter kills its process
    (SIGSEGV) on some recurrent models. Returns (made, failed) as tflite_runners."""
    tfl = convert_tflite_float(m, threads)
    made, failed = tflite_runners(m, want, which, threads, model=tfl, xs=m.x,
                                  kinds=TFLITE_FLOAT_KINDS)
    for r in made:
        r.note += ("; FLOAT .tflite converted at run time (the fixture's int8 conversion "
                   f"failed: {first_line(m.tflite_error, 160)})")
    return made, failed


def convert_tflite_float(m, threads):
    """The float .tflite bytes of fixture `m` (see tflite_float_runners)."""
    return convert_in_child(m, threads, "--tflite-float-child", "float",
                            {"shape": list(m.x[m.batches[0]].shape[1:]),
                             "int": bool(np.issubdtype(m.x_calib.dtype, np.integer))})


def convert_in_child(m, threads, option, what, spec, calib=None):
    """The .tflite bytes a child process (bench/peers.py `option`) converts from model `m`'s
    .h5 with `spec` (plus the model's name, file, output path and threads, and the path of
    `calib` saved as .npy when given); RuntimeError with the child's last error line when it
    fails or dies."""
    with tempfile.TemporaryDirectory(prefix="fixnet-peers-tfl-") as tmp:
        out = pathlib.Path(tmp) / f"{m.name}-{what}.tflite"
        spec = dict(spec, name=m.name, h5=str(m.h5), out=str(out), threads=threads)
        if calib is not None:
            spec["calib"] = str(pathlib.Path(tmp) / "calib.npy")
            np.save(spec["calib"], calib)
        spec = write_spec(pathlib.Path(tmp) / "spec.json", spec)
        env = dict(os.environ)
        if m.name.endswith("_tfk2"):        # tf.keras 2, as the fixture was written
            env["TF_USE_LEGACY_KERAS"] = "1"
        r = run_child(option, spec, env)
        if r.returncode != 0 or not out.exists():
            how = (f"killed by signal {-r.returncode}" if r.returncode < 0
                   else f"exit code {r.returncode}")
            tail = [ln for ln in r.stderr.splitlines() if ln.strip()
                    and not ln.startswith(("W0000", "I0000", "WARNING: All log"))
                    and "cuInit" not in ln]
            raise RuntimeError(f"TFLite {what} conversion {how}"
                               + (f": {tail[-1][:300]}" if tail else ""))
        return out.read_bytes()


def tflite_float_child(spec_path):
    """--tflite-float-child: convert one Keras model to a float .tflite (see
    tflite_float_runners); exits non-zero with the error on stderr when conversion fails (its
    last line is what the parent reports: "Unavailable: why" for a missing TensorFlow or
    Keras)."""
    import types

    from .keras_float import load_keras_model, serving_fn

    spec = read_spec(spec_path)
    try:
        tf = import_tensorflow(spec["threads"])
        model, _ = load_keras_model(types.SimpleNamespace(name=spec["name"],
                                                          h5=pathlib.Path(spec["h5"])),
                                    spec["threads"])
    except Unavailable as e:
        print(f"Unavailable: {e}", file=sys.stderr)
        return 1
    dtype = tf.int32 if spec["int"] else tf.float32
    fn = serving_fn(tf, model, [1] + spec["shape"], dtype)
    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], model)
    pathlib.Path(spec["out"]).write_bytes(conv.convert())
    return 0


def tflite_16x8_runners(m, want, which, threads):
    """TFLite 16x8 of model `m`: the Keras model converted here with the 16x8 recipe of
    models/make_tflite16x8_goldens.py (the fixture's calibration data, int16 codes in and out;
    a recurrent model from its unrolled copy, batch 1), in a child process; run with
    catalog.TFLITE_16X8_KINDS. Returns (made, failed) as tflite_runners."""
    if importlib.util.find_spec("tensorflow") is None:
        raise Unavailable("tensorflow not installed (the 16x8 model is converted at run time, "
                          "by TensorFlow's converter)")
    tfl = convert_in_child(m, threads, "--tflite-16x8-child", "16x8",
                           {"recurrent": m.kind == "rnn"}, calib=m.x_calib)
    Interpreter, _, _ = tflite_interpreter_api(which, threads)
    inp = Interpreter(model_content=tfl).get_input_details()[0]
    xs = {n: int16_codes(x, inp) for n, x in m.x.items()}
    made, failed = tflite_runners(m, want, which, threads, model=tfl, xs=xs,
                                  kinds=TFLITE_16X8_KINDS)
    for r in made:
        r.note += (f"; {len(tfl)} bytes, int16 in / int16 out"
                   + ("; converted from an unrolled copy, batch 1 (the recurrent layers do "
                      "not convert to 16x8 as they are)" if m.kind == "rnn" else ""))
    return made, failed


def int16_codes(x, detail):
    """`x` as the 16x8 model's input takes it: int16 codes (TFLite's QUANTIZE rounding, half
    away from zero), or token ids as they are for an integer input."""
    if detail["dtype"] != np.int16:
        return np.ascontiguousarray(x, detail["dtype"])
    scale, zp = detail["quantization"]
    v = np.asarray(x, np.float64) / scale
    q = np.sign(v) * np.floor(np.abs(v) + 0.5) + zp
    return np.ascontiguousarray(np.clip(q, -32768, 32767).astype(np.int16))


def tflite_16x8_child(spec_path):
    """--tflite-16x8-child: convert one Keras model with the 16x8 recipe (see
    tflite_16x8_runners); exits non-zero with the error on stderr when conversion fails."""
    import types

    from .keras_float import load_keras_model

    spec = read_spec(spec_path)
    try:
        tf = import_tensorflow(spec["threads"])
        model, which = load_keras_model(types.SimpleNamespace(name=spec["name"],
                                                              h5=pathlib.Path(spec["h5"])),
                                        spec["threads"])
    except Unavailable as e:
        print(f"Unavailable: {e}", file=sys.stderr)
        return 1
    sys.path.insert(0, str(MODELS_DIR))
    from make_tflite16x8_goldens import convert_16x8   # the goldens' recipe, one place

    calib = np.load(spec["calib"])
    # a recurrent model converts only from its unrolled copy (make_tflite16x8_goldens.py)
    tfl, _ = convert_16x8(tf, model, calib, "unrolled" if spec["recurrent"] else "keras",
                          which.startswith("keras "), int16_io=True)
    pathlib.Path(spec["out"]).write_bytes(tfl)
    return 0
