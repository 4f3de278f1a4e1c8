#!/usr/bin/env python
"""Time fixnet against its peers on the same models, in one run, on one machine.

    python bench/peers.py                          # every CNN and MLP fixture + the layer benches
    python bench/peers.py --models 'resnet*' mlp_seq_k3 --micro none --rounds 100
    python bench/peers.py --quick                  # a smoke run (few rounds)
    python bench/peers.py --json r.json --markdown r.md   # the table bench/README.md keeps
    python bench/peers.py --models rnn --micro none --float   # the 20 recurrent fixtures

What is timed (one predict call each, inputs already in memory, int8 in and int8 out):

  fixnet int8            qm.predict(x_q, output="int8").  THE BASELINE of every ratio.
  TFLite XNNPACK         the committed int8 .tflite, default interpreter (XNNPACK delegate);
                         set_tensor(int8) + invoke + get_tensor(int8)
  TFLite builtin         the same with OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES: TFLite's
                         optimised builtin kernels (ruy / gemmlowp), no delegate
  TFLite reference       the same with OpResolverType.BUILTIN_REF: TFLite's reference kernels,
                         for scale only (no one deploys them; no bar is taken against them)
  ONNX Runtime int8      tf2onnx from_tflite of the same .tflite (a QDQ graph, int8 in/out),
                         CPUExecutionProvider (ONNX Runtime fuses QDQ into QLinear* kernels)
  with --float, also:    fixnet int8 with float in/out, fixnet's NumPy float reference, Keras
                         float (fastest of three call styles) and ONNX Runtime float (tf2onnx of
                         the Keras model)

Models: every CNN fixture and every MLP fixture in models/ (both writers, *_k3 and *_tfk2), or
--models (names, families such as mlp_seq, groups cnn / mlp / rnn / zoo, shell patterns or .h5
paths).

The bench model zoo (issue 17; --models zoo, or zoo_emotion, zoo_mnv2 (both writers), 'zoo_*',
...): bench/zoo.py's Keras stand-ins for the model files issue 17 timed (same architectures and
MACs, weights not trained on real data, synthetic inputs), kept in the git-ignored bench/zoo/ in
the fixtures' .h5 / .tflite / .npz layout. A zoo model that is not there yet (or was made by an
older recipe) is built first, in a child process of this Python (TensorFlow needed for that
only); one that cannot be built is skipped, with the reason. Zoo models get tables of their own
and issue 17's bars (fixnet <= TFLite builtin on every model, geometric mean of fixnet / XNNPACK
<= 1, no model above 1.25x XNNPACK), apart from issue 9's, which stay on the fixtures.

Recurrent fixtures (issue 11; --models rnn or 'rnn_*', not in the default set): the same runners,
with these differences. A fixnet int8 failure (quantize() raising UnsupportedLayerError before
fixnet runs recurrent layers in int8) is reported in the model's row and the peers are timed
without it (for any other model it stops the run). TFLite: the committed int8 .tflite (only the
tf.keras 2 LSTM fixtures have one) is a batch-1 function whose fused LSTM keeps its state across
invoke(), so a call runs its samples one by one, each after reset_all_variables(); where the
fixture has none (its .npz holds the converter's `tflite_error`), TFLite FLOAT is timed instead
(tflite_f32_*: the Keras model converted here, batch-1 concrete function, in a child process as
the converter can crash), and the row says why. ONNX Runtime int8: quantize_static (QDQ, s8s8,
per-channel) of tf2onnx's float graph of the Keras model, as models/make_recurrent_models.py
makes its peer: float in / float out, the ONNX LSTM / GRU / Loop op stays float. Several outputs
(rnn_variants): SQNR = the worst output's, each output's in the JSON; top-1 on output 0. These
models get their own tables (time per call, SQNR / top-1) and stay out of issue 9's bars. Layer benches ("micro"): single-layer Keras models
built here at run time (3x3 conv 32x32x32->32, 1x1 conv 24x24x96->96, depthwise 3x3 at
48x48x96, dense 1024x1024), converted to int8 TFLite with a representative dataset and read by
fixnet from a temporary .h5, quantized with the same calibration data; fixnet's other kernel
builds (FIXNET_ISA=avx2, ...) are timed on them in a subprocess each.

Per model: MACs per sample (fixnet.cost), GMAC/s per runtime, and each runtime's output SQNR
(dB) against the Keras float output on the same inputs (the stored `keras_float` of the .npz;
for the layer benches, Keras run here). A peer *counts* where its SQNR is within 1 dB of the best
deployment peer's (TFLite XNNPACK, TFLite builtin, ONNX Runtime int8); one that does not is
still shown, marked. Summary: geometric mean and worst of fixnet / XNNPACK, and whether each
"Done when" bar of issue 9 holds (on the fixtures), and issue 17's (on the zoo models).

Peers that are not installed are listed as such; nothing is required but fixnet, numpy and rich.
TFLite comes from `tensorflow` if it imports, else `ai_edge_litert`, else `tflite_runtime`
(`--tflite` picks one). TensorFlow is imported only for the peers, never by fixnet.

Method: for each model and batch size, every runner is warmed up, then timed in rounds; in each
round every runner runs once (a sample = enough back-to-back calls to last --sample-ms, divided
by their number), in an order rotated each round (A,B,C / B,C,A / ...), so drift and the
other tenants of a shared machine hit all runners alike. Reported: the median per-call time
over rounds, and fixnet / runner = the median over rounds of (fixnet int8 sample / runner sample
of the same round): below 1, fixnet is faster. Every runtime is limited to --threads threads
(default 1; fixnet gets ``num_threads=--threads`` in its predict calls).
"""
import argparse
import datetime
import fnmatch
import importlib.util
import json
import math
import os
import pathlib
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

REPO = pathlib.Path(__file__).resolve().parent.parent
MODELS_DIR = REPO / "models"
ZOO_PY = pathlib.Path(__file__).resolve().parent / "zoo.py"   # the bench model zoo (issue 17)
BASELINE = "fixnet_int8"
INT8_KEYS = ["fixnet_int8", "tflite_xnnpack", "tflite_builtin", "tflite_ref", "ort_int8"]
# TFLite float, converted here from the Keras model: only for a recurrent fixture whose int8
# .tflite could not be made (its .npz holds `tflite_error`); never a deployment peer.
TFLITE_FLOAT_KEYS = ["tflite_f32_xnnpack", "tflite_f32_builtin", "tflite_f32_ref"]
FLOAT_KEYS = ["fixnet_int8_float_io", "fixnet_float", "keras", "ort_float"]
RUNNER_KEYS = INT8_KEYS + TFLITE_FLOAT_KEYS + FLOAT_KEYS
# The runtimes someone deploys: the accuracy rule and the bars are taken against these.
DEPLOY_PEERS = ["tflite_xnnpack", "tflite_builtin", "ort_int8"]
COUNTS_WITHIN_DB = 1.0
SHORT = {"fixnet_int8": "fixnet", "tflite_xnnpack": "XNNPACK", "tflite_builtin": "TFLite builtin",
         "tflite_ref": "TFLite ref", "ort_int8": "ORT int8",
         "tflite_f32_xnnpack": "TFLite FLOAT XNNPACK", "tflite_f32_builtin": "TFLite FLOAT builtin",
         "tflite_f32_ref": "TFLite FLOAT ref",
         "fixnet_int8_float_io": "fixnet f32 io",
         "fixnet_float": "fixnet float ref", "keras": "Keras float", "ort_float": "ORT float"}
# The fixtures of issue 9's "Done when": every CNN and every MLP, both writers.
CNN_FAMILIES = ["resnet_small", "mobilenetv2", "mobilenet_small", "kws_dscnn", "kws_conv1d",
                "concat_branches", "cnn_digits", "dead_digits"]
MLP_FAMILIES = ["mlp_seq", "mlp_func"]
# The recurrent fixtures of issue 11 (models/make_recurrent_models.py); not in the default set
# (issue 9's bars are about CNNs and MLPs): --models rnn, or 'rnn_*'.
RNN_FAMILIES = ["rnn_gru", "rnn_gru_ra0", "rnn_lstm", "rnn_simplernn", "rnn_bilstm",
                "rnn_stacked", "rnn_variants", "rnn_sensor", "rnn_text", "rnn_kws"]
