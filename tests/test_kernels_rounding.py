"""Dense with one rounding of the exact product, ties away from zero (the rule TFLite 2.21's
reference FULLY_CONNECTED follows): ``_dense.DenseCall(..., rounding="single")``, the packed
GEMM micro-kernels of every build with the single-rounding epilogue (csrc/requant.h,
FX_RQ_SINGLE) and its scalar twin, bit-exact with ``oracle.dense(..., rounding="single")``
on every kernel build; and the rule itself against exact rationals."""
from fractions import Fraction

import numpy as np
import pytest

import fixnet._kernels
from fixnet import oracle
from fixnet._kernels import _dense
from fixnet.ops.dense import DenseStep
from kernel_builds import build_params


@pytest.fixture(scope="module", params=build_params(), autouse=True)
def kernel_build(request):
    """Every test here runs once per kernel build this CPU runs (_dense is built per ISA)."""
    global _dense
    saved = _dense
    _dense = fixnet._kernels.load_build(request.param)._dense
    yield request.param
    _dense = saved


def exact(acc, m0, shift):
    """acc * m0 / 2^(31 - shift) rounded to nearest, ties away from zero, in rationals."""
    v = Fraction(int(acc) * int(m0), 2 ** (31 - int(shift)))
    sign = 1 if v >= 0 else -1
    return sign * int(abs(v) + Fraction(1, 2))


def test_single_rounding_rule_is_exact_rational_rounding_ties_away():
    rng = np.random.default_rng(1)
    acc = np.concatenate([rng.integers(-2 ** 31, 2 ** 31, 500), rng.integers(-300, 300, 300)])
    m0 = rng.integers(2 ** 30, 2 ** 31, acc.size)
    shift = rng.integers(-31, 31, acc.size)
    shift[:300] = rng.integers(-31, 1, 300)
    got = oracle.multiply_by_quantized_multiplier_single(acc, m0, shift)
    assert [int(g) for g in got] == [exact(a, m, s) for a, m, s in zip(acc, m0, shift)]
    # ties: +-2.5 -> +-3, +-0.5 -> +-1
    assert list(oracle.multiply_by_quantized_multiplier_single([5, -5, 1, -1], 1 << 30, 0)) \
        == [3, -3, 1, -1]


def run_every_way(x, w, bias, m0, shift, zp, lo, hi, rng):
    """The outputs of DenseCall(..., rounding="single"): fused micro-kernels in one call, the
    same over the tasks in reverse order and over a random split of the task range, and the
    scalar twin."""
    n, c = x.shape[0], w.shape[0]
    outs = []
    for scalar in (False, True):
        out = np.zeros((n, c), np.int8)
        call = _dense.DenseCall(x, w, bias, m0, shift, zp, lo, hi, out, scalar=scalar,
                                rounding="single")
        call()
        outs.append(out.copy())
        if scalar:
            break
        out[:] = 0
        for t in reversed(range(call.n_tasks)):
            call.run_tasks(t, t + 1)
        outs.append(out.copy())
        out[:] = 0
        cuts = sorted({0, call.n_tasks, *rng.integers(0, call.n_tasks + 1, 3).tolist()})
        for a, b in zip(cuts[:-1], cuts[1:]):
            call.run_tasks(a, b)
        outs.append(out.copy())
    return outs


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [0, 1, 7, 8, 64, 100, 4095, 4097, 9000])
def test_dense_single_rounding_is_bit_exact_with_the_oracle(seed, k):
    """Shapes: batch 1 (the one-row GEMV kernels, one and two blocks), a few rows (partial
    tiles), 70 rows (full tiles, two task row groups); channels in partial and whole blocks;
    K from 0 to past the panel limit (the long-K path); shifts > 0 and < 0."""
    rng = np.random.default_rng(seed * 7919 + k)
    n = [1, 1, 3, 5, 9, 70][seed]
    c = int(rng.integers(1, 80)) if k < 4000 else int(rng.integers(1, 24))
    if seed < 2:
        c = (24, 40)[seed]      # batch 1 over two blocks at once (row2) and a last block
    x = rng.integers(-128, 128, (n, k)).astype(np.int8)
    w = rng.integers(-127, 128, (c, k)).astype(np.int8)
    bias = rng.integers(-2 ** 20, 2 ** 20, c).astype(np.int32)
    m0 = rng.integers(2 ** 30, 2 ** 31, c).astype(np.int32)
    shift = rng.integers(-20, 2, c).astype(np.int32)
    if seed == 0:
        m0[:] = 1 << 30                   # multipliers of powers of two: many exact ties
    if seed == 3:
        shift = rng.integers(-31, 31, c).astype(np.int32)    # every shift, saturation
    zp = int(rng.integers(-128, 128))
    lo, hi = sorted(int(v) for v in rng.integers(-128, 128, 2)) if seed % 2 else (-128, 127)
    want = oracle.dense(x, w, bias, m0, shift, zp, lo, hi, rounding="single")
    for got in run_every_way(x, w, bias, m0, shift, zp, lo, hi, rng):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("n", [1, 256])
