"""The depthwise micro-kernels (fixnet/_kernels/csrc/dwconv.h): the SIMD kernel of every
build this CPU runs, its scalar twin over the same packing, and fixnet.oracle give the same
bits on the geometries real networks use (3x3 and 5x5, the unrolled paths; 1x1, 3x1, 7x7,
9x9, a global pooling window and a 23x23 above the row drivers' tap limit; strides 1-3,
dilation 2, same/valid padding) and on
channel counts that are not a multiple of the 16-lane tile, with depth multipliers 1 to 8,
extreme zero points, weights of +-127 and -128, multipliers with left shifts and clamps.
The task interface (n_tasks, run_tasks on disjoint ranges from several threads) gives the
same bits as one call, and the packed weights are made once per weight array.

int16 activations (x and out int16, symmetric; weights int8; csrc/dwconv16*.h): the same
geometries, channel counts and modes against the oracle's int16 path, with int16 extremes,
pad values, left shifts and clamps anywhere in int16, and Hypothesis on random shapes; the
oracle's int16 path itself against a direct int64 / float computation in hand-checked cases.
"""
import itertools
import pickle
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fixnet import oracle
import fixnet._kernels
from fixnet._kernels import _conv
from kernel_builds import build_params
from strategies import int8_array, seeds
from test_kernels_conv import (
    depthwise_params,
    output_size,
    random_bias,
    requant_params,
    windows,
)


@pytest.fixture(scope="module", params=build_params(), autouse=True)
def kernel_build(request):
    """Every test here runs once per kernel build this CPU runs."""
    global _conv
    saved = _conv
    _conv = fixnet._kernels.load_build(request.param)._conv
    yield request.param
    _conv = saved


