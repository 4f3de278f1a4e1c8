"""Every Cython kernel is bit-exact with fixnet.oracle, on random shapes, zero points,
multipliers and clamp bounds, and rejects wrong shapes and parameters with ValueError.

Hypothesis draws the shapes and parameters and a seed; NumPy fills the arrays from the seed
(with the int8 extremes -128 and 127 mixed in on purpose), which keeps 150 examples per
kernel fast while hypothesis still shrinks shapes on failure.
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fixnet import oracle
from fixnet._kernels import _dense, _elementwise, _softmax

SETTINGS = settings(max_examples=150, deadline=None)

seeds = st.integers(0, 2 ** 32 - 1)
zero_points = st.integers(-128, 127)
batch = st.one_of(st.just(0), st.just(1), st.integers(0, 9))
depth = st.one_of(st.just(1), st.integers(0, 40), st.sampled_from([64, 255, 256, 300]))
channels = st.one_of(st.just(1), st.integers(0, 19))


@st.composite
def clamp_bounds(draw):
    """(act_min, act_max): the full int8 range, a ReLU-like bound, or anything valid."""
    return draw(st.one_of(
        st.just((-128, 127)),
        st.tuples(zero_points, st.just(127)),
        st.tuples(zero_points, zero_points).map(sorted).map(tuple),
    ))


def int8_array(rng, shape, lo=-128, hi=127):
    """Uniform int8 in [lo, hi], with about 10% of entries forced to lo or hi."""
    a = rng.integers(lo, hi, size=shape, endpoint=True).astype(np.int8)
    extremes = rng.random(shape) < 0.1
    a[extremes] = rng.choice(np.array([lo, hi], np.int8), size=int(extremes.sum()))
    return a


def requant_params(rng, n_channels, shift_range):
    """Per-channel m0 in [2^30, 2^31) (a few zero) and shift in shift_range (inclusive)."""
    m0 = rng.integers(2 ** 30, 2 ** 31, size=n_channels, dtype=np.int64)
    m0[rng.random(n_channels) < 0.05] = 0
    shift = rng.integers(shift_range[0], shift_range[1], size=n_channels, endpoint=True)
    return m0.astype(np.int32), shift.astype(np.int32)


# Shifts: anything in the contract's test range, a single shift, or "fit": per channel, the
# shift a quantizer would pick so the largest accumulator lands near the int8 range (so that
# most outputs are not clamped).
shift_ranges = st.one_of(
    st.just((-31, 8)),
    st.integers(-31, 8).map(lambda s: (s, s)),
    st.just("fit"),
)


def fitted_shift(acc):
    """Per column of int64 accumulators [N, C]: m0 * 2^(shift - 31) * max|acc| ~ 100."""
    peak = np.abs(acc).max(axis=0, initial=0) + 1
    return np.clip(np.floor(np.log2(100.0 / peak)) + 1, -31, 8).astype(np.int32)


# ---- dense ---------------------------------------------------------------------------------

def run_dense(x, w, bias, m0, shift, out_zp, act_min, act_max):
    out = np.empty((x.shape[0], w.shape[0]), np.int8)
    assert _dense.dense(x, w, bias, m0, shift, out_zp, act_min, act_max, out) is None
    return out


@SETTINGS
@given(seeds, batch, depth, channels, zero_points, clamp_bounds(), shift_ranges, st.booleans())
def test_dense_matches_oracle(seed, n, k, c, out_zp, bounds, shift_range, wide_bias):
    rng = np.random.default_rng(seed)
    x = int8_array(rng, (n, k))
    w = int8_array(rng, (c, k), -127, 127)
    # Biases either in the range a quantizer makes or anywhere in int32 (then the int32
    # accumulator may wrap; kernel and oracle both define that as modulo 2^32).
    bias_bound = 2 ** 31 - 1 if wide_bias else 2 ** 20
    bias = rng.integers(-bias_bound, bias_bound, size=c, endpoint=True).astype(np.int32)
    m0, shift = requant_params(rng, c, (-31, 8) if shift_range == "fit" else shift_range)
    if shift_range == "fit":
        shift = fitted_shift(oracle.dense_accumulators(x, w, bias))
    args = (x, w, bias, m0, shift, out_zp, *bounds)
    np.testing.assert_array_equal(run_dense(*args), oracle.dense(*args))


@settings(max_examples=6, deadline=None)
@given(seeds, st.sampled_from([4095, 4096, 4097, 8192 + 37]), st.integers(1, 9))
def test_dense_matches_oracle_beyond_one_block(seed, k, c):
    # K above the kernel's 4096-element stack block: the row is widened block by block.
    rng = np.random.default_rng(seed)
    x, w = int8_array(rng, (3, k)), int8_array(rng, (c, k), -127, 127)
    bias = rng.integers(-2 ** 20, 2 ** 20, size=c).astype(np.int32)
    m0, shift = requant_params(rng, c, (-22, -14))
    args = (x, w, bias, m0, shift, 5, -128, 127)
    np.testing.assert_array_equal(run_dense(*args), oracle.dense(*args))


def test_dense_worst_case_accumulator():
    # Every product is -128 * -127 = 16256 (the largest the contract allows), K = 300.
    k, c = 300, 6
    x = np.full((2, k), -128, np.int8)
    w = np.full((c, k), -127, np.int8)
    bias = np.array([0, 1, -1, 2 ** 31 - 1 - k * 16256, -(2 ** 31), 12345], np.int32)
    m0 = np.full(c, 2 ** 30, np.int32)
    shift = np.full(c, -20, np.int32)
    acc = oracle.dense_accumulators(x, w, bias)
    assert acc[0, 3] == 2 ** 31 - 1  # the largest accumulator without wrapping
    args = (x, w, bias, m0, shift, -3, -128, 127)
    np.testing.assert_array_equal(run_dense(*args), oracle.dense(*args))


def test_dense_accepts_read_only_inputs():
    rng = np.random.default_rng(0)
    x, w = int8_array(rng, (2, 7)), int8_array(rng, (5, 7), -127, 127)
    bias = np.arange(5, dtype=np.int32)
    m0, shift = requant_params(rng, 5, (-10, -5))
    for a in (x, w, bias, m0, shift):
        a.setflags(write=False)
    args = (x, w, bias, m0, shift, 0, -128, 127)
    np.testing.assert_array_equal(run_dense(*args), oracle.dense(*args))


def dense_args(n=2, k=3, c=5):
    return dict(x=np.zeros((n, k), np.int8), w=np.zeros((c, k), np.int8),
                bias=np.zeros(c, np.int32), m0=np.full(c, 2 ** 30, np.int32),
                shift=np.zeros(c, np.int32), out_zp=0, act_min=-128, act_max=127,
                out=np.zeros((n, c), np.int8))


@pytest.mark.parametrize("name, value, match", [
    ("w", np.zeros((5, 4), np.int8), "w has shape"),              # K mismatch
    ("bias", np.zeros(4, np.int32), "bias"),
    ("m0", np.zeros(6, np.int32), "m0"),
    ("shift", np.zeros(4, np.int32), "shift"),
    ("out", np.zeros((2, 4), np.int8), "out"),
    ("out", np.zeros((3, 5), np.int8), "out"),
    ("out_zp", 128, "out_zp"),
    ("act_min", -129, "act_min"),
    ("act_max", 128, "act_max"),
    ("m0", np.array([2 ** 30, 5, 0, 2 ** 30, 2 ** 30], np.int32), "m0\\[1\\]"),  # not normalised
    ("m0", np.full(5, -(2 ** 30), np.int32), "m0\\[0\\]"),
    ("shift", np.array([0, 0, 31, 0, 0], np.int32), "shift\\[2\\]"),
    ("shift", np.array([0, -32, 0, 0, 0], np.int32), "shift\\[1\\]"),
    ("x", np.zeros((2, 3), np.int16), "dtype"),                   # Cython's buffer check
    ("x", np.zeros((3, 2), np.int8).T, "contiguous"),
    ("bias", np.zeros(5, np.int64), "dtype"),
])
def test_dense_rejects(name, value, match):
    args = dense_args()
    args[name] = value
    with pytest.raises(ValueError, match=match):
        _dense.dense(**args)


def test_dense_rejects_none():
    args = dense_args()
    args["x"] = None
    with pytest.raises(TypeError):
        _dense.dense(**args)


# ---- softmax -------------------------------------------------------------------------------

def exp_table(input_scale, k):
    """What a quantizer builds: round(2^k * exp(-input_scale * d)), d = 0..255."""
    return np.round(2.0 ** k * np.exp(-input_scale * np.arange(256))).astype(np.int32)


def largest_table_exponent(n_cols):
    """Largest K with n_cols * 2^K < 2^31 and 256 * 2^K < 2^31."""
    return min(22, math.floor(math.log2((2 ** 31 - 1) // max(n_cols, 1))))


@SETTINGS
@given(seeds, batch, st.one_of(st.just(1), st.integers(0, 40), st.sampled_from([255, 1000])),
       st.floats(min_value=1e-3, max_value=2.0), st.integers(0, 6), st.booleans(), st.booleans())
def test_softmax_matches_oracle(seed, n, c, input_scale, k_below_max, full_range_rows,
                                small_random_table):
    rng = np.random.default_rng(seed)
    x = int8_array(rng, (n, c))
    if full_range_rows and n and c >= 2:
        x[:, 0], x[:, -1] = -128, 127  # max - x reaches 255, the table's last entry
    if small_random_table:
        # Any table passing the entry checks is valid input; small sums make the rounding
        # of (256 e + s // 2) // s land on exact multiples of s now and then.
        top = int(rng.integers(1, 64))
        table = rng.integers(0, top, size=256, endpoint=True).astype(np.int32)
        table[0] = top
    else:
        table = exp_table(input_scale, max(largest_table_exponent(c) - k_below_max, 0))
    out = np.empty((n, c), np.int8)
    assert _softmax.softmax(x, table, out) is None
    np.testing.assert_array_equal(out, oracle.softmax(x, table))


def test_softmax_of_equal_logits_is_uniform():
    for c in (1, 2, 4, 8, 256):
        out = np.empty((3, c), np.int8)
        _softmax.softmax(np.full((3, c), 17, np.int8), exp_table(0.1, largest_table_exponent(c)), out)
        # Probability 1/c in steps of 1/256, zero point -128; 1/1 clamps to 127.
        assert (out == min(256 // c - 128, 127)).all()


@pytest.mark.parametrize("table, n_cols, match", [
    (np.zeros(255, np.int32), 4, "exp_table"),                                   # length
    (np.full(256, 2 ** 23, np.int32), 4, "256 \\* exp_table"),                    # 256 * 2^23
    (np.full(256, 2 ** 20, np.int32), 2048, "C \\* exp_table"),                   # C * 2^20
    (np.r_[[2 ** 10, 2 ** 10 + 1], np.zeros(254, np.int32)].astype(np.int32), 4, "exp_table\\[1\\]"),
    (np.r_[[2 ** 10, -1], np.zeros(254, np.int32)].astype(np.int32), 4, "exp_table\\[1\\]"),
    (np.zeros(256, np.int32), 4, "exp_table\\[0\\]"),                             # s could be 0
])
def test_softmax_rejects_tables(table, n_cols, match):
    with pytest.raises(ValueError, match=match):
        _softmax.softmax(np.zeros((2, n_cols), np.int8), table, np.zeros((2, n_cols), np.int8))
    with pytest.raises(ValueError):
        oracle.softmax(np.zeros((2, n_cols), np.int8), table)


def test_softmax_accepts_the_largest_safe_table():
    table = np.full(256, 2 ** 20, np.int32)
    x = np.zeros((1, 2047), np.int8)
    out = np.empty_like(x)
    _softmax.softmax(x, table, out)  # 2047 * 2^20 < 2^31
    np.testing.assert_array_equal(out, oracle.softmax(x, table))


def test_softmax_rejects_wrong_out_shape():
    with pytest.raises(ValueError, match="out"):
        _softmax.softmax(np.zeros((2, 4), np.int8), exp_table(0.1, 10), np.zeros((2, 5), np.int8))


# ---- lookup, channel_affine, requantize ----------------------------------------------------

@SETTINGS
@given(seeds, st.integers(0, 600))
def test_lookup_matches_oracle(seed, size):
    rng = np.random.default_rng(seed)
    x, table = int8_array(rng, size), int8_array(rng, 256)
    out = np.empty(size, np.int8)
    _elementwise.lookup(x, table, out)
    np.testing.assert_array_equal(out, oracle.lookup(x, table))


def test_lookup_covers_every_index():
    x = np.arange(-128, 128).astype(np.int8)
    table = np.arange(127, -129, -1).astype(np.int8)  # table[i] = 127 - i
    out = np.empty(256, np.int8)
    _elementwise.lookup(x, table, out)
    np.testing.assert_array_equal(out.astype(int), -1 - x.astype(int))


@SETTINGS
@given(seeds, batch, channels, zero_points, clamp_bounds(), shift_ranges, st.booleans())
def test_channel_affine_matches_oracle(seed, n, c, out_zp, bounds, shift_range, wide_bias):
    rng = np.random.default_rng(seed)
    x, w = int8_array(rng, (n, c)), int8_array(rng, c, -127, 127)
    bias_bound = 2 ** 31 - 1 if wide_bias else 2 ** 16
    bias = rng.integers(-bias_bound, bias_bound, size=c, endpoint=True).astype(np.int32)
    m0, shift = requant_params(rng, c, (-31, 8) if shift_range == "fit" else shift_range)
    if shift_range == "fit":
        shift = fitted_shift(oracle.channel_affine_accumulators(x, w, bias))
    out = np.empty((n, c), np.int8)
    args = (x, w, bias, m0, shift, out_zp, *bounds)
    _elementwise.channel_affine(*args, out)
    np.testing.assert_array_equal(out, oracle.channel_affine(*args))


@SETTINGS
@given(seeds, st.integers(0, 600), zero_points, zero_points, clamp_bounds(),
       st.one_of(st.just(0), st.integers(2 ** 30, 2 ** 31 - 1)), st.integers(-31, 8))
def test_requantize_matches_oracle(seed, size, in_zp, out_zp, bounds, m0, shift):
    rng = np.random.default_rng(seed)
    x = int8_array(rng, size)
    out = np.empty(size, np.int8)
    args = (x, in_zp, m0, shift, out_zp, *bounds)
    _elementwise.requantize(*args, out)
    np.testing.assert_array_equal(out, oracle.requantize(*args))


def test_requantize_identity():
    # Factor 1 (m0 = 2^30, shift = 1) between equal zero points changes nothing.
    x = np.arange(-128, 128).astype(np.int8)
    out = np.empty_like(x)
    _elementwise.requantize(x, 7, 2 ** 30, 1, 7, -128, 127, out)
    np.testing.assert_array_equal(out, x)


# ---- quantize, dequantize ------------------------------------------------------------------

SPECIALS = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 3.4e38, -3.4e38, 1e-45], np.float32)


@SETTINGS
@given(seeds, st.integers(0, 500), st.one_of(st.floats(min_value=1e-6, max_value=1e3),
                                              st.sampled_from([2.0 ** -3, 1.0, 1e-300, 1e300])),
       zero_points, st.booleans())
def test_quantize_matches_oracle(seed, size, scale, zp, ties):
    rng = np.random.default_rng(seed)
    # with scale 1e300 most values overflow float32 to +-inf on purpose: that is a case too
    np.seterr(over="ignore")
    if ties:  # exact halves of the scale: the round-half-away-from-zero cases
        x = ((rng.integers(-300, 300, size) + 0.5) * scale).astype(np.float32)
    else:
        x = (rng.standard_normal(size) * 100 * scale).astype(np.float32)
    x[rng.random(size) < 0.05] = rng.choice(SPECIALS, size=1)
    out = np.empty(size, np.int8)
    count = _elementwise.quantize(x, scale, zp, out)
    assert count == int(np.count_nonzero(~np.isfinite(x)))
    np.testing.assert_array_equal(out, oracle.quantize(x, scale, zp))


def test_quantize_counts_non_finite_and_writes_zero_point():
    x = np.array([np.nan, 1.0, np.inf, -np.inf, -1.0], np.float32)
    out = np.zeros(5, np.int8)
    assert _elementwise.quantize(x, 0.5, -3, out) == 3
    assert out.tolist() == [-3, -1, -3, -3, -5]


@SETTINGS
@given(seeds, st.integers(0, 500), st.floats(min_value=1e-30, max_value=1e30), zero_points)
def test_dequantize_matches_oracle(seed, size, scale, zp):
    rng = np.random.default_rng(seed)
    x = int8_array(rng, size)
    out = np.empty(size, np.float32)
    _elementwise.dequantize(x, scale, zp, out)
    np.testing.assert_array_equal(out, oracle.dequantize(x, scale, zp))


# ---- entry checks of the elementwise kernels -----------------------------------------------

def i8(*shape):
    return np.zeros(shape, np.int8)


def i32(*shape):
    return np.zeros(shape, np.int32)


@pytest.mark.parametrize("call, match", [
    (lambda: _elementwise.lookup(i8(4), i8(255), i8(4)), "table"),
    (lambda: _elementwise.lookup(i8(4), i8(256), i8(5)), "out"),
    (lambda: _elementwise.channel_affine(i8(2, 3), i8(4), i32(3), i32(3), i32(3), 0, -128, 127, i8(2, 3)), "w"),
    (lambda: _elementwise.channel_affine(i8(2, 3), i8(3), i32(2), i32(3), i32(3), 0, -128, 127, i8(2, 3)), "bias"),
    (lambda: _elementwise.channel_affine(i8(2, 3), i8(3), i32(3), i32(4), i32(3), 0, -128, 127, i8(2, 3)), "m0"),
    (lambda: _elementwise.channel_affine(i8(2, 3), i8(3), i32(3), i32(3), i32(1), 0, -128, 127, i8(2, 3)), "shift"),
    (lambda: _elementwise.channel_affine(i8(2, 3), i8(3), i32(3), i32(3), i32(3), 0, -128, 127, i8(3, 2)), "out"),
    (lambda: _elementwise.channel_affine(i8(2, 3), i8(3), i32(3), np.full(3, 7, np.int32), i32(3), 0, -128, 127, i8(2, 3)), "m0"),
    (lambda: _elementwise.channel_affine(i8(2, 3), i8(3), i32(3), i32(3), i32(3), 0, 5, 4, i8(2, 3)), "act_min"),
    (lambda: _elementwise.requantize(i8(4), 0, 2 ** 30, 0, 0, -128, 127, i8(3)), "out"),
    (lambda: _elementwise.requantize(i8(4), 200, 2 ** 30, 0, 0, -128, 127, i8(4)), "in_zp"),
    (lambda: _elementwise.requantize(i8(4), 0, 2 ** 30, 0, -129, -128, 127, i8(4)), "out_zp"),
    (lambda: _elementwise.requantize(i8(4), 0, 2 ** 29, 0, 0, -128, 127, i8(4)), "m0"),
    (lambda: _elementwise.requantize(i8(4), 0, 2 ** 30, 31, 0, -128, 127, i8(4)), "shift"),
    (lambda: _elementwise.requantize(i8(4), 0, 2 ** 30, -32, 0, -128, 127, i8(4)), "shift"),
    (lambda: _elementwise.quantize(np.zeros(4, np.float32), 0.1, 0, i8(5)), "out"),
    (lambda: _elementwise.quantize(np.zeros(4, np.float32), 0.0, 0, i8(4)), "scale"),
    (lambda: _elementwise.quantize(np.zeros(4, np.float32), float("nan"), 0, i8(4)), "scale"),
    (lambda: _elementwise.quantize(np.zeros(4, np.float32), 0.1, 128, i8(4)), "zp"),
    (lambda: _elementwise.quantize(np.zeros(4, np.float64), 0.1, 0, i8(4)), "dtype mismatch"),
    (lambda: _elementwise.dequantize(i8(4), 0.1, 0, np.zeros(3, np.float32)), "out"),
    (lambda: _elementwise.dequantize(i8(4), -0.1, 0, np.zeros(4, np.float32)), "scale"),
    (lambda: _elementwise.dequantize(i8(4), float("inf"), 0, np.zeros(4, np.float32)), "scale"),
    (lambda: _elementwise.dequantize(i8(4), 0.1, -200, np.zeros(4, np.float32)), "zp"),
])
def test_elementwise_rejects(call, match):
    with pytest.raises(ValueError, match=match):
        call()
