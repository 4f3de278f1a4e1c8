"""Every Cython kernel is bit-exact with fixnet.oracle, on random shapes, zero points,
multipliers and clamp bounds, and rejects wrong shapes and parameters with ValueError.

Every test runs once per kernel build this machine has and runs (``build``: the baseline,
and the AVX2 / AVX-512 VNNI / dotprod builds setup.py made; see fixnet._kernels): the builds
must give the same bits.

Hypothesis draws the shapes and parameters and a seed; NumPy fills the arrays from the seed
(with the int8 extremes -128 and 127 mixed in on purpose), which keeps 150 examples per
kernel fast while hypothesis still shrinks shapes on failure.
"""
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fixnet
import fixnet._kernels
from fixnet import oracle
from kernel_builds import build_params
from strategies import clamp_bounds, int8_array, seeds, zero_points

SETTINGS = settings(max_examples=150, deadline=None)

# every build fixnet knows; the ones this machine cannot run are skipped with the reason
each_build = pytest.mark.parametrize("build", build_params(fixnet._kernels.load_build))

batch = st.one_of(st.just(0), st.just(1), st.integers(0, 9))
depth = st.one_of(st.just(1), st.integers(0, 40), st.sampled_from([64, 255, 256, 300]))
channels = st.one_of(st.just(1), st.integers(0, 19))


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

def run_dense(build, x, w, bias, m0, shift, out_zp, act_min, act_max):
    out = np.empty((x.shape[0], w.shape[0]), np.int8)
    assert build._dense.dense(x, w, bias, m0, shift, out_zp, act_min, act_max, out) is None
    return out


@each_build
@SETTINGS
@given(seeds, batch, depth, channels, zero_points, clamp_bounds(), shift_ranges, st.booleans())
def test_dense_matches_oracle(build, seed, n, k, c, out_zp, bounds, shift_range, wide_bias):
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
    np.testing.assert_array_equal(run_dense(build, *args), oracle.dense(*args))


@each_build
@settings(max_examples=6, deadline=None)
@given(seeds, st.sampled_from([4095, 4096, 4097, 8192 + 37]), st.integers(1, 9))
def test_dense_matches_oracle_beyond_one_block(build, seed, k, c):
    # Long K: beyond the panel of a tile of rows (the AVX2 kernel's rows widened to int16
    # on the stack), the rows go through the micro-kernel on row pointers, K in chunks.
    rng = np.random.default_rng(seed)
    x, w = int8_array(rng, (3, k)), int8_array(rng, (c, k), -127, 127)
    bias = rng.integers(-2 ** 20, 2 ** 20, size=c).astype(np.int32)
    m0, shift = requant_params(rng, c, (-22, -14))
    args = (x, w, bias, m0, shift, 5, -128, 127)
    np.testing.assert_array_equal(run_dense(build, *args), oracle.dense(*args))


@each_build
def test_dense_worst_case_accumulator(build):
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
    np.testing.assert_array_equal(run_dense(build, *args), oracle.dense(*args))


@each_build
def test_dense_accepts_read_only_inputs(build):
    rng = np.random.default_rng(0)
    x, w = int8_array(rng, (2, 7)), int8_array(rng, (5, 7), -127, 127)
    bias = np.arange(5, dtype=np.int32)
    m0, shift = requant_params(rng, 5, (-10, -5))
    for a in (x, w, bias, m0, shift):
        a.setflags(write=False)
    args = (x, w, bias, m0, shift, 0, -128, 127)
    np.testing.assert_array_equal(run_dense(build, *args), oracle.dense(*args))


@each_build
@settings(max_examples=60, deadline=None)
@given(seeds, st.one_of(st.integers(0, 9), st.sampled_from([37, 64, 65, 129])),
       st.one_of(st.integers(0, 80), st.sampled_from([127, 129])),
       st.one_of(st.integers(1, 100), st.sampled_from([24, 31, 32, 33, 48, 64, 65, 96, 129])),
       zero_points, shift_ranges)
def test_dense_tiles_and_tasks_match_oracle(build, seed, n, k, c, out_zp, shift_range):
    # N around the row tile (MR; a last single row and batch 1 take the one-row kernel) and
    # the task's 64 rows, K off the K step, C around the channel block (NR) and the task's
    # 64 channels: every tile, tail and task edge; any split of the tasks gives the same bits.
    rng = np.random.default_rng(seed)
    x = int8_array(rng, (n, k))
    w = int8_array(rng, (c, k), -127, 127)
    bias = rng.integers(-2 ** 20, 2 ** 20, size=c, endpoint=True).astype(np.int32)
    m0, shift = requant_params(rng, c, (-31, 8) if shift_range == "fit" else shift_range)
    if shift_range == "fit":
        shift = fitted_shift(oracle.dense_accumulators(x, w, bias))
    args = (x, w, bias, m0, shift, out_zp, -128, 127)
    expected = oracle.dense(*args)
    packed = build._dense.pack_dense_weights(w, bias)
    for scalar in (False, True):        # the build's micro-kernel and its scalar twin
        out = np.full((n, c), 99, np.int8)
        call = build._dense.DenseCall(*args, out, packed=packed, scalar=scalar)
        call()
        np.testing.assert_array_equal(out, expected)
        out[...] = 99
        for first in range(call.n_tasks - 1, -1, -1):      # one task at a time, backwards
            call.run_tasks(first, first + 1)
        np.testing.assert_array_equal(out, expected)


@each_build
@pytest.mark.parametrize("n, h, w, stride_h, stride_w, k, c", [
    (1, 7, 9, 2, 2, 8, 16), (3, 6, 5, 2, 3, 12, 9), (2, 15, 15, 2, 2, 33, 40), (1, 4, 4, 4, 1, 1, 3)])
def test_dense_on_strided_pixels_is_a_strided_1x1_conv(build, n, h, w, stride_h, stride_w, k, c):
    # pixels=(H, W, OH, OW, sh, sw): out row (n, oh, ow) from pixel (n, oh sh, ow sw), the
    # rows of a tile crossing output rows and images; the oracle is conv2d's
    rng = np.random.default_rng(n * h * w + k)
    oh, ow = (h - 1) // stride_h + 1, (w - 1) // stride_w + 1
    x = int8_array(rng, (n, h, w, k))
    wt = int8_array(rng, (c, k), -127, 127)
    bias = rng.integers(-2 ** 16, 2 ** 16, size=c).astype(np.int32)
    m0, shift = requant_params(rng, c, (-14, -8))
    params = dict(stride_h=stride_h, stride_w=stride_w, dilation_h=1, dilation_w=1, pad_top=0,
                  pad_left=0, groups=1, pad_value=0, out_zp=4, act_min=-128, act_max=127)
    want = oracle.conv2d(x, wt.reshape(c, 1, 1, k), bias, m0, shift, params, out_h=oh, out_w=ow)
    for scalar in (False, True):
        out = np.full((n * oh * ow, c), 99, np.int8)
        build._dense.DenseCall(x.reshape(-1, k), wt, bias, m0, shift, 4, -128, 127, out,
                               scalar=scalar, pixels=(h, w, oh, ow, stride_h, stride_w))()
        np.testing.assert_array_equal(out.reshape(n, oh, ow, c), want)
    with pytest.raises(ValueError, match="pixels"):
        build._dense.DenseCall(x.reshape(-1, k), wt, bias, m0, shift, 4, -128, 127, out,
                               pixels=(h, w, oh + stride_h, ow, stride_h, stride_w))


