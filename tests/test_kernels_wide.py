"""The int64 accumulators of int16 dense and conv2d ("wide" steps, fixnet/_kernels/_wide.pyx):
the requantization rule against exact rational arithmetic, and the kernels bit-exact with the
oracle (fixnet.oracle.dense_wide / conv2d_wide) on random arguments, K-blocks, groups,
strides, dilations, padding and any task split."""
from fractions import Fraction

import numpy as np
import pytest

from fixnet import oracle
from fixnet._kernels import _wide

SEEDS = range(6)


def rule(acc, m0, shift):
    """TFLite's int64 requantization in exact rationals: acc * r / 2^(15 - shift) rounded
    half up, r = m0 rounded to 16 bits (0x7FFF from 0x7FFF0000)."""
    r = (m0 + (1 << 15)) >> 16 if m0 < 0x7FFF0000 else 0x7FFF
    exact = Fraction(acc * r, 2 ** (15 - shift))
    return int(np.floor(exact + Fraction(1, 2)))


def test_wide_rule_is_the_exact_rational_rounding():
    rng = np.random.default_rng(0)
    acc = np.concatenate([rng.integers(-2 ** 46, 2 ** 46, 400), rng.integers(-70000, 70000, 400),
                          [0, 1, -1, 2 ** 47 - 1, -(2 ** 47 - 1)]])
    m0 = np.concatenate([rng.integers(2 ** 30, 2 ** 31, acc.size - 3), [0x7FFF0000, 2 ** 31 - 1, 0]])
    shift = rng.integers(-31, 15, acc.size)
    got = oracle.multiply_by_quantized_multiplier_wide(acc, m0, shift)
    assert got.dtype == np.int64
    assert [int(g) for g in got] == [rule(int(a), int(m), int(s)) for a, m, s in zip(acc, m0, shift)]
    # half-way values round up (toward +inf), as an arithmetic shift of acc * r + 2^(t - 1) does
    assert oracle.multiply_by_quantized_multiplier_wide(-3, 1 << 30, -1) == -1   # -0.75 -> -1
    assert oracle.multiply_by_quantized_multiplier_wide(-1, 1 << 30, 0) == 0     # -0.5 -> 0
    assert oracle.multiply_by_quantized_multiplier_wide(1, 1 << 30, 0) == 1      # 0.5 -> 1


def test_wide_rule_saturates_beyond_2_47_and_checks_shift():
    big = 2 ** 47 - 1
    got = oracle.multiply_by_quantized_multiplier_wide([2 ** 50, -(2 ** 50)], 1 << 30, -20)
    np.testing.assert_array_equal(got, oracle.multiply_by_quantized_multiplier_wide(
        [big, -big], 1 << 30, -20))
    with pytest.raises(ValueError, match="shift"):
        oracle.multiply_by_quantized_multiplier_wide(1, 1 << 30, 15)


def random_requant(rng, c):
    m0 = rng.integers(2 ** 30, 2 ** 31, c).astype(np.int32)
    m0[::5] = 0x7FFF8000 if c else m0[::5]
    return m0, rng.integers(-28, -8, c).astype(np.int32)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("k", [0, 1, 255, 256, 257, 1280, 3001])
def test_dense_wide_is_bit_exact_with_the_oracle(seed, k):
    rng = np.random.default_rng(seed * 100 + k)
    n, c = int(rng.integers(1, 5)), int(rng.integers(1, 13))
    x = rng.integers(-32768, 32768, (n, k)).astype(np.int16)
    x[0, :] = -32768                               # the extreme products: 2^15 * 127
    w = rng.integers(-127, 128, (c, k)).astype(np.int8)
    w[0, :] = -127
    bias = rng.integers(-2 ** 31, 2 ** 31, c).astype(np.int32)
    m0, shift = random_requant(rng, c)
    shift[:] = rng.integers(-40, -20, c).clip(-31, 14) if k > 1000 else shift
    lo, hi = sorted(rng.integers(-32768, 32768, 2)) if seed % 2 else (-32768, 32767)
    want = oracle.dense_wide(x, w, bias, m0, shift, 0, int(lo), int(hi))
    out = np.zeros((n, c), np.int16)
    call = _wide.DenseWideCall(x, w, bias, m0, shift, 0, int(lo), int(hi), out)
    call()
    np.testing.assert_array_equal(out, want)
    # any split of the rows gives the same bits
    out[:] = 0
    for t in range(call.n_tasks):
        call.run_tasks(t, t + 1)
    np.testing.assert_array_equal(out, want)
    # and the accumulators are the exact sums (no int32 wrap however long K is)
    acc = oracle.dense_accumulators(x, w, bias)
    exact = bias.astype(object)[None, :] + x.astype(object) @ w.T.astype(object)
    assert (acc == exact).all()


