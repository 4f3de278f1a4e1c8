"""`fixnet demo`: quantize the bundled digits MLP and compare float, int8 and TFLite int8."""
import os
import time

import numpy as np

from .common import DATA, median_time

HELP = "quantize the bundled digits model and compare float, int8 and TFLite int8"
EXAMPLE = "fixnet demo"


def add_arguments(p):
    pass


def _pct(v):
    return f"{100.0 * v:.2f}%"


def run(args):
    import fixnet
    from ..tables import render_table

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
    t_float = median_time(lambda: fm.predict(one))
    t_int8 = median_time(lambda: qm.predict(one))
    one_q = qm.input_qparams[0].quantize(one)
    t_int8_raw = median_time(lambda: qm.predict(one_q, output="int8"))
    rows = [("float (NumPy reference)", f"{1e6 * t_float:.1f}", "1.00x"),
            ("int8 (Cython kernels), float in/out", f"{1e6 * t_int8:.1f}", f"{t_float / t_int8:.2f}x"),
            ("int8 (Cython kernels), int8 in/out", f"{1e6 * t_int8_raw:.1f}", f"{t_float / t_int8_raw:.2f}x")]
    print(render_table("batch-1 latency, median (this machine; see bench/ for peers)",
                       ["path", "microseconds", "speed-up"], rows))
    return 0