GROUPS = {"cnn": CNN_FAMILIES, "mlp": MLP_FAMILIES, "rnn": RNN_FAMILIES}
# --models zoo (every model of bench/zoo.py), a zoo name, family (zoo_mnv2: both writers) or a
# pattern starting with zoo: built into bench/zoo/ first if missing; issue 17's bars
ZOO_GROUP = "zoo"
FIXTURE_KINDS = ("cnn", "mlp")        # the models issue 9's bars are taken over
ZOO_KIND = "zoo"                      # bench/zoo.py's models: issue 17's bars
# Layer benches: name -> (what, input shape without batch, Keras layer factory arguments)
MICRO = {
    "conv3x3": ("Conv2D 3x3, 32x32x32 -> 32, stride 1, same", (32, 32, 32),
                ("Conv2D", dict(filters=32, kernel_size=3, padding="same", activation="relu"))),
    "conv1x1": ("Conv2D 1x1, 24x24x96 -> 96", (24, 24, 96),
                ("Conv2D", dict(filters=96, kernel_size=1, activation="relu"))),
    "dwconv3x3": ("DepthwiseConv2D 3x3, 48x48x96, stride 1, same", (48, 48, 96),
                  ("DepthwiseConv2D", dict(kernel_size=3, padding="same", activation="relu"))),
    "dense1024": ("Dense 1024 -> 1024", (1024,),
                  ("Dense", dict(units=1024, activation="relu"))),
    # issue 17: the wide, shallow layers at the start of mobile convnets
    "conv3x3_1to8": ("Conv2D 3x3, 64x64x1 -> 8, valid (emotion's first)", (64, 64, 1),
                     ("Conv2D", dict(filters=8, kernel_size=3, activation="relu"))),
    "conv3x3_3to16s2": ("Conv2D 3x3 /2, 96x96x3 -> 16, same (MobileNetV2's first)", (96, 96, 3),
                        ("Conv2D", dict(filters=16, kernel_size=3, strides=2, padding="same",
                                        activation="relu"))),
    "dw3x3_8ch": ("DepthwiseConv2D 3x3, 60x60x8, same", (60, 60, 8),
                  ("DepthwiseConv2D", dict(kernel_size=3, padding="same", activation="relu"))),
    "dw3x3_48ch_s2": ("DepthwiseConv2D 3x3 /2, 48x48x48, same", (48, 48, 48),
                      ("DepthwiseConv2D", dict(kernel_size=3, strides=2, padding="same",
                                               activation="relu"))),
    "dw3x3_1ch_m2": ("DepthwiseConv2D 3x3, 28x28x1, depth multiplier 2", (28, 28, 1),
                     ("DepthwiseConv2D", dict(kernel_size=3, padding="same", depth_multiplier=2,
                                              activation="relu"))),
    "pw8to48": ("Conv2D 1x1, 48x48x8 -> 48 (MobileNetV2's expand)", (48, 48, 8),
                ("Conv2D", dict(filters=48, kernel_size=1, activation="relu"))),
    "pw16to8": ("Conv2D 1x1, 48x48x16 -> 8 (MobileNetV2's project)", (48, 48, 16),
                ("Conv2D", dict(filters=8, kernel_size=1))),
}
MICRO_SAMPLES = 64                # accuracy inputs of a layer bench (default)
CONV3X3_BAR_GMACS = 40.0          # issue 9: the 3x3 conv layer bench on the AVX2 build


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Runner keys for --only/--skip: " + ", ".join(RUNNER_KEYS))
    p.add_argument("--models", nargs="+", default=None,
                   help="model names in models/ (e.g. mlp_seq_k3), families (mlp_seq: both "
                        "writers), groups (" + ", ".join(list(GROUPS) + [ZOO_GROUP]) + "), "
                        "shell patterns ('resnet*', 'rnn_*') or paths to .h5 files, or 'none'; "
                        "default: every CNN and MLP fixture ("
                        + ", ".join(CNN_FAMILIES + MLP_FAMILIES)
                        + "; *_k3 and *_tfk2); the recurrent ones (rnn: "
                        + ", ".join(RNN_FAMILIES) + ") only when asked for; zoo: the bench "
                        "model zoo of issue 17 (bench/zoo.py list; zoo_emotion, zoo_mnv2, "
                        "'zoo_*', ...), built into bench/zoo/ first where missing")
    p.add_argument("--micro", nargs="+", default=None,
                   help="layer benches to run: " + ", ".join(MICRO) + ", or 'none'; default: all")
    p.add_argument("--micro-isa", nargs="*", default=None,
                   help="other fixnet kernel builds to time the layer benches with (a subprocess "
                        "each, FIXNET_ISA=<build>); default: every other build this CPU runs")
    p.add_argument("--batches", nargs="+", type=int, default=[1])
    p.add_argument("--rounds", type=int, default=200, help="timed rounds per model and batch")
    p.add_argument("--sample-ms", type=float, default=2.0,
                   help="each sample repeats a call until it lasts about this long")
    p.add_argument("--warmup", type=int, default=20, help="untimed calls per runner first")
    p.add_argument("--accuracy-samples", type=int, default=None,
                   help="test samples the SQNR and top-1 columns are computed on (default: all "
                        f"of a fixture's, {MICRO_SAMPLES} random inputs for a layer bench)")
    p.add_argument("--threads", type=int, default=1,
                   help="threads for every runtime (TFLite, TF/Keras, ONNX Runtime, BLAS)")
    p.add_argument("--tflite", choices=["auto", "tensorflow", "ai_edge_litert", "tflite_runtime"],
                   default="auto", help="where the TFLite interpreter comes from")
    p.add_argument("--float", action="store_true",
                   help="also the float runners: " + ", ".join(FLOAT_KEYS))
    p.add_argument("--only", default="",
                   help="comma-separated runner keys to run (plus the baseline)")
    p.add_argument("--skip", default="", help="comma-separated runner keys to leave out")
    p.add_argument("--quick", action="store_true", help="smoke run: 15 rounds, 0.5 ms samples")
    p.add_argument("--json", metavar="PATH", help="also write every number to this JSON file")
    p.add_argument("--markdown", metavar="PATH",
                   help="also write the tables as Markdown (with date, CPU, versions, command)")
    p.add_argument("--from-json", metavar="PATH",
                   help="measure nothing: print (and --markdown) the tables of a saved --json")
    p.add_argument("--fixnet-child", metavar="SPEC", help=argparse.SUPPRESS)
    p.add_argument("--tflite-float-child", metavar="SPEC", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.fixnet_child or args.tflite_float_child or args.from_json:
        return args
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
    if args.micro is None:
        args.micro = list(MICRO)
    elif args.micro == ["none"]:
        args.micro = []
    unknown = sorted(set(args.micro) - set(MICRO))
    if unknown:
        p.error(f"--micro: unknown layer bench(es) {unknown}; known: {list(MICRO)}")
    if args.accuracy_samples is not None and args.accuracy_samples < 1:
        p.error("--accuracy-samples must be at least 1")
    return args


ARGS = parse_args() if __name__ == "__main__" else None

# Thread limits must be in the environment before numpy / TensorFlow start their pools.
if ARGS is not None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(getattr(ARGS, "threads", 1) or 1))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

try:
    import fixnet  # noqa: F401 - the installed package (pip install .)
except ImportError:
    # An in-place build (python setup.py build_ext --inplace) in this checkout.
    sys.path.insert(0, str(REPO))

from fixnet.metrics import sqnr_db  # noqa: E402  (the project's one SQNR)


# ---------------------------------------------------------------------------------------------
# Runners: each holds a zero-argument callable per batch size that runs one predict and returns
# its output as a NumPy array (a list of them for a model with several outputs), and how to
# read that output as floats (int8 codes: scale and zero point). Building one may fail; that
# failure is reported, not raised.
# ---------------------------------------------------------------------------------------------
class Unavailable(Exception):
    """A peer that cannot run here (not installed, conversion failed, ...)."""


class Runner:
    def __init__(self, key, label, calls, note="", out_q=None):
        self.key = key
        self.label = label
        self.calls = calls        # batch -> zero-argument callable returning an array (or list)
        self.note = note
        # (scale, zero_point) of int8 outputs, a list of them (or of None) for several outputs;
        # None: float outputs
        self.out_q = out_q

    def floats(self, y):
        """The output(s) of one call as float64: one array, or a list for several outputs."""
        if isinstance(y, (list, tuple)):
            qs = self.out_q if isinstance(self.out_q, list) else [self.out_q] * len(y)
            return [_dequantize(o, q) for o, q in zip(y, qs)]
        return _dequantize(y, self.out_q)


def _dequantize(y, q):
    y = np.asarray(y).astype(np.float64)
    if q is None:
        return y
    scale, zp = q
    return (y - zp) * scale


def _model_dtype(x):
    """Integer inputs (token ids) stay integers (int32, as Keras and the peers take them)."""
    return np.int32 if np.issubdtype(np.asarray(x).dtype, np.integer) else np.float32


class ModelInputs:
    """One model's inputs at each batch size (test samples, cycled if needed), its calibration
    data, and the Keras float outputs of the accuracy samples.

    ``batches`` are the timed batch sizes; ``acc`` (the number of accuracy samples) is one more
    batch size every runner is built for, run once, untimed. ``keras_float``: one array, or a
    list with one per output. ``tflite_error``: why the fixture has no int8 .tflite (the
    converter's error, stored in the .npz), or None."""

    def __init__(self, name, h5, tflite, x_test, x_calib, keras_float, tflite_x, tflite_out_q,
                 batches, acc, kind, what="", tflite_error=None):
        self.name, self.h5, self.tflite, self.kind, self.what = name, h5, tflite, kind, what
        dtype = _model_dtype(x_test)
        self.x_calib = np.ascontiguousarray(x_calib, dtype)
        self.acc = x_test.shape[0] if acc is None else min(acc, x_test.shape[0])
        self.timed = list(batches)
        self.batches = sorted(set(batches) | {self.acc})
        idx = {n: np.arange(n) % x_test.shape[0] for n in self.batches}
        self.x = {n: np.ascontiguousarray(x_test[i], dtype) for n, i in idx.items()}
        outs = keras_float if isinstance(keras_float, (list, tuple)) else [keras_float]
        self.keras_outs = [np.asarray(k[:self.acc], np.float64) for k in outs]
        self.tflite_x = ({n: np.ascontiguousarray(tflite_x[i]) for n, i in idx.items()}
                         if tflite_x is not None else None)
        self.tflite_out_q = tflite_out_q
        self.tflite_error = tflite_error

    @classmethod
    def fixture(cls, h5_path, batches, acc):
        data = np.load(h5_path.with_suffix(".npz"))
        tfl_x = data["tflite_input_int8"] if "tflite_input_int8" in data else None
        out_q = ((float(data["tflite_output_scale"]), int(data["tflite_output_zero_point"]))
                 if "tflite_output_scale" in data else None)
        stem = h5_path.stem
        kind = ("mlp" if stem.startswith("mlp_") else "rnn" if stem.startswith("rnn_")
                else ZOO_KIND if stem.startswith("zoo_") else "cnn")
        what = str(data["zoo_stands_for"]) if "zoo_stands_for" in data else ""
        if "keras_float" in data:
            kf = data["keras_float"]
        else:                       # several outputs: keras_float_0, keras_float_1, ...
            n_out = sum(1 for k in data.files if k.startswith("keras_float_")
                        and k[len("keras_float_"):].isdigit())
            kf = [data[f"keras_float_{i}"] for i in range(n_out)]
        err = str(data["tflite_error"]) if "tflite_error" in data else None
        return cls(stem, h5_path, h5_path.with_suffix(".tflite"), data["x_test"],
                   data["x_calib"], kf, tfl_x, out_q, batches, acc, kind, what,
                   tflite_error=err)


