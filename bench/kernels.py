"""Kernel micro-benchmarks: GMAC/s of fixnet's int8 kernels alone, per kernel build.

    python bench/kernels.py                      # every build this CPU runs, 41 rounds
    python bench/kernels.py --builds avx2 --repeats 31
    python bench/kernels.py --json out.json

Needs only fixnet (importable: installed, or run from the source tree root with
``PYTHONPATH=.``) and NumPy. Each build runs in its own subprocess with ``FIXNET_ISA=<build>``
(the variable fixnet._kernels reads at import), one thread, batch 1. Per kernel, a Call
object is made once (as fixnet.runtime does) and timed in ``--repeats`` rounds of enough
calls to last about ``--min-time`` seconds; the best and the median round are printed as
GMAC/s (multiply-accumulates of the layer, not of any padding the kernel computes).

Kernels: 3x3 conv 32x32x32 -> 32 (stride 1, same padding); a 1x1 conv 24x24x96 -> 24
(MobileNetV2-style pointwise projection) through Conv2dCall and through DenseCall on the
NHWC rows (what ConvStep.bind picks for pointwise convs); depthwise 3x3 at 48x48x96 (stride 1,
same padding); dense 1024 -> 1024.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np


def _requant(rng, c):
    m0 = rng.integers(2 ** 30, 2 ** 31, c).astype(np.int32)
    shift = np.full(c, -10, np.int32)
    return m0, shift


def _params(stride, pad_h, pad_w, pad_value, **fields):
    """A convolution's params mapping (_conv.CONV2D_PARAMS / DEPTHWISE_PARAMS): `stride` both
    ways, no dilation, `fields` (groups or depth_multiplier), output zero point -2, no clamp."""
    return dict(stride_h=stride, stride_w=stride, dilation_h=1, dilation_w=1, pad_top=pad_h,
                pad_left=pad_w, **fields, pad_value=pad_value, out_zp=-2, act_min=-128,
                act_max=127)


def _conv_case(rng, name, h, w, cin, cout, k, stride, same):
    """A conv on a random image: k x k, `same` or valid padding, with the kernel the runtime
    picks (fixnet.ops.conv.ConvStep.kernel): a 1x1 conv without padding as a DenseCall on the
    pixels, one input channel as a depthwise conv with multiplier Cout, else a
    Conv2dCall."""
    from fixnet._kernels import _conv, _dense
    out_h = -(-h // stride) if same else (h - k) // stride + 1
    out_w = -(-w // stride) if same else (w - k) // stride + 1
    pad_h = max(0, (out_h - 1) * stride + k - h) // 2 if same else 0
    pad_w = max(0, (out_w - 1) * stride + k - w) // 2 if same else 0
    x = rng.integers(-128, 128, (1, h, w, cin)).astype(np.int8)
    wt = rng.integers(-127, 128, (cout, k, k, cin)).astype(np.int8)
    bias = rng.integers(-5000, 5000, cout).astype(np.int32)
    out = np.empty((1, out_h, out_w, cout), np.int8)
    if k == 1 and pad_h == pad_w == 0:
        call = _dense.DenseCall(x.reshape(-1, cin), np.ascontiguousarray(wt.reshape(cout, cin)),
                                bias, *_requant(rng, cout), -2, -128, 127, out.reshape(-1, cout),
                                pixels=(h, w, out_h, out_w, stride, stride))
    elif cin == 1:
        call = _conv.DepthwiseConv2dCall(
            x, np.ascontiguousarray(wt[..., 0].transpose(1, 2, 0)), bias, *_requant(rng, cout),
            _params(stride, pad_h, pad_w, 3, depth_multiplier=cout), out)
    else:
        call = _conv.Conv2dCall(x, wt, bias, *_requant(rng, cout),
                                _params(stride, pad_h, pad_w, 3, groups=1), out)
    return name, out_h * out_w * cout * k * k * cin, call


def _dw_case(rng, name, h, w, c, mult, k, stride, same):
    """A DepthwiseConv2dCall on a random image: k x k, `same` or valid padding."""
    from fixnet._kernels import _conv
    out_h = -(-h // stride) if same else (h - k) // stride + 1
    out_w = -(-w // stride) if same else (w - k) // stride + 1
    pad_h = max(0, (out_h - 1) * stride + k - h) // 2 if same else 0
    pad_w = max(0, (out_w - 1) * stride + k - w) // 2 if same else 0
    x = rng.integers(-128, 128, (1, h, w, c)).astype(np.int8)
    wt = rng.integers(-127, 128, (k, k, c * mult)).astype(np.int8)
    bias = rng.integers(-5000, 5000, c * mult).astype(np.int32)
    out = np.empty((1, out_h, out_w, c * mult), np.int8)
    call = _conv.DepthwiseConv2dCall(x, wt, bias, *_requant(rng, c * mult),
                                     _params(stride, pad_h, pad_w, 3, depth_multiplier=mult), out)
    return name, out_h * out_w * c * mult * k * k, call


def _small_cases():
    """Issue 17's slow layers: the wide, shallow layers at the start of mobile convnets
    (few channels, many pixels), shaped as in the models it names."""
    rng = np.random.default_rng(0)
    return [
        _conv_case(rng, "conv 3x3 64x64x1->8 valid (emotion)", 64, 64, 1, 8, 3, 1, False),
        _conv_case(rng, "conv 3x3 62x62x8->8 valid (emotion)", 62, 62, 8, 8, 3, 1, False),
        _dw_case(rng, "depthwise 3x3 60x60x8 (emotion)", 60, 60, 8, 1, 3, 1, True),
        _conv_case(rng, "conv 1x1 60x60x8->16 (emotion)", 60, 60, 8, 16, 1, 1, True),
        _conv_case(rng, "conv 1x1 60x60x8->16 /2 (emotion)", 60, 60, 8, 16, 1, 2, True),
        _conv_case(rng, "conv 3x3 96x96x3->8 /2 (vww)", 96, 96, 3, 8, 3, 2, True),
        _dw_case(rng, "depthwise 3x3 48x48x8 (vww)", 48, 48, 8, 1, 3, 1, True),
        _dw_case(rng, "depthwise 3x3 48x48x16 /2 (vww)", 48, 48, 16, 1, 3, 2, True),
        _conv_case(rng, "conv 1x1 48x48x8->16 (vww)", 48, 48, 8, 16, 1, 1, True),
        _conv_case(rng, "conv 3x3 96x96x3->16 /2 (mnv2)", 96, 96, 3, 16, 3, 2, True),
        _conv_case(rng, "conv 1x1 48x48x8->48 (mnv2)", 48, 48, 8, 48, 1, 1, True),
        _dw_case(rng, "depthwise 3x3 48x48x48 /2 (mnv2)", 48, 48, 48, 1, 3, 2, True),
        _conv_case(rng, "conv 1x1 48x48x16->8 (mnv2)", 48, 48, 16, 8, 1, 1, True),
        _conv_case(rng, "conv 1x1 24x24x48->8 (mnv2)", 24, 24, 48, 8, 1, 1, True),
        _dw_case(rng, "depthwise 3x3 28x28x1 M=2 (tiny)", 28, 28, 1, 2, 3, 1, True),
        _dw_case(rng, "depthwise 3x3 14x14x4 M=2 (tiny)", 14, 14, 4, 2, 3, 1, True),
        _dw_case(rng, "depthwise 3x3 24x24x24 M=2", 24, 24, 24, 2, 3, 1, True),
    ]


def _cases(which="default"):
    """(name, MACs, Call object) for every kernel benchmarked, built with this process's
    kernel build."""
    if which == "small":
        return _small_cases()
    from fixnet._kernels import _conv, _dense
    rng = np.random.default_rng(0)
    i8 = lambda *shape: rng.integers(-128, 128, shape).astype(np.int8)
    w8 = lambda *shape: rng.integers(-127, 128, shape).astype(np.int8)
    cases = []

    x, w = i8(1, 32, 32, 32), w8(32, 3, 3, 32)
    bias = rng.integers(-5000, 5000, 32).astype(np.int32)
    out = np.empty((1, 32, 32, 32), np.int8)
    call = _conv.Conv2dCall(x, w, bias, *_requant(rng, 32), _params(1, 1, 1, 3, groups=1), out)
    cases.append(("conv 3x3 32x32x32->32", 32 * 32 * 32 * 9 * 32, call))

    h, cin, cout = 24, 96, 24
    x, w = i8(1, h, h, cin), w8(cout, 1, 1, cin)
    bias = rng.integers(-5000, 5000, cout).astype(np.int32)
    m0, shift = _requant(rng, cout)
    out = np.empty((1, h, h, cout), np.int8)
    call = _conv.Conv2dCall(x, w, bias, m0, shift, _params(1, 0, 0, 0, groups=1), out)
    macs = h * h * cin * cout
    cases.append((f"conv 1x1 {h}x{h}x{cin}->{cout} (Conv2dCall)", macs, call))
    w2 = np.ascontiguousarray(w.reshape(cout, cin))
    call = _dense.DenseCall(x.reshape(-1, cin), w2, bias, m0, shift, -2, -128, 127,
                            out.reshape(-1, cout))
    cases.append((f"conv 1x1 {h}x{h}x{cin}->{cout} (DenseCall)", macs, call))

    x, w = i8(1, 48, 48, 96), w8(3, 3, 96)
    bias = rng.integers(-5000, 5000, 96).astype(np.int32)
    out = np.empty((1, 48, 48, 96), np.int8)
    call = _conv.DepthwiseConv2dCall(x, w, bias, *_requant(rng, 96),
                                     _params(1, 1, 1, 3, depth_multiplier=1), out)
    cases.append(("depthwise 3x3 48x48x96", 48 * 48 * 96 * 9, call))

    x, w = i8(1, 1024), w8(1024, 1024)
    bias = rng.integers(-5000, 5000, 1024).astype(np.int32)
    out = np.empty((1, 1024), np.int8)
    call = _dense.DenseCall(x, w, bias, *_requant(rng, 1024), -2, -128, 127, out)
    cases.append(("dense 1024->1024", 1024 * 1024, call))
    return cases


def _time(call, repeats, min_time):
    """Seconds per call: (best, median) over `repeats` rounds of n calls (n: ~min_time s)."""
    call()
    n, t = 1, 0.0
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            call()
        t = time.perf_counter() - t0
        if t >= min_time / 4 or n >= 1 << 20:
            break
        n *= 4
    n = max(1, int(n * min_time / max(t, 1e-9)))
    rounds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            call()
        rounds.append((time.perf_counter() - t0) / n)
    return min(rounds), statistics.median(rounds)


def child(repeats, min_time, which):
    import fixnet._kernels as kernels
    rows = []
    for name, macs, call in _cases(which):
        best, median = _time(call, repeats, min_time)
        rows.append(dict(kernel=name, macs=macs, best_s=best, median_s=median,
                         best_gmacs=macs / best / 1e9, median_gmacs=macs / median / 1e9))
    gemm = getattr(kernels._conv, "GEMM_ISA", None)
    return dict(build=kernels.ISA, conv_micro_kernel=gemm, rows=rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--builds", nargs="*", help="kernel builds (default: all this CPU runs)")
    ap.add_argument("--repeats", type=int, default=41)
    ap.add_argument("--min-time", type=float, default=0.005,
                    help="seconds per round (short: a shared machine then interrupts few rounds)")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--set", choices=("default", "small"), default="default",
                    help="default: the layers below; small: issue 17's few-channel layers of "
                         "mobile convnets (emotion, visual wake words, MobileNetV2, tiny)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.repeats, args.min_time, args.set)))
        return
    import fixnet._kernels as kernels
    builds = args.builds or kernels.available_builds()
    results = []
    for build in builds:
        env = dict(os.environ, FIXNET_ISA=build, OMP_NUM_THREADS="1")
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child",
                               "--repeats", str(args.repeats), "--min-time", str(args.min_time),
                               "--set", args.set],
                              env=env, capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"bench/kernels.py: the {build} build failed:\n{proc.stderr}")
        res = json.loads(proc.stdout)
        results.append(res)
        print(f"\nbuild {res['build']} (conv micro-kernel: {res['conv_micro_kernel']}), "
              f"batch 1, one thread, GMAC/s best / median of {args.repeats}")
        for r in res["rows"]:
            print(f"  {r['kernel']:<42} {r['best_gmacs']:7.2f} / {r['median_gmacs']:7.2f}"
                  f"   ({r['median_s'] * 1e6:9.1f} us)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
