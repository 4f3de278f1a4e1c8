"""The command line of bench/peers.py: its arguments, and main(argv), which sets the thread and
log variables before anything that starts a thread pool is imported, then runs.

Standard library only at import: NumPy, fixnet and the peers are imported by main, after the
environment is set (OpenBLAS and TensorFlow size their pools when they load)."""
import argparse
import os
import sys

from .catalog import (BASELINE, CNN_FAMILIES, FLOAT_KEYS, GROUPS, INT16_KEYS, MICRO,
                      MICRO_SAMPLES, MLP_FAMILIES, REPO, RNN_FAMILIES, RUNNER_KEYS,
                      TFLITE_FILE_SAMPLES, ZOO_GROUP)

DESCRIPTION = "Time fixnet against its peers on the same models, in one run, on one machine."
EPILOG = ("Runner keys for --only/--skip: " + ", ".join(RUNNER_KEYS)
          + "\n\nWhat each runner times, the models and the method: bench/peerbench/__init__.py "
            "and bench/README.md.")


def build_parser():
    p = argparse.ArgumentParser(prog="peers.py", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=EPILOG)
    p.add_argument("--models", nargs="+", default=None,
                   help="model names in models/ (e.g. mlp_seq_k3), families (mlp_seq: both "
                        "writers), groups (" + ", ".join(list(GROUPS) + [ZOO_GROUP]) + "), "
                        "shell patterns ('resnet*', 'rnn_*'), paths to .h5 files, paths to "
                        ".tflite files or folders of them (your own files: fixnet on the file "
                        "beside TFLite on it, and fixnet's outputs against TFLite's), or 'none'; "
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
                        f"of a fixture's, {MICRO_SAMPLES} random inputs for a layer bench); for "
                        "a .tflite file, the random inputs fixnet's outputs are compared with "
                        f"TFLite's on (default {TFLITE_FILE_SAMPLES})")
    p.add_argument("--threads", type=int, default=1,
                   help="threads for every runtime (TFLite, TF/Keras, ONNX Runtime, BLAS)")
    p.add_argument("--tflite", choices=["auto", "tensorflow", "ai_edge_litert", "tflite_runtime"],
                   default="auto", help="where the TFLite interpreter comes from")
    p.add_argument("--float", action="store_true",
                   help="also the float runners: " + ", ".join(FLOAT_KEYS))
    p.add_argument("--int16", action="store_true",
                   help="also the int16-activation runners (issue 19): " + ", ".join(INT16_KEYS)
                        + "; their own table sets them beside fixnet int8 and XNNPACK int8")
    p.add_argument("--only", default="",
                   help="comma-separated runner keys to run (plus the baseline)")
    p.add_argument("--skip", default="", help="comma-separated runner keys to leave out")
    p.add_argument("--quick", action="store_true", help="smoke run: 15 rounds, 0.5 ms samples")
    p.add_argument("--json", metavar="PATH", help="also write every number to this JSON file")
    p.add_argument("--markdown", metavar="PATH",
                   help="also write the tables as Markdown (with date, CPU, versions, command)")
    p.add_argument("--from-json", metavar="PATH",
                   help="measure nothing: print (and --markdown) the tables of a saved --json")
    # the child processes a run starts (runners/children.py)
    p.add_argument("--fixnet-child", metavar="SPEC", help=argparse.SUPPRESS)
    p.add_argument("--tflite-float-child", metavar="SPEC", help=argparse.SUPPRESS)
    p.add_argument("--tflite-16x8-child", metavar="SPEC", help=argparse.SUPPRESS)
    return p


def parse_args(argv=None):
    """The arguments of `argv` (default sys.argv[1:]), checked; --quick sets its rounds."""
    p = build_parser()
    args = p.parse_args(argv)
    if args.fixnet_child or args.tflite_float_child or args.tflite_16x8_child or args.from_json:
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


def set_environment(threads):
    """The variables the runtimes read when they load: every BLAS / OpenMP pool limited to
    `threads` (unless the caller's environment says otherwise), and TensorFlow's C++ log
    quiet. The child processes inherit them."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(threads or 1))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def use_checkout_fixnet():
    """The installed fixnet (pip install .) if there is one, else this checkout's (an in-place
    build: python setup.py build_ext --inplace)."""
    try:
        import fixnet  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(REPO))


def main(argv=None):
    """bench/peers.py with the arguments `argv` (default sys.argv[1:]); the exit status."""
    args = parse_args(argv)
    set_environment(getattr(args, "threads", 1))
    use_checkout_fixnet()
    if args.fixnet_child:
        from .runners.fixnet_runners import fixnet_child
        return fixnet_child(args.fixnet_child)
    if args.tflite_float_child:
        from .runners.tflite import tflite_float_child
        return tflite_float_child(args.tflite_float_child)
    if args.tflite_16x8_child:
        from .runners.tflite import tflite_16x8_child
        return tflite_16x8_child(args.tflite_16x8_child)
    from . import run
    if args.from_json:
        return run.from_json(args)
    return run.run(args, argv)