@each_build
@pytest.mark.parametrize("n, k, c", [(256, 64, 64), (256, 64, 32), (256, 32, 10), (255, 48, 33)])
def test_dense_call_releases_the_gil_and_rereads_x(build, n, k, c):
    # Large enough to run without the GIL: another Python thread runs while the call does
    # (gil_probe: it makes exactly 0 steps if the call holds the GIL). The Call object reads
    # x again on every call.
    from gil_probe import gil_released_by
    rng = np.random.default_rng(n + k + c)
    w = int8_array(rng, (c, k), -127, 127)
    bias = rng.integers(-2 ** 16, 2 ** 16, size=c).astype(np.int32)
    m0, shift = requant_params(rng, c, (-14, -8))
    x = np.empty((n, k), np.int8)
    out = np.empty((n, c), np.int8)
    call = build._dense.DenseCall(x, w, bias, m0, shift, 3, -100, 127, out,
                                  packed=build._dense.pack_dense_weights(w, bias))
    for _ in range(2):
        x[...] = int8_array(rng, (n, k))
        assert call() is None
        np.testing.assert_array_equal(out, oracle.dense(x, w, bias, m0, shift, 3, -100, 127))
    assert gil_released_by(lambda: repeat_for(call, 0.02)) > 0, "DenseCall held the GIL"


def repeat_for(call, seconds):
    """Run call() again and again for about ``seconds`` (time.perf_counter keeps the GIL)."""
    import time
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        call()


@each_build
def test_dense_packed_weights_must_be_of_this_w_and_bias(build):
    args = dense_args()
    w, bias = args["w"], args["bias"]
    for other_w, other_bias in ((np.zeros_like(w), bias), (w, np.zeros_like(bias)),
                                (np.zeros((5, 4), np.int8), bias)):
        with pytest.raises(ValueError, match="packed"):
            build._dense.DenseCall(**args, packed=build._dense.pack_dense_weights(other_w,
                                                                                  other_bias))
    packed = build._dense.pack_dense_weights(w, bias)
    assert packed.source is w and packed.source_bias is bias
    assert (packed.channels, packed.depth) == (5, 3) and not packed.data.flags.writeable
    build._dense.DenseCall(**args, packed=packed)()


@each_build
def test_dense_rejects_weight_minus_128(build):
    # Weights are symmetric int8, [-127, 127]: the kernels add two int8 products in int16.
    args = dense_args()
    args["w"][3, 1] = -128
    with pytest.raises(ValueError, match=r"w\[3, 1\] = -128"):
        build._dense.dense(**args)


def dense_args(n=2, k=3, c=5):
    return dict(x=np.zeros((n, k), np.int8), w=np.zeros((c, k), np.int8),
                bias=np.zeros(c, np.int32), m0=np.full(c, 2 ** 30, np.int32),
                shift=np.zeros(c, np.int32), out_zp=0, act_min=-128, act_max=127,
                out=np.zeros((n, c), np.int8))


@each_build
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
    ("m0", np.array([2 ** 30, -5, 0, 2 ** 30, 2 ** 30], np.int32), "m0\\[1\\]"),  # negative
    ("m0", np.full(5, -(2 ** 30), np.int32), "m0\\[0\\]"),
    ("shift", np.array([0, 0, 31, 0, 0], np.int32), "shift\\[2\\]"),
    ("shift", np.array([0, -32, 0, 0, 0], np.int32), "shift\\[1\\]"),
    ("x", np.zeros((2, 3), np.int16), "dtype"),                   # Cython's buffer check
    ("x", np.zeros((3, 2), np.int8).T, "contiguous"),
    ("bias", np.zeros(5, np.int64), "dtype"),
])
def test_dense_rejects(build, name, value, match):
    args = dense_args()
    args[name] = value
    with pytest.raises(ValueError, match=match):
        build._dense.dense(**args)


@each_build
def test_dense_rejects_none(build):
    args = dense_args()
    args["x"] = None
    with pytest.raises(TypeError):
        build._dense.dense(**args)


# ---- softmax -------------------------------------------------------------------------------

def exp_table(input_scale, k):
    """What a quantizer builds: round(2^k * exp(-input_scale * d)), d = 0..255."""
    return np.round(2.0 ** k * np.exp(-input_scale * np.arange(256))).astype(np.int32)


