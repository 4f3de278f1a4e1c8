"""When ``predict(x, num_threads=N)`` splits a step over threads: each part must hold at least
as many multiply-adds as the fastest kernel computes while the workers wake up.

The pass (fixnet/_kernels/_pass.pyx) splits a step into p parts only when its multiply-adds
(fixnet.cost, the whole batch) are at least p x ``min_macs_per_part[p]``, and never splits a
step without multiply-adds (pooling, merges, lookups: memory-bound, and cheap). Here:

    min_macs_per_part[p] = PART_FACTOR x wake_ns[p] x macs_per_ns

* ``wake_ns[p]``: what waking p - 1 sleeping workers and the barrier at the end of the step
  cost, measured: the median of THREAD_PROBE_TRIALS probe jobs whose tasks do nothing but
  wait for every thread to join (each after a pause long enough for the workers to stop
  polling and sleep, as the first split step of a pass finds them).
* ``macs_per_ns``: the multiply-adds per nanosecond of the faster of this build's two GEMM
  kernels (a 3x3 convolution and a dense layer on synthetic int8 data, the best of
  RATE_TRIALS runs). No kernel is faster, so a step's time estimated from its multiply-adds is
  never more than its real time: the rule errs towards not splitting (a depthwise or an
  input convolution with 1-3 channels is slower per multiply-add and is split later than it
  could be, never sooner).
* ``PART_FACTOR`` (1): each part holds at least what waking the workers costs. Compared on
  this project's VM in one process, thresholds interleaved (bench/README.md,
  "intra_threads.py"): 0.8, 1.6, 3.2 and 4.8 million multiply-adds per part (the policy
  measured 1.6-1.9 million there) on 11 fixtures at batch 1 and 32. Every higher threshold
  gave up gains (mobilenetv2 at batch 32: 1.68x, 1.58x, 1.47x, 1.17x) and none avoided a
  loss: the lowest ratios (0.92-0.96) were rows with the same steps, or none, split at the
  other thresholds, i.e. the noise of the shared machine. 1 is where a split pays by the
  measured costs alone; below it, a gain relies on workers still awake from the previous
  split step.

So a split step gives each thread a computation at least as long as waking the workers
costs: with the chunks taken in turn (the caller starts at once, the workers when they are
awake), a step of time T on p threads then takes about (T + (p - 1) x wake) / p, at most
(2p - 1) / p^2 of T in that model (0.75 of it for 2 threads); a worker that starts on cold
caches takes some of that back. Steps that would gain less are not split.

Why measured, and not set per instruction set: the wake-up is what varies. On the 2-core VM
of bench/README.md it is ~0.3 us while a worker still polls, 20-60 us to wake a sleeping one
when the machine is idle, and more than the probe's 2 ms limit when other processes keep the
other core busy (the worker waits for a time slice), which includes the first moments after
NumPy's OpenBLAS has run: its threads keep polling a core for a while. No constant fits a
Raspberry Pi, a VM and a loaded server. It is measured at the first pass that wants threads
(about 15 ms the first time, the kernels' rate included, then about 2 ms on an idle machine
and up to ~30 ms on a busy one), and again at the first such pass after MAX_AGE_SECONDS
(10 s), since the load changes; ``calibrate()`` measures it now. The environment variable
FIXNET_MIN_MACS_PER_PART=N sets the threshold instead (N multiply-adds per part for every
thread count; 0 splits every step that has tasks): reproducible runs, or a machine you know.

Threads beyond the CPUs the process may use (its CPU affinity) only take turns with each
other, so a pass uses at most that many: ``num_threads=4`` on 2 CPUs runs on 2 threads.
"""
import math
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, Optional

import numpy as np

from ._kernels import _conv, _dense, _pass

