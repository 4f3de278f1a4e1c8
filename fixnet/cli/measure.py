"""What `fixnet bench` (and bench/peers.py) measure with: wall-clock timing of calls (each call
alone, a fixed count or as many as fill a time budget; or a block of back-to-back calls, for
calls too short to time one by one), latency statistics, the process's peak resident memory,
and the host (CPU, ISA build, versions)."""
import os
import socket
import statistics
import sys
import time

import numpy as np

MIN_RUNS = 20
FILL_SECONDS = 2.0
MAX_AUTO_RUNS = 100000


def peak_rss_bytes():
    """The process's peak resident memory so far, in bytes (ru_maxrss is in KiB on Linux and
    the BSDs, in bytes on macOS)."""
    import resource                 # POSIX only

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss) if sys.platform == "darwin" else int(rss) * 1024


def hwm_bytes():
    """The resident-memory high-water mark of this process's memory (Linux: VmHWM in
    /proc/self/status, which /proc/self/clear_refs resets; ru_maxrss is not reset for the
    peaks a thread that exited had seen), or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def release_free_memory():
    """Collect garbage and hand the C heap's free memory back to the system (glibc's
    malloc_trim, where there is one), so that what loading and quantizing freed is not
    counted in the peak of the runs."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError, TypeError):
        pass


def reset_peak_rss():
    """Reset the process's resident-memory high-water mark to its resident memory now
    (Linux: write 5 to /proc/self/clear_refs; VmHWM follows) after releasing free memory;
    False where that is not possible."""
    release_free_memory()
    if hwm_bytes() is None:
        return False
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def time_calls(fn, runs=None, warmup=3):
    """Seconds of each timed call of fn(), after ``warmup`` untimed ones: ``runs`` calls, or
    (None) as many as fill FILL_SECONDS, at least MIN_RUNS, at most MAX_AUTO_RUNS. (The times
    go into one preallocated array: 8 bytes a run, touched as it fills.)"""
    for _ in range(warmup):
        fn()
    times = np.empty(runs if runs is not None else MAX_AUTO_RUNS)
    clock = time.perf_counter
    start = clock()
    for i in range(times.size):
        t0 = clock()
        fn()
        t1 = clock()
        times[i] = t1 - t0
        if runs is None and i + 1 >= MIN_RUNS and t1 - start >= FILL_SECONDS:
            return times[:i + 1].copy()
    return times


def seconds_per_call(fn, calls):
    """Seconds per call of fn() over ``calls`` back-to-back calls timed as one block (the
    clock is read twice, whatever ``calls`` is)."""
    clock = time.perf_counter_ns
    t0 = clock()
    for _ in range(calls):
        fn()
    return (clock() - t0) / calls * 1e-9


def calls_per_sample(fn, sample_seconds, probes=7):
    """How many back-to-back calls of fn() last about ``sample_seconds``: estimated from the
    median of ``probes`` single calls; at least 1."""
    est = statistics.median(seconds_per_call(fn, 1) for _ in range(probes))
    return max(1, int(sample_seconds / max(est, 1e-7)))


def time_path(fn, runs, warmup, batch, macs, timed):
    """The PATH record of the JSON schema: fn timed by time_calls, the peak RSS during it."""
    reset = reset_peak_rss()
    record = path_stats(time_calls(fn, runs, warmup), batch, macs, timed)
    if reset:
        record["peak_rss_bytes"] = hwm_bytes()
        record["peak_rss_scope"] = "path"
    return record


def path_stats(times, batch, macs, timed):
    """The PATH record of the JSON schema from the per-call times (seconds); the peak RSS is
    read when it is called."""
    ms = times * 1e3
    p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
    return {
        "latency_ms": {"p50": p50, "p90": p90, "p99": p99, "mean": float(ms.mean()),
                       "min": float(ms.min()), "max": float(ms.max())},
        "runs": int(times.size),
        "throughput_per_s": batch / (p50 * 1e-3),
        "gmacs_per_s": macs * batch / (p50 * 1e-3) / 1e9,
        "macs_per_sample": int(macs),
        "peak_rss_bytes": peak_rss_bytes(),
        "peak_rss_scope": "process",
        "arena_bytes": None,
        "timed": timed,
    }


def host_info():
    from .common import system_info
    info = system_info()
    return {
        "hostname": socket.gethostname(), "cpu": info["cpu"], "machine": info["machine"],
        "cores": info["cores"], "cores_usable": info["cores_usable"],
        "platform": info["platform"], "isa": info["isa"], "isa_forced": info["isa_forced"],
        "builds_runnable": list(info["builds_runnable"]), "python": info["python"],
        "numpy": info["numpy"], "fixnet": info["fixnet"],
        "blas_threads_env": {k: os.environ[k] for k in
                             ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
                             if k in os.environ},
    }