def _bind(f, *a, **kw):
    return lambda: f(*a, **kw)


def fixnet_runners(m, fm, want, threads=1):
    """fixnet int8 (and with float in/out) of the loaded model `fm`: quantized here with the
    fixture's calibration data. Raises what quantize() or a first predict raises (a model
    fixnet cannot run in int8 yet is a result of the run, reported in its row)."""
    qm = fm.quantize(m.x_calib)
    qp = qm.input_qparams[0]
    # integer inputs (token ids) go in as they are; float inputs as int8 codes
    xq = {n: x if qp is None or np.issubdtype(x.dtype, np.integer)
          else np.ascontiguousarray(qp.quantize(x)) for n, x in m.x.items()}
    oqs = [(float(q.scale), int(q.zero_point)) for q in qm.output_qparams]

    # the same thread budget as the peers (num_threads left out at 1: the call as users make it)
    tkw, tnote = ({"num_threads": threads}, f", num_threads={threads}") if threads > 1 else ({}, "")
    out = [Runner("fixnet_int8", "fixnet int8",
                  {n: _bind(qm.predict, xq[n], output="int8", **tkw) for n in m.batches},
                  f"qm.predict(x_q, output='int8'{tnote})", oqs[0] if len(oqs) == 1 else oqs)]
    if "fixnet_int8_float_io" in want:
        out.append(Runner("fixnet_int8_float_io", "fixnet int8 (float in/out)",
                          {n: _bind(qm.predict, m.x[n], **tkw) for n in m.batches},
                          f"qm.predict(x{tnote})"))
    for r in out:                 # a run-time failure is reported here, not in the timing loop
        r.calls[m.timed[0]]()
    return out


def fixnet_float_runner(m, fm):
    """fixnet's NumPy float reference (FloatModel.predict) of the loaded model `fm`."""
    r = Runner("fixnet_float", "fixnet float reference (NumPy)",
               {n: _bind(fm.predict, m.x[n]) for n in m.batches}, "fm.predict(x)")
    r.calls[m.timed[0]]()
    return r


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
            else:
                from tflite_runtime import interpreter as lit
            return lit.Interpreter, lit.OpResolverType, f"{source} {_version(source)}"
        except (ImportError, Unavailable):
            missing.append(source)
    raise Unavailable("not installed (" + ", ".join(missing) + ")")


def _version(module):
    """The version of an imported module's distribution ('?' when it does not say)."""
    v = getattr(sys.modules.get(module), "__version__", None)
    if v is None:
        try:
            from importlib import metadata
            v = metadata.version(module.replace("_", "-"))
        except Exception:  # noqa: BLE001 - a version is only shown
            v = "?"
    return v


TFLITE_KINDS = [
    ("tflite_xnnpack", "TFLite int8, XNNPACK (default)", None, "default interpreter"),
    ("tflite_builtin", "TFLite int8, builtin kernels", "BUILTIN_WITHOUT_DEFAULT_DELEGATES",
     "OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES"),
    ("tflite_ref", "TFLite int8, reference kernels (not a deployment peer)", "BUILTIN_REF",
     "OpResolverType.BUILTIN_REF"),
]
# the same three, on a FLOAT .tflite converted here (recurrent fixtures without an int8 one)
TFLITE_FLOAT_KINDS = [
    (fkey, label.replace("TFLite int8", "TFLite FLOAT (no int8 .tflite)"), resolver, how)
    for fkey, (_, label, resolver, how) in zip(TFLITE_FLOAT_KEYS, TFLITE_KINDS)]


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
                                  + _first_line(m.tflite_error) + ")")
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
        calls, out_q, seq = {}, None, False
        try:
            for n in m.batches:
                interp = Interpreter(num_threads=threads, **src, **kw)
                inp = interp.get_input_details()[0]
                outs = _tflite_output_order(interp)
                x = xs[n]
                seq = m.kind == "rnn" and int(inp["shape"][0]) == 1
                if seq:
                    interp.allocate_tensors()
                    calls[n] = _tflite_seq_call(interp, inp["index"],
                                                [d["index"] for d in outs], x)
                else:
                    if tuple(inp["shape"]) != x.shape:
                        interp.resize_tensor_input(inp["index"], list(x.shape))
                    interp.allocate_tensors()
                    calls[n] = _tflite_call(interp, inp["index"], outs[0]["index"], x)
                qs = [(float(d["quantization"][0]), int(d["quantization"][1]))
                      if d["quantization"][0] else None for d in outs]
                out_q = qs[0] if len(qs) == 1 else qs
            if m.kind == "rnn":       # the fixture's converter output: check it runs here
                calls[m.timed[0]]()
        except Exception as e:  # noqa: BLE001 - a kind that cannot run is reported
            failed.append((key, label, f"failed: {type(e).__name__}: {_first_line(str(e))}"))
            continue
        how_call = ("per sample: reset_all_variables + set_tensor + invoke + get_tensor"
                    if seq else "set_tensor + invoke + get_tensor")
        made.append(Runner(key, label, calls, f"{source}, {how}; {how_call}", out_q))
    return made, failed


def _one_line(text, limit=300):
    """A multi-line message (an error listing layers, say) on one line."""
    return " ".join(ln.strip() for ln in str(text).splitlines() if ln.strip())[:limit]


def _why(text, name, limit=200):
    """An error for a table note: one line, without the model file's path (the row names the
    model), at most `limit` characters."""
    text = re.sub(r"\S*" + re.escape(name) + r"\.h5: ", "", _one_line(text, 10_000))
    text = text.rstrip(" :.")
    return text if len(text) <= limit else text[:limit - 3].rstrip() + "..."


def _first_line(text, limit=300):
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return (lines[0] if lines else "")[:limit]


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
                   f"failed: {_first_line(m.tflite_error, 160)})")
    return made, failed


def convert_tflite_float(m, threads):
    """The float .tflite bytes of fixture `m` (see tflite_float_runners)."""
    with tempfile.TemporaryDirectory(prefix="fixnet-peers-tfl-") as tmp:
        out = pathlib.Path(tmp) / f"{m.name}-float.tflite"
        spec = pathlib.Path(tmp) / "spec.json"
        spec.write_text(json.dumps({"name": m.name, "h5": str(m.h5), "out": str(out),
                                    "shape": list(m.x[m.batches[0]].shape[1:]),
                                    "int": bool(np.issubdtype(m.x_calib.dtype, np.integer)),
                                    "threads": threads}))
        env = dict(os.environ)
        if m.name.endswith("_tfk2"):        # tf.keras 2, as the fixture was written
            env["TF_USE_LEGACY_KERAS"] = "1"
        r = subprocess.run([sys.executable, str(pathlib.Path(__file__).resolve()),
                            "--tflite-float-child", str(spec)],
                           capture_output=True, text=True, env=env)
        if r.returncode != 0 or not out.exists():
            how = (f"killed by signal {-r.returncode}" if r.returncode < 0
                   else f"exit code {r.returncode}")
            tail = [ln for ln in r.stderr.splitlines() if ln.strip()
                    and not ln.startswith(("W0000", "I0000", "WARNING: All log"))]
            raise RuntimeError(f"TFLite float conversion {how}"
                               + (f": {tail[-1][:300]}" if tail else ""))
        return out.read_bytes()


def tflite_float_child(spec_path):
    """--tflite-float-child: convert one Keras model to a float .tflite (see
    tflite_float_runners); exits non-zero with the error on stderr when conversion fails."""
    import types

    spec = json.loads(pathlib.Path(spec_path).read_text())
    tf = import_tensorflow(spec["threads"])
    model, _ = load_keras_model(types.SimpleNamespace(name=spec["name"],
                                                      h5=pathlib.Path(spec["h5"])),
                                spec["threads"])
    dtype = tf.int32 if spec["int"] else tf.float32
    fn = _serving_fn(tf, model, [1] + spec["shape"], dtype)
    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], model)
    pathlib.Path(spec["out"]).write_bytes(conv.convert())
    return 0


def _serving_fn(tf, model, shape, dtype):
    """tf.function of the Keras model on one input signature named x; outputs keyed out_00,
    out_01, ... in the model's output order (as models/make_recurrent_models.py makes them)."""
    @tf.function(input_signature=[tf.TensorSpec(shape, dtype, name="x")])
    def fn(x):
        ys = model(x, training=False)
        ys = list(ys) if isinstance(ys, (list, tuple)) else [ys]
        return {f"out_{i:02d}": y for i, y in enumerate(ys)}
    return fn


def load_keras_model(m, threads):
    """The .h5 in the Keras that wrote it (keras 3 for *_k3, tf_keras for *_tfk2), or the
    other one if that is missing or cannot read it, or last the .keras file next to it (Keras 3
    cannot read back the .h5 it wrote of rnn_variants_k3). Returns (model, 'keras x.y.z')."""
    if getattr(m, "keras_model", None) is not None:      # a layer bench, built here
        return m.keras_model, m.keras_which
    import_tensorflow(threads)
    prefer = ["tf_keras", "keras"] if m.name.endswith("_tfk2") else ["keras", "tf_keras"]
    tries = [(modname, m.h5) for modname in prefer]
    if m.h5.with_suffix(".keras").exists():
        tries.append(("keras", m.h5.with_suffix(".keras")))
    errors = []
    for modname, path in tries:
        try:
            lib = __import__(modname)
        except ImportError:
            errors.append(f"{modname} not installed")
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = lib.models.load_model(str(path), compile=False)
            which = f"{modname} {lib.__version__}"
            return model, which + (f" (from {path.name})" if path != m.h5 else "")
        except Exception as e:  # noqa: BLE001 - any loader failure means "try the other"
            first_line = (str(e).splitlines() or [""])[0][:80]
            errors.append(f"{modname} ({path.name}): {type(e).__name__}: {first_line}"
                          if path != m.h5 else f"{modname}: {type(e).__name__}: {first_line}")
    raise Unavailable("; ".join(errors))


