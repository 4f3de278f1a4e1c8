#!/usr/bin/env python
"""Time fixnet against its peers on the same models, in one run, on one machine.

    python bench/peers.py                         # every models/mlp_*.h5, batch 1 and 256
    python bench/peers.py --models mlp_seq_k3 --rounds 100 --json peers.json
    python bench/peers.py --quick                 # a smoke run (few rounds)

What is timed (one predict call each, inputs already in memory):

  fixnet int8            qm.predict(x_q, output="int8"): int8 in, int8 out.  THE BASELINE.
  fixnet int8, float io  qm.predict(x): float32 in, quantize, int8 kernels, dequantize, float32 out
  fixnet float ref       fm.predict(x): fixnet's NumPy float reference executor
  TFLite XNNPACK         the committed int8 .tflite, default interpreter (XNNPACK delegate);
                         set_tensor(int8) + invoke + get_tensor(int8)
  TFLite reference       the same with OpResolverType.BUILTIN_REF (TFLite's reference kernels)
  Keras float            the .h5 in the Keras that wrote it (keras 3 for *_k3, tf_keras for
                         *_tfk2): the fastest of model(x, training=False), predict_on_batch(x)
                         and a tf.function around model(x, training=False); the table says which
  ONNX Runtime float     tf2onnx of the Keras model (float32 in/out), CPUExecutionProvider
  ONNX Runtime int8      tf2onnx of the .tflite (QDQ graph, int8 in/out), CPUExecutionProvider

Peers that are not installed are listed as such; nothing is required but fixnet, numpy and rich.
TFLite comes from `tensorflow` if it imports, else `ai_edge_litert`, else `tflite_runtime`
(`--tflite` picks one). TensorFlow is imported only for the peers, never by fixnet.

Method: for each model and batch size, every runner is warmed up, then timed in rounds; in each
round every runner runs once (a sample = enough back-to-back calls to last --sample-ms, divided
by their number), in an order rotated each round (A,B,C / B,C,A / ...), so drift and the
other tenants of a shared machine hit all runners alike. Reported: the median per-call time
over rounds, and the ratio to fixnet int8 = the median over rounds of (runner sample / fixnet
int8 sample of the same round). Ratio > 1: slower than fixnet int8. Every runtime is limited to
--threads threads (default 1: fixnet's kernels are single-threaded).
"""
import argparse
import datetime
import os
import pathlib
import platform
import statistics
import sys
import time
import warnings

REPO = pathlib.Path(__file__).resolve().parent.parent
MODELS_DIR = REPO / "models"
BASELINE = "fixnet_int8"
RUNNER_KEYS = ["fixnet_int8", "fixnet_int8_float_io", "fixnet_float", "tflite_xnnpack",
               "tflite_ref", "keras", "ort_float", "ort_int8"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Runner keys for --only/--skip: " + ", ".join(RUNNER_KEYS))
    p.add_argument("--models", nargs="+", default=None,
                   help="model names in models/ (e.g. mlp_seq_k3) or paths to .h5 files; "
                        "default: every models/mlp_*.h5")
    p.add_argument("--batches", nargs="+", type=int, default=[1, 256])
    p.add_argument("--rounds", type=int, default=300, help="timed rounds per model and batch")
    p.add_argument("--sample-ms", type=float, default=2.0,
                   help="each sample repeats a call until it lasts about this long")
    p.add_argument("--warmup", type=int, default=20, help="untimed calls per runner first")
    p.add_argument("--threads", type=int, default=1,
                   help="threads for every runtime (TFLite, TF/Keras, ONNX Runtime, BLAS)")
    p.add_argument("--tflite", choices=["auto", "tensorflow", "ai_edge_litert", "tflite_runtime"],
                   default="auto", help="where the TFLite interpreter comes from")
    p.add_argument("--only", default="",
                   help="comma-separated runner keys to run (plus the baseline)")
    p.add_argument("--skip", default="", help="comma-separated runner keys to leave out")
    p.add_argument("--quick", action="store_true", help="smoke run: 15 rounds, 0.5 ms samples")
    p.add_argument("--json", metavar="PATH", help="also write every number to this JSON file")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.sample_ms, args.warmup = 15, 0.5, 5
    for opt in ("only", "skip"):
        keys = [k for k in getattr(args, opt).split(",") if k]
        unknown = sorted(set(keys) - set(RUNNER_KEYS))
        if unknown:
            p.error(f"--{opt}: unknown runner key(s) {unknown}; known: {RUNNER_KEYS}")
        setattr(args, opt, keys)
    if BASELINE in args.skip:
        p.error(f"--skip: {BASELINE} is the baseline every ratio is taken against")
    return args


ARGS = parse_args() if __name__ == "__main__" else None

# Thread limits must be in the environment before numpy / TensorFlow start their pools.
if ARGS is not None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(ARGS.threads))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

