"""Threads inside one predict: time per call of ``qm.predict(x, num_threads=N)`` for N = 1, 2, 4
on every CNN and MLP fixture, at batch 1 and 32, and the ratio to 1 thread.

    python bench/intra_threads.py                               # every fixture, batch 1 and 32
    python bench/intra_threads.py --models resnet_small_k3,kws_dscnn_k3 --batches 1
    FIXNET_MIN_MACS_PER_PART=0 python bench/intra_threads.py    # split every step (the old way)

Each fixture is quantized on its calibration data; x is the first rows of its test set
(float32 in, float32 out, as a user calls predict). A measurement is ``calls`` back-to-back
predicts (as many as fill --min-time seconds at 1 thread), timed together; a round measures
every N once, in an order that alternates (1, 2, 4 then 4, 2, 1), so drift and the other
tenants of a shared machine hit every N alike. Reported per (fixture, batch): the median
time per call at 1 thread, and per N the median of the rounds' ratios time(1) / time(N)
(above 1: N threads are faster) with their range, how many steps the pass splits, and
the policy's multiply-adds per part of a 2-part split after the rounds.

The thread policy (fixnet/thread_policy.py: the multiply-adds a part needs, measured at the
first predict that wants threads and again every 10 s) is printed first, with the load
average before and after: on a machine whose other tenants keep the cores busy, waking a
worker takes milliseconds and the policy splits nothing. NumPy's BLAS runs on one thread
(OPENBLAS_NUM_THREADS=1 unless set): its threads poll a core for a while after quantizing.
Speed is measured here, never asserted in tests.
"""
import argparse
import datetime
import os
import pathlib
import platform
import statistics
import sys
import time

# NumPy's BLAS (used while quantizing) on one thread, as in bench/conftest.py: OpenBLAS's
# threads keep polling a core for a while after each call, and the thread policy measured
# then finds no free core (set the variables to measure with them)
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

MODELS_DIR = pathlib.Path(__file__).resolve().parent.parent / "models"
FAMILIES = ("resnet_small", "mobilenetv2", "mobilenet_small", "kws_dscnn", "kws_conv1d",
            "concat_branches", "cnn_digits", "dead_digits", "mlp_seq", "mlp_func")
MODELS = tuple(f"{f}_{w}" for f in FAMILIES for w in ("k3", "tfk2"))


def load_model(name):
    """The fixture quantized on its calibration data, and its test inputs (float32)."""
    import fixnet

    d = np.load(MODELS_DIR / f"{name}.npz")
    qm = fixnet.load(str(MODELS_DIR / f"{name}.h5")).quantize(d["x_calib"], progress=False)
    return qm, np.ascontiguousarray(d["x_test"], np.float32)


def batch_of(x, n):
    return np.ascontiguousarray(x[np.arange(n) % x.shape[0]])


def per_call(qm, x, threads, calls):
    """Seconds per call of ``calls`` back-to-back predicts."""
    t0 = time.perf_counter()
    for _ in range(calls):
        qm.predict(x, num_threads=threads)
    return (time.perf_counter() - t0) / calls


def measure(qm, x, thread_counts, rounds, min_time):
    """{N: [seconds per call, one per round]} and the calls per measurement."""
    for n in thread_counts:                 # warm: arenas, the thread policy, caches
        per_call(qm, x, n, 3)
    one = min(per_call(qm, x, 1, 3) for _ in range(3))
    calls = max(1, int(min_time / max(one, 1e-9)))
    times = {n: [] for n in thread_counts}
    for r in range(rounds):
        for n in (thread_counts if r % 2 == 0 else thread_counts[::-1]):
            times[n].append(per_call(qm, x, n, calls))
    return times, calls


def split_steps(qm, n, threads):
    """How many kernel calls a pass at batch n splits over ``threads`` threads."""
    arena = qm._pools[n, ()].free[0]
    return sum(p > 1 for p in arena.parts(threads))


def policy_text():
    """The thread policy in use, as text (None before one is set)."""
    from fixnet import thread_policy
    from fixnet._kernels import _pass

    if thread_policy.current() is not None:
        return str(thread_policy.current())
    raw = _pass.thread_policy()
    if raw is None:
        return None
    threads, table = raw
    return (f"thread policy (set directly): at most {threads} thread(s); multiply-adds per "
            "part: " + ", ".join(f"{p} parts >= {table[p]:,.0f}" for p in range(2, threads + 1)))


def threshold_text():
    """The policy's multiply-adds per part of a 2-part split now (it is measured again every
    few seconds: the load changes), or "-"."""
    from fixnet._kernels import _pass

    raw = _pass.thread_policy()
    if raw is None or raw[0] < 2:
        return "-"
    return f"{raw[1][2] / 1e6:.3g}M"


def _load():
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated fixture names")
    p.add_argument("--batches", default="1,32", help="comma-separated batch sizes")
    p.add_argument("--threads", default="1,2,4", help="comma-separated num_threads (1 first)")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--min-time", type=float, default=0.02,
                   help="seconds of calls per measurement (at 1 thread)")
    args = p.parse_args(argv)
    try:
        import fixnet  # noqa: F401 - the installed package (pip install .)
    except ImportError:
        # an in-place build in this checkout (never put first on sys.path otherwise: a
        # process this one spawns, a Dask worker in the test suite, would then import the
        # checkout's fixnet/, which a plain `pip install .` leaves without its kernels)
        sys.path.insert(0, str(MODELS_DIR.parent))
    import fixnet._kernels
    from fixnet import thread_policy

    models = [m for m in args.models.split(",") if m]
    batches = [int(b) for b in args.batches.split(",")]
    counts = [int(t) for t in args.threads.split(",")]
    if counts[0] != 1:
        p.error("--threads must start with 1 (the reference)")
    load_before = _load()
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"{platform.node()}, {platform.machine()}, {os.cpu_count()} CPUs "
          f"({thread_policy.usable_cpus()} usable), kernels {fixnet._kernels.ISA}, "
          f"load average {load_before:.2f}")
    print(f"{args.rounds} rounds, each N once per round (order alternating), "
          f">= {args.min_time:g} s of calls per measurement; ratio = time(1 thread) / "
          "time(N threads), median (range) of the rounds")
    header = ["model", "batch", "1 thread, ms/call"] + [
        f"{n} threads: ratio (range), split steps" for n in counts[1:]] + [
        "MACs per part (2 parts)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    policy_printed = False
    worst = None
    for name in models:
        qm, x_all = load_model(name)
        for n in batches:
            x = batch_of(x_all, n)
            times, calls = measure(qm, x, counts, args.rounds, args.min_time)
            if not policy_printed and policy_text() is not None:
                print(policy_text())
                policy_printed = True
            row = [name, str(n), f"{1e3 * statistics.median(times[1]):.4g}"]
            for t in counts[1:]:
                ratios = sorted(a / b for a, b in zip(times[1], times[t]))
                med = statistics.median(ratios)
                worst = med if worst is None else min(worst, med)
                row.append(f"{med:.2f} ({ratios[0]:.2f}-{ratios[-1]:.2f}), "
                           f"{split_steps(qm, n, t)}")
            row.append(threshold_text())
            lines.append("| " + " | ".join(row) + " |")
            print(lines[-1] if len(lines) > 3 else "\n".join(lines), flush=True)
    print(f"load average after: {_load():.2f} (before: {load_before:.2f}); "
          f"lowest median ratio: {worst:.2f}")
    if not policy_printed:
        print(policy_text() or "no thread policy: no pass wanted threads")
    return lines


if __name__ == "__main__":
    main()