def _np(y):
    """A Keras / TensorFlow output as NumPy: one array, or a list for several outputs."""
    if isinstance(y, (list, tuple)):
        return [np.asarray(o) for o in y]
    return np.asarray(y)


def keras_runner(m, threads, warmup):
    tf = import_tensorflow(threads)
    model, which = load_keras_model(m, threads)
    x0 = m.x[m.batches[0]]
    spec = tf.TensorSpec((None,) + tuple(x0.shape[1:]), tf.as_dtype(x0.dtype))
    graph_fn = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    candidates = {
        "model(x, training=False)": lambda x: _np(model(x, training=False)),
        "predict_on_batch(x)": lambda x: _np(model.predict_on_batch(x)),
        "tf.function(model)": lambda x: _np(graph_fn(x)),
    }
    calls, chosen, trials = {}, {}, {}
    for n in m.batches:
        x = m.x[n]
        if n not in m.timed:           # the accuracy batch: run once, untimed
            calls[n] = (lambda x: lambda: candidates["tf.function(model)"](x))(x)
            continue
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
        for n in m.timed)
    label = "Keras float, " + ", ".join(f"b{n}: {chosen[n]}" for n in m.timed)
    r = Runner("keras", label, calls, note)
    r.chosen = chosen
    return r


def onnx_runners(m, threads, want):
    try:
        import onnxruntime as ort
        import tf2onnx
    except ImportError as e:
        why = (f"not installed ({e.name}, which tf2onnx needs to convert the .tflite)"
               if e.name == "tensorflow" else f"not installed ({e.name})")
        raise Unavailable(f"{why}; pip install onnxruntime tf2onnx tensorflow") from None
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
        return {n: (lambda x: lambda: sess.run(None, {name: x})[0])(xs[n]) for n in m.batches}

    if m.kind == "rnn":
        return onnx_rnn_runners(m, threads, want, tf, ort, tf2onnx, session)
    if "ort_float" in want:
        try:
            model, which = load_keras_model(m, threads)
            shape = (None,) + tuple(m.x[m.batches[0]].shape[1:])
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
        label = "ONNX Runtime int8 (QDQ from the .tflite)"
        try:
            if not m.tflite.exists() or m.tflite_x is None:
                raise Unavailable(f"no {m.tflite.name}")
            proto, _ = tf2onnx.convert.from_tflite(str(m.tflite), opset=17)
            # the graph's int8 output is the .tflite's output tensor: same scale and zero point
            made.append(Runner("ort_int8", label, runs(session(proto), m.tflite_x),
                               f"onnxruntime {ort.__version__}; tf2onnx {tf2onnx.__version__} "
                               f"from_tflite, opset 17", m.tflite_out_q))
        except Unavailable as e:
            failed.append(("ort_int8", label, str(e)))
        except Exception as e:  # noqa: BLE001
            failed.append(("ort_int8", label, f"failed: {type(e).__name__}: {e}"))
    return made, failed


RECURRENT_ONNX_OPS = ("LSTM", "GRU", "RNN", "Loop", "Scan")


def onnx_rnn_runners(m, threads, want, tf, ort, tf2onnx, session):
    """ONNX Runtime on a recurrent fixture, made as models/make_recurrent_models.py makes its
    ort_int8 peer (that script writes into models/, so its function is not reused): tf2onnx
    from_function (opset 17) of the Keras model with a free batch dimension, outputs out_00,
    out_01, ...; for int8, onnxruntime.quantization.quantize_static on it (QDQ, QInt8
    activations and weights, per-channel, MinMax over the fixture's calibration samples one
    by one). Float in and float out (QuantizeLinear / DequantizeLinear inside the graph); the
    recurrent op (LSTM / GRU, or a Loop) stays float there. Returns (made, failed)."""
    made, failed = [], []
    keys = [k for k in ("ort_float", "ort_int8") if k in want]
    labels = {"ort_float": "ONNX Runtime float",
              "ort_int8": "ONNX Runtime int8 (quantize_static QDQ of the Keras model)"}
    try:
        model, which = load_keras_model(m, threads)
        shape = (None,) + tuple(model.inputs[0].shape[1:])   # the time dimension as Keras has it
        fn = _serving_fn(tf, model, shape, tf.as_dtype(m.x_calib.dtype))
        proto, _ = tf2onnx.convert.from_function(fn, input_signature=fn.input_signature,
                                                 opset=17)
    except Exception as e:  # noqa: BLE001 - a converter failure is a result, not a crash
        why = str(e) if isinstance(e, Unavailable) else f"failed: {type(e).__name__}: {e}"
        return [], [(k, labels[k], why) for k in keys]
    out_names = sorted(o.name for o in proto.graph.output)
    conv_note = (f"onnxruntime {ort.__version__}; tf2onnx {tf2onnx.__version__} from_function "
                 f"of the {which} model, opset 17")

    def runs(sess):
        name = sess.get_inputs()[0].name
        one = len(out_names) == 1

        def bind(x):
            if one:
                return lambda: sess.run(out_names, {name: x})[0]
            return lambda: sess.run(out_names, {name: x})
        return {n: bind(m.x[n]) for n in m.batches}

    if "ort_float" in want:
        try:
            sess = session(proto)
            made.append(Runner("ort_float", labels["ort_float"], runs(sess), conv_note))
            made[-1].calls[m.timed[0]]()
        except Exception as e:  # noqa: BLE001
            made = [r for r in made if r.key != "ort_float"]
            failed.append(("ort_float", labels["ort_float"], f"failed: {type(e).__name__}: {e}"))
    if "ort_int8" in want:
        try:
            import logging

            import onnx
            from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                                  quantize_static)

            in_name = proto.graph.input[0].name

            class Reader(CalibrationDataReader):
                def __init__(self, xc):
                    self.it = iter(xc[i:i + 1] for i in range(len(xc)))

                def get_next(self):
                    x = next(self.it, None)
                    return None if x is None else {in_name: x}

            with tempfile.TemporaryDirectory(prefix="fixnet-peers-onnx-") as tmp:
                fpath, qpath = os.path.join(tmp, "float.onnx"), os.path.join(tmp, "int8.onnx")
                onnx.save(proto, fpath)
                root = logging.getLogger()
                level = root.level        # quantize_static advises pre-processing on the root
                root.setLevel(logging.ERROR)      # logger, once per model: not our business
                try:
                    quantize_static(fpath, qpath, Reader(m.x_calib),
                                    quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
                                    weight_type=QuantType.QInt8, per_channel=True)
                finally:
                    root.setLevel(level)
                qproto = onnx.load(qpath)
            ops = sorted({n.op_type for n in qproto.graph.node})
            rec = [o for o in ops if o in RECURRENT_ONNX_OPS]
            sess = session(qproto)
            r = Runner("ort_int8", labels["ort_int8"], runs(sess),
                       conv_note + "; quantize_static QDQ s8s8 per-channel, MinMax over x_calib; "
                       "float in / float out; recurrent op(s) kept float: "
                       + (", ".join(rec) if rec else "none (unrolled)"))
            r.calls[m.timed[0]]()
            made.append(r)
        except Exception as e:  # noqa: BLE001
            failed.append(("ort_int8", labels["ort_int8"], f"failed: {type(e).__name__}: {e}"))
    return made, failed


# ---------------------------------------------------------------------------------------------
# Layer benches: one-layer Keras models made here, with their int8 .tflite and .h5
# ---------------------------------------------------------------------------------------------
def build_micro(name, batches, acc, threads, tmpdir, seed=0):
    """A ModelInputs for the layer bench `name`: Keras 3 model, its .h5 (for fixnet) and its
    int8 .tflite (TFLiteConverter with a representative dataset: the calibration inputs)."""
    tf = import_tensorflow(threads)
    try:
        import keras
    except ImportError as e:
        raise Unavailable(f"keras not installed ({e.name})") from None

    what, shape, (cls, kw) = MICRO[name]
    keras.utils.set_random_seed(seed)
    inp = keras.Input(shape)
    model = keras.Model(inp, getattr(keras.layers, cls)(**kw, name=name)(inp), name=name)
    rng = np.random.default_rng(seed)
    x_calib = rng.standard_normal((32,) + shape).astype(np.float32)
    x_test = rng.standard_normal((acc or MICRO_SAMPLES,) + shape).astype(np.float32)
    keras_float = np.asarray(model.predict(x_test, verbose=0))
    h5 = pathlib.Path(tmpdir) / f"{name}.h5"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")       # keras 3 calls .h5 legacy; fixnet reads it
        model.save(str(h5))
    sys.path.insert(0, str(MODELS_DIR))
    try:
        from fixture_common import convert_tflite   # the fixtures' int8 conversion, same flags
    finally:
        sys.path.remove(str(MODELS_DIR))
    tfl_bytes, how = convert_tflite(tf, model, "keras3", [x_calib], [inp.name])
    tfl = h5.with_suffix(".tflite")
    tfl.write_bytes(tfl_bytes)
    interp = tf.lite.Interpreter(model_path=str(tfl))
    (in_s, in_zp), (out_s, out_zp) = (interp.get_input_details()[0]["quantization"],
                                      interp.get_output_details()[0]["quantization"])
    tfl_x = np.clip(np.round(x_test / in_s) + in_zp, -128, 127).astype(np.int8)
    m = ModelInputs(name, h5, tfl, x_test, x_calib, keras_float, tfl_x,
                    (float(out_s), int(out_zp)), batches, acc, "micro", what)
    m.keras_model, m.keras_which = model, f"keras {keras.__version__}"
    m.tflite_how = how
    return m