CONV_CASES = [  # (H, W, Cin, Cout, KH, KW, groups, strides, dilation, pads)
    (5, 6, 3, 4, 3, 3, 1, (1, 1), (1, 1), (1, 1)),
    (7, 5, 8, 6, 3, 2, 2, (2, 1), (1, 1), (0, 1)),
    (9, 9, 4, 8, 3, 3, 4, (1, 2), (2, 2), (2, 2)),
    (4, 4, 300, 5, 2, 2, 1, (1, 1), (1, 1), (0, 0)),   # K = 1200: several int32 blocks
    (3, 3, 16, 16, 1, 1, 1, (1, 1), (1, 1), (0, 0)),
]


@pytest.mark.parametrize("seed", SEEDS[:3])
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_wide_is_bit_exact_with_the_oracle(seed, case):
    h, w_, cin, cout, kh, kw, groups, strides, dilation, pads = case
    rng = np.random.default_rng(seed)
    n = 2
    x = rng.integers(-32768, 32768, (n, h, w_, cin)).astype(np.int16)
    wq = rng.integers(-127, 128, (cout, kh, kw, cin // groups)).astype(np.int8)
    bias = rng.integers(-2 ** 30, 2 ** 30, cout).astype(np.int32)
    m0, shift = random_requant(rng, cout)
    span_h, span_w = (kh - 1) * dilation[0] + 1, (kw - 1) * dilation[1] + 1
    out_h = (h + 2 * pads[0] - span_h) // strides[0] + 1
    out_w = (w_ + 2 * pads[1] - span_w) // strides[1] + 1
    params = dict(stride_h=strides[0], stride_w=strides[1], dilation_h=dilation[0],
                  dilation_w=dilation[1], pad_top=pads[0], pad_left=pads[1], groups=groups,
                  pad_value=0, out_zp=0, act_min=-32768, act_max=32767)
    want = oracle.conv2d_wide(x, wq, bias, m0, shift, params, out_h=out_h, out_w=out_w)
    out = np.zeros((n, out_h, out_w, cout), np.int16)
    call = _wide.Conv2dWideCall(x, wq, bias, m0, shift, params, out)
    call()
    np.testing.assert_array_equal(out, want)
    out[:] = 0
    half = call.n_tasks // 2
    call.run_tasks(half, call.n_tasks)
    call.run_tasks(0, half)
    np.testing.assert_array_equal(out, want)


def test_wide_kernels_check_their_arguments():
    x = np.zeros((2, 8), np.int16)
    w = np.ones((3, 8), np.int8)
    b = np.zeros(3, np.int32)
    m0 = np.full(3, 1 << 30, np.int32)
    out = np.zeros((2, 3), np.int16)
    with pytest.raises(ValueError, match="shift"):
        _wide.DenseWideCall(x, w, b, m0, np.full(3, 15, np.int32), 0, -32768, 32767, out)
    with pytest.raises(ValueError, match="m0"):
        _wide.DenseWideCall(x, w, b, np.full(3, -5, np.int32), np.zeros(3, np.int32), 0,
                            -32768, 32767, out)
    with pytest.raises(ValueError, match="out_zp"):
        _wide.DenseWideCall(x, w, b, m0, np.zeros(3, np.int32), 3, -32768, 32767, out)
    with pytest.raises(ValueError, match="out has shape"):
        _wide.DenseWideCall(x, w, b, m0, np.zeros(3, np.int32), 0, -32768, 32767, np.zeros((2, 2), np.int16))
    with pytest.raises(ValueError):      # int8 activations: the wide kernels are int16 only
        _wide.DenseWideCall(x.astype(np.int8), w, b, m0, np.zeros(3, np.int32), 0, -128, 127,
                            out.astype(np.int8))
    params = dict(stride_h=1, stride_w=1, dilation_h=1, dilation_w=1, pad_top=0, pad_left=0,
                  groups=1, pad_value=0, out_zp=0, act_min=-32768, act_max=32767)
    with pytest.raises(ValueError, match="unknown key 'extra'"):
        _wide.Conv2dWideCall(np.zeros((1, 3, 3, 2), np.int16), np.ones((3, 1, 1, 2), np.int8),
                             b, m0, np.zeros(3, np.int32), dict(params, extra=1),
                             np.zeros((1, 3, 3, 3), np.int16))
    with pytest.raises(ValueError, match="pad_value"):
        _wide.Conv2dWideCall(np.zeros((1, 3, 3, 2), np.int16), np.ones((3, 1, 1, 2), np.int8),
                             b, m0, np.zeros(3, np.int32), dict(params, pad_value=4),
                             np.zeros((1, 3, 3, 3), np.int16))