def largest_table_exponent(n_cols):
    """Largest K with n_cols * 2^K < 2^31 and 256 * 2^K < 2^31."""
    return min(22, math.floor(math.log2((2 ** 31 - 1) // max(n_cols, 1))))


@each_build
@SETTINGS
@given(seeds, batch, st.one_of(st.just(1), st.integers(0, 40), st.sampled_from([255, 1000])),
       st.floats(min_value=1e-3, max_value=2.0), st.integers(0, 6), st.booleans(), st.booleans(),
       st.sampled_from([255, 256]))
def test_softmax_matches_oracle(build, seed, n, c, input_scale, k_below_max, full_range_rows,
                                small_random_table, levels):
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
    assert build._softmax.softmax(x, table, out, levels) is None
    np.testing.assert_array_equal(out, oracle.softmax(x, table, levels))


@each_build
@settings(max_examples=30, deadline=None)
@given(seeds, st.integers(0, 700), st.integers(1, 12))
def test_softmax_over_many_row_blocks_matches_oracle(build, seed, n, c):
    # Rows are processed in blocks of ~256 elements; many short rows, a ragged last block.
    rng = np.random.default_rng(seed)
    x = int8_array(rng, (n, c))
    table = exp_table(0.07, largest_table_exponent(c))
    out = np.empty((n, c), np.int8)
    build._softmax.SoftmaxCall(x, table, out)()
    np.testing.assert_array_equal(out, oracle.softmax(x, table))


@each_build
def test_softmax_call_copies_its_checked_table(build):
    # The table's checks are the overflow proof: changing the caller's array afterwards
    # must not reach the kernel.
    x = np.array([[3, -7, 100, 0]], np.int8)
    table = exp_table(0.1, 20)
    out = np.empty_like(x)
    call = build._softmax.SoftmaxCall(x, table, out)
    expected = oracle.softmax(x, table)
    table[:] = 2 ** 30
    call()
    np.testing.assert_array_equal(out, expected)


@each_build
def test_softmax_of_equal_logits_is_uniform(build):
    for c in (1, 2, 4, 8, 256):
        out = np.empty((3, c), np.int8)
        build._softmax.softmax(np.full((3, c), 17, np.int8), exp_table(0.1, largest_table_exponent(c)), out)
        # Probability 1/c in steps of 1/256, zero point -128; 1/1 clamps to 127.
        assert (out == min(256 // c - 128, 127)).all()
        # In steps of 1/255 (0 and 1 exact): 1/1 is code 127.
        build._softmax.softmax(np.full((3, c), 17, np.int8), exp_table(0.1, largest_table_exponent(c)),
                               out, 255)
        assert (out == (255 + c // 2) // c - 128).all()


@each_build
@pytest.mark.parametrize("table, n_cols, match", [
    (np.zeros(255, np.int32), 4, "exp_table"),                                   # length
    (np.full(256, 2 ** 23, np.int32), 4, "levels \\* exp_table"),                 # 256 * 2^23
    (np.full(256, 2 ** 20, np.int32), 2048, "C \\* exp_table"),                   # C * 2^20
    (np.r_[[2 ** 10, 2 ** 10 + 1], np.zeros(254, np.int32)].astype(np.int32), 4, "exp_table\\[1\\]"),
    (np.r_[[2 ** 10, -1], np.zeros(254, np.int32)].astype(np.int32), 4, "exp_table\\[1\\]"),
    (np.zeros(256, np.int32), 4, "exp_table\\[0\\]"),                             # s could be 0
])
def test_softmax_rejects_tables(build, table, n_cols, match):
    # (levels defaults to 256, TFLite's output scale 1/256)
    with pytest.raises(ValueError, match=match):
        build._softmax.softmax(np.zeros((2, n_cols), np.int8), table, np.zeros((2, n_cols), np.int8))
    with pytest.raises(ValueError):
        oracle.softmax(np.zeros((2, n_cols), np.int8), table)


@each_build
@pytest.mark.parametrize("levels", [0, 257, -1])
def test_softmax_rejects_levels_outside_1_to_256(build, levels):
    table = exp_table(0.1, 10)
    with pytest.raises(ValueError, match="levels"):
        build._softmax.softmax(np.zeros((2, 4), np.int8), table, np.zeros((2, 4), np.int8), levels)
    with pytest.raises(ValueError, match="levels"):
        oracle.softmax(np.zeros((2, 4), np.int8), table, levels)


@each_build
def test_softmax_accepts_the_largest_safe_table(build):
    table = np.full(256, 2 ** 20, np.int32)
    x = np.zeros((1, 2047), np.int8)
    out = np.empty_like(x)
    build._softmax.softmax(x, table, out)  # 2047 * 2^20 < 2^31
    np.testing.assert_array_equal(out, oracle.softmax(x, table))


@each_build
def test_softmax_rejects_wrong_out_shape(build):
    with pytest.raises(ValueError, match="out"):
        build._softmax.softmax(np.zeros((2, 4), np.int8), exp_table(0.1, 10), np.zeros((2, 5), np.int8))


# ---- lookup, channel_affine, requantize ----------------------------------------------------

@each_build
@SETTINGS
@given(seeds, st.integers(0, 600))
def test_lookup_matches_oracle(build, seed, size):
    rng = np.random.default_rng(seed)
    x, table = int8_array(rng, size), int8_array(rng, 256)
    out = np.empty(size, np.int8)
    build._elementwise.lookup(x, table, out)
    np.testing.assert_array_equal(out, oracle.lookup(x, table))


@each_build
def test_lookup_covers_every_index(build):
    x = np.arange(-128, 128).astype(np.int8)
    table = np.arange(127, -129, -1).astype(np.int8)  # table[i] = 127 - i
    out = np.empty(256, np.int8)
    build._elementwise.lookup(x, table, out)
    np.testing.assert_array_equal(out.astype(int), -1 - x.astype(int))


@each_build
@SETTINGS
@given(seeds, batch, channels, zero_points, clamp_bounds(), shift_ranges, st.booleans())
def test_channel_affine_matches_oracle(build, seed, n, c, out_zp, bounds, shift_range, wide_bias):
    rng = np.random.default_rng(seed)
    x, w = int8_array(rng, (n, c)), int8_array(rng, c, -127, 127)
    bias_bound = 2 ** 31 - 1 if wide_bias else 2 ** 16
    bias = rng.integers(-bias_bound, bias_bound, size=c, endpoint=True).astype(np.int32)
    m0, shift = requant_params(rng, c, (-31, 8) if shift_range == "fit" else shift_range)
    if shift_range == "fit":
        shift = fitted_shift(oracle.channel_affine_accumulators(x, w, bias))
    out = np.empty((n, c), np.int8)
    args = (x, w, bias, m0, shift, out_zp, *bounds)
    build._affine.channel_affine(*args, out)
    np.testing.assert_array_equal(out, oracle.channel_affine(*args))



@each_build
@SETTINGS
@given(seeds, batch, channels, shift_ranges, st.booleans(),
       st.tuples(st.integers(-32768, 32767), st.integers(-32768, 32767)).map(sorted))
def test_channel_affine_int16_matches_oracle(build, seed, n, c, shift_range, wide_bias, bounds):
    # int16 x (zero point 0) times int8 w: |x * w| <= 2^15 * 127, plus the bias, in int32
    rng = np.random.default_rng(seed)
    x = rng.integers(-32768, 32768, (n, c)).astype(np.int16)
    x[rng.random(x.shape) < 0.1] = -32768
    w = int8_array(rng, c, -127, 127)
    bias_bound = 2 ** 31 - 1 if wide_bias else 2 ** 24
    bias = rng.integers(-bias_bound, bias_bound, size=c, endpoint=True).astype(np.int32)
    m0, shift = requant_params(rng, c, (-31, 8) if shift_range == "fit" else shift_range)
    if shift_range == "fit":    # near the int16 range: m0 * 2^(shift - 31) * max|acc| ~ 2^14
        shift = fitted_shift(oracle.channel_affine_accumulators(x, w, bias)) + 7
    out = np.empty((n, c), np.int16)
    args = (x, w, bias, m0, shift, 0, *bounds)
    call = build._affine.ChannelAffineCall(*args, out)
    assert call.bits == 16
    call()
    expected = oracle.channel_affine(*args)
    assert expected.dtype == np.int16
    np.testing.assert_array_equal(out, expected)


@each_build
def test_channel_affine_int16_by_hand(build):
    # scale 1/2 (m0 2^30, shift 0; ties round up), then scale 4 (shift 3: 2^3 * 2^30 / 2^31),
    # clamped to int16; per channel: acc = bias + x * w
    x = np.array([[32767, -32768], [3, -3], [100, 5]], np.int16)
    w = np.array([127, -127], np.int8)
    bias = np.array([-1, 1000], np.int32)
    m0 = np.array([2 ** 30, 2 ** 30], np.int32)
    shift = np.array([0, 3], np.int32)
    acc = oracle.channel_affine_accumulators(x, w, bias)
    np.testing.assert_array_equal(acc, [[32767 * 127 - 1, 32768 * 127 + 1000],
                                        [380, 1381], [12699, 365]])
    expected = [[32767, 32767], [190, 5524], [6350, 1460]]     # 12699 / 2 = 6349.5 -> 6350
    assert oracle.channel_affine(x, w, bias, m0, shift, 0, -32768, 32767).tolist() == expected
    out = np.empty((3, 2), np.int16)
    build._affine.channel_affine(x, w, bias, m0, shift, 0, -32768, 32767, out)
    assert out.tolist() == expected


@each_build
def test_channel_affine_int16_entry_checks(build):
    x, w, b32 = np.zeros((2, 3), np.int16), np.zeros(3, np.int8), np.zeros(3, np.int32)
    m0 = np.full(3, 2 ** 30, np.int32)
    f = build._affine.channel_affine
    with pytest.raises(ValueError, match="out_zp = 1: int16 tensors are symmetric"):
        f(x, w, b32, m0, b32, 1, -32768, 32767, np.zeros((2, 3), np.int16))
    with pytest.raises(ValueError, match="act_min"):
        f(x, w, b32, m0, b32, 0, -32769, 32767, np.zeros((2, 3), np.int16))
    with pytest.raises(ValueError, match="out has dtype int8, but x has dtype int16"):
        f(x, w, b32, m0, b32, 0, -128, 127, np.zeros((2, 3), np.int8))
    with pytest.raises(ValueError, match="out_zp = 1: int16 tensors are symmetric"):
        oracle.channel_affine(x, w, b32, m0, b32, 1, -32768, 32767)

@each_build
@SETTINGS
@given(seeds, st.integers(0, 600), zero_points, zero_points, clamp_bounds(),
       st.one_of(st.just(0), st.integers(2 ** 30, 2 ** 31 - 1)), st.integers(-31, 8))
def test_requantize_matches_oracle(build, seed, size, in_zp, out_zp, bounds, m0, shift):
    rng = np.random.default_rng(seed)
    x = int8_array(rng, size)
    out = np.empty(size, np.int8)
    args = (x, in_zp, m0, shift, out_zp, *bounds)
    build._elementwise.requantize(*args, out)
    np.testing.assert_array_equal(out, oracle.requantize(*args))


@each_build
def test_requantize_identity(build):
    # Factor 1 (m0 = 2^30, shift = 1) between equal zero points changes nothing.
    x = np.arange(-128, 128).astype(np.int8)
    out = np.empty_like(x)
    build._elementwise.requantize(x, 7, 2 ** 30, 1, 7, -128, 127, out)
    np.testing.assert_array_equal(out, x)


# ---- quantize, dequantize ------------------------------------------------------------------

SPECIALS = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 3.4e38, -3.4e38, 1e-45], np.float32)


@each_build
@SETTINGS
@given(seeds, st.integers(0, 500), st.one_of(st.floats(min_value=1e-6, max_value=1e3),
                                              st.sampled_from([2.0 ** -3, 1.0, 1e-300, 1e300])),
       zero_points, st.booleans())
def test_quantize_matches_oracle(build, seed, size, scale, zp, ties):
    rng = np.random.default_rng(seed)
    # with scale 1e300 most values overflow float32 to +-inf on purpose: that is a case too
    np.seterr(over="ignore")
    if ties:  # exact halves of the scale: the round-half-away-from-zero cases
        x = ((rng.integers(-300, 300, size) + 0.5) * scale).astype(np.float32)
    else:
        x = (rng.standard_normal(size) * 100 * scale).astype(np.float32)
    x[rng.random(size) < 0.05] = rng.choice(SPECIALS, size=1)
    out = np.empty(size, np.int8)
    count = build._elementwise.quantize(x, scale, zp, out)
    assert count == int(np.count_nonzero(~np.isfinite(x)))
    np.testing.assert_array_equal(out, oracle.quantize(x, scale, zp))


@each_build
def test_quantize_counts_non_finite_and_writes_zero_point(build):
    x = np.array([np.nan, 1.0, np.inf, -np.inf, -1.0], np.float32)
    out = np.zeros(5, np.int8)
    assert build._elementwise.quantize(x, 0.5, -3, out) == 3
    assert out.tolist() == [-3, -1, -3, -3, -5]


@each_build
@SETTINGS
@given(seeds, st.integers(0, 500), st.floats(min_value=1e-30, max_value=1e30), zero_points)
def test_dequantize_matches_oracle(build, seed, size, scale, zp):
    rng = np.random.default_rng(seed)
    x = int8_array(rng, size)
    out = np.empty(size, np.float32)
    build._elementwise.dequantize(x, scale, zp, out)
    np.testing.assert_array_equal(out, oracle.dequantize(x, scale, zp))


# ---- entry checks of the elementwise kernels -----------------------------------------------

def i8(*shape):
    return np.zeros(shape, np.int8)


def i32(*shape):
    return np.zeros(shape, np.int32)


@each_build
@pytest.mark.parametrize("call, match", [
    (lambda b: b._elementwise.lookup(i8(4), i8(255), i8(4)), "table"),
    (lambda b: b._elementwise.lookup(i8(4), i8(256), i8(5)), "out"),
    (lambda b: b._affine.channel_affine(i8(2, 3), i8(4), i32(3), i32(3), i32(3), 0, -128, 127, i8(2, 3)), "w"),
    (lambda b: b._affine.channel_affine(i8(2, 3), i8(3), i32(2), i32(3), i32(3), 0, -128, 127, i8(2, 3)), "bias"),
    (lambda b: b._affine.channel_affine(i8(2, 3), i8(3), i32(3), i32(4), i32(3), 0, -128, 127, i8(2, 3)), "m0"),
    (lambda b: b._affine.channel_affine(i8(2, 3), i8(3), i32(3), i32(3), i32(1), 0, -128, 127, i8(2, 3)), "shift"),
    (lambda b: b._affine.channel_affine(i8(2, 3), i8(3), i32(3), i32(3), i32(3), 0, -128, 127, i8(3, 2)), "out"),
    (lambda b: b._affine.channel_affine(i8(2, 3), i8(3), i32(3), np.full(3, -7, np.int32), i32(3), 0, -128, 127, i8(2, 3)), "m0"),
    (lambda b: b._affine.channel_affine(i8(2, 3), i8(3), i32(3), i32(3), i32(3), 0, 5, 4, i8(2, 3)), "act_min"),
    (lambda b: b._elementwise.requantize(i8(4), 0, 2 ** 30, 0, 0, -128, 127, i8(3)), "out"),
    (lambda b: b._elementwise.requantize(i8(4), 200, 2 ** 30, 0, 0, -128, 127, i8(4)), "in_zp"),
    (lambda b: b._elementwise.requantize(i8(4), 0, 2 ** 30, 0, -129, -128, 127, i8(4)), "out_zp"),
    (lambda b: b._elementwise.requantize(i8(4), 0, -(2 ** 29), 0, 0, -128, 127, i8(4)), "m0"),
    (lambda b: b._elementwise.requantize(i8(4), 0, 2 ** 30, 31, 0, -128, 127, i8(4)), "shift"),
    (lambda b: b._elementwise.requantize(i8(4), 0, 2 ** 30, -32, 0, -128, 127, i8(4)), "shift"),
    (lambda b: b._elementwise.quantize(np.zeros(4, np.float32), 0.1, 0, i8(5)), "out"),
    (lambda b: b._elementwise.quantize(np.zeros(4, np.float32), 0.0, 0, i8(4)), "scale"),
    (lambda b: b._elementwise.quantize(np.zeros(4, np.float32), float("nan"), 0, i8(4)), "scale"),
    (lambda b: b._elementwise.quantize(np.zeros(4, np.float32), 0.1, 128, i8(4)), "zp"),
    (lambda b: b._elementwise.quantize(np.zeros(4, np.float64), 0.1, 0, i8(4)), "dtype mismatch"),
    (lambda b: b._elementwise.dequantize(i8(4), 0.1, 0, np.zeros(3, np.float32)), "out"),
    (lambda b: b._elementwise.dequantize(i8(4), -0.1, 0, np.zeros(4, np.float32)), "scale"),
    (lambda b: b._elementwise.dequantize(i8(4), float("inf"), 0, np.zeros(4, np.float32)), "scale"),
    (lambda b: b._elementwise.dequantize(i8(4), 0.1, -200, np.zeros(4, np.float32)), "zp"),
])
def test_elementwise_rejects(build, call, match):
    with pytest.raises(ValueError, match=match):
        call(build)


# ---- Call objects of the elementwise kernels ------------------------------------------------

@each_build
def test_elementwise_calls_reread_their_input(build):
    e = build._elementwise
    rng = np.random.default_rng(7)
    x = np.zeros(300, np.int8)
    out = np.empty(300, np.int8)
    table = int8_array(rng, 256)
    calls = [
        (e.LookupCall(x, table, out), lambda: oracle.lookup(x, table)),
        (e.RequantizeCall(x, -5, 2 ** 30 + 77, 2, 4, -100, 120, out),
         lambda: oracle.requantize(x, -5, 2 ** 30 + 77, 2, 4, -100, 120)),
    ]
    for call, expected in calls:
        for _ in range(2):
            x[:] = int8_array(rng, 300)
            call()
            np.testing.assert_array_equal(out, expected())
    x2 = np.zeros((7, 40), np.int8)
    out2 = np.empty_like(x2)
    w = int8_array(rng, 40, -127, 127)
    bias = rng.integers(-2 ** 20, 2 ** 20, 40).astype(np.int32)
    m0, shift = requant_params(rng, 40, (-20, 3))
    call = build._affine.ChannelAffineCall(x2, w, bias, m0, shift, 1, -128, 127, out2)
    for _ in range(2):
        x2[...] = int8_array(rng, (7, 40))
        call()
        np.testing.assert_array_equal(out2, oracle.channel_affine(x2, w, bias, m0, shift, 1, -128, 127))
    xf = np.zeros(1000, np.float32)
    q = np.empty(1000, np.int8)
    call = e.QuantizeCall(xf, 0.03, -9, q)
    for _ in range(2):
        xf[:] = rng.standard_normal(1000) * 3
        assert call() == 0
        np.testing.assert_array_equal(q, oracle.quantize(xf, 0.03, -9))
    f = np.empty(1000, np.float32)
    call = e.DequantizeCall(q, 0.03, -9, f)
    call()
    np.testing.assert_array_equal(f, oracle.dequantize(q, 0.03, -9))


@each_build
def test_quantize_long_arrays_with_ties_and_specials(build):
    # Long enough for every vector width and its tails; exact halves of the scale (the
    # round-half-away cases), values far beyond the int8 range, and a few non-finite ones.
    e = build._elementwise
    rng = np.random.default_rng(11)
    for scale, zp in [(0.25, 0), (0.1, -128), (3.0, 127), (1e-3, 17)]:
        x = ((rng.integers(-400, 400, 4099) + 0.5) * scale).astype(np.float32)
        x[::7] = (rng.standard_normal(x[::7].size) * 1e4).astype(np.float32)
        out = np.empty(x.size, np.int8)
        assert e.quantize(x, scale, zp, out) == 0
        np.testing.assert_array_equal(out, oracle.quantize(x, scale, zp))
        x[[5, 100, 4000]] = [np.nan, np.inf, -np.inf]
        assert e.quantize(x, scale, zp, out) == 3
        np.testing.assert_array_equal(out, oracle.quantize(x, scale, zp))


# ---- the float boundaries of predict: InputStage, OutputStage --------------------------------

@each_build
def test_input_stage_copies_or_quantizes_and_declines_what_it_cannot_take(build):
    e = build._elementwise
    buf = np.zeros((3, 4, 5), np.int8)
    stage = e.InputStage(buf, 0.05, 7)
    rng = np.random.default_rng(3)
    xq = int8_array(rng, (3, 4, 5))
    assert stage(xq) == 0
    np.testing.assert_array_equal(buf, xq)
    xf = (rng.standard_normal((3, 4, 5)) * 4).astype(np.float32)
    assert stage(xf) == 0
    np.testing.assert_array_equal(buf, oracle.quantize(xf, 0.05, 7))
    xf[1, 2, 3] = np.nan
    assert stage(xf) == 1
    before = buf.copy()
    for declined in (xf.astype(np.float64), xf.astype(np.float16), xq.astype(np.uint8),
                     np.asfortranarray(xf), xf[:, :, ::-1], xf[:2], xf.reshape(3, 20),
                     xf.tolist(), np.ma.masked_array(xf)):
        assert stage(declined) == -1
    np.testing.assert_array_equal(buf, before)   # a declined input leaves the buffer alone
    with pytest.raises(ValueError, match="out"):
        e.InputStage(np.zeros(4, np.int32), 0.1, 0)
    with pytest.raises(ValueError, match="scale"):
        e.InputStage(buf, 0.0, 0)


@each_build
def test_output_stage_returns_a_new_array_every_call(build):
    e = build._elementwise
    buf = np.arange(-12, 12, dtype=np.int8).reshape(2, 3, 4)
    as_int8, as_float = e.OutputStage(buf, 0.5, -3, False), e.OutputStage(buf, 0.5, -3, True)
    a, b = as_int8(), as_int8()
    assert a is not b and not np.shares_memory(a, buf) and not np.shares_memory(a, b)
    assert a.dtype == np.int8 and a.shape == buf.shape
    np.testing.assert_array_equal(a, buf)
    f = as_float()
    assert f.dtype == np.float32 and f.shape == buf.shape and not np.shares_memory(f, buf)
    np.testing.assert_array_equal(f, oracle.dequantize(buf, 0.5, -3))
    buf[...] = 5      # reads the buffer at call time
    np.testing.assert_array_equal(as_int8(), buf)
    assert a[0, 0, 0] == -12


# ---- int16 activations: requantize between types, lookup, the float boundaries, softmax -----
#
# int16 tensors are symmetric (zero point 0); requantize converts between int8 and int16 in
# either direction. Every kernel is bit-exact with the oracle given int16 arrays, on every build.

def int16_array(rng, shape, lo=-32768, hi=32767):
    """Uniform int16 in [lo, hi], with about 10% of entries forced to lo or hi."""
    a = rng.integers(lo, hi, size=shape, endpoint=True).astype(np.int16)
    extremes = rng.random(shape) < 0.1
    a[extremes] = rng.choice(np.array([lo, hi], np.int16), size=int(extremes.sum()))
    return a


def codes(rng, bits, shape):
    return int8_array(rng, shape) if bits == 8 else int16_array(rng, shape)


INT16_CLAMPS = st.one_of(
    st.just((-32768, 32767)),
    st.tuples(st.just(0), st.just(32767)),                    # ReLU
    st.tuples(st.integers(-32768, 32767), st.integers(-32768, 32767)).map(sorted).map(tuple),
)


@st.composite
def output_side(draw, bits):
    """(out_zp, act_min, act_max) valid for an output of ``bits``."""
    if bits == 8:
        return (draw(zero_points),) + draw(clamp_bounds())
    return (0,) + draw(INT16_CLAMPS)


@st.composite
def requantize_case(draw):
    """in_bits, out_bits, in_zp, m0, shift, (out_zp, act_min, act_max): any combination of
    types; shifts over the whole contract, and the realistic ones (int16 -> int8 is near
    1/128, -> int16 near 1) more often."""
    in_bits, out_bits = draw(st.sampled_from([8, 16])), draw(st.sampled_from([8, 16]))
    in_zp = draw(zero_points) if in_bits == 8 else 0
    m0 = draw(st.one_of(st.just(0), st.just(2 ** 30), st.integers(2 ** 30, 2 ** 31 - 1)))
    shift = draw(st.one_of(st.integers(-31, 30), st.integers(-10, 3), st.integers(12, 17)))
    return in_bits, out_bits, in_zp, m0, shift, draw(output_side(out_bits))


@each_build
@SETTINGS
@given(seeds, st.one_of(st.integers(0, 600), st.just(40000)), requantize_case())
def test_requantize_between_any_types_matches_oracle(build, seed, size, case):
    in_bits, out_bits, in_zp, m0, shift, (out_zp, lo, hi) = case
    rng = np.random.default_rng(seed)
    x = codes(rng, in_bits, size)
    out = np.empty(size, np.int8 if out_bits == 8 else np.int16)
    build._elementwise.requantize(x, in_zp, m0, shift, out_zp, lo, hi, out)
    expected = oracle.requantize(x, in_zp, m0, shift, out_zp, lo, hi, out_dtype=out.dtype)
    np.testing.assert_array_equal(out, expected)


@each_build
@pytest.mark.parametrize("out_dtype", [np.int8, np.int16])
def test_requantize_int16_every_code_and_every_shift(build, out_dtype):
    # Every int16 code through every shift of the contract, with m0 at both ends of its
    # range: the int32-lane path (shift <= 14) and the int64 one (shift > 14) alike.
    x = np.arange(-32768, 32768).astype(np.int16)
    lo, hi = (-128, 127) if out_dtype == np.int8 else (-32768, 32767)
    zp = -7 if out_dtype == np.int8 else 0
    out = np.empty(x.size, out_dtype)
    for shift in range(-31, 31):
        for m0 in (2 ** 30, 2 ** 31 - 1, 1518500250):
            build._elementwise.requantize(x, 0, m0, shift, zp, lo, hi, out)
            np.testing.assert_array_equal(
                out, oracle.requantize(x, 0, m0, shift, zp, lo, hi, out_dtype=out_dtype),
                err_msg=f"m0 = {m0}, shift = {shift}")


@each_build
def test_requantize_factor_one_is_exact_between_types(build):
    # m0 = 2^30, shift = 1 is the real factor 1: int8 -> int16 at the int8 scale is x - in_zp
    # exactly (int16 zero point 0), and int16 -> int16 changes nothing.
    e = build._elementwise
    x8 = np.arange(-128, 128).astype(np.int8)
    out16 = np.empty(256, np.int16)
    e.requantize(x8, 7, 2 ** 30, 1, 0, -32768, 32767, out16)
    np.testing.assert_array_equal(out16, x8.astype(np.int64) - 7)
    x16 = np.arange(-32768, 32768).astype(np.int16)
    out = np.empty_like(x16)
    e.requantize(x16, 0, 2 ** 30, 1, 0, -32768, 32767, out)
    np.testing.assert_array_equal(out, x16)


@each_build
def test_requantize_int16_to_int8_hand_checked(build):
    # 1/256 (m0 = 2^30, shift = -7), TFLite's two roundings: x / 2 with ties toward +inf,
    # then / 128 with ties away from zero; + out_zp = -3, clamped to int8.
    x = np.array([-32768, -32767, -384, -129, -127, 0, 127, 128, 384, 32511, 32767], np.int16)
    out = np.empty(x.size, np.int8)
    build._elementwise.requantize(x, 0, 2 ** 30, -7, -3, -128, 127, out)
    # -16384 -> -128; -16383.5 -> -16383 -> -127.99 -> -128; -192 -> -1.5 -> -2;
    # -64.5 -> -64 -> -0.5 -> -1; -63.5 -> -63 -> -0.49 -> 0; 0; 63.5 -> 64 -> 0.5 -> 1 (one
    # rounding of 127/256 would give 0); 64 -> 0.5 -> 1; 192 -> 1.5 -> 2;
    # 16255.5 -> 16256 -> 127; 16383.5 -> 16384 -> 128
    assert out.tolist() == [-128, -128, -5, -4, -3, -3, -2, -2, -1, 124, 125]


@each_build
@settings(max_examples=30, deadline=None)
@given(seeds, st.integers(0, 3000))
def test_lookup_int16_matches_oracle(build, seed, size):
    rng = np.random.default_rng(seed)
    x, table = int16_array(rng, size), int16_array(rng, 65536)
    out = np.empty(size, np.int16)
    build._elementwise.lookup(x, table, out)
    np.testing.assert_array_equal(out, oracle.lookup(x, table))


@each_build
def test_lookup_int16_covers_every_index(build):
    x = np.arange(-32768, 32768).astype(np.int16)
    table = np.arange(32767, -32769, -1).astype(np.int16)  # table[i] = 32767 - i
    out = np.empty(x.size, np.int16)
    build._elementwise.lookup(x, table, out)
    np.testing.assert_array_equal(out.astype(int), -1 - x.astype(int))


@each_build
@SETTINGS
@given(seeds, st.integers(0, 500), st.one_of(st.floats(min_value=1e-6, max_value=1e3),
                                              st.sampled_from([2.0 ** -3, 1.0, 1e-300, 1e300])),
       st.booleans())
def test_quantize_and_dequantize_int16_match_oracle(build, seed, size, scale, ties):
    rng = np.random.default_rng(seed)
    np.seterr(over="ignore")
    if ties:  # exact halves of the scale, beyond the int16 range too
        x = ((rng.integers(-40000, 40000, size) + 0.5) * scale).astype(np.float32)
    else:
        x = (rng.standard_normal(size) * 20000 * scale).astype(np.float32)
    x[rng.random(size) < 0.05] = rng.choice(SPECIALS, size=1)
    q = np.empty(size, np.int16)
    assert build._elementwise.quantize(x, scale, 0, q) == int(np.count_nonzero(~np.isfinite(x)))
    np.testing.assert_array_equal(q, oracle.quantize(x, scale, 0, np.int16))
    f = np.empty(size, np.float32)
    build._elementwise.dequantize(q, scale, 0, f)
    np.testing.assert_array_equal(f, oracle.dequantize(q, scale, 0))


@each_build
def test_quantize_int16_long_arrays_with_ties_and_specials(build):
    e = build._elementwise
    rng = np.random.default_rng(12)
    for scale in (0.25, 1e-3, 3.0):
        x = ((rng.integers(-33000, 33000, 4099) + 0.5) * scale).astype(np.float32)
        x[[5, 100, 4000]] = [np.nan, np.inf, -np.inf]
        out = np.empty(x.size, np.int16)
        assert e.quantize(x, scale, 0, out) == 3
        np.testing.assert_array_equal(out, oracle.quantize(x, scale, 0, np.int16))
        assert out.min() == -32768 and out.max() == 32767


def i16(*shape):
    return np.zeros(shape, np.int16)


@each_build
@pytest.mark.parametrize("call, match", [
    (lambda b: b._elementwise.lookup(i16(4), i16(256), i16(4)), "table has length 256"),
    (lambda b: b._elementwise.lookup(i16(4), i8(65536), i16(4)), "table has dtype int8"),
    (lambda b: b._elementwise.lookup(i8(4), i16(256), i8(4)), "table has dtype int16"),
    (lambda b: b._elementwise.lookup(i16(4), i16(65536), i8(4)), "one activation type"),
    (lambda b: b._elementwise.lookup(np.zeros(4, np.int32), i16(65536), i16(4)), "x has dtype"),
    (lambda b: b._elementwise.requantize(i16(4), 1, 2 ** 30, 0, 0, -128, 127, i8(4)), "in_zp.*symmetric"),
    (lambda b: b._elementwise.requantize(i8(4), 0, 2 ** 30, 0, 3, -100, 100, i16(4)), "out_zp.*symmetric"),
    (lambda b: b._elementwise.requantize(i8(4), 0, 2 ** 30, 0, 0, -32769, 0, i16(4)), "act_min"),
    (lambda b: b._elementwise.requantize(i16(4), 0, 2 ** 30, 0, 0, -129, 0, i8(4)), "act_min"),
    (lambda b: b._elementwise.requantize(i16(4), 0, 2 ** 30, 0, 0, 0, 32767, i16(3)), "out"),
    (lambda b: b._elementwise.requantize(i16(4), 0, 2 ** 30, 0, 0, 0, 32767, np.zeros(4, np.uint16)), "out has dtype"),
    (lambda b: b._elementwise.quantize(np.zeros(4, np.float32), 0.1, 1, i16(4)), "zp.*symmetric"),
    (lambda b: b._elementwise.dequantize(i16(4), 0.1, -1, np.zeros(4, np.float32)), "zp.*symmetric"),
    (lambda b: b._elementwise.quantize(np.zeros(4, np.float32), 0.1, 0, np.zeros(4, np.int32)), "out has dtype"),
])
def test_elementwise_int16_rejects(build, call, match):
    with pytest.raises(ValueError, match=match):
        call(build)


@each_build
def test_int16_calls_reread_their_input_and_split_into_tasks(build):
    # Tasks of 16384 elements: any split gives the bits of one call.
    e = build._elementwise
    rng = np.random.default_rng(8)
    n = 50000
    x16, x8 = np.zeros(n, np.int16), np.zeros(n, np.int8)
    out16, out8 = np.empty(n, np.int16), np.empty(n, np.int8)
    table = int16_array(rng, 65536)
    calls = [
        (e.LookupCall(x16, table, out16), out16, lambda: oracle.lookup(x16, table)),
        (e.RequantizeCall(x16, 0, 2 ** 30 + 77, -6, 5, -100, 120, out8), out8,
         lambda: oracle.requantize(x16, 0, 2 ** 30 + 77, -6, 5, -100, 120, out_dtype=np.int8)),
        (e.RequantizeCall(x16, 0, 2 ** 30 + 77, 1, 0, -30000, 30000, out16), out16,
         lambda: oracle.requantize(x16, 0, 2 ** 30 + 77, 1, 0, -30000, 30000)),
        (e.RequantizeCall(x8, -5, 2 ** 30 + 77, 8, 0, -32768, 32767, out16), out16,
         lambda: oracle.requantize(x8, -5, 2 ** 30 + 77, 8, 0, -32768, 32767, out_dtype=np.int16)),
    ]
    for call, out, expected in calls:
        assert call.n_tasks == 4
        for _ in range(2):
            x16[:], x8[:] = int16_array(rng, n), int8_array(rng, n)
            call()
            np.testing.assert_array_equal(out, expected())
        out[:] = 0
        for first, last in ((2, 4), (0, 1), (1, 2)):
            call.run_tasks(first, last)
        np.testing.assert_array_equal(out, expected())


@each_build
def test_lookup_call_copies_its_int16_table(build):
    x = np.arange(-5, 5).astype(np.int16)
    table = np.arange(-32768, 32768).astype(np.int16)
    out = np.empty_like(x)
    call = build._elementwise.LookupCall(x, table, out)
    table[:] = 0
    call()
    np.testing.assert_array_equal(out, x)


@each_build
def test_input_stage_int16_quantizes_floats_copies_int16_codes_and_declines_the_rest(build):
    e = build._elementwise
    buf = np.zeros((3, 4, 5), np.int16)
    stage = e.InputStage(buf, 0.001, 0)
    rng = np.random.default_rng(4)
    xf = (rng.standard_normal((3, 4, 5)) * 10).astype(np.float32)
    assert stage(xf) == 0
    np.testing.assert_array_equal(buf, oracle.quantize(xf, 0.001, 0, np.int16))
    xf[0, 1, 2] = np.inf
    assert stage(xf) == 1
    # int16 arrays given to an int16 input are its codes (fixnet.step.check_input_array)
    codes = int16_array(rng, (3, 4, 5))
    assert stage(codes) == 0
    np.testing.assert_array_equal(buf, codes)
    before = buf.copy()
    # int8/uint8 codes are codes of another scale: the caller refuses them; other layouts
    # and dtypes the caller converts
    for declined in (int8_array(rng, (3, 4, 5)), codes.view(np.uint16), codes[:, :, ::-1],
                     xf.astype(np.float64), xf[:, :, ::-1], xf[:2]):
        assert stage(declined) == -1
    np.testing.assert_array_equal(buf, before)
    with pytest.raises(ValueError, match="symmetric"):
        e.InputStage(buf, 0.1, 3)


@each_build
def test_output_stage_int16_copies_codes_or_dequantizes(build):
    e = build._elementwise
    buf = np.arange(-30000, 30000, 2500, dtype=np.int16).reshape(2, 3, 4)
    codes_out, floats = e.OutputStage(buf, 0.002, 0, False)(), e.OutputStage(buf, 0.002, 0, True)()
    assert codes_out.dtype == np.int16 and not np.shares_memory(codes_out, buf)
    np.testing.assert_array_equal(codes_out, buf)
    assert floats.dtype == np.float32 and floats.shape == buf.shape
    np.testing.assert_array_equal(floats, oracle.dequantize(buf, 0.002, 0))
    with pytest.raises(ValueError, match="symmetric"):
        e.OutputStage(buf, 0.1, 1, True)


# int16 softmax: tables as the quantizer builds them (fixnet.ops.softmax.exp_table16)

def exp_table16(input_scale, channels):
    from fixnet.ops.softmax import exp_table16 as make
    return make(input_scale, channels)


@each_build
@SETTINGS
@given(seeds, batch, st.one_of(st.just(1), st.integers(0, 40), st.sampled_from([255, 1000])),
       st.one_of(st.floats(min_value=1e-6, max_value=5.0), st.sampled_from([1e-5, 3e-4, 0.05])),
       st.booleans(), st.booleans(), st.one_of(st.just(None), st.integers(1, 32767)))
def test_softmax_int16_matches_oracle(build, seed, n, c, input_scale, full_range_rows,
                                      small_random_table, levels):
    rng = np.random.default_rng(seed)
    x = int16_array(rng, (n, c))
    if full_range_rows and n and c >= 2:
        x[:, 0], x[:, -1] = -32768, 32767  # max - x reaches 65535, past most tables' end
    if small_random_table:
        # any table passing the entry checks, of any length: small sums make the rounding of
        # (levels e + s // 2) // s land on exact multiples of s now and then
        top = int(rng.integers(1, 64))
        table = rng.integers(0, top, size=int(rng.integers(1, 300)), endpoint=True).astype(np.int32)
        table[0] = top
    else:
        table = exp_table16(input_scale, max(c, 1))
    out = np.empty((n, c), np.int16)
    assert build._softmax.softmax(x, table, out, levels) is None
    np.testing.assert_array_equal(out, oracle.softmax(x, table, levels))


@each_build
@settings(max_examples=30, deadline=None)
@given(seeds, st.integers(0, 700), st.integers(1, 12))
def test_softmax_int16_over_many_row_blocks_matches_oracle(build, seed, n, c):
    rng = np.random.default_rng(seed)
    x = int16_array(rng, (n, c), -300, 300)
    table = exp_table16(0.01, c)
    out = np.empty((n, c), np.int16)
    build._softmax.SoftmaxCall(x, table, out)()
    np.testing.assert_array_equal(out, oracle.softmax(x, table))


@each_build
def test_softmax_int16_of_equal_logits_is_uniform_and_of_one_class_is_one(build):
    for c in (1, 2, 3, 10, 1000):
        x = np.full((2, c), -1234, np.int16)
        out = np.empty_like(x)
        build._softmax.softmax(x, exp_table16(0.001, c), out)
        assert (out == (32767 + c // 2) // c).all()        # 1/c in steps of 1/32767
    x = np.array([[32767, -32768, 0]], np.int16)
    out = np.empty_like(x)
    build._softmax.softmax(x, exp_table16(0.01, 3), out)
    assert out.tolist() == [[32767, 0, 0]]                  # 1 and 0 exactly


@each_build
@pytest.mark.parametrize("channels", [2, 10, 100, 1000])
def test_softmax_int16_is_within_a_step_of_float_softmax(build, channels):
    # Against float softmax of the quantized logits: the output's rounding (half a step of
    # 1/32767) plus the table's, at most (C + 1) / 2^(K+1) (each of the C entries off by 1/2,
    # the sum at least 2^K): see fixnet/ops/softmax.py. Against the float logits, add the
    # input's rounding: each logit moves by at most s/2, each probability by a factor
    # within exp(+-s).
    rng = np.random.default_rng(channels)
    logits = rng.standard_normal((200, channels)) * 4
    scale = float(np.float32(np.abs(logits).max() / 32767))
    x = oracle.quantize(logits, scale, 0, np.int16)
    table = exp_table16(scale, channels)
    k = int(np.log2(table[0]))
    out = np.empty_like(x)
    build._softmax.softmax(x, table, out)
    p = out / 32767.0

    def float_softmax(v):
        e = np.exp(v - v.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    table_error = (channels + 1) / 2.0 ** (k + 1)
    err = np.abs(p - float_softmax(x.astype(np.float64) * scale)).max()
    assert err <= 0.5 / 32767 + table_error + 1e-12
    if channels <= 100:
        assert err <= 1 / 32767                          # the table's share is negligible
    assert np.abs(p - float_softmax(logits)).max() <= err + np.expm1(scale) + 1e-12


@each_build
@pytest.mark.parametrize("table, n_cols, levels, match", [
    (np.zeros(0, np.int32), 4, None, "exp_table has length 0"),
    (np.full(65537, 2 ** 10, np.int32), 4, None, "exp_table has length 65537"),
    (np.full(300, 2 ** 20, np.int32), 2048, None, "C \\* exp_table"),                # 2048 * 2^20
    (np.r_[[2 ** 10, 2 ** 10 + 1], np.zeros(254, np.int32)].astype(np.int32), 4, None, "exp_table\\[1\\]"),
    (np.zeros(10, np.int32), 4, None, "exp_table\\[0\\]"),
    (np.full(10, 2 ** 10, np.int32), 4, 32768, "levels"),
    (np.full(10, 2 ** 10, np.int32), 4, 0, "levels"),
])
def test_softmax_int16_rejects(build, table, n_cols, levels, match):
    x = np.zeros((2, n_cols), np.int16)
    with pytest.raises(ValueError, match=match):
        build._softmax.softmax(x, table, np.zeros((2, n_cols), np.int16), levels)
    with pytest.raises(ValueError):
        oracle.softmax(x, table, levels)


@each_build
def test_softmax_int16_accepts_large_tables_and_refuses_mixed_types(build):
    # 2^26 * 10 < 2^31: the int16 path has no levels * exp_table[0] < 2^31 limit (the
    # numerator is formed exactly in double)
    table = exp_table16(1e-6, 10)
    assert table.size == 65536 and table[0] == 2 ** 26
    x = int16_array(np.random.default_rng(2), (5, 10))
    out = np.empty_like(x)
    build._softmax.softmax(x, table, out)
    np.testing.assert_array_equal(out, oracle.softmax(x, table))
    with pytest.raises(ValueError, match="one activation type"):
        build._softmax.softmax(x, table, np.empty((5, 10), np.int8))


@each_build
def test_softmax_int16_call_copies_its_checked_table(build):
    x = np.array([[3, -700, 100, 0]], np.int16)
    table = exp_table16(0.01, 4)
    out = np.empty_like(x)
    call = build._softmax.SoftmaxCall(x, table, out)
    expected = oracle.softmax(x, table)
    table[:] = 2 ** 30
    call()
    np.testing.assert_array_equal(out, expected)



# ---- which build runs ------------------------------------------------------------------------

def _isa_in_subprocess(value):
    env = dict(os.environ, FIXNET_ISA=value)
    code = "import fixnet._kernels as k; print(k.ISA, k._dense.__name__)"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, cwd=os.path.dirname(os.path.dirname(fixnet.__file__)))


def test_builds_are_listed_preferred_first_and_the_baseline_always_runs():
    names = fixnet._kernels.available_builds()
    assert names[-1] == "baseline"
    assert fixnet._kernels.ISA in names
    assert fixnet._kernels._dense is fixnet._kernels.load_build(fixnet._kernels.ISA)._dense
    assert names[0] == fixnet._kernels.ISA or os.environ.get("FIXNET_ISA")


@pytest.mark.parametrize("name", build_params())
def test_fixnet_isa_forces_a_build(name):
    r = _isa_in_subprocess(name)
    assert r.returncode == 0, r.stderr
    isa, module = r.stdout.split()
    assert isa == name
    assert module == ("fixnet._kernels._dense" if name == "baseline"
                      else f"fixnet._kernels.isa_{name}._dense")


def test_fixnet_isa_rejects_an_unknown_build():
    r = _isa_in_subprocess("avx9000")
    assert r.returncode != 0 and "FIXNET_ISA" in r.stderr


# ---- predict's fast path --------------------------------------------------------------------

@pytest.fixture(scope="module")
def mlp():
    from conftest import fixture_data, fixture_path
    d = fixture_data("mlp_seq_k3")
    return d, fixnet.load(fixture_path("mlp_seq_k3")).quantize(d["x_calib"])


def test_predict_fast_path_returns_arrays_the_caller_owns(mlp):
    d, qm = mlp
    x = np.ascontiguousarray(d["x_test"][:5], np.float32)
    first = qm.predict(x)                     # plans the arena and the fast path
    again = qm.predict(x)                     # the fast path
    assert again is not first and not np.shares_memory(again, first)
    np.testing.assert_array_equal(again, first)
    again[...] = 0                            # the caller may write into its result
    np.testing.assert_array_equal(qm.predict(x), first)
    other = qm.predict(np.ascontiguousarray(d["x_test"][5:10], np.float32))
    np.testing.assert_array_equal(first, qm.predict(x))      # not overwritten by a later call
    assert not np.array_equal(other, first)
    q1 = qm.predict(x, output="int8")
    q2 = qm.predict(x, output="int8")
    assert not np.shares_memory(q1, q2)
    np.testing.assert_array_equal(q1, qm.predict_oracle(x))


def test_predict_fast_path_agrees_with_every_other_way_in(mlp):
    d, qm = mlp
    x = np.ascontiguousarray(d["x_test"][:8], np.float32)
    ref = qm.predict_oracle(x)
    for variant in (x, x.astype(np.float64), np.asfortranarray(x), x[::-1][::-1].copy(),
                    [x], (x,), qm.input_qparams[0].quantize(x), x):
        np.testing.assert_array_equal(qm.predict(variant, output="int8"), ref)
    bad = x.copy()
    bad[2, 3] = np.inf
    with pytest.raises(fixnet.NonFiniteInputError, match="1 NaN or infinite"):
        qm.predict(bad)                       # a shape the fast path knows: still checked
    with pytest.raises(fixnet.FixnetError, match="output"):
        qm.predict(x, output="float16")
    np.testing.assert_array_equal(qm.predict(x, output="int8"), ref)
