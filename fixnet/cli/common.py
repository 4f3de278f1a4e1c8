"""What the commands share: opening a model file, the machine's description, timing."""
import math
import os
import time

import numpy as np

DATA = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data")


def median_time(fn, min_total=0.3, min_runs=20):
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
    from .. import _kernels

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


# -- argument types shared by the commands (argparse turns their errors into exit 2) ----------

def positive_int(text, most=None):
    """argparse type: an int >= 1 (and <= ``most``)."""
    import argparse
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 1 or (most is not None and v > most):
        raise argparse.ArgumentTypeError(
            f"{v} is not " + (f"from 1 to {most}" if most is not None else "a positive integer"))
    return v


def thread_count(text):
    """argparse type: a number of native threads, 1 to the runtime's MAX_THREADS."""
    from ..runtime import MAX_THREADS
    return positive_int(text, MAX_THREADS)


def finite_float(text):
    """argparse type: a finite float."""
    import argparse
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return v