try:
    import fixnet  # noqa: F401 - the installed package (pip install .)
except ImportError:
    # An in-place build (python setup.py build_ext --inplace) in this checkout.
    sys.path.insert(0, str(REPO))


# ---------------------------------------------------------------------------------------------
# Runners: each is a zero-argument callable per batch size that runs one predict and returns
# its output as a NumPy array. Building one may fail; that failure is reported, not raised.
# ---------------------------------------------------------------------------------------------
class Unavailable(Exception):
    """A peer that cannot run here (not installed, conversion failed, ...)."""


class Runner:
    def __init__(self, key, label, calls, note=""):
        self.key = key
        self.label = label
        self.calls = calls        # batch -> zero-argument callable returning an array
        self.note = note


class ModelInputs:
    """One fixture model's inputs at each batch size (test samples, cycled if needed)."""

    def __init__(self, h5_path, batches):
        self.name = h5_path.stem
        self.h5 = h5_path
        self.tflite = h5_path.with_suffix(".tflite")
        data = np.load(h5_path.with_suffix(".npz"))
        x_test = np.ascontiguousarray(data["x_test"], np.float32)
        idx = {n: np.arange(n) % x_test.shape[0] for n in batches}
        self.x = {n: np.ascontiguousarray(x_test[i]) for n, i in idx.items()}
        self.keras_top1 = {n: data["keras_float"][i].argmax(axis=1) for n, i in idx.items()}
        self.tflite_x = ({n: np.ascontiguousarray(data["tflite_input_int8"][i])
                          for n, i in idx.items()} if "tflite_input_int8" in data else None)


def fixnet_runners(m, batches):
    import fixnet

    fm = fixnet.load(str(m.h5))
    qm = fm.quantize(np.load(m.h5.with_suffix(".npz"))["x_calib"])
    xq = {n: np.ascontiguousarray(qm.input_qparams[0].quantize(x)) for n, x in m.x.items()}

    def bind(f, *a, **kw):
        return lambda: f(*a, **kw)

    return [
        Runner("fixnet_int8", "fixnet int8 (int8 in/out)",
               {n: bind(qm.predict, xq[n], output="int8") for n in batches},
               "qm.predict(x_q, output='int8')"),
        Runner("fixnet_int8_float_io", "fixnet int8 (float in/out)",
               {n: bind(qm.predict, m.x[n]) for n in batches}, "qm.predict(x)"),
        Runner("fixnet_float", "fixnet float reference (NumPy)",
               {n: bind(fm.predict, m.x[n]) for n in batches}, "fm.predict(x)"),
    ]


_TF = None


def import_tensorflow(threads):
    """TensorFlow for the peers, with its thread pools sized before anything runs."""
    global _TF
    if _TF is None:
        try:
            import tensorflow as tf
        except ImportError as e:
            raise Unavailable(f"tensorflow not installed ({e.name})") from None
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:      # already initialised by someone else: keep its settings
            pass
        _TF = tf
    return _TF


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
                return lit.Interpreter, lit.OpResolverType, "ai_edge_litert"
            from tflite_runtime import interpreter as lit
            return lit.Interpreter, lit.OpResolverType, "tflite_runtime"
        except (ImportError, Unavailable):
            missing.append(source)
    raise Unavailable("not installed (" + ", ".join(missing) + ")")


