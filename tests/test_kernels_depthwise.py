"""The depthwise micro-kernels (fixnet/_kernels/csrc/dwconv.h): the SIMD kernel of every
build this CPU runs, its scalar twin over the same packing, and fixnet.oracle give the same
bits on the geometries real networks use (3x3 and 5x5, the unrolled paths; 1x1, 3x1, 7x7,
9x9, a global pooling window and a 23x23 above the row drivers' tap limit; strides 1-3,
dilation 2, same/valid padding) and on
channel counts that are not a multiple of the 16-lane tile, with depth multipliers 1 to 8,
extreme zero points, weights of +-127 and -128, multipliers with left shifts and clamps.
The task interface (n_tasks, run_tasks on disjoint ranges from several threads) gives the
same bits as one call, and the packed weights are made once per weight array.
"""
import itertools
import pickle
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from fixnet import oracle
import fixnet._kernels
from fixnet._kernels import _conv
from kernel_builds import build_params
from strategies import int8_array
from test_kernels_conv import depthwise_params, random_bias, requant_params


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


def make_case(seed, n, h, w_, c, mult, kh, kw, stride, dilation, padding, shift_range,
              zp_in, zp_out, bounds, w_range=(-127, 127)):
    rng = np.random.default_rng(seed)
    if padding == "same":
        oh, pt = same_padding(h, kh, stride, dilation)
        ow, pl = same_padding(w_, kw, stride, dilation)
    else:
        oh, ow, pt, pl = valid_out(h, kh, stride, dilation), valid_out(w_, kw, stride, dilation), 0, 0
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