def fixnet_child(spec_path):
    """--fixnet-child: time fixnet int8 alone on one layer bench, in this process's kernel
    build (FIXNET_ISA), and print JSON: the build, the timing and the int8 outputs' digest."""
    import hashlib

    import fixnet
    import fixnet._kernels as kernels

    spec = json.loads(pathlib.Path(spec_path).read_text())
    d = np.load(spec["npz"])
    qm = fixnet.load(spec["h5"]).quantize(d["x_calib"])
    x = np.ascontiguousarray(qm.input_qparams[0].quantize(d["x"]))
    x_acc = np.ascontiguousarray(qm.input_qparams[0].quantize(d["x_acc"]))
    tkw = {"num_threads": spec["threads"]} if spec.get("threads", 1) > 1 else {}
    call = (lambda: qm.predict(x, output="int8", **tkw))
    for _ in range(spec["warmup"]):
        call()
    est = statistics.median(_time_calls(call, 1) for _ in range(7))
    inner = max(1, int(spec["sample_s"] / max(est, 1e-7)))
    samples = [_time_calls(call, inner) for _ in range(spec["rounds"])]
    y = np.ascontiguousarray(qm.predict(x_acc, output="int8"))
    print(json.dumps({"isa": kernels.ISA, "median_us": statistics.median(samples) * 1e6,
                      "p25_us": float(np.percentile(samples, 25)) * 1e6,
                      "p75_us": float(np.percentile(samples, 75)) * 1e6,
                      "calls_per_sample": inner, "rounds": len(samples),
                      "int8_digest": hashlib.sha256(y.tobytes()).hexdigest()}))
    return 0


def fixnet_other_builds(m, fm_qm_digest, isas, args, tmpdir):
    """Time fixnet on the layer bench `m` with each of `isas` (a subprocess each)."""
    npz = pathlib.Path(tmpdir) / f"{m.name}-child.npz"
    np.savez(npz, x_calib=m.x_calib, x=m.x[1 if 1 in m.timed else m.timed[0]],
             x_acc=m.x[m.acc])
    spec = pathlib.Path(tmpdir) / f"{m.name}-child.json"
    spec.write_text(json.dumps({"h5": str(m.h5), "npz": str(npz), "rounds": args.rounds,
                                "warmup": args.warmup, "sample_s": args.sample_ms / 1000,
                                "threads": args.threads}))
    out = {}
    for isa in isas:
        env = dict(os.environ, FIXNET_ISA=isa)
        r = subprocess.run([sys.executable, str(pathlib.Path(__file__).resolve()),
                            "--fixnet-child", str(spec)], capture_output=True, text=True, env=env)
        if r.returncode != 0:
            out[isa] = {"status": f"failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}"}
            continue
        res = json.loads(r.stdout.strip().splitlines()[-1])
        res["status"] = "ok"
        res["bit_identical"] = res.pop("int8_digest") == fm_qm_digest
        out[isa] = res
    return out


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


def summarize(samples, inner, macs, batch):
    """Per runner: median / quartile times, GMAC/s and fixnet_over (None when fixnet int8 did
    not run: a recurrent model before fixnet runs it in int8)."""
    base = np.asarray(samples[BASELINE]) if BASELINE in samples else None
    stats = {}
    for k, s in samples.items():
        q = np.percentile(s, [25, 50, 75])
        stats[k] = {"median_us": q[1] * 1e6, "p25_us": q[0] * 1e6, "p75_us": q[2] * 1e6,
                    "calls_per_sample": inner[k], "rounds": len(s),
                    # below 1: fixnet int8 is faster than this runner
                    "fixnet_over": (float(np.median(base / np.asarray(s)))
                                    if base is not None else None),
                    "gmacs": (macs * batch / q[1] / 1e9) if macs else None}
    return stats


def accuracy(runner, m):
    """(SQNR in dB against Keras float, top-1 agreement with Keras, the raw output, the SQNR
    of each output) on the accuracy samples.

    Several outputs (rnn_variants): the SQNR is the worst (lowest) of the outputs' SQNRs, each
    output's own in the list; top-1 is taken on output 0 (a classifier head there)."""
    raw = runner.calls[m.acc]()
    ys = runner.floats(raw)
    ys = ys if isinstance(ys, list) else [ys]
    if len(ys) != len(m.keras_outs):
        raise ValueError(f"{len(ys)} output(s), Keras has {len(m.keras_outs)}")
    per = [sqnr_db(k.reshape(m.acc, -1), np.asarray(y).reshape(m.acc, -1))
           for k, y in zip(m.keras_outs, ys)]
    y, ref = np.asarray(ys[0]).reshape(m.acc, -1), m.keras_outs[0].reshape(m.acc, -1)
    top1 = float(np.mean(y.argmax(axis=1) == ref.argmax(axis=1))) if ref.shape[1] > 1 else None
    return min(per), top1, raw, per


def apply_counting_rule(runners):
    """Mark each int8 runner: does it count (SQNR within COUNTS_WITHIN_DB of the best
    deployment peer's)? Returns the best deployment peer's SQNR (None if none ran)."""
    peers = [r["sqnr_db"] for k, r in runners.items()
             if k in DEPLOY_PEERS and r["status"] == "ok" and r.get("sqnr_db") is not None]
    best = max(peers) if peers else None
    for k, r in runners.items():
        if r["status"] != "ok" or k not in INT8_KEYS or best is None:
            continue
        r["counts"] = bool(r["sqnr_db"] >= best - COUNTS_WITHIN_DB)
    return best