def tflite_runners(m, batches, which, threads):
    if not m.tflite.exists() or m.tflite_x is None:
        raise Unavailable(f"no {m.tflite.name} / tflite_input_int8 next to {m.h5.name}")
    Interpreter, OpResolverType, source = tflite_interpreter_api(which, threads)
    out = []
    for key, label, kw in [
        ("tflite_xnnpack", "TFLite int8, XNNPACK (default)", {}),
        ("tflite_ref", "TFLite int8, reference kernels",
         {"experimental_op_resolver_type": OpResolverType.BUILTIN_REF}),
    ]:
        calls = {}
        for n in batches:
            interp = Interpreter(model_path=str(m.tflite), num_threads=threads, **kw)
            inp = interp.get_input_details()[0]
            outp = interp.get_output_details()[0]
            x = m.tflite_x[n]
            if tuple(inp["shape"]) != x.shape:
                interp.resize_tensor_input(inp["index"], list(x.shape))
            interp.allocate_tensors()
            calls[n] = _tflite_call(interp, inp["index"], outp["index"], x)
        out.append(Runner(key, label, calls, f"{source}; set_tensor + invoke + get_tensor"))
    return out


def _tflite_call(interp, in_index, out_index, x):
    set_tensor, invoke, get_tensor = interp.set_tensor, interp.invoke, interp.get_tensor

    def call():
        set_tensor(in_index, x)
        invoke()
        return get_tensor(out_index)
    return call


def load_keras_model(m, threads):
    """The .h5 in the Keras that wrote it (keras 3 for *_k3, tf_keras for *_tfk2), or the
    other one if that is missing or cannot read it. Returns (model, 'keras x.y.z')."""
    import_tensorflow(threads)
    prefer = ["tf_keras", "keras"] if m.name.endswith("_tfk2") else ["keras", "tf_keras"]
    errors = []
    for modname in prefer:
        try:
            lib = __import__(modname)
        except ImportError:
            errors.append(f"{modname} not installed")
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = lib.models.load_model(str(m.h5), compile=False)
            return model, f"{modname} {lib.__version__}"
        except Exception as e:  # noqa: BLE001 - any loader failure means "try the other"
            first_line = (str(e).splitlines() or [""])[0][:80]
            errors.append(f"{modname}: {type(e).__name__}: {first_line}")
    raise Unavailable("; ".join(errors))


