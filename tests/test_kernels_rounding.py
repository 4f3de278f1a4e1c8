"""The single-rounding dense kernel (``_dense.DenseSingleRoundingCall``: one rounding of the
exact product, ties away from zero, the rule TFLite 2.21's reference FULLY_CONNECTED follows)
bit-exact with ``oracle.dense(..., rounding="single")`` on every kernel build, and the rule
itself against exact rationals."""
from fractions import Fraction

import numpy as np
import pytest

import fixnet._kernels
from fixnet import oracle
from fixnet._kernels import _dense
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


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("k", [0, 1, 7, 64, 4095, 4097, 9000])
def test_dense_single_rounding_is_bit_exact_with_the_oracle(seed, k):
    rng = np.random.default_rng(seed * 7919 + k)
    n, c = int(rng.integers(1, 6)), int(rng.integers(1, 20))
    x = rng.integers(-128, 128, (n, k)).astype(np.int8)
    w = rng.integers(-127, 128, (c, k)).astype(np.int8)
    bias = rng.integers(-2 ** 20, 2 ** 20, c).astype(np.int32)
    m0 = rng.integers(2 ** 30, 2 ** 31, c).astype(np.int32)
    shift = rng.integers(-20, 2, c).astype(np.int32)
    if seed == 0:
        m0[:] = 1 << 30                   # multipliers of powers of two: many exact ties
    zp = int(rng.integers(-128, 128))
    lo, hi = sorted(int(v) for v in rng.integers(-128, 128, 2)) if seed % 2 else (-128, 127)
    want = oracle.dense(x, w, bias, m0, shift, zp, lo, hi, rounding="single")
    out = np.zeros((n, c), np.int8)
    call = _dense.DenseSingleRoundingCall(x, w, bias, m0, shift, zp, lo, hi, out)
    call()
    np.testing.assert_array_equal(out, want)
    out[:] = 0
    for t in reversed(range(call.n_tasks)):
        call.run_tasks(t, t + 1)
    np.testing.assert_array_equal(out, want)


def test_dense_single_rounding_checks_its_arguments():
    x, w = np.zeros((2, 4), np.int8), np.ones((3, 4), np.int8)
    b, m0, s = np.zeros(3, np.int32), np.full(3, 1 << 30, np.int32), np.zeros(3, np.int32)
    with pytest.raises(ValueError, match="out has shape"):
        _dense.DenseSingleRoundingCall(x, w, b, m0, s, 0, -128, 127, np.zeros((2, 2), np.int8))
    with pytest.raises(ValueError, match="m0"):
        _dense.DenseSingleRoundingCall(x, w, b, np.full(3, -7, np.int32), s, 0, -128, 127,
                                       np.zeros((2, 3), np.int8))
    with pytest.raises(ValueError):
        oracle.dense(x.astype(np.int16), w, b, m0, s, 0, -32768, 32767, rounding="single")
    with pytest.raises(ValueError, match="rounding"):
        oracle.dense(x, w, b, m0, s, 0, -128, 127, rounding="triple")