def same_padding(size, k, s, d):
    """(out, pad_before) of Keras 'same' padding."""
    out = -(-size // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return out, total // 2


def valid_out(size, k, s, d):
    return (size - (k - 1) * d - 1) // s + 1


def geometry(h, w_, kh, kw, stride, dilation, padding):
    """(out_h, out_w, pad_top, pad_left) of 'same' or 'valid' padding."""
    if padding == "same":
        oh, pt = same_padding(h, kh, stride, dilation)
        ow, pl = same_padding(w_, kw, stride, dilation)
        return oh, ow, pt, pl
    return valid_out(h, kh, stride, dilation), valid_out(w_, kw, stride, dilation), 0, 0


def make_case(seed, n, h, w_, c, mult, kh, kw, stride, dilation, padding, shift_range,
              zp_in, zp_out, bounds, w_range=(-127, 127)):
    rng = np.random.default_rng(seed)
    oh, ow, pt, pl = geometry(h, w_, kh, kw, stride, dilation, padding)
    x = int8_array(rng, (n, h, w_, c))
    w = int8_array(rng, (kh, kw, c * mult), *w_range)
    bias = random_bias(rng, c * mult, False)
    params = depthwise_params(stride, stride, dilation, dilation, pt, pl, mult, zp_in, zp_out,
                              *bounds)
    acc = oracle.depthwise_conv2d_accumulators(x, w, bias, params, out_h=oh, out_w=ow)
    m0, shift = requant_params(rng, c * mult, shift_range, acc)
    args = (x, w, bias, m0, shift, params)
    return args, (n, oh, ow, c * mult)


def run(args, out_shape, **kw):
    out = np.full(out_shape, 99, np.int8)
    _conv.DepthwiseConv2dCall(*args, out, **kw)()
    return out


def check_all(args, out_shape):
    want = oracle.depthwise_conv2d(*args, out_h=out_shape[1], out_w=out_shape[2])
    np.testing.assert_array_equal(run(args, out_shape, scalar=True), want, "scalar twin")
    np.testing.assert_array_equal(run(args, out_shape), want,
                                  f"SIMD ({_conv.DEPTHWISE_ISA})")


KERNELS = [(3, 3), (5, 5), (1, 1), (3, 1), (7, 7)]
CHANNELS = [1, 3, 8, 16, 17, 24, 96, 144]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("c", CHANNELS)
def test_simd_scalar_and_oracle_agree(kernel, c):
    # per (kernel, C): every stride, dilation, padding, multiplier and batch in turn, with
    # zero points, shifts and clamps cycling through their extremes
    kh, kw = kernel
    combos = list(itertools.product((1, 2), (1, 2), ("same", "valid"), (1, 2), (1, 3)))
    zps = [(-128, 127), (127, -128), (0, 5), (-3, -128)]
    shifts = ["fit", (1, 4), (-31, 4), (-12, -12)]
    clamps = [(-128, 127), (0, 127), (-20, 30)]
    for i, (stride, dilation, padding, mult, n) in enumerate(combos):
        if c * mult > 160 and i % 3:
            continue                        # keep the large channel counts quick
        h, w_ = 7 + i % 4, 6 + (i * 3) % 5
        if padding == "valid" and (h < (kh - 1) * dilation + 1 or w_ < (kw - 1) * dilation + 1):
            padding = "same"
        zp_in, zp_out = zps[i % len(zps)]
        args, shape = make_case(1000 * c + 10 * kh + i, n, h, w_, c, mult, kh, kw, stride,
                                dilation, padding, shifts[i % len(shifts)], zp_in, zp_out,
                                clamps[i % len(clamps)])
        check_all(args, shape)


@pytest.mark.parametrize("c,mult,stride,kernel", [
    (1, 4, 1, (3, 3)), (3, 3, 2, (3, 3)), (5, 5, 3, (5, 5)), (2, 8, 1, (3, 3)), (1, 2, 3, (3, 1)),
    (12, 3, 1, (3, 3)), (7, 1, 3, (5, 5)), (4, 1, 2, (2, 2))])
def test_depth_multipliers_and_strides_beyond_two(c, mult, stride, kernel):
    # each input channel repeated M times in the phase rows; strides of 3 (three phases)
    for i, padding in enumerate(("same", "valid")):
        args, shape = make_case(31 * c + mult + i, 2, 11, 13, c, mult, *kernel, stride, 1,
                                padding, "fit", -5, 3, (-128, 127))
        check_all(args, shape)


@pytest.mark.parametrize("c,stride", [(1000, 1), (1000, 2), (3000, 1)])
def test_wide_layers(c, stride):
    # 1000 channels: lcm(C, 16) lanes would be too many, each pixel's channels in tiles
    # ("pixel" mode); 3000: the phase rows of one output column exceed the stack scratch,
    # both entries run the direct loop
    args, shape = make_case(c + stride, 1, 5, 4, c, 1, 3, 3, stride, 1, "same", "fit", 2, -7,
                            (-128, 127))
    check_all(args, shape)
    lanes, flat = _conv.depthwise_lanes(c)
    assert not flat and lanes == -(-c // 16) * 16


def test_lanes_follow_the_channel_count():
    assert _conv.depthwise_lanes(8) == (16, True)
    assert _conv.depthwise_lanes(2) == (16, True)
    assert _conv.depthwise_lanes(24) == (48, True)
    assert _conv.depthwise_lanes(96) == (96, True)


@pytest.mark.parametrize("c,mult", [(8, 1), (17, 2), (96, 1)])
def test_weights_of_minus_128(c, mult):
    # -128 weights make two products' int16 sum overflow on NEON: that build then adds one
    # tap at a time; every build must still give the oracle's bits
    args, shape = make_case(7, 2, 6, 6, c, mult, 3, 3, 1, 1, "same", "fit", -128, 0,
                            (-128, 127), w_range=(-128, -127))
    x = args[0]
    x[...] = -128
    check_all(args, shape)


def test_many_taps():
    # 9x9 = 81 taps and a global average pooling's 12x12 window: the row drivers (one tap
    # pointer each on the stack); 23x23 = 529 taps, above their limit: the direct loop
    for seed, (kh, kw), (h, w_), padding in ((3, (9, 9), (11, 10), "same"),
                                             (4, (12, 12), (12, 12), "valid"),
                                             (5, (23, 23), (6, 5), "same")):
        args, shape = make_case(seed, 1, h, w_, 20, 1, kh, kw, 1, 1, padding, "fit", 4, -2,
                                (-128, 127))
        check_all(args, shape)


def test_wrapping_accumulators():
    # biases near INT32_MAX: the int32 accumulator wraps modulo 2^32 in every path
    x = np.full((1, 3, 3, 17), -128, np.int8)
    w = np.full((3, 3, 17), -127, np.int8)
    bias = np.full(17, 2 ** 31 - 1 - 4 * 16256, np.int32)
    m0, shift = np.full(17, 2 ** 30, np.int32), np.full(17, -20, np.int32)
    args = (x, w, bias, m0, shift, depthwise_params(1, 1, 1, 1, 0, 0, 1, 0))
    check_all(args, (1, 1, 1, 17))


@pytest.mark.parametrize("h,w_,c,stride", [(12, 9, 40, 2), (40, 30, 8, 1), (24, 300, 64, 1)])
def test_tasks_on_threads_match_one_call(h, w_, c, stride):
    # tasks are bands of output rows of one image, over segments of output columns (a
    # segment narrower than the row where the row's phase rows would not fit the stack)
    args, shape = make_case(11, 3, h, w_, c, 1, 3, 3, stride, 1, "same", "fit", 3, -1,
                            (-128, 127))
    whole = run(args, shape)
    for scalar in (False, True):
        out = np.zeros(shape, np.int8)
        call = _conv.DepthwiseConv2dCall(*args, out, scalar=scalar)
        regions = [call.task_region(t) for t in range(call.n_tasks)]
        covered = np.zeros(shape[:3], int)
        for n, rows, cols in regions:
            covered[n, rows, cols] += 1
        assert (covered == 1).all()         # every output pixel in exactly one task
        bounds = np.linspace(0, call.n_tasks, 5).astype(int)
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda r: call.run_tasks(*r), zip(bounds[:-1], bounds[1:])))
        np.testing.assert_array_equal(out, whole)
        # a range writes only its own outputs
        for task in (0, call.n_tasks - 1):
            out[...] = 7
            call.run_tasks(task, task + 1)
            n, rows, cols = regions[task]
            np.testing.assert_array_equal(out[n, rows, cols], whole[n, rows, cols])
            out[n, rows, cols] = 7
            assert (out == 7).all()
        with pytest.raises(ValueError, match="tasks"):
            call.run_tasks(0, call.n_tasks + 1)