def keras_runner(m, batches, threads, warmup):
    tf = import_tensorflow(threads)
    model, which = load_keras_model(m, threads)
    spec = tf.TensorSpec((None,) + tuple(m.x[batches[0]].shape[1:]), tf.float32)
    graph_fn = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    candidates = {
        "model(x, training=False)": lambda x: np.asarray(model(x, training=False)),
        "predict_on_batch(x)": lambda x: np.asarray(model.predict_on_batch(x)),
        "tf.function(model)": lambda x: np.asarray(graph_fn(x)),
    }
    calls, chosen, trials = {}, {}, {}
    for n in batches:
        x = m.x[n]
        best = None
        for name, f in candidates.items():
            call = (lambda f, x: lambda: f(x))(f, x)
            for _ in range(max(3, warmup // 4)):
                call()
            t = [_time_calls(call, 1) for _ in range(15)]
            trials[(n, name)] = statistics.median(t)
            if best is None or trials[(n, name)] < trials[(n, best[0])]:
                best = (name, call)
        chosen[n] = best[0]
        calls[n] = best[1]
    note = which + "; fastest of: " + "; ".join(
        f"b{n}: " + ", ".join(f"{name} {trials[(n, name)] * 1e6:.0f} us" for name in candidates)
        for n in batches)
    if len(set(chosen.values())) == 1:
        label = f"Keras float, {chosen[batches[0]]}"
    else:
        label = "Keras float, " + ", ".join(f"b{n}: {chosen[n]}" for n in batches)
    r = Runner("keras", label, calls, note)
    r.chosen = chosen
    return r


def onnx_runners(m, batches, threads, want):
    try:
        import onnxruntime as ort
        import tf2onnx
    except ImportError as e:
        raise Unavailable(f"not installed ({e.name}); pip install onnxruntime tf2onnx") from None
    import logging
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    tf = import_tensorflow(threads)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    made, failed = [], []

    def session(model_proto):
        return ort.InferenceSession(model_proto.SerializeToString(), opts,
                                    providers=["CPUExecutionProvider"])

    def runs(sess, xs):
        name = sess.get_inputs()[0].name
        return {n: (lambda x: lambda: sess.run(None, {name: x})[0])(xs[n]) for n in batches}

    if "ort_float" in want:
        try:
            model, which = load_keras_model(m, threads)
            shape = (None,) + tuple(m.x[batches[0]].shape[1:])
            spec = (tf.TensorSpec(shape, tf.float32, name="x"),)
            fn = tf.function(lambda x: model(x, training=False))
            proto, _ = tf2onnx.convert.from_function(fn, input_signature=spec, opset=17)
            made.append(Runner("ort_float", "ONNX Runtime float", runs(session(proto), m.x),
                               f"onnxruntime {ort.__version__}; tf2onnx {tf2onnx.__version__} "
                               f"from_function of the {which} model, opset 17"))
        except Unavailable as e:
            failed.append(("ort_float", "ONNX Runtime float", str(e)))
        except Exception as e:  # noqa: BLE001 - a converter failure is a result, not a crash
            failed.append(("ort_float", "ONNX Runtime float", f"failed: {type(e).__name__}: {e}"))
    if "ort_int8" in want:
        try:
            if not m.tflite.exists() or m.tflite_x is None:
                raise Unavailable(f"no {m.tflite.name}")
            proto, _ = tf2onnx.convert.from_tflite(str(m.tflite), opset=17)
            made.append(Runner("ort_int8", "ONNX Runtime int8 (QDQ from .tflite)",
                               runs(session(proto), m.tflite_x),
                               f"onnxruntime {ort.__version__}; tf2onnx {tf2onnx.__version__} "
                               f"from_tflite, opset 17"))
        except Unavailable as e:
            failed.append(("ort_int8", "ONNX Runtime int8 (QDQ from .tflite)", str(e)))
        except Exception as e:  # noqa: BLE001
            failed.append(("ort_int8", "ONNX Runtime int8 (QDQ from .tflite)",
                           f"failed: {type(e).__name__}: {e}"))
    return made, failed


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------
def _time_calls(call, n):
    """Seconds per call over n back-to-back calls."""
    t0 = time.perf_counter_ns()
    for _ in range(n):
        call()
    return (time.perf_counter_ns() - t0) / n * 1e-9


def measure(runners, batch, rounds, sample_s, warmup):
    """Interleaved timing of every runner at one batch size.

    Returns key -> list of per-call seconds, one per round (same length for every runner)."""
    keys = [r.key for r in runners]
    calls = {r.key: r.calls[batch] for r in runners}
    inner = {}
    for k in keys:
        for _ in range(warmup):
            calls[k]()
        est = statistics.median(_time_calls(calls[k], 1) for _ in range(7))
        inner[k] = max(1, int(sample_s / max(est, 1e-7)))
    samples = {k: [] for k in keys}
    # The garbage collector stays on, as in real use; its pauses are rare and the median
    # ignores them (forcing gc.collect() between samples made TensorFlow's calls 2x slower).
    for r in range(rounds):
        order = keys[r % len(keys):] + keys[:r % len(keys)]
        for k in order:
            samples[k].append(_time_calls(calls[k], inner[k]))
    return samples, inner


def summarize(samples, inner):
    base = samples.get(BASELINE)
    stats = {}
    for k, s in samples.items():
        q = np.percentile(s, [25, 50, 75])
        st = {"median_us": q[1] * 1e6, "p25_us": q[0] * 1e6, "p75_us": q[2] * 1e6,
              "calls_per_sample": inner[k], "rounds": len(s)}
        if base is not None:
            st["ratio"] = float(np.median(np.asarray(s) / np.asarray(base)))
            st["ratio_of_medians"] = float(q[1] / np.median(base))
        stats[k] = st
    return stats


def top1_agreement(runner, m, batch):
    y = np.asarray(runner.calls[batch]())
    y = y.reshape(y.shape[0], -1)
    return float(np.mean(y.argmax(axis=1) == m.keras_top1[batch]))


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------
def machine_info(threads):
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "Model")):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    for mod in ("fixnet", "tensorflow", "keras", "tf_keras", "onnxruntime", "tf2onnx",
                "ai_edge_litert", "tflite_runtime"):
        if mod in sys.modules:
            versions[mod] = getattr(sys.modules[mod], "__version__", "?")
    import fixnet
    import fixnet._kernels as kernels
    return {"date": datetime.date.today().isoformat(), "cpu": cpu,
            "machine": platform.machine(), "cores": os.cpu_count(), "threads": threads,
            "platform": platform.platform(), "fixnet_path": os.path.dirname(fixnet.__file__),
            # which kernel build ran (fixnet._kernels: baseline, avx2, avx512vnni, dotprod;
            # FIXNET_ISA forces one) and which builds this install has for this CPU
            "fixnet_isa": getattr(kernels, "ISA", "baseline"),
            "fixnet_builds": (kernels.available_builds()
                              if hasattr(kernels, "available_builds") else ["baseline"]),
            "versions": versions}


