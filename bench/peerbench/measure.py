"""Timing: every runner of a model at one batch size in interleaved rounds, the summary of those
rounds, and the machine they ran on. The clock and the host description are fixnet bench's
(fixnet/cli/measure.py: seconds_per_call, calls_per_sample, host_info)."""
import datetime
import os
import sys

import numpy as np

from fixnet.cli.measure import calls_per_sample, host_info, seconds_per_call

from .catalog import BASELINE


def measure(runners, batch, rounds, sample_s, warmup):
    """Interleaved timing of every runner at one batch size: each warmed up with `warmup`
    calls, then `rounds` rounds in which every runner runs one sample (as many back-to-back
    calls as last about `sample_s` seconds), in an order rotated each round.

    Returns (key -> list of per-call seconds, one per round (same length for every runner),
    key -> calls per sample)."""
    keys = [r.key for r in runners]
    calls = {r.key: r.calls[batch] for r in runners}
    inner = {}
    for k in keys:
        for _ in range(warmup):
            calls[k]()
        inner[k] = calls_per_sample(calls[k], sample_s)
    samples = {k: [] for k in keys}
    # The garbage collector stays on, as in real use; its pauses are rare and the median
    # ignores them (forcing gc.collect() between samples made TensorFlow's calls 2x slower).
    for r in range(rounds):
        order = keys[r % len(keys):] + keys[:r % len(keys)]
        for k in order:
            samples[k].append(seconds_per_call(calls[k], inner[k]))
    return samples, inner


def summarize(samples, inner, macs, batch, base_key=BASELINE):
    """Per runner: median / quartile times, GMAC/s and fixnet_over, the ratio to runner
    `base_key` (fixnet int8; fixnet on the file for a .tflite file given on --models); None
    when that did not run (a recurrent model before fixnet runs it in int8)."""
    base = np.asarray(samples[base_key]) if base_key in samples else None
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


class blas_limit:
    """Limit NumPy's BLAS pool (fixnet's float reference) like the other runtimes' threads."""

    def __init__(self, threads):
        self.threads = threads
        self.ctx = None

    def __enter__(self):
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:       # then only the *_NUM_THREADS variables cli.main set apply
            return self
        self.ctx = threadpool_limits(limits=self.threads, user_api="blas")
        return self

    def __exit__(self, *exc):
        if self.ctx is not None:
            self.ctx.__exit__(*exc)


# the runtimes whose versions the report names, where this run imported them
VERSIONED_MODULES = ("fixnet", "tensorflow", "keras", "tf_keras", "onnxruntime", "tf2onnx",
                     "onnx", "ai_edge_litert", "tflite_runtime")


def machine_info(threads):
    """The machine and software of the run, from fixnet bench's host_info: date, CPU, cores,
    fixnet's path and kernel build (and the builds this CPU runs), versions."""
    import fixnet

    host = host_info()
    versions = {"python": host["python"], "numpy": host["numpy"]}
    for mod in VERSIONED_MODULES:
        if mod in sys.modules:
            versions[mod] = getattr(sys.modules[mod], "__version__", "?")
    now = datetime.datetime.now(datetime.timezone.utc)
    return {"date": now.strftime("%Y-%m-%d %H:%M UTC"), "cpu": host["cpu"],
            "machine": host["machine"], "cores": host["cores"], "threads": threads,
            "platform": host["platform"], "fixnet_path": os.path.dirname(fixnet.__file__),
            # which kernel build ran (FIXNET_ISA forces one) and which builds run here
            "fixnet_isa": host["isa"], "fixnet_builds": host["builds_runnable"],
            "versions": versions}