def test_packed_weights_are_shared_and_checked():
    args, shape = make_case(5, 2, 8, 8, 24, 2, 3, 3, 1, 1, "same", "fit", 1, 2, (-128, 127))
    x, w, bias = args[:3]
    packed = _conv.pack_depthwise_weights(w, bias)
    assert packed.w is w and packed.bias is bias and not packed.data.flags.writeable
    outs = [np.zeros(shape, np.int8) for _ in range(2)]
    for out in outs:
        _conv.DepthwiseConv2dCall(*args, out, packed=packed)()
    want = oracle.depthwise_conv2d(*args, out_h=shape[1], out_w=shape[2])
    for out in outs:
        np.testing.assert_array_equal(out, want)
    other = _conv.pack_depthwise_weights(w[:, :, :16].copy(), bias[:16].copy())
    with pytest.raises(ValueError, match="packed holds 16 channels"):
        _conv.DepthwiseConv2dCall(*args, outs[0], packed=other)


def test_depthwise_step_packs_once_and_not_into_pickles():
    from fixnet.ops.conv import DepthwiseStep
    rng = np.random.default_rng(9)
    w = int8_array(rng, (3, 3, 8), -127, 127)
    bias = random_bias(rng, 8, False)
    m0, shift = requant_params(rng, 8, (-12, -8), None)
    step = DepthwiseStep("dw", "dw", ["x"], ["y"], w, (1, 1), (1, 1), 1, bias=bias, m0=m0,
                         shift=shift, pad_value=-3, out_zp=2, act_min=-128, act_max=127,
                         pads=((1, 1), (1, 1)), nhwc_in=(5, 5, 8), nhwc_out=(5, 5, 8))
    packed = step.packed_weights()
    assert step.packed_weights() is packed
    step.adjust_bias(np.ones(8, np.int64))          # a new bias array: packed again
    repacked = step.packed_weights()
    assert repacked is not packed and repacked.bias is step.bias
    copy = pickle.loads(pickle.dumps(step))
    assert "_packed" not in copy.__dict__
    x = int8_array(rng, (2, 25 * 8))
    y = np.zeros((2, 25 * 8), np.int8)
    step.bind({"x": x, "y": y})()
    np.testing.assert_array_equal(y.reshape(2, 5, 5, 8), step.oracle([x])[0])