# ---------------------------------------------------------------------------------------------
# One model (fixture or layer bench): build the runners, time them, check their outputs
# ---------------------------------------------------------------------------------------------
def bench_model(m, args, want, console, labels, tmpdir=None):
    from fixnet.cost import macs as graph_macs

    import fixnet

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

    def with_failures(build):
        def run():
            made, failed = build()
            for k, label, why in failed:
                status[k] = (label, why)
            return made
        return run

    fixnet_keys = ["fixnet_int8", "fixnet_int8_float_io", "fixnet_float"]
    try:
        fm = fixnet.load(str(m.h5))
    except Exception as e:  # noqa: BLE001 - reported below (fatal but for a recurrent model)
        fm = None
        for k in fixnet_keys:
            status[k] = (labels.get(k, k), f"failed: {type(e).__name__}: {e}")
    if fm is not None:
        attempt(["fixnet_int8", "fixnet_int8_float_io"],
                lambda: fixnet_runners(m, fm, want, args.threads))
        attempt(["fixnet_float"], lambda: fixnet_float_runner(m, fm))
    if not any(r.key == BASELINE for r in runners):
        why = _one_line(status.get(BASELINE, ("", "?"))[1], 400)
        if m.kind != "rnn":
            raise SystemExit(f"peers.py: fixnet itself failed on {m.name}: {why}")
        # a recurrent model fixnet does not run in int8 (yet): its row says why, and the
        # peers are timed all the same (without the fixnet / peer ratios)
        console.print(f"  fixnet int8 {why}; timing the peers without it")
    attempt(["tflite_xnnpack", "tflite_builtin", "tflite_ref"],
            with_failures(lambda: tflite_runners(m, want, args.tflite, args.threads)))
    if m.kind == "rnn" and m.tflite_error is not None:
        attempt(TFLITE_FLOAT_KEYS,
                with_failures(lambda: tflite_float_runners(m, want, args.tflite, args.threads)))
    attempt(["keras"], lambda: keras_runner(m, args.threads, args.warmup))
    attempt(["ort_float", "ort_int8"],
            with_failures(lambda: onnx_runners(m, args.threads, want)))

    macs = graph_macs(fm.graph) if fm is not None else None
    per_batch = {}
    for n in m.timed:
        if not runners:
            break
        console.print(f"  {m.name} batch {n}: {len(runners)} runners x {args.rounds} "
                      "interleaved rounds")
        with _blas_limit(args.threads):
            samples, inner = measure(runners, n, args.rounds, args.sample_ms / 1000, args.warmup)
        per_batch[n] = summarize(samples, inner, macs, n)

    out, raw_fixnet = {}, None
    for key in RUNNER_KEYS:
        r = next((r for r in runners if r.key == key), None)
        if r is not None:
            try:
                sq, top1, raw, per_output = accuracy(r, m)
            except Exception as e:  # noqa: BLE001 - e.g. outputs that do not match Keras's
                why = f"failed: accuracy check: {type(e).__name__}: {e}"
                out[key] = {"label": r.label, "status": why.splitlines()[0][:120],
                            "note": r.note + "; " + why}
                continue
            if key == BASELINE:
                raw_fixnet = raw
            entry = {"label": r.label, "status": "ok", "note": r.note,
                     "batches": {str(n): per_batch[n][key] for n in m.timed},
                     "sqnr_db": sq, "top1_agree_keras": top1}
            if len(per_output) > 1:
                entry["sqnr_db_outputs"] = per_output
            if hasattr(r, "chosen"):
                entry["keras_method"] = {str(n): v for n, v in r.chosen.items()}
            out[key] = entry
        elif key in status:
            label, why = status[key]
            short = "not installed" if why.startswith("not installed") or \
                why.startswith("tensorflow not installed") else why.splitlines()[0][:120]
            out[key] = {"label": label, "status": short, "note": why}
    res = {"kind": m.kind, "what": m.what, "macs_per_sample": macs, "runners": out,
           "accuracy_samples": m.acc,
           "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg())}   # after timing
    res["best_peer_sqnr_db"] = apply_counting_rule(out)
    if m.kind == "rnn":
        res["tflite_error"] = m.tflite_error
        res["outputs"] = len(m.keras_outs)
    if m.kind == "micro" and args.micro_isa_list:
        import hashlib
        digest = hashlib.sha256(np.ascontiguousarray(raw_fixnet).tobytes()).hexdigest()
        console.print(f"  {m.name}: fixnet with FIXNET_ISA={','.join(args.micro_isa_list)} "
                      "(subprocess each)")
        other = fixnet_other_builds(m, digest, args.micro_isa_list, args, tmpdir)
        b = 1 if 1 in m.timed else m.timed[0]
        for isa, r in other.items():
            if r["status"] == "ok":
                r["gmacs"] = macs * b / (r["median_us"] * 1e-6) / 1e9
                r["batch"] = b
        res["fixnet_builds"] = other
    return res


# ---------------------------------------------------------------------------------------------
# Machine, verdicts, report
# ---------------------------------------------------------------------------------------------
def machine_info(threads):
    from fixnet.cli.common import system_info

    info = system_info()
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    for mod in ("fixnet", "tensorflow", "keras", "tf_keras", "onnxruntime", "tf2onnx", "onnx",
                "ai_edge_litert", "tflite_runtime"):
        if mod in sys.modules:
            versions[mod] = getattr(sys.modules[mod], "__version__", "?")
    now = datetime.datetime.now(datetime.timezone.utc)
    return {"date": now.strftime("%Y-%m-%d %H:%M UTC"), "cpu": info["cpu"],
            "machine": info["machine"], "cores": info["cores"], "threads": threads,
            "platform": info["platform"], "fixnet_path": info["path"],
            # which kernel build ran (FIXNET_ISA forces one) and which builds run here
            "fixnet_isa": info["isa"], "fixnet_builds": info["builds_runnable"],
            "versions": versions}


def _ratio(res, key, batch=1):
    r = res["runners"].get(key)
    if not r or r["status"] != "ok" or str(batch) not in r["batches"]:
        return None
    return r["batches"][str(batch)]["fixnet_over"]


def verdicts(results, batch=1):
    """Issue 9's "Done when" bars, from the CNN and MLP fixtures (not the layer benches, not
    the recurrent models: issue 11's, not the zoo: issue 17's) at `batch`."""
    models = {k: v for k, v in results["models"].items() if v["kind"] in FIXTURE_KINDS}
    out = _bars(models, batch, ("tflite_builtin", "ort_int8"))
    lines = out["lines"]
    conv = results["models"].get("conv3x3")
    if conv is not None:
        g = None
        if results["machine"]["fixnet_isa"] == "avx2":
            g = conv["runners"][BASELINE]["batches"].get(str(batch), {}).get("gmacs")
        else:
            r = conv.get("fixnet_builds", {}).get("avx2")
            g = r.get("gmacs") if r and r["status"] == "ok" else None
        out["conv3x3_avx2_gmacs"] = g
        lines.append((g is not None and g > CONV3X3_BAR_GMACS,
                      f"3x3 conv layer bench on the AVX2 build > {CONV3X3_BAR_GMACS:.0f} GMAC/s: "
                      + (f"{g:.1f} GMAC/s -> {'yes' if g > CONV3X3_BAR_GMACS else 'NO'}"
                         if g is not None else "not measured (no avx2 build here)")))
    out["lines"] = [(bool(ok), text) for ok, text in lines]
    return out


def verdicts_issue17(results, batch=1):
    """Issue 17's bars, from the zoo models (bench/zoo.py: stand-ins for the Keras files the
    issue timed) at `batch`: fixnet <= TFLite builtin on every model, geometric mean of
    fixnet / XNNPACK <= 1, no model above 1.25x XNNPACK (a peer more than 1 dB less accurate
    than the best deployment peer does not count, as for issue 9). None without zoo models."""
    models = {k: v for k, v in results["models"].items() if v["kind"] == ZOO_KIND}
    if not models:
        return None
    out = _bars(models, batch, ("tflite_builtin",))
    out["models"] = list(models)
    return out


def _bars(models, batch, slower_than):
    """The bars shared by issues 9 and 17 over `models` (name -> result): fixnet <= each peer
    of `slower_than` on every model where that peer counts; the geometric mean of fixnet /
    XNNPACK <= 1 and no model above 1.25x XNNPACK; and (not a bar) fixnet's SQNR within 1 dB
    of the best peer's. Returns a dict with "lines": [(holds, text)] and the numbers."""
    lines, out = [], {}

    def counted(res, key):
        r = res["runners"].get(key)
        return r is not None and r["status"] == "ok" and r.get("counts", False)

    for key in slower_than:
        slower, skipped, checked = [], [], 0
        for name, res in models.items():
            ratio = _ratio(res, key, batch)
            if ratio is None:
                continue
            if not counted(res, key):
                skipped.append(name)
                continue
            checked += 1
            if ratio > 1.0:
                slower.append(f"{name} {ratio:.2f}x")
        ok = checked > 0 and not slower
        out[key] = {"holds": ok, "checked": checked, "slower": slower, "not_counted": skipped}
        lines.append((ok, f"fixnet <= {SHORT[key]} on every model where it counts: "
                          + ("yes" if ok else "NO" if checked else "not measured")
                          + (f" (slower on {len(slower)}/{checked}: {', '.join(slower)})"
                             if slower else f" ({checked} models)" if checked else "")
                          + (f"; does not count on {', '.join(skipped)}" if skipped else "")))
    xs = {name: _ratio(res, "tflite_xnnpack", batch) for name, res in models.items()
          if _ratio(res, "tflite_xnnpack", batch) is not None and counted(res, "tflite_xnnpack")}
    not_counted = [name for name, res in models.items()
                   if _ratio(res, "tflite_xnnpack", batch) is not None
                   and not counted(res, "tflite_xnnpack")]
    if xs:
        geo = math.exp(statistics.fmean(math.log(v) for v in xs.values()))
        worst = max(xs, key=xs.get)
        above = [f"{n} {v:.2f}x" for n, v in xs.items() if v > 1.25]
        out["xnnpack"] = {"geomean": geo, "worst_model": worst, "worst": xs[worst],
                          "models": len(xs), "above_1.25": above, "not_counted": not_counted}
        lines.append((geo <= 1.0, f"geometric mean of fixnet / XNNPACK over {len(xs)} models "
                                  f"<= 1: {geo:.2f}x -> {'yes' if geo <= 1 else 'NO'}"
                      + (f" (XNNPACK does not count on {', '.join(not_counted)})"
                         if not_counted else "")))
        lines.append((not above, f"no model above 1.25x XNNPACK: worst {worst} {xs[worst]:.2f}x"
                                 f" -> {'yes' if not above else 'NO'}"
                      + (f" ({len(above)} above: {', '.join(above)})" if above else "")))
    worse = [f"{name} {res['runners'][BASELINE]['sqnr_db']:.1f} dB vs "
             f"{res['best_peer_sqnr_db']:.1f}" for name, res in models.items()
             if res.get("best_peer_sqnr_db") is not None
             and not res["runners"][BASELINE].get("counts", True)]
    lines.append((not worse, "fixnet's SQNR no more than 1 dB below the best peer's on every "
                             "model (not one of the issue's bars; the same rule for fixnet): "
                  + ("yes" if not worse else f"NO on {len(worse)}: {', '.join(worse)}")))
    out["fixnet_less_accurate"] = worse
    out["lines"] = [(bool(ok), text) for ok, text in lines]
    return out


def fmt_us(us):
    if us >= 1000:
        return f"{us / 1000:.2f} ms"
    return f"{us:.1f} us" if us >= 10 else f"{us:.2f} us"


def fmt_ratio(r):
    if r < 0.1:
        return f"{r:.2g}x"
    return f"{r:.2f}x" if r < 10 else f"{r:.0f}x" if r >= 100 else f"{r:.1f}x"


def fmt_macs(m):
    return f"{m / 1e6:.2f} M" if m >= 1e5 else f"{m / 1e3:.1f} k"


def fmt_pct(fraction):
    return "100%" if fraction == 1.0 else f"{100 * fraction:.1f}%"


def fmt_db(db):
    return "inf" if db == float("inf") else f"{db:.1f}"


def _cell(res, key, batch, what):
    """A table cell for runner `key`: 'ratio' (fixnet / runner, * if it does not count),
    'gmacs', 'time' or 'sqnr'."""
    r = res["runners"].get(key)
    if r is None:
        return ""
    if r["status"] != "ok":
        return ("n/i" if r["status"] == "not installed" else
                "no int8" if r["status"].startswith("no int8 .tflite") else "failed")
    st = r["batches"].get(str(batch))
    mark = "" if r.get("counts", True) else "*"
    if what == "ratio":
        if key == BASELINE:
            return "1"
        return fmt_ratio(st["fixnet_over"]) + mark if st and st["fixnet_over"] is not None else ""
    if what == "gmacs":
        return f"{st['gmacs']:.1f}" if st and st.get("gmacs") is not None else ""
    if what == "time":
        return fmt_us(st["median_us"]) if st else ""
    if what == "sqnr":
        return fmt_db(r["sqnr_db"]) + mark
    if what == "time_ratio":            # recurrent table: time, and fixnet / runner if known
        if not st:
            return ""
        if key == BASELINE or st["fixnet_over"] is None:
            return fmt_us(st["median_us"])
        return f"{fmt_us(st['median_us'])} ({fmt_ratio(st['fixnet_over'])}{mark})"
    if what == "sqnr_top1":
        top1 = r.get("top1_agree_keras")
        return fmt_db(r["sqnr_db"]) + mark + (f" / {fmt_pct(top1)}" if top1 is not None else "")
    raise ValueError(what)


def tables(results, keys, batches):
    """The report as (title, header, rows, notes) tables, shared by the console and Markdown."""
    out = []
    models = {k: v for k, v in results["models"].items() if v["kind"] not in ("micro", "rnn")}
    # the fixtures (and .h5 paths) first, then the zoo of issue 17 in tables of its own
    groups = [("Models", {k: v for k, v in models.items() if v["kind"] != ZOO_KIND}),
              ("Zoo models (bench/zoo.py, issue 17)",
               {k: v for k, v in models.items() if v["kind"] == ZOO_KIND})]
    micro = {k: v for k, v in results["models"].items() if v["kind"] == "micro"}
    rnn = {k: v for k, v in results["models"].items() if v["kind"] == "rnn"}
    # columns: the runners that ran or were tried on some model (TFLite FLOAT: recurrent only)
    keys = [k for k in keys if any(k in res["runners"] for res in results["models"].values())]
    peers = [k for k in keys if k != BASELINE and k not in TFLITE_FLOAT_KEYS]
    int8 = [k for k in keys if k in INT8_KEYS]
    star = (f"`*` after a number: that runtime's SQNR is more than {COUNTS_WITHIN_DB:g} dB below "
            "the best deployment peer's (XNNPACK, TFLite builtin, ORT int8): a peer so marked "
            "does not count for the bars there; on fixnet it marks a model where fixnet is the "
            "less accurate")
    for b in batches:
        for what, group in groups:
            if not group:
                continue
            header = (["model", "MACs/sample", "fixnet time", "fixnet GMAC/s"]
                      + [f"fixnet / {SHORT[k]}" for k in peers])
            rows = [[name, fmt_macs(res["macs_per_sample"]), _cell(res, BASELINE, b, "time"),
                     _cell(res, BASELINE, b, "gmacs")] + [_cell(res, k, b, "ratio") for k in peers]
                    for name, res in group.items()]
            notes = [star, "n/i = not installed"]
            if what != "Models":
                notes.append("zoo models: architecture-alike stand-ins for the Keras files of "
                             "issue 17, weights not trained on real data, synthetic inputs "
                             "(bench/zoo.py list)")
            out.append((f"{what}, batch {b}: fixnet int8 time / peer time (below 1: fixnet is "
                        "faster)", header, rows, notes))
            header = (["model"] + [f"SQNR {SHORT[k]}" for k in keys]
                      + [f"{SHORT[k]} GMAC/s" for k in peers])
            rows = [[name] + [_cell(res, k, b, "sqnr") for k in keys]
                    + [_cell(res, k, b, "gmacs") for k in peers] for name, res in group.items()]
            n_acc = sorted({res["accuracy_samples"] for res in group.values()})
            out.append((f"{what}: output SQNR (dB) against Keras float on "
                        f"{'/'.join(map(str, n_acc))} test samples, and the peers' "
                        f"GMAC/s at batch {b}", header, rows, [star]))
        if micro:
            isas = sorted({i for res in micro.values() for i in res.get("fixnet_builds", {})})
            header = (["layer", "MACs", f"fixnet GMAC/s ({results['machine']['fixnet_isa']})"]
                      + [f"fixnet GMAC/s ({i})" for i in isas]
                      + [f"{SHORT[k]} GMAC/s" for k in peers])
            rows = []
            for name, res in micro.items():
                fb = res.get("fixnet_builds", {})
                rows.append([name, fmt_macs(res["macs_per_sample"]),
                             _cell(res, BASELINE, b, "gmacs")]
                            + [(f"{fb[i]['gmacs']:.1f}" + ("" if fb[i]["bit_identical"] else " (!)")
                                if i in fb and fb[i]["status"] == "ok" else
                                fb.get(i, {}).get("status", "")) for i in isas]
                            + [_cell(res, k, b, "gmacs") for k in peers])
            notes = [f"{name}: {res['what']}" for name, res in micro.items()]
            if isas:
                notes.append("fixnet GMAC/s (<build>): the same layer with FIXNET_ISA=<build>, "
                             "timed alone in a subprocess (not interleaved with the peers); "
                             "(!) = its int8 outputs differ from the main build's")
            out.append((f"Layer benches, batch {b}: GMAC/s per runtime", header, rows, notes))
            header = (["layer"] + [f"fixnet / {SHORT[k]}" for k in peers]
                      + [f"SQNR {SHORT[k]}" for k in int8])
            rows = [[name] + [_cell(res, k, b, "ratio") for k in peers]
                    + [_cell(res, k, b, "sqnr") for k in int8] for name, res in micro.items()]
            out.append((f"Layer benches, batch {b}: fixnet int8 time / peer time, and output "
                        "SQNR (dB) against Keras float", header, rows, [star]))
        if rnn:
            out += rnn_tables(rnn, keys, b)
    return out


def rnn_tables(rnn, keys, batch):
    """The recurrent models' tables at one batch size: time per call of every runner (and
    fixnet / runner where fixnet int8 ran), then SQNR and top-1; notes say what failed and
    why, and which TFLite is float."""
    cols = [k for k in keys if any(k in res["runners"] for res in rnn.values())]
    header = ["model", "MACs/sample"] + [SHORT[k] for k in cols]
    rows = [[name, fmt_macs(res["macs_per_sample"]) if res["macs_per_sample"] else "?"]
            + [_cell(res, k, batch, "time_ratio") for k in cols] for name, res in rnn.items()]
    notes = ["time = median per call; in parentheses fixnet int8 / that runner (below 1: fixnet "
             "is faster), where fixnet int8 ran",
             "TFLite FLOAT ...: a float .tflite converted at run time, timed where the fixture "
             "has no int8 .tflite (its converter failed); not a deployment peer of an int8 engine",
             "ORT int8 here: quantize_static QDQ of the Keras model (float in/out), the recurrent "
             "op itself stays float in ONNX Runtime",
             "no int8 = the fixture has no int8 .tflite; failed = see the notes below",
             f"`*`: that runtime's SQNR is more than {COUNTS_WITHIN_DB:g} dB below the best "
             "int8 deployment peer's (XNNPACK, TFLite builtin, ORT int8); on fixnet it marks a "
             "model where fixnet is the less accurate"]
    out = [(f"Recurrent models, batch {batch}: time per call", header, rows, notes)]
    header = ["model"] + [f"{SHORT[k]}" for k in cols]
    rows = [[name] + [_cell(res, k, batch, "sqnr_top1") for k in cols]
            for name, res in rnn.items()]
    notes = ["SQNR (dB) against Keras float / top-1 agreement with Keras (classifiers); a "
             "model with several outputs (rnn_variants): the worst output's SQNR, top-1 of "
             "output 0"]
    for name, res in rnn.items():
        multi = {SHORT[k]: r["sqnr_db_outputs"] for k, r in res["runners"].items()
                 if k in cols and r.get("sqnr_db_outputs")}
        if multi:
            notes.append(f"{name}, SQNR per output: " + "; ".join(
                f"{who} " + " / ".join(fmt_db(x) for x in v) for who, v in multi.items()))
    for name, res in rnn.items():
        failed = {}                   # why -> runners (the three TFLite kinds often share one)
        for k, r in res["runners"].items():
            if k in cols and r["status"] not in ("ok", "not installed") \
                    and not r["status"].startswith("no int8 .tflite"):
                failed.setdefault(_why(r["note"], name), []).append(SHORT[k])
        why = [f"{', '.join(who)}: {text}" for text, who in failed.items()]
        if res.get("tflite_error"):
            why.insert(0, "no int8 .tflite, the fixture's converter failed: "
                          + _why(res["tflite_error"], name))
        if why:
            notes.append(f"{name}: " + "; ".join(why))
    n_acc = "/".join(str(n) for n in sorted({res["accuracy_samples"] for res in rnn.values()}))
    out.append((f"Recurrent models: output SQNR (dB) against Keras float / top-1 agreement, "
                f"on {n_acc} test samples", header, rows, notes))
    return out


# results key -> the title of its bars in the report
VERDICT_TITLES = [("verdicts", 'Issue 9, "Done when"'),
                  ("verdicts_issue17", "Issue 17's bars, on the zoo models")]


def set_verdicts(results):
    """The bars of this run (or of a saved --json, with this version's rules) at batch 1:
    issue 9's where fixtures or layer benches ran, issue 17's where zoo models ran."""
    kinds = {v["kind"] for v in results["models"].values()}
    at_1 = 1 in results["settings"]["batches"]
    results["verdicts"] = (verdicts(results)
                           if at_1 and kinds & set(FIXTURE_KINDS + ("micro",)) else None)
    results["verdicts_issue17"] = verdicts_issue17(results) if at_1 else None


def print_report(console, results, keys, batches):
    from rich import box
    from rich.table import Table

    for title, header, rows, notes in tables(results, keys, batches):
        t = Table(title=title, box=box.SIMPLE_HEAVY, title_justify="left")
        for i, h in enumerate(header):
            t.add_column(h, justify="left" if i == 0 else "right", no_wrap=(i == 0))
        for row in rows:
            t.add_row(*row)
        console.print(t)
        for n in notes:
            console.print(f"  [dim]{n}[/dim]")
        console.print()
    for key, title in VERDICT_TITLES:
        v = results.get(key)
        if v:
            console.print(f"[bold]{title} (batch 1, one thread, int8 in/out):[/bold]")
            for ok, text in v["lines"]:
                console.print(f"  [{'green' if ok else 'red'}]{'PASS' if ok else 'FAIL'}[/] "
                              f"{text}")


def write_markdown(path, results, keys, batches):
    mach = results["machine"]
    s = results["settings"]
    lines = [f"Generated by `bench/peers.py` on {mach['date']}.", "",
             "```sh", s["command"], "```", "",
             f"- CPU: {mach['cpu']} ({mach['machine']}), {mach['cores']} cores; "
             f"load average {s['load_before']} before, {s['load_after']} after the run",
             f"- fixnet {mach['versions'].get('fixnet', '?')} from `{mach['fixnet_path']}`, "
             f"kernel build `{mach['fixnet_isa']}` (builds this CPU runs: "
             f"{', '.join(mach['fixnet_builds'])})",
             "- " + ", ".join(f"{k} {v}" for k, v in mach["versions"].items() if k != "fixnet"),
             f"- {s['threads']} thread(s) per runtime, int8 in / int8 out, {s['rounds']} "
             f"interleaved rounds of ~{s['sample_ms']:g} ms samples per model and batch; SQNR "
             f"on {s['accuracy_samples'] or 'all the'} test samples of each fixture, "
             f"{s['accuracy_samples'] or MICRO_SAMPLES} random inputs per layer bench"]
    kinds = {v["kind"] for v in results["models"].values()}
    if kinds - {"rnn"}:
        lines += ["- ONNX Runtime int8: tf2onnx `from_tflite` of the same .tflite (QDQ graph, "
                  "CPUExecutionProvider); TFLite builtin: "
                  "`OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES`; TFLite ref: `BUILTIN_REF` "
                  "(not a deployment peer: shown for scale, no bar)"]
    if "rnn" in kinds:
        lines += ["- Recurrent models: TFLite int8 = the committed batch-1 .tflite, one "
                  "`reset_all_variables()` + `invoke()` per sample; TFLite FLOAT = the Keras "
                  "model converted at run time where the fixture has no int8 .tflite; ORT int8 "
                  "= `quantize_static` (QDQ, s8s8, per-channel, MinMax over `x_calib`) of "
                  "tf2onnx's graph of the Keras model, float in/out, the recurrent op float"]
    lines.append("")
    for title, header, rows, notes in tables(results, keys, batches):
        lines += [f"**{title}**", "", "| " + " | ".join(header) + " |",
                  "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
        lines += [""] + [n if n.endswith((".", "?")) else f"{n}." for n in notes]
        lines += [""] if notes else []
    for key, title in VERDICT_TITLES:
        v = results.get(key)
        if v:
            lines += [f"**{title}** (batch 1, one thread, int8 in/out):", ""]
            lines += [f"- {'PASS' if ok else '**FAIL**'}: {text}" for ok, text in v["lines"]]
            lines.append("")
    pathlib.Path(path).write_text("\n".join(lines))


# ---------------------------------------------------------------------------------------------
def family_paths(fams):
    """The fixtures of model families (both writers: <family>_k3, <family>_tfk2) in models/."""
    return [p for f in fams for p in sorted(MODELS_DIR.glob(f"{f}_*.h5"))
            if p.stem in (f"{f}_k3", f"{f}_tfk2")]


def model_paths(names):
    if names == ["none"]:
        return []
    if not names:
        return family_paths(CNN_FAMILIES + MLP_FAMILIES)
    out = []
    for name in names:
        p = pathlib.Path(name)
        if p.suffix == ".h5":
            if not p.exists():
                sys.exit(f"peers.py: no model file {p}")
            out.append(p)
            continue
        fams = GROUPS.get(name, [name] if name in CNN_FAMILIES + MLP_FAMILIES + RNN_FAMILIES
                          else None)
        if fams is not None:
            out += [q for q in family_paths(fams) if q not in out]
            continue
        if name.startswith(ZOO_GROUP):
            zoo = zoo_module()
            found = zoo.resolve(name)
            if not found:
                sys.exit(f"peers.py: no zoo model matches {name!r} (bench/zoo.py list: "
                         f"{', '.join(zoo.ZOO)})")
            out += [q for q in (zoo.ZOO[n].h5 for n in found) if q not in out]
            continue
        matches = sorted(q for q in MODELS_DIR.glob("*.h5") if fnmatch.fnmatch(q.stem, name))
        if not matches:
            sys.exit(f"peers.py: no model in {MODELS_DIR} matches {name!r}")
        out += [q for q in matches if q not in out]
    return out


_ZOO = None


def zoo_module():
    """bench/zoo.py (the zoo's names and builders; imports neither TensorFlow nor fixnet)."""
    global _ZOO
    if _ZOO is None:
        spec = importlib.util.spec_from_file_location("fixnet_bench_zoo", ZOO_PY)
        _ZOO = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(_ZOO)
    return _ZOO


def ensure_zoo(paths, console):
    """Build the zoo models among `paths` that are not in bench/zoo/ yet (or were made by an
    older recipe), each in a child process of this Python (TensorFlow needed there); returns
    `paths` without the ones that could not be built, each named with the reason."""
    zoo = zoo_module()
    names = [p.stem for p in paths if p.stem in zoo.ZOO and p == zoo.ZOO[p.stem].h5]
    missing = [n for n in names if not zoo.ZOO[n].cached()]
    if not missing:
        return paths
    if importlib.util.find_spec("tensorflow") is None:
        failed = {n: "not built, and building needs TensorFlow (python bench/zoo.py build "
                     "zoo, with a Python that has it, then run this again)" for n in missing}
    else:
        failed = zoo.ensure(missing, log=lambda text: console.print(text, highlight=False))
    for n, why in failed.items():
        console.print(f"[bold]{n}[/bold]: skipped: {why}")
    return [p for p in paths if p.stem not in failed]


def command_line():
    env = [f"{v}={shlex.quote(os.environ[v])}" for v in ("FIXNET_ISA", "PYTHONPATH")
           if v in os.environ]
    return " ".join(env + [shlex.quote(sys.executable)] + [shlex.quote(a) for a in sys.argv])


def main(args):
    from rich.console import Console

    if args.fixnet_child:
        return fixnet_child(args.fixnet_child)
    if args.tflite_float_child:
        return tflite_float_child(args.tflite_float_child)
    console = Console(width=None if sys.stdout.isatty() else 200)
    if args.from_json:
        results = json.loads(pathlib.Path(args.from_json).read_text())
        keys = [k for k in RUNNER_KEYS
                if any(k in res["runners"] for res in results["models"].values())]
        set_verdicts(results)                            # with this version's rules
        print_report(console, results, keys, results["settings"]["batches"])
        if args.markdown:
            write_markdown(args.markdown, results, keys, results["settings"]["batches"])
            console.print(f"wrote {args.markdown}")
        return 0
    batches = sorted(set(args.batches))
    base = INT8_KEYS + TFLITE_FLOAT_KEYS + (FLOAT_KEYS if args.float else [])
    want = [k for k in RUNNER_KEYS
            if ((k in args.only) if args.only else (k in base)) or k == BASELINE]
    want = [k for k in want if k not in args.skip]
    import fixnet._kernels as kernels
    if args.micro_isa is None:
        args.micro_isa_list = [b for b in kernels.available_builds() if b != kernels.ISA]
    else:
        args.micro_isa_list = [b for b in args.micro_isa if b != kernels.ISA]
    results = {"settings": {"batches": batches, "rounds": args.rounds, "sample_ms": args.sample_ms,
                            "warmup": args.warmup, "threads": args.threads, "baseline": BASELINE,
                            "accuracy_samples": args.accuracy_samples,
                            "ratio": "fixnet_over = median over rounds of fixnet int8 sample / "
                                     "runner sample (below 1: fixnet faster)",
                            "counts_within_db": COUNTS_WITHIN_DB, "deploy_peers": DEPLOY_PEERS,
                            "command": command_line(),
                            "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg())},
               "models": {}}
    labels = {k: label for k, label, _, _ in TFLITE_KINDS + TFLITE_FLOAT_KINDS}
    labels.update({"fixnet_int8": "fixnet int8", "keras": "Keras float",
                   "fixnet_int8_float_io": "fixnet int8 (float in/out)",
                   "fixnet_float": "fixnet float reference (NumPy)",
                   "ort_float": "ONNX Runtime float",
                   "ort_int8": "ONNX Runtime int8 (QDQ from the .tflite)"})

    for h5 in ensure_zoo(model_paths(args.models), console):
        console.print(f"[bold]{h5.stem}[/bold]: building runners ...")
        m = ModelInputs.fixture(h5, batches, args.accuracy_samples)
        results["models"][m.name] = bench_model(m, args, want, console, labels)
    if args.micro and importlib.util.find_spec("tensorflow") is None:
        # the layer benches make their Keras layer and its int8 .tflite here (the fixtures'
        # .tflite files are stored in models/): nothing to run without TensorFlow
        console.print(f"layer benches ({', '.join(args.micro)}) skipped: they build their "
                      "Keras layers and int8 .tflite with TensorFlow, which is not installed "
                      "here (--micro none leaves them out)")
    elif args.micro:
        with tempfile.TemporaryDirectory(prefix="fixnet-peers-") as tmpdir:
            for name in args.micro:
                console.print(f"[bold]{name}[/bold] (layer bench): building the Keras layer, "
                              "its .h5 and int8 .tflite ...")
                try:
                    m = build_micro(name, batches, args.accuracy_samples, args.threads, tmpdir)
                except Unavailable as e:
                    console.print(f"  skipped: {e}")
                    continue
                except Exception as e:  # noqa: BLE001 - a failed conversion is reported
                    console.print(f"  skipped: {type(e).__name__}: {e}")
                    continue
                results["models"][name] = bench_model(m, args, want, console, labels, tmpdir)

    results["settings"]["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    results["machine"] = machine_info(args.threads)
    set_verdicts(results)
    mach = results["machine"]
    console.print()
    console.print(f"[bold]fixnet peers[/bold], {mach['date']}, {mach['cpu']} ({mach['cores']} "
                  f"cores), {args.threads} thread(s) per runtime, {args.rounds} rounds; fixnet "
                  f"from {mach['fixnet_path']}, kernels built for {mach['fixnet_isa']} (of "
                  f"{mach['fixnet_builds']}; FIXNET_ISA forces one)")
    console.print("versions: " + ", ".join(f"{k} {v}" for k, v in mach["versions"].items()))
    console.print(f"command: {results['settings']['command']}")
    console.print()
    missing = {}
    for name, res in results["models"].items():
        for key, r in res["runners"].items():
            if r["status"] == "not installed":
                missing.setdefault(r["note"], []).append(key)
            elif r["status"] != "ok":
                console.print(f"  [dim]{name} {key}: {r['note']}[/dim]")
    for note, keys in missing.items():         # once per reason, not once per model
        names = ", ".join(SHORT.get(k, k) for k in dict.fromkeys(keys))
        console.print(f"  [dim]{names}: {note}[/dim]")
    keys = [k for k in RUNNER_KEYS if k in want]
    print_report(console, results, keys, batches)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
        console.print(f"wrote {args.json}")
    if args.markdown:
        write_markdown(args.markdown, results, keys, batches)
        console.print(f"wrote {args.markdown}")
    return 0


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
    sys.exit(main(ARGS))
