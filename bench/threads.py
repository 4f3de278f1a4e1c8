"""Throughput of one QuantizedModel shared by 1 and by 2 Python threads, batch 1.

A fixed workload (``--calls`` batch-1 ``predict`` calls on the same model) is run by one
thread, then split between two threads started together; the throughput ratio is
``time(1 thread) / time(2 threads)``. The kernels release the GIL (fixnet/runtime.py, the
``*.pyx`` Call objects), so on 2 free cores the ratio approaches 2; with the GIL held for the
whole pass it would be at most 1.

Script mode (prints the ratio; needs only fixnet and NumPy):

    python bench/threads.py                                   # resnet_small_k3, 20 rounds
    python bench/threads.py --model cnn_digits_k3 --rounds 40 --calls 400
    python bench/threads.py --output int8                     # int8 in/out

Rounds alternate the order (1 then 2 threads, 2 then 1), so drift and the other tenants of a
shared machine hit both alike; the ratio of each round is reported as median and range.
The pytest-benchmark version is ``bench/test_bench_threads.py``.
"""
import argparse
import os
import pathlib
import statistics
import sys
import threading
import time

import numpy as np

MODELS_DIR = pathlib.Path(__file__).resolve().parent.parent / "models"


def load_model(name):
    """The fixture ``models/<name>.h5`` quantized on its calibration data, and batch-1 inputs
    (float32 and int8) cut from its test set."""
    import fixnet

    d = np.load(MODELS_DIR / f"{name}.npz")
    qm = fixnet.load(str(MODELS_DIR / f"{name}.h5")).quantize(d["x_calib"], progress=False)
    x = np.ascontiguousarray(d["x_test"][:16], np.float32)
    xs = {"float32": [x[i:i + 1] for i in range(len(x))],
          "int8": [np.ascontiguousarray(qm.input_qparams[0].quantize(x[i:i + 1]))
                   for i in range(len(x))]}
    return qm, xs


def run_calls(qm, xs, output, calls, threads):
    """Wall time of ``calls`` batch-1 predicts split over ``threads`` threads started together."""
    share = [calls // threads + (i < calls % threads) for i in range(threads)]
    start = threading.Barrier(threads + 1)
    done = []

    def work(n, offset):
        start.wait()
        for i in range(n):
            qm.predict(xs[(offset + i) % len(xs)], output=output)
        done.append(time.perf_counter())

    workers = [threading.Thread(target=work, args=(n, 7 * k)) for k, n in enumerate(share)]
    for w in workers:
        w.start()
    start.wait()
    t0 = time.perf_counter()
    for w in workers:
        w.join()
    return max(done) - t0


def timed(qm, xs, output, calls, threads):
    """(wall seconds, CPU seconds of the process) of one workload."""
    cpu = time.process_time()
    wall = run_calls(qm, xs, output, calls, threads)
    return wall, time.process_time() - cpu


def measure(qm, xs, output="float32", calls=200, rounds=20):
    """Per round (alternating the order): (wall, CPU) seconds of the workload on 1 and on 2
    threads. Returns the list of ((wall1, cpu1), (wall2, cpu2))."""
    run_calls(qm, xs, output, calls // 4, 2)          # warm: arenas for both threads
    pairs = []
    for r in range(rounds):
        if r % 2:
            two = timed(qm, xs, output, calls, 2)
            one = timed(qm, xs, output, calls, 1)
        else:
            one = timed(qm, xs, output, calls, 1)
            two = timed(qm, xs, output, calls, 2)
        pairs.append((one, two))
    return pairs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet_small_k3", help="a models/*.h5 fixture name")
    p.add_argument("--output", default="float32", choices=["float32", "int8"],
                   help="float32: float in/out; int8: int8 in/out")
    p.add_argument("--calls", type=int, default=200, help="batch-1 predicts per workload")
    p.add_argument("--rounds", type=int, default=20)
    args = p.parse_args(argv)
    try:
        import fixnet  # noqa: F401 - the installed package (pip install .)
    except ImportError:
        # an in-place build in this checkout; never put first otherwise (processes this one
        # spawns inherit sys.path and would import the checkout, without its kernels)
        sys.path.insert(0, str(MODELS_DIR.parent))
    import fixnet._kernels

    qm, xs = load_model(args.model)
    pairs = measure(qm, xs[args.output], args.output, args.calls, args.rounds)
    ratios = sorted(one[0] / two[0] for one, two in pairs)
    per_call_1 = statistics.median(one[0] for one, _ in pairs) / args.calls
    per_call_2 = statistics.median(two[0] for _, two in pairs) / args.calls
    # cores the process got: CPU seconds / wall seconds (up to 1 and 2; less when other
    # processes take the cores, and then the ratio says little about the GIL)
    cores_1 = statistics.median(one[1] / one[0] for one, _ in pairs)
    cores_2 = statistics.median(two[1] / two[0] for _, two in pairs)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"model {args.model}, batch 1, {args.output} in/out, kernels {fixnet._kernels.ISA}, "
          f"{os.cpu_count()} CPUs, load average {load:.2f}")
    print(f"{args.calls} calls per workload, {args.rounds} rounds")
    print(f"1 thread : {1e3 * per_call_1:.3f} ms per call (median), "
          f"{1 / per_call_1:.0f} calls/s, {cores_1:.2f} cores used")
    print(f"2 threads: {1e3 * per_call_2:.3f} ms per call (median), "
          f"{1 / per_call_2:.0f} calls/s, {cores_2:.2f} cores used")
    print(f"throughput ratio 2 threads / 1 thread: median {statistics.median(ratios):.2f}, "
          f"range {ratios[0]:.2f} .. {ratios[-1]:.2f}")
    return statistics.median(ratios)


if __name__ == "__main__":
    main()