@pytest.mark.parametrize("c", [131, 520])
@pytest.mark.parametrize("kernel", [(3, 3), (5, 5), (1, 3)])
def test_pixel_mode_pairs_of_pixels(c, kernel):
    # lcm(C, 16) above the flat-mode limit: each pixel's channels in tiles, the last one partial
    # (131 = 8 x 16 + 3, 520 = 32 x 16 + 8). The NEON row computes two adjacent pixels at a
    # time (shared weights and constants): odd widths leave one pixel alone; left shifts take
    # the copy with sqshl.
    for i, (w_, stride, shifts) in enumerate([(5, 1, "fit"), (7, 2, (1, 4)), (6, 1, (-31, 4)),
                                              (3, 1, (2, 2))]):
        args, shape = make_case(c + 7 * i + kernel[0], 1, 4, w_, c, 1, *kernel, stride, 1,
                                "same", shifts, 3, -2, (-100, 90))
        check_all(args, shape)
    lanes, flat = _conv.depthwise_lanes(c)
    assert not flat


@pytest.mark.parametrize("c,mult", [(1, 1), (2, 1), (4, 2), (8, 1), (16, 1), (24, 1), (40, 1)])
def test_flat_rows_of_every_length(c, mult):
    # flat mode: a row of W pixels x Cout lanes is walked in blocks of 2L lanes two tiles at a
    # time, then the rest one tile at a time from lane 0, the last tile partial: widths 1 to 9
    for w_ in range(1, 10):
        args, shape = make_case(100 * c + w_, 1, 3, w_, c, mult, 3, 3, 1, 1, "same", "fit", -1,
                                4, (-128, 127))
        check_all(args, shape)


# ---- int16 activations ---------------------------------------------------------------------

def int16_array(rng, shape, lo=-32768, hi=32767):
    """Uniform int16 in [lo, hi], with about 10% of entries forced to lo or hi."""
    a = rng.integers(lo, hi, size=shape, endpoint=True).astype(np.int16)
    extremes = rng.random(shape) < 0.1
    a[extremes] = rng.choice(np.array([lo, hi], np.int16), size=int(extremes.sum()))
    return a


def requant16_params(rng, n_channels, shift_range, acc):
    """requant_params for int16 outputs: "fit" puts the largest accumulator of each channel
    near 2^14, so the outputs span the int16 range and the clamp is reached now and then."""
    if shift_range != "fit":
        return requant_params(rng, n_channels, shift_range, acc)
    m0, _ = requant_params(rng, n_channels, (0, 0), None)
    peak = np.abs(acc.reshape(-1, n_channels)).max(axis=0, initial=0) + 1
    shift = np.clip(np.floor(np.log2(2.0 ** 14 / peak)) + 1, -31, 8)
    return m0, shift.astype(np.int32)


def make_case16(seed, n, h, w_, c, mult, kh, kw, stride, dilation, padding, shift_range,
                pad_value, bounds, w_range=(-127, 127)):
    """make_case with int16 x (out_zp 0, pad_value and clamp bounds int16)."""
    rng = np.random.default_rng(seed)
    oh, ow, pt, pl = geometry(h, w_, kh, kw, stride, dilation, padding)
    x = int16_array(rng, (n, h, w_, c))
    w = int8_array(rng, (kh, kw, c * mult), *w_range)
    bias = random_bias(rng, c * mult, False)
    params = depthwise_params(stride, stride, dilation, dilation, pt, pl, mult, pad_value, 0,
                              *bounds)
    acc = oracle.depthwise_conv2d_accumulators(x, w, bias, params, out_h=oh, out_w=ow)
    m0, shift = requant16_params(rng, c * mult, shift_range, acc)
    return (x, w, bias, m0, shift, params), (n, oh, ow, c * mult)


def run16(args, out_shape, **kw):
    out = np.full(out_shape, 12345, np.int16)
    _conv.DepthwiseConv2dCall(*args, out, **kw)()
    return out


def check_all16(args, out_shape):
    want = oracle.depthwise_conv2d(*args, out_h=out_shape[1], out_w=out_shape[2])
    assert want.dtype == np.int16
    np.testing.assert_array_equal(run16(args, out_shape, scalar=True), want, "int16 scalar twin")
    np.testing.assert_array_equal(run16(args, out_shape), want,
                                  f"int16 SIMD ({_conv.DEPTHWISE16_ISA})")