def fmt_us(us):
    if us >= 1000:
        return f"{us / 1000:.2f} ms"
    return f"{us:.1f} us" if us >= 10 else f"{us:.2f} us"


def fmt_ratio(r):
    return f"{r:.2f}x" if r < 10 else f"{r:.0f}x" if r >= 100 else f"{r:.1f}x"


def print_report(console, results, batches):
    from rich.table import Table
    from rich import box

    for model, res in results["models"].items():
        t = Table(title=f"{model}: median time per predict call; ratio = time / fixnet int8 "
                        "(same round), >1 = slower than fixnet int8",
                  box=box.SIMPLE_HEAVY, title_justify="left")
        t.add_column("runtime")
        for n in batches:
            t.add_column(f"batch {n}", justify="right")
            t.add_column(f"x fixnet int8 (b{n})", justify="right")
        t.add_column(f"top-1 = Keras (b{max(batches)})", justify="right")
        for key, r in res["runners"].items():
            if r["status"] != "ok":
                blank = [""] * (2 * len(batches))
                t.add_row(r["label"], "[dim]" + r["status"] + "[/dim]", *blank)
                continue
            cells = []
            for n in batches:
                st = r["batches"][str(n)]
                cells += [fmt_us(st["median_us"]),
                          "[bold]1[/bold]" if key == BASELINE else fmt_ratio(st["ratio"])]
            agree = r.get("top1_agree_keras")
            t.add_row(r["label"], *cells, "" if agree is None else f"{agree:.3f}")
        console.print(t)
        for key, r in res["runners"].items():
            if r.get("note"):
                console.print(f"  [dim]{key}: {r['note']}[/dim]")
        console.print()

    # One line per runner, one column per model: the ratios side by side.
    t = Table(title="Ratio to fixnet int8 (int8 in/out), per model: "
                    + " | ".join(f"batch {n}" for n in batches),
              box=box.SIMPLE_HEAVY, title_justify="left")
    t.add_column("runtime")
    models = list(results["models"])
    for model in models:
        t.add_column(model, justify="right")
    for key in RUNNER_KEYS:
        row, label = [], None
        for model in models:
            r = results["models"][model]["runners"].get(key)
            if r is None:
                row.append("")
                continue
            label = label or ("Keras float (fastest call)" if key == "keras" else r["label"])
            if r["status"] != "ok":
                row.append(r["status"] if r["status"] == "not installed" else "n/a")
            else:
                row.append(" | ".join(fmt_ratio(r["batches"][str(n)]["ratio"]) for n in batches))
        if label:
            t.add_row(label, *row)
    console.print(t)


# ---------------------------------------------------------------------------------------------
def model_paths(names):
    if not names:
        return sorted(MODELS_DIR.glob("mlp_*.h5"))
    out = []
    for name in names:
        p = pathlib.Path(name)
        if p.suffix != ".h5":
            p = MODELS_DIR / f"{name}.h5"
        if not p.exists():
            sys.exit(f"peers.py: no model file {p}")
        out.append(p)
    return out


