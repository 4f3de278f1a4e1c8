"""The ``fixnet`` command line."""
import argparse
import os
import sys
import time

import numpy as np

from .errors import FixnetError

DATA = os.path.join(os.path.dirname(__file__), "data")


def _median_time(fn, min_total=0.3, min_runs=20):
    """Median wall time of fn() in seconds, over enough runs to fill ``min_total`` seconds."""
    fn()                                       # warm up (plans buffers, fills caches)
    times = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < min_total:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) > 100000:
            break
    return float(np.median(times))


def _pct(v):
    return f"{100.0 * v:.2f}%"


def cmd_demo(args):
    import fixnet
    from .report import render_table

    h5 = os.path.join(DATA, "digits_mlp.h5")
    d = np.load(os.path.join(DATA, "digits_mlp.npz"))
    x, y, calib = d["x_test"], d["y_test"], d["x_calib"]
    print(f"fixnet demo: a Keras {d['keras_version']} MLP trained on scikit-learn's digits "
          f"({x.shape[0]} test images, {calib.shape[0]} calibration images)")
    print(f"model file: {h5}\n")

    t0 = time.perf_counter()
    fm = fixnet.load(h5)
    t1 = time.perf_counter()
    qm = fm.quantize(calib)
    t2 = time.perf_counter()
    print(f"loaded in {1e3 * (t1 - t0):.1f} ms without TensorFlow; quantized in {1e3 * (t2 - t1):.1f} ms\n")

    p_float = fm.predict(x)
    p_int8 = qm.predict(x)
    top_f, top_q, top_t = p_float.argmax(1), p_int8.argmax(1), d["tflite_int8"].argmax(1)
    rows = [
        ("test accuracy", _pct((top_f == y).mean()), _pct((top_q == y).mean()), _pct((top_t == y).mean())),
        ("top-1 agreement with Keras float", _pct((top_f == d["keras_float"].argmax(1)).mean()),
         _pct((top_q == d["keras_float"].argmax(1)).mean()), _pct((top_t == d["keras_float"].argmax(1)).mean())),
        ("top-1 agreement with TFLite int8", "", _pct((top_q == top_t).mean()), ""),
        ("max |float - Keras float|", f"{np.abs(p_float - d['keras_float']).max():.2e}",
         f"{np.abs(p_int8 - d['keras_float']).max():.3f}", f"{np.abs(d['tflite_int8'] - d['keras_float']).max():.3f}"),
    ]
    print(render_table("accuracy on the held-out digits",
                       ["", "fixnet float", "fixnet int8", "TFLite int8 (stored)"], rows))
    print()
    print(qm.overflow_report())
    print()

    one = x[:1]
    t_float = _median_time(lambda: fm.predict(one))
    t_int8 = _median_time(lambda: qm.predict(one))
    one_q = qm.input_qparams[0].quantize(one)
    t_int8_raw = _median_time(lambda: qm.predict(one_q, output="int8"))
    rows = [("float (NumPy reference)", f"{1e6 * t_float:.1f}", "1.00x"),
            ("int8 (Cython kernels), float in/out", f"{1e6 * t_int8:.1f}", f"{t_float / t_int8:.2f}x"),
            ("int8 (Cython kernels), int8 in/out", f"{1e6 * t_int8_raw:.1f}", f"{t_float / t_int8_raw:.2f}x")]
    print(render_table("batch-1 latency, median (this machine; see bench/ for peers)",
                       ["path", "microseconds", "speed-up"], rows))
    return 0


def cpu_model():
    """The CPU's model name (/proc/cpuinfo on Linux: x86 'model name', a Raspberry Pi's
    'Model'), else what the platform module knows."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        for key in ("model name", "Model", "Hardware", "cpu model"):
            if fields.get(key):
                return fields[key]
    except OSError:
        pass
    return platform.processor() or platform.machine()


def system_info():
    """What this fixnet runs on: the kernel build chosen at import, the builds installed and
    runnable here, the CPU and its cores, and the versions (a dict; `fixnet info --system`)."""
    import platform

    import fixnet
    from . import _kernels

    builds = ("baseline",) + tuple(_kernels.ISA_PREFERENCE)
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {
        "fixnet": fixnet.__version__,
        "path": os.path.dirname(fixnet.__file__),
        "isa": _kernels.ISA,
        "isa_forced": os.environ.get("FIXNET_ISA", "").strip() or None,
        "builds_installed": [b for b in builds if _kernels.is_built(b)],
        "builds_runnable": _kernels.available_builds(),
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


def cmd_system(args):
    info = system_info()
    forced = f" (forced by FIXNET_ISA={info['isa_forced']})" if info["isa_forced"] else \
        " (the first runnable of the builds below; FIXNET_ISA=<build> forces one)"
    print(f"fixnet {info['fixnet']} from {info['path']}")
    print(f"kernel build in use: {info['isa']}{forced}")
    print(f"kernel builds installed: {', '.join(info['builds_installed'])}")
    print(f"kernel builds this CPU runs: {', '.join(info['builds_runnable'])}")
    print(f"CPU: {info['cpu']} ({info['machine']}), {info['cores']} cores"
          + (f", {info['cores_usable']} usable by this process"
             if info["cores_usable"] != info["cores"] else ""))
    print(f"platform: {info['platform']}; Python {info['python']}, NumPy {info['numpy']}")
    return 0


def cmd_info(args):
    import fixnet
    from .cost import node_macs
    from .report import render_table

    if args.system:
        if args.model:
            cmd_system(args)
            print()
        else:
            return cmd_system(args)
    elif not args.model:
        print("fixnet info: give a model file, or --system", file=sys.stderr)
        return 2
    fm = fixnet.load(args.model)
    g = fm.graph
    rows, total = [], 0
    for n in g.nodes:
        shape = g.shapes[n.outputs[0]]
        m = node_macs(n, shape)
        total += m
        rows.append((n.layer, n.keras_class, n.op, str(shape),
                     sum(int(w.size) for w in n.weights.values()), f"{m:,}" if m else ""))
    print(render_table(f"{args.model}: inputs {fm.input_shapes}, outputs {fm.output_shapes}",
                       ["layer", "Keras class", "op", "output shape", "parameters",
                        "MACs/sample"], rows))
    print(f"{total:,} multiply-accumulates per sample (dense, conv and depthwise layers)")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fixnet", description="int8 fixed-point inference for Keras models")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("demo", help="quantize the bundled digits model and compare float, int8 and TFLite int8")
    p = sub.add_parser("info", help="show how fixnet reads a Keras .h5 file (layers, shapes, "
                                    "MACs); --system: the kernel build, the CPU")
    p.add_argument("model", nargs="?", help="a Keras .h5 file")
    p.add_argument("--system", action="store_true",
                   help="print the kernel build chosen at import, the builds available, the CPU "
                        "model and its core count")
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return {"demo": cmd_demo, "info": cmd_info}[args.command](args)
    except FixnetError as e:
        print(f"fixnet: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