CLAMPS16 = [(-32768, 32767), (0, 32767), (-20000, 300), (-5, 5)]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("c", CHANNELS)
def test_int16_simd_scalar_and_oracle_agree(kernel, c):
    # test_simd_scalar_and_oracle_agree on int16 activations: pad values cycle through 0
    # (the zero point) and int16 extremes, shifts through left shifts and large right ones
    kh, kw = kernel
    combos = list(itertools.product((1, 2), (1, 2), ("same", "valid"), (1, 2), (1, 3)))
    pad_values = [0, 0, -32768, 32767, 1000]
    shifts = ["fit", (1, 8), (-31, 4), (-12, -12), "fit"]
    for i, (stride, dilation, padding, mult, n) in enumerate(combos):
        if c * mult > 160 and i % 3:
            continue                        # keep the large channel counts quick
        h, w_ = 7 + i % 4, 6 + (i * 3) % 5
        if padding == "valid" and (h < (kh - 1) * dilation + 1 or w_ < (kw - 1) * dilation + 1):
            padding = "same"
        args, shape = make_case16(2000 * c + 10 * kh + i, n, h, w_, c, mult, kh, kw, stride,
                                  dilation, padding, shifts[i % len(shifts)],
                                  pad_values[i % len(pad_values)], CLAMPS16[i % len(CLAMPS16)])
        check_all16(args, shape)


SETTINGS16 = settings(max_examples=300, deadline=None)


@SETTINGS16
@given(seeds, st.integers(0, 3), st.integers(1, 12), st.integers(1, 12), st.integers(1, 40),
       st.integers(1, 3), windows(), st.one_of(st.just(0), st.integers(-32768, 32767)),
       st.one_of(st.just((-32768, 32767)),
                 st.tuples(st.integers(-32768, 32767), st.integers(-32768, 32767)).map(sorted)),
       st.sampled_from(["fit", (-31, 8), (2, 2)]), st.booleans())
def test_int16_matches_oracle_on_random_shapes(seed, n, h, w_, c, mult, window, pad_value,
                                               bounds, shift_range, wide_bias):
    kh, kw, sh, sw, dh, dw, pt, pl, pb, pr = window
    out_h, out_w = output_size(h, kh, sh, dh, pt, pb), output_size(w_, kw, sw, dw, pl, pr)
    rng = np.random.default_rng(seed)
    x = int16_array(rng, (n, h, w_, c))
    w = int8_array(rng, (kh, kw, c * mult), -128, 127)
    bias = random_bias(rng, c * mult, wide_bias)
    params = depthwise_params(sh, sw, dh, dw, pt, pl, mult, pad_value, 0, *bounds)
    acc = oracle.depthwise_conv2d_accumulators(x, w, bias, params, out_h=out_h, out_w=out_w)
    m0, shift = requant16_params(rng, c * mult, shift_range, acc)
    check_all16((x, w, bias, m0, shift, params), (n, out_h, out_w, c * mult))


@pytest.mark.parametrize("c,mult,stride,kernel", [
    (1, 4, 1, (3, 3)), (3, 3, 2, (3, 3)), (5, 5, 3, (5, 5)), (2, 8, 1, (3, 3)), (1, 16, 2, (3, 3)),
    (12, 3, 1, (3, 3)), (7, 1, 3, (5, 5)), (4, 1, 2, (2, 2)), (8, 1, 2, (3, 3))])
def test_int16_depth_multipliers_and_strides(c, mult, stride, kernel):
    # the int16 phase rows: channels repeated M times, strides of 2 and 3 (the fixed-size
    # moves of 2, 4, 8, 16 bytes per pixel for C = 1, 2, 4, 8)
    for i, padding in enumerate(("same", "valid")):
        args, shape = make_case16(41 * c + mult + i, 2, 11, 13, c, mult, *kernel, stride, 1,
                                  padding, "fit", 0, (-32768, 32767))
        check_all16(args, shape)


@pytest.mark.parametrize("c,stride", [(1000, 1), (1000, 2), (3000, 1), (131, 2), (520, 1)])
def test_int16_wide_layers(c, stride):
    # pixel mode (each pixel's channels in tiles, the last partial); 3000 channels: the direct
    # loop (phase rows of one column beyond the stack scratch)
    args, shape = make_case16(c + stride, 1, 5, 4, c, 1, 3, 3, stride, 1, "same", "fit", 0,
                              (-32768, 32767))
    check_all16(args, shape)