def test_single_rounding_epilogue_on_ties_and_saturation(seed, n):
    """acc = bias[c] + x[r] (K = 1, w = 1): per channel a shift in [-31, 30] and a bias at an
    exact tie (m0 = 2^30: acc * 2^(shift - 1)) or near a chosen result, so the 256 rows hold
    results on both sides of ties, both signs, and products far beyond int32 (shift > 0:
    saturated, then clamped), next to the extremes of acc."""
    rng = np.random.default_rng(seed)
    c = 48
    shift = rng.integers(-31, 31, c).astype(np.int32)
    shift[:8] = [-31, -30, -1, 0, 1, 29, 30, -16]
    m0 = np.where(rng.random(c) < 0.5, 1 << 30, rng.integers(2 ** 30, 2 ** 31, c))
    t = 31 - shift.astype(np.int64)
    target = rng.integers(-200, 201, c)
    # m0 = 2^30: the result is acc / 2^(t - 30), a tie at acc = odd * 2^(t - 31) (t >= 31)
    tie = np.where(t >= 31, (2 * target + 1) << np.clip(t - 31, 0, 33), target)
    near = np.clip(np.round(target * 2.0 ** t / m0), -2.0 ** 40, 2.0 ** 40).astype(np.int64)
    bias = np.where(m0 == 1 << 30, tie, near)
    bias = np.clip(bias, -2 ** 31 + 128, 2 ** 31 - 129)
    bias[8:12] = [-2 ** 31 + 128, 2 ** 31 - 129, 0, 1]
    x = np.arange(-128, 128, dtype=np.int8).reshape(256, 1)
    if n == 1:
        x = x[rng.integers(0, 256, 1)]
    w = np.ones((c, 1), np.int8)
    m0, bias = m0.astype(np.int32), bias.astype(np.int32)
    want = oracle.dense(x, w, bias, m0, shift, 0, -128, 127, rounding="single")
    if n == 256:        # the case does what it says: results inside the clamp, ties included
        assert np.count_nonzero((want > -128) & (want < 127)) > 1000
    for got in run_every_way(x, w, bias, m0, shift, 0, -128, 127, rng):
        np.testing.assert_array_equal(got, want)


def test_single_and_double_rounding_differ_where_they_should():
    """The rounding chosen per call reaches the epilogue: where the two rules differ (the
    double rounding rounds the high multiply first), each call matches its own oracle."""
    x = np.arange(-128, 128, dtype=np.int8).reshape(256, 1)
    w = np.ones((4, 1), np.int8)
    bias = np.array([0, 3, -3, 1000], np.int32)
    m0 = np.array([1 << 30, 1 << 30, (1 << 30) + 1, 2 ** 31 - 1], np.int32)
    shift = np.array([-1, -2, -3, 0], np.int32)
    single = oracle.dense(x, w, bias, m0, shift, 0, -128, 127, rounding="single")
    double = oracle.dense(x, w, bias, m0, shift, 0, -128, 127, rounding="double")
    assert np.any(single != double)
    for rounding, want in (("single", single), ("double", double)):
        out = np.zeros((256, 4), np.int8)
        _dense.DenseCall(x, w, bias, m0, shift, 0, -128, 127, out, rounding=rounding)()
        np.testing.assert_array_equal(out, want)


def test_a_single_rounding_dense_step_binds_the_packed_gemm():
    rng = np.random.default_rng(5)
    k, c, n = 33, 20, 7
    w = rng.integers(-127, 128, (c, k)).astype(np.int8)
    bias = rng.integers(-2 ** 16, 2 ** 16, c).astype(np.int32)
    m0 = rng.integers(2 ** 30, 2 ** 31, c).astype(np.int32)
    shift = rng.integers(-12, 0, c).astype(np.int32)
    step = DenseStep("fc", "fc", ["x"], ["y"], w, bias, m0, shift, 3, -128, 127)
    step.rounding = "single"
    x = rng.integers(-128, 128, (n, k)).astype(np.int8)
    bufs = {"x": x, "y": np.zeros((n, c), np.int8)}
    call = step.bind(bufs)
    assert type(call).__name__ == "DenseCall"
    call()
    np.testing.assert_array_equal(bufs["y"], step.oracle([x])[0])
    np.testing.assert_array_equal(
        bufs["y"], oracle.dense(x, w, bias, m0, shift, 3, -128, 127, rounding="single"))


def test_dense_single_rounding_checks_its_arguments():
    x, w = np.zeros((2, 4), np.int8), np.ones((3, 4), np.int8)
    b, m0, s = np.zeros(3, np.int32), np.full(3, 1 << 30, np.int32), np.zeros(3, np.int32)
    with pytest.raises(ValueError, match="out has shape"):
        _dense.DenseCall(x, w, b, m0, s, 0, -128, 127, np.zeros((2, 2), np.int8),
                         rounding="single")
    with pytest.raises(ValueError, match="m0"):
        _dense.DenseCall(x, w, b, np.full(3, -7, np.int32), s, 0, -128, 127,
                         np.zeros((2, 3), np.int8), rounding="single")
    with pytest.raises(ValueError, match="rounding"):
        _dense.DenseCall(x, w, b, m0, s, 0, -128, 127, np.zeros((2, 3), np.int8),
                         rounding="triple")
    with pytest.raises(ValueError, match="int8"):
        _dense.DenseCall(x.astype(np.int16), w, b, m0, s, 0, -32768, 32767,
                         np.zeros((2, 3), np.int16), rounding="single")
    with pytest.raises(ValueError):
        oracle.dense(x.astype(np.int16), w, b, m0, s, 0, -32768, 32767, rounding="single")
    with pytest.raises(ValueError, match="rounding"):
        oracle.dense(x, w, b, m0, s, 0, -128, 127, rounding="triple")