THREAD_PROBE_TRIALS = 9     # cold probe jobs per thread count (their median is wake_ns[p])
PART_FACTOR = 1.0           # each part >= this x what waking the workers costs (see above)
PROBE_WARMUP_TRIALS = 3     # untimed probe jobs before them
MAX_AGE_SECONDS = 10.0      # a measured policy is measured again after this (load changes)
RATE_TRIALS = 7             # timed runs of each GEMM kernel (the best counts)
ENV_MIN_MACS = "FIXNET_MIN_MACS_PER_PART"

_lock = threading.Lock()
_current = None             # the ThreadPolicy in use


@dataclass
class ThreadPolicy:
    """The rule in use: cpus, the CPUs this process may use; threads, the most threads a
    pass uses (min of cpus and the num_threads asked for when it was measured); wake_us
    {p: microseconds to wake p - 1 workers and pass the barrier}; gmacs_per_s, the fastest
    GEMM kernel's rate; min_macs_per_part {p: the least multiply-adds of each of p parts};
    source: "measured" or the environment variable that set it."""
    cpus: int
    threads: int
    min_macs_per_part: Dict[int, float] = field(default_factory=dict)
    wake_us: Dict[int, float] = field(default_factory=dict)
    gmacs_per_s: Optional[float] = None
    source: str = "measured"
    seconds: float = 0.0        # what measuring it took
    measured_at: float = 0.0    # time.monotonic() when it was put in use

    def to_dict(self):
        return {"cpus": self.cpus, "threads": self.threads, "source": self.source,
                "gmacs_per_s": self.gmacs_per_s, "seconds": self.seconds,
                "wake_us": {str(p): v for p, v in self.wake_us.items()},
                "min_macs_per_part": {str(p): v for p, v in self.min_macs_per_part.items()}}

    def __str__(self):
        lines = [f"thread policy ({self.source}): {self.cpus} CPU(s) usable, passes use at "
                 f"most {self.threads} thread(s)"]
        if self.gmacs_per_s is not None:
            lines.append(f"  fastest GEMM kernel: {self.gmacs_per_s:.3g} GMAC/s")
        for p in sorted(self.min_macs_per_part):
            wake = (f"waking {p - 1} worker(s) + barrier {self.wake_us[p]:.1f} us; "
                    if p in self.wake_us else "")
            lines.append(f"  {p} parts: {wake}each part >= {self.min_macs_per_part[p]:,.0f} "
                         "multiply-adds")
        return "\n".join(lines)