@pytest.mark.parametrize("c,mult", [(1, 1), (2, 1), (4, 2), (8, 1), (16, 1), (24, 1), (40, 1)])
def test_int16_flat_rows_of_every_length(c, mult):
    for w_ in range(1, 10):
        args, shape = make_case16(300 * c + w_, 1, 3, w_, c, mult, 3, 3, 1, 1, "same", "fit",
                                  -7, (-32768, 32767))
        check_all16(args, shape)


def test_int16_many_taps_and_global_pooling_windows():
    # 9x9 taps; a global average pooling's window (every weight 127, valid padding, one
    # output pixel) of 12x12 and 7x7 over int16; 23x23 = 529 taps: the direct loop
    for seed, (kh, kw), (h, w_), padding, c in ((3, (9, 9), (11, 10), "same", 20),
                                                (4, (12, 12), (12, 12), "valid", 20),
                                                (6, (7, 7), (7, 7), "valid", 96),
                                                (5, (23, 23), (6, 5), "same", 20)):
        args, shape = make_case16(seed, 2, h, w_, c, 1, kh, kw, 1, 1, padding, "fit", 0,
                                  (-32768, 32767))
        if padding == "valid":
            args[1][...] = 127
        check_all16(args, shape)


def test_int16_extremes_and_wrapping_accumulators():
    # -32768 x -128 = 2^22 per product, in int32 without overflow; biases near INT32_MAX make
    # the int32 accumulator wrap modulo 2^32 in every path, as in the oracle
    x = np.full((1, 3, 3, 17), -32768, np.int16)
    w = np.full((3, 3, 17), -128, np.int8)
    bias = np.full(17, 2 ** 31 - 1 - 4 * 2 ** 22, np.int32)
    bias[:8] = -2 ** 31
    m0, shift = np.full(17, 2 ** 30, np.int32), np.full(17, -14, np.int32)
    args = (x, w, bias, m0, shift, depthwise_params(1, 1, 1, 1, 0, 0, 1, 0, 0, -32768, 32767))
    check_all16(args, (1, 1, 1, 17))
    acc = oracle.depthwise_conv2d_accumulators(x, w, bias, args[5], out_h=1, out_w=1)
    assert acc.max() > 2 ** 31                      # the case wraps


@pytest.mark.parametrize("h,w_,c,stride", [(12, 9, 40, 2), (40, 30, 8, 1), (24, 300, 64, 1)])
def test_int16_tasks_on_threads_match_one_call(h, w_, c, stride):
    # the int16 phase rows take twice the scratch: narrower column segments
    args, shape = make_case16(13, 3, h, w_, c, 1, 3, 3, stride, 1, "same", "fit", 0,
                              (-32768, 32767))
    whole = run16(args, shape)
    for scalar in (False, True):
        out = np.zeros(shape, np.int16)
        call = _conv.DepthwiseConv2dCall(*args, out, scalar=scalar)
        covered = np.zeros(shape[:3], int)
        for n, rows, cols in (call.task_region(t) for t in range(call.n_tasks)):
            covered[n, rows, cols] += 1
        assert (covered == 1).all()
        bounds = np.linspace(0, call.n_tasks, 5).astype(int)
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda r: call.run_tasks(*r), zip(bounds[:-1], bounds[1:])))
        np.testing.assert_array_equal(out, whole)


def test_int16_packing_is_its_own_and_made_once():
    args, shape = make_case16(5, 2, 8, 8, 24, 2, 3, 3, 1, 1, "same", "fit", 0, (-32768, 32767))
    x, w, bias = args[:3]
    packed16 = _conv.pack_depthwise_weights(w, bias, bits=16)
    packed8 = _conv.pack_depthwise_weights(w, bias)
    assert (packed16.bits, packed8.bits) == (16, 8) and not packed16.data.flags.writeable
    assert sorted(_conv.DEPTHWISE16_SLOTS) == list(range(16))
    want = oracle.depthwise_conv2d(*args, out_h=shape[1], out_w=shape[2])
    for packed in (packed16, packed8):       # an int8 packing is packed again for int16
        out = np.zeros(shape, np.int16)
        call = _conv.DepthwiseConv2dCall(*args, out, packed=packed)
        call()
        np.testing.assert_array_equal(out, want)
        assert call.bits == 16 and call.packed.bits == 16
        assert (call.packed is packed) == (packed is packed16)
    with pytest.raises(ValueError, match="bits"):
        _conv.pack_depthwise_weights(w, bias, bits=4)