def main(args):
    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else 160)
    batches = sorted(set(args.batches))
    want = [k for k in RUNNER_KEYS
            if (not args.only or k in args.only or k == BASELINE) and k not in args.skip]
    results = {"settings": {"batches": batches, "rounds": args.rounds, "sample_ms": args.sample_ms,
                            "warmup": args.warmup, "threads": args.threads, "baseline": BASELINE,
                            "command": " ".join([os.path.basename(sys.executable)] + sys.argv)},
               "models": {}}
    labels = {"fixnet_int8": "fixnet int8 (int8 in/out)", "tflite_xnnpack": "TFLite int8, XNNPACK",
              "tflite_ref": "TFLite int8, reference kernels", "keras": "Keras float",
              "ort_float": "ONNX Runtime float", "ort_int8": "ONNX Runtime int8 (QDQ from .tflite)"}

    for h5 in model_paths(args.models):
        console.print(f"[bold]{h5.stem}[/bold]: building runners ...")
        m = ModelInputs(h5, batches)
        runners, status = [], {}

        def attempt(keys, build):
            keys = [k for k in keys if k in want]
            if not keys:
                return
            try:
                made = build()
            except Unavailable as e:
                for k in keys:
                    status[k] = (labels.get(k, k), str(e))
                return
            except Exception as e:  # noqa: BLE001 - a broken peer is reported, not fatal
                for k in keys:
                    status[k] = (labels.get(k, k), f"failed: {type(e).__name__}: {e}")
                return
            made = made if isinstance(made, list) else [made]
            runners.extend(r for r in made if r.key in want)

        attempt(["fixnet_int8", "fixnet_int8_float_io", "fixnet_float"],
                lambda: fixnet_runners(m, batches))
        attempt(["tflite_xnnpack", "tflite_ref"],
                lambda: tflite_runners(m, batches, args.tflite, args.threads))
        attempt(["keras"], lambda: keras_runner(m, batches, args.threads, args.warmup))

        def onnx():
            made, failed = onnx_runners(m, batches, args.threads, want)
            for k, label, why in failed:
                status[k] = (label, why)
            return made
        attempt(["ort_float", "ort_int8"], onnx)

        if not any(r.key == BASELINE for r in runners):
            sys.exit(f"peers.py: fixnet itself failed on {h5.name}: {status.get(BASELINE)}")

        per_batch = {}
        for n in batches:
            console.print(f"  batch {n}: {len(runners)} runners x {args.rounds} interleaved rounds")
            with _blas_limit(args.threads):
                samples, inner = measure(runners, n, args.rounds, args.sample_ms / 1000,
                                         args.warmup)
            per_batch[n] = summarize(samples, inner)

        out = {}
        for key in RUNNER_KEYS:
            r = next((r for r in runners if r.key == key), None)
            if r is not None:
                entry = {"label": r.label, "status": "ok", "note": r.note,
                         "batches": {str(n): per_batch[n][key] for n in batches},
                         "top1_agree_keras": top1_agreement(r, m, max(batches))}
                if hasattr(r, "chosen"):
                    entry["keras_method"] = {str(n): v for n, v in r.chosen.items()}
                out[key] = entry
            elif key in status:
                label, why = status[key]
                short = "not installed" if why.startswith("not installed") or \
                    why.startswith("tensorflow not installed") else why
                out[key] = {"label": label, "status": short, "note": why}
        results["models"][m.name] = {"runners": out}

    results["machine"] = machine_info(args.threads)
    console.print()
    console.print(f"[bold]fixnet peers[/bold], {results['machine']['date']}, "
                  f"{results['machine']['cpu']} ({results['machine']['cores']} cores), "
                  f"{args.threads} thread(s) per runtime, {args.rounds} rounds; "
                  f"fixnet from {results['machine']['fixnet_path']}, kernels built for "
                  f"{results['machine']['fixnet_isa']} (of {results['machine']['fixnet_builds']};"
                  f" FIXNET_ISA forces one)")
    versions = results["machine"]["versions"]
    console.print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    console.print()
    print_report(console, results, batches)
    if args.json:
        import json
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
        console.print(f"wrote {args.json}")


class _blas_limit:
    """Limit NumPy's BLAS pool (fixnet's float reference) like the other runtimes' threads."""

    def __init__(self, threads):
        self.threads = threads
        self.ctx = None

    def __enter__(self):
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:       # then only the *_NUM_THREADS variables set above apply
            return self
        self.ctx = threadpool_limits(limits=self.threads, user_api="blas")
        return self

    def __exit__(self, *exc):
        if self.ctx is not None:
            self.ctx.__exit__(*exc)


if __name__ == "__main__":
    main(ARGS)