def usable_cpus():
    """The CPUs this process may run on (its affinity where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def current():
    """The ThreadPolicy in use, or None before the first pass that wanted threads."""
    return _current


def reset():
    """Forget the policy in use: the next pass that wants threads measures one again."""
    global _current
    with _lock:
        _pass.clear_thread_policy()
        _current = None


def calibrate(num_threads=None):
    """Measure the policy now (see the module docstring) for up to ``num_threads`` threads
    (default: every usable CPU, at most MAX_THREADS) and put it in use; returns it, or None
    if another pass holds the worker threads meanwhile (the policy in use then stays)."""
    with _lock:
        return _calibrate(num_threads, fresh=True)


def _on_first_use(num_threads):
    """The pass's calibrator (_pass.set_thread_calibrator): a policy for ``num_threads``
    (measured again if the one in use is older than MAX_AGE_SECONDS), unless another thread
    is measuring one right now (that pass then uses the policy in use, if any)."""
    if _lock.acquire(blocking=False):
        try:
            stale = (_current is not None
                     and time.monotonic() - _current.measured_at >= MAX_AGE_SECONDS)
            if stale:
                num_threads = max(num_threads, _current.threads)
            _calibrate(num_threads, fresh=stale)
        finally:
            _lock.release()


def _calibrate(num_threads, fresh):
    """calibrate(); ``fresh``: measure every thread count again, else only those the
    policy in use has not measured (a pass that wants more threads than it covers)."""
    global _current
    start = time.perf_counter()
    cpus = usable_cpus()
    want = min(cpus, _pass.MAX_THREADS, num_threads or cpus)
    env = os.environ.get(ENV_MIN_MACS, "").strip()
    if env:
        per_part = _env_min_macs(env)
        policy = ThreadPolicy(cpus=cpus, threads=want, source=f"{ENV_MIN_MACS}={env}",
                              min_macs_per_part={p: per_part for p in range(2, want + 1)})
    elif want < 2 or sys.platform == "win32":     # (no worker threads on Windows: _pass.pyx)
        policy = ThreadPolicy(cpus=cpus, threads=1)
    else:
        wake = {}
        if not fresh and _current is not None and _current.source == "measured":
            wake = dict(_current.wake_us)
        for p in range(2, want + 1):
            if p not in wake:
                # untimed first: a worker just started is placed where the scheduler puts
                # new threads (often the caller's CPU) and takes ms to move
                _pass.pool_wake_cost(p, PROBE_WARMUP_TRIALS, False)
                ns = _pass.pool_wake_cost(p, THREAD_PROBE_TRIALS, True)
                if not ns:
                    return None             # the pool is in use by a pass: not now
                wake[p] = statistics.median(ns) / 1e3
        rate = gemm_macs_per_ns()
        policy = ThreadPolicy(cpus=cpus, threads=want, wake_us=wake, gmacs_per_s=rate,
                              min_macs_per_part={p: PART_FACTOR * wake[p] * 1e3 * rate
                                                 for p in range(2, want + 1)})
    policy.seconds = time.perf_counter() - start
    policy.measured_at = time.monotonic()
    table = [math.inf] * (policy.threads + 1)
    for p, v in policy.min_macs_per_part.items():
        table[p] = v
    _pass.set_thread_policy(policy.threads, table, cpus,
                            MAX_AGE_SECONDS if policy.source == "measured" else math.inf)
    _current = policy
    return policy


def _env_min_macs(text):
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not (v >= 0 and math.isfinite(v)):
        from .errors import ArgumentError
        raise ArgumentError(f"{ENV_MIN_MACS}={text!r}: must be a number of multiply-adds >= 0")
    return v


_rate = None


def gemm_macs_per_ns():
    """Multiply-adds per nanosecond of the faster of this build's GEMM kernels (a 3x3
    convolution 16x16x32 -> 32 and a dense layer 16 x 512 -> 256 on synthetic data, the
    best of RATE_TRIALS runs each); measured once per process."""
    global _rate
    if _rate is None:
        _rate = max(_kernel_rate(*_conv_case()), _kernel_rate(*_dense_case()))
    return _rate


def _kernel_rate(call, macs):
    call()
    best = math.inf
    for _ in range(RATE_TRIALS):
        t0 = time.perf_counter_ns()
        call()
        best = min(best, time.perf_counter_ns() - t0)
    return macs / max(best, 1)


def _requant(c):
    return (np.zeros(c, np.int32), np.full(c, 2 ** 30, np.int32), np.full(c, -8, np.int32))


def _conv_case():
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, (1, 16, 16, 32), dtype=np.int8)
    w = rng.integers(-127, 128, (32, 3, 3, 32), dtype=np.int8)
    out = np.empty((1, 16, 16, 32), np.int8)
    bias, m0, shift = _requant(32)
    params = dict(stride_h=1, stride_w=1, dilation_h=1, dilation_w=1, pad_top=1, pad_left=1,
                  groups=1, pad_value=0, out_zp=0, act_min=-128, act_max=127)
    call = _conv.Conv2dCall(x, w, bias, m0, shift, params, out)
    return call, out.size * 3 * 3 * 32


def _dense_case():
    rng = np.random.default_rng(1)
    x = rng.integers(-128, 128, (16, 512), dtype=np.int8)
    w = rng.integers(-127, 128, (256, 512), dtype=np.int8)
    out = np.empty((16, 256), np.int8)
    bias, m0, shift = _requant(256)
    call = _dense.DenseCall(x, w, bias, m0, shift, 0, -128, 127, out,
                            packed=_dense.pack_dense_weights(w, bias))
    return call, out.size * 512


_pass.set_thread_calibrator(_on_first_use)