def test_int16_depthwise_step_binds_int16_buffers():
    # a DepthwiseStep whose tensors are int16 (out_zp 0, clamp in int16) runs this path when
    # bound to int16 buffers, and its oracle agrees
    from fixnet.ops.conv import DepthwiseStep
    rng = np.random.default_rng(19)
    w = int8_array(rng, (3, 3, 8), -127, 127)
    bias = random_bias(rng, 8, False)
    m0, shift = requant_params(rng, 8, (-14, -10), None)
    step = DepthwiseStep("dw", "dw", ["x"], ["y"], w, (1, 1), (1, 1), 1, bias=bias, m0=m0,
                         shift=shift, pad_value=0, out_zp=0, act_min=-32768, act_max=32767,
                         pads=((1, 1), (1, 1)), nhwc_in=(5, 5, 8), nhwc_out=(5, 5, 8))
    x = int16_array(rng, (2, 25 * 8))
    y = np.zeros((2, 25 * 8), np.int16)
    step.bind({"x": x, "y": y})()
    want = step.oracle([x])[0]
    assert want.dtype == np.int16
    np.testing.assert_array_equal(y.reshape(2, 5, 5, 8), want)


def int16_args():
    """Valid int16 depthwise_conv2d arguments: x [2, 5, 5, 3], M = 2, out [2, 3, 3, 6]."""
    return dict(x=np.zeros((2, 5, 5, 3), np.int16), w=np.zeros((3, 3, 6), np.int8),
                bias=np.zeros(6, np.int32), m0=np.full(6, 2 ** 30, np.int32),
                shift=np.zeros(6, np.int32),
                params=depthwise_params(1, 1, 1, 1, 0, 0, 2, 0, 0, -32768, 32767),
                out=np.zeros((2, 3, 3, 6), np.int16))


@pytest.mark.parametrize("name, value, match", [
    ("out", np.zeros((2, 3, 3, 6), np.int8), "one activation type per call"),
    ("x", np.zeros((2, 5, 5, 3), np.int32), "x has dtype int32"),
    ("out_zp", 3, "int16 tensors are symmetric"),
    ("pad_value", 32768, "pad_value"),
    ("act_min", -32769, "act_min"),
    ("act_max", 32768, "act_max"),
])
def test_int16_rejects(name, value, match):
    args = int16_args()
    if name in args["params"]:
        args = dict(args, params=dict(args["params"], **{name: value}))
    else:
        args = dict(args, **{name: value})
    with pytest.raises(ValueError, match=match):
        _conv.depthwise_conv2d(**args)
    with pytest.raises(ValueError, match=match):
        _conv.DepthwiseConv2dCall(**args)


def test_int16_accepts_pad_values_and_bounds_across_int16():
    args = int16_args()
    params = dict(args["params"], pad_value=-32768, act_min=-1000, act_max=32767)
    _conv.depthwise_conv2d(**dict(args, params=params))


# ---- the oracle's int16 path, by hand ------------------------------------------------------

def test_oracle_int16_one_pixel_by_hand():
    # a 1x1 image under a 3x3 kernel with 'same' padding: only the centre tap reads x, the
    # other eight read pad_value. m0 = 2^30, shift = 1 is the multiplier 1: out = clamp(acc).
    x = np.array([32767, -32768], np.int16).reshape(1, 1, 1, 2)
    w = np.zeros((3, 3, 2), np.int8)
    w[1, 1] = [-1, 1]
    w[0, 0] = [2, 3]
    bias = np.array([5, -7], np.int32)
    m0, shift = np.full(2, 2 ** 30, np.int32), np.ones(2, np.int32)
    for pad_value, acc_want in ((0, [5 - 32767, -7 - 32768]),
                                (100, [5 - 32767 + 200, -7 - 32768 + 300])):
        params = depthwise_params(1, 1, 1, 1, 1, 1, 1, pad_value, 0, -32768, 32767)
        acc = oracle.depthwise_conv2d_accumulators(x, w, bias, params, out_h=1, out_w=1)
        assert acc.ravel().tolist() == acc_want
        out = oracle.depthwise_conv2d(x, w, bias, m0, shift, params, out_h=1, out_w=1)
        assert out.dtype == np.int16
        assert out.ravel().tolist() == [max(v, -32768) for v in acc_want]


def test_oracle_int16_matches_direct_int64_and_float():
    # the accumulators are the direct int64 sums; the outputs are the float rescaling of them
    # rounded, within the one step the two roundings of the fixed-point rule may differ by
    rng = np.random.default_rng(77)
    n, h, w_, c, mult, k = 2, 6, 5, 3, 2, 3
    x = int16_array(rng, (n, h, w_, c))
    w = int8_array(rng, (k, k, c * mult), -128, 127)
    bias = random_bias(rng, c * mult, False)
    params = depthwise_params(2, 1, 1, 1, 1, 1, mult, 0, 0, -32768, 32767)
    oh, ow = (h + 2 - k) // 2 + 1, w_ + 2 - k + 1
    acc = oracle.depthwise_conv2d_accumulators(x, w, bias, params, out_h=oh, out_w=ow)
    direct = np.zeros((n, oh, ow, c * mult), np.int64)
    xp = np.pad(x.astype(np.int64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    for b, i, j, o in itertools.product(range(n), range(oh), range(ow), range(c * mult)):
        window = xp[b, 2 * i:2 * i + k, j:j + k, o // mult]
        direct[b, i, j, o] = bias[o] + int((window * w[:, :, o].astype(np.int64)).sum())
    np.testing.assert_array_equal(acc, direct)
    m0 = np.full(c * mult, 1518500250, np.int32)        # ~ 2^30.5: no exact multiples
    shift = np.full(c * mult, -8, np.int32)
    out = oracle.depthwise_conv2d(x, w, bias, m0, shift, params, out_h=oh, out_w=ow)
    real = direct * (m0.astype(np.float64) * 2.0 ** (shift - 31))
    assert out.dtype == np.int16
    assert np.abs(out - np.clip(np.round(real), -32768, 32767)).max() <= 1


@pytest.mark.parametrize("name, value, match", [
    ("out_zp", 1, "int16 tensors are symmetric"),
    ("pad_value", -32769, "pad_value"),
    ("act_max", 40000, "act_max"),
])
def test_oracle_int16_rejects(name, value, match):
    args = int16_args()
    del args["out"]
    args["params"] = dict(args["params"], **{name: value})
    with pytest.raises(ValueError, match=match):
        oracle.depthwise_conv2d(**args, out_h=3, out_w=3)


def test_oracle_int8_results_keep_their_type():
    args, shape = make_case(8, 1, 5, 5, 4, 1, 3, 3, 1, 1, "same", "fit", -3, 4, (-128, 127))
    assert oracle.depthwise_conv2d(*args, out_h=shape[1], out_w=shape[2]).dtype == np.int8


@pytest.mark.parametrize("h,w_,c", [(7, 7, 40), (4, 6, 3), (12, 12, 96)])
def test_int16_global_average_pooling_step(h, w_, c):
    # global average pooling runs on this kernel (fixnet/ops/pool.py: weights 127 at weight
    # scale 1 / (127 H W)); on int16 tensors (zero point 0, clamp at the int16 range) the
    # result is the rounded mean of the codes when the output scale is the input's
    from fixnet import layouts
    from fixnet.ops.pool import GlobalAveragePoolStep
    from fixnet.quant.qparams import requant_multipliers
    rng = np.random.default_rng(h * w_ + c)
    w_q = layouts.step_from_rows("depthwise_conv2d", np.full((c, h, w_), 127, np.int8))
    m0, shift = requant_multipliers(np.full(c, 1.0 / (127 * h * w_)), "gap")
    step = GlobalAveragePoolStep("gap", "gap", ["x"], ["y"], w_q, (1, 1), (1, 1), 1,
                                 bias=np.zeros(c, np.int32), m0=m0, shift=shift, pad_value=0,
                                 out_zp=0, act_min=-32768, act_max=32767,
                                 pads=((0, 0), (0, 0)), nhwc_in=(h, w_, c), nhwc_out=(1, 1, c))
    x = int16_array(rng, (3, h * w_ * c))
    y = np.zeros((3, c), np.int16)
    step.bind({"x": x, "y": y})()
    want = step.oracle([x])[0].reshape(3, c)
    np.testing.assert_array_equal(y, want)
    mean = x.reshape(3, h * w_, c).astype(np.float64).mean(axis=1)
    assert np.abs(y - np.round(mean)).max() <= 1
