"""The convolution kernels (conv2d with groups, depthwise_conv2d) are bit-exact with
fixnet.oracle on random shapes, strides, dilations, paddings, groups, depth multipliers, zero
points, multipliers and clamp bounds, and reject wrong shapes and parameters with ValueError
naming the argument (a field of the params mapping, or a missing or unknown key of it). The
conv oracle itself is checked against independent formulations: a 7-nested-loop Python
reference, dense on 1x1 kernels, conv2d with groups for depthwise, and zero-padding the
real-valued (x - zp) input for the pad_value / bias-folding contract.

Hypothesis draws the shapes, parameters and a seed; NumPy fills the arrays from the seed.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fixnet import oracle
import fixnet._kernels
from fixnet._kernels import _conv
from kernel_builds import build_params
from strategies import clamp_bounds, int8_array, seeds, zero_points


@pytest.fixture(scope="module", params=build_params(), autouse=True)
def kernel_build(request):
    """Every test here runs once per kernel build this CPU runs (baseline, AVX2, ...): each
    build must give the oracle's bits."""
    global _conv
    saved = _conv
    build = fixnet._kernels.load_build(request.param)
    _conv = build._conv
    yield request.param
    _conv = saved

SETTINGS = settings(max_examples=500, deadline=None)

batch = st.one_of(st.just(0), st.just(1), st.integers(2, 3))
sizes = st.integers(1, 12)
kernel_sizes = st.integers(1, 5)
strides = st.integers(1, 3)
dilations = st.one_of(st.just(1), st.integers(1, 3))
pads = st.integers(0, 3)


# Shifts: anything in [-31, 4], one shift for every channel, or "fit": per channel, the shift
# a quantizer would pick so the largest accumulator lands near the int8 range.
shift_ranges = st.one_of(
    st.just((-31, 4)),
    st.integers(-31, 4).map(lambda s: (s, s)),
    st.just("fit"),
)


def random_bias(rng, n_channels, wide):
    """Biases in the range a quantizer makes, or anywhere in int32 (then the int32
    accumulator may wrap; kernel and oracle both define that as modulo 2^32)."""
    bound = 2 ** 31 - 1 if wide else 2 ** 20
    return rng.integers(-bound, bound, size=n_channels, endpoint=True).astype(np.int32)


def requant_params(rng, n_channels, shift_range, acc):
    """Per-channel m0 in [2^30, 2^31) (a few zero) and shifts from shift_range or fitted to
    the int64 accumulators acc [..., C]: m0 * 2^(shift - 31) * max|acc| ~ 100."""
    m0 = rng.integers(2 ** 30, 2 ** 31, size=n_channels, dtype=np.int64)
    m0[rng.random(n_channels) < 0.05] = 0
    if shift_range == "fit":
        peak = np.abs(acc.reshape(-1, n_channels)).max(axis=0, initial=0) + 1
        shift = np.clip(np.floor(np.log2(100.0 / peak)) + 1, -31, 4)
    else:
        shift = rng.integers(shift_range[0], shift_range[1], size=n_channels, endpoint=True)
    return m0.astype(np.int32), shift.astype(np.int32)


def conv2d_params(*values):
    """conv2d's params mapping from its values in CONV2D_PARAMS order: stride_h, stride_w,
    dilation_h, dilation_w, pad_top, pad_left, groups, pad_value, out_zp, act_min,
    act_max (the last three default to 0, -128, 127)."""
    return dict(zip(oracle.CONV2D_PARAMS, values + (0, -128, 127)[len(values) - 8:]))


def depthwise_params(*values):
    """depthwise_conv2d's params mapping, as conv2d_params (depth_multiplier for groups)."""
    return dict(zip(oracle.DEPTHWISE_PARAMS, values + (0, -128, 127)[len(values) - 8:]))


def output_size(size, kernel, stride, dilation, pad_before, pad_after):
    """What the caller computes: output pixels of a window sliding over the padded input."""
    return max(0, (size + pad_before + pad_after - dilation * (kernel - 1) - 1) // stride + 1)


@st.composite
def windows(draw):
    """(KH, KW, stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left, pad_bottom,
    pad_right); now and then a 1x1 kernel without top/left padding (conv2d's fast path)."""
    if draw(st.integers(0, 4)) == 0:
        return (1, 1, draw(strides), draw(strides), 1, 1, 0, 0, draw(pads), draw(pads))
    return tuple(draw(s) for s in (kernel_sizes, kernel_sizes, strides, strides, dilations,
                                   dilations, pads, pads, pads, pads))


# ---- conv2d against the oracle -------------------------------------------------------------

def run_conv2d(x, w, bias, m0, shift, params, out_h, out_w):
    out = np.empty((x.shape[0], out_h, out_w, w.shape[0]), np.int8)
    assert _conv.conv2d(x, w, bias, m0, shift, params, out) is None
    return out


@SETTINGS
@given(seeds, batch, sizes, sizes, st.sampled_from([1, 1, 2, 4]), st.integers(1, 20),
       st.integers(1, 20), windows(), zero_points, zero_points, clamp_bounds(), shift_ranges,
       st.booleans())
def test_conv2d_matches_oracle(seed, n, h, w_, groups, cin, cout, window, pad_value, out_zp,
                               bounds, shift_range, wide_bias):
    # Round the channel counts down to multiples of groups (1..20 either way).
    cin, cout = max(groups, cin - cin % groups), max(groups, cout - cout % groups)
    kh, kw, sh, sw, dh, dw, pt, pl, pb, pr = window
    out_h, out_w = output_size(h, kh, sh, dh, pt, pb), output_size(w_, kw, sw, dw, pl, pr)
    rng = np.random.default_rng(seed)
    x = int8_array(rng, (n, h, w_, cin))
    w = int8_array(rng, (cout, kh, kw, cin // groups), -127, 127)
    bias = random_bias(rng, cout, wide_bias)
    params = conv2d_params(sh, sw, dh, dw, pt, pl, groups, pad_value, out_zp, *bounds)
    acc = oracle.conv2d_accumulators(x, w, bias, params, out_h=out_h, out_w=out_w)
    m0, shift = requant_params(rng, cout, shift_range, acc)
    args = (x, w, bias, m0, shift, params)
    np.testing.assert_array_equal(run_conv2d(*args, out_h=out_h, out_w=out_w),
                                  oracle.conv2d(*args, out_h=out_h, out_w=out_w))


@settings(max_examples=10, deadline=None)
@given(seeds, st.sampled_from([(3, 3, 500, 1), (3, 3, 1000, 2), (1, 1, 4100, 1),
                               (1, 1, 8200, 2), (2, 5, 411, 1)]),
       st.integers(1, 9), st.integers(0, 1))
def test_conv2d_matches_oracle_beyond_one_block(seed, shape, cout_g, pad):
    # Patches longer than the 4096-element block of the dot-product helpers: the dot product
    # runs block by block, combined modulo 2^32.
    kh, kw, cin, groups = shape
    rng = np.random.default_rng(seed)
    x = int8_array(rng, (2, 3, 4, cin))
    w = int8_array(rng, (cout_g * groups, kh, kw, cin // groups), -127, 127)
    bias = random_bias(rng, w.shape[0], False)
    m0, shift = requant_params(rng, w.shape[0], (-24, -14), None)
    out_h, out_w = output_size(3, kh, 1, 1, pad, pad), output_size(4, kw, 1, 1, pad, pad)
    args = (x, w, bias, m0, shift, conv2d_params(1, 1, 1, 1, pad, pad, groups, -7, 3))
    np.testing.assert_array_equal(run_conv2d(*args, out_h=out_h, out_w=out_w),
                                  oracle.conv2d(*args, out_h=out_h, out_w=out_w))


@pytest.mark.parametrize("h, w_, stride, out_h, out_w", [
    (5, 6, 1, 5, 6),   # pointwise conv: the fast path, every pixel once
    (5, 6, 2, 3, 3),   # strided 1x1 inside the input: fast path
    (5, 6, 2, 2, 2),   # output smaller than the input allows
    (5, 6, 1, 6, 7),   # implied bottom/right padding: the last row/column reads pad_value
    (1, 1, 3, 2, 1),
])
@pytest.mark.parametrize("groups", [1, 3])
def test_conv2d_1x1(h, w_, stride, out_h, out_w, groups):
    rng = np.random.default_rng(h * w_ * stride + groups)
    x = int8_array(rng, (2, h, w_, 6))
    w = int8_array(rng, (9, 1, 1, 6 // groups), -127, 127)
    bias = random_bias(rng, 9, False)
    m0, shift = requant_params(rng, 9, (-14, -8), None)
    args = (x, w, bias, m0, shift,
            conv2d_params(stride, stride, 2, 3, 0, 0, groups, 11, -5, -100, 90))
    np.testing.assert_array_equal(run_conv2d(*args, out_h=out_h, out_w=out_w),
                                  oracle.conv2d(*args, out_h=out_h, out_w=out_w))


def test_conv2d_worst_case_accumulator():
    # Every product is -128 * -127 (the largest the contract allows), 3 x 3 x 20 taps.
    taps = 3 * 3 * 20
    x = np.full((1, 4, 4, 20), -128, np.int8)
    w = np.full((5, 3, 3, 20), -127, np.int8)
    bias = np.array([0, 2 ** 31 - 1 - taps * 16256, 2 ** 31 - taps * 16256, -(2 ** 31), 7],
                    np.int32)
    m0, shift = np.full(5, 2 ** 30, np.int32), np.full(5, -20, np.int32)
    args = (x, w, bias, m0, shift, conv2d_params(1, 1, 1, 1, 0, 0, 1, -128, -3))
    acc = oracle.conv2d_accumulators(x, w, bias, args[5], out_h=2, out_w=2)
    assert acc[0, 0, 0, 1] == 2 ** 31 - 1 and acc[0, 0, 0, 2] == 2 ** 31  # the second wraps
    np.testing.assert_array_equal(run_conv2d(*args, out_h=2, out_w=2),
                                  oracle.conv2d(*args, out_h=2, out_w=2))


@pytest.mark.parametrize("x_shape, w_shape, groups, out_h, out_w", [
    ((1, 3, 3, 0), (2, 3, 3, 0), 1, 3, 3),   # no input channels: acc = bias
    ((1, 3, 3, 2), (0, 3, 3, 2), 1, 3, 3),   # no output channels
    ((1, 0, 3, 2), (2, 3, 3, 2), 1, 2, 3),   # empty input: every tap reads pad_value
    ((1, 0, 0, 2), (2, 1, 1, 2), 1, 2, 2),   # ... also for a 1x1 kernel
    ((2, 3, 3, 4), (4, 2, 2, 2), 2, 0, 5),   # empty output
])
def test_conv2d_degenerate_shapes(x_shape, w_shape, groups, out_h, out_w):
    rng = np.random.default_rng(6)
    x, w = int8_array(rng, x_shape), int8_array(rng, w_shape, -127, 127)
    bias = random_bias(rng, w_shape[0], False)
    m0, shift = requant_params(rng, w_shape[0], (-8, 0), None)
    args = (x, w, bias, m0, shift, conv2d_params(1, 1, 1, 1, 1, 1, groups, 3))
    np.testing.assert_array_equal(run_conv2d(*args, out_h=out_h, out_w=out_w),
                                  oracle.conv2d(*args, out_h=out_h, out_w=out_w))


# ---- depthwise_conv2d against the oracle ---------------------------------------------------

def run_depthwise(x, w, bias, m0, shift, params, out_h, out_w):
    out = np.empty((x.shape[0], out_h, out_w, w.shape[2]), np.int8)
    assert _conv.depthwise_conv2d(x, w, bias, m0, shift, params, out) is None
    return out


@SETTINGS
@given(seeds, batch, sizes, sizes, st.integers(1, 20), st.integers(1, 3), windows(),
       zero_points, zero_points, clamp_bounds(), shift_ranges, st.booleans())
def test_depthwise_conv2d_matches_oracle(seed, n, h, w_, c, mult, window, pad_value, out_zp,
                                         bounds, shift_range, wide_bias):
    kh, kw, sh, sw, dh, dw, pt, pl, pb, pr = window
    out_h, out_w = output_size(h, kh, sh, dh, pt, pb), output_size(w_, kw, sw, dw, pl, pr)
    rng = np.random.default_rng(seed)
    x = int8_array(rng, (n, h, w_, c))
    w = int8_array(rng, (kh, kw, c * mult), -127, 127)
    bias = random_bias(rng, c * mult, wide_bias)
    params = depthwise_params(sh, sw, dh, dw, pt, pl, mult, pad_value, out_zp, *bounds)
    acc = oracle.depthwise_conv2d_accumulators(x, w, bias, params, out_h=out_h, out_w=out_w)
    m0, shift = requant_params(rng, c * mult, shift_range, acc)
    args = (x, w, bias, m0, shift, params)
    np.testing.assert_array_equal(run_depthwise(*args, out_h=out_h, out_w=out_w),
                                  oracle.depthwise_conv2d(*args, out_h=out_h, out_w=out_w))


def test_depthwise_conv2d_worst_case_accumulator():
    x = np.full((1, 3, 3, 2), -128, np.int8)
    w = np.full((3, 3, 4), -127, np.int8)
    bias = np.array([0, 2 ** 31 - 1 - 9 * 16256, 2 ** 31 - 9 * 16256, 5], np.int32)
    m0, shift = np.full(4, 2 ** 30, np.int32), np.full(4, -20, np.int32)
    args = (x, w, bias, m0, shift, depthwise_params(1, 1, 1, 1, 0, 0, 2, 0))
    np.testing.assert_array_equal(run_depthwise(*args, out_h=1, out_w=1),
                                  oracle.depthwise_conv2d(*args, out_h=1, out_w=1))


# ---- the Call objects: checked once, run many times ----------------------------------------

def test_conv2d_call_runs_on_the_current_contents_of_its_arrays():
    rng = np.random.default_rng(1)
    x = int8_array(rng, (1, 7, 6, 8))
    w = int8_array(rng, (6, 3, 2, 4), -127, 127)
    bias = random_bias(rng, 6, False)
    m0, shift = requant_params(rng, 6, (-16, -10), None)
    params = conv2d_params(2, 1, 1, 2, 1, 0, 2, -4, 6)
    out = np.zeros((1, 4, 4, 6), np.int8)
    call = _conv.Conv2dCall(x, w, bias, m0, shift, params, out)
    assert call.params == params    # the struct it filled, given back as a dict
    for _ in range(3):
        x[...] = int8_array(rng, x.shape)  # the runtime writes each new input in place
        assert call() is None
        np.testing.assert_array_equal(out, oracle.conv2d(x, w, bias, m0, shift, params,
                                                         out_h=4, out_w=4))


def test_depthwise_call_runs_on_the_current_contents_of_its_arrays():
    rng = np.random.default_rng(2)
    x = int8_array(rng, (2, 5, 5, 3))
    w = int8_array(rng, (3, 3, 6), -127, 127)
    bias = random_bias(rng, 6, False)
    m0, shift = requant_params(rng, 6, (-12, -6), None)
    params = depthwise_params(1, 1, 1, 1, 1, 1, 2, 9, -3)
    out = np.zeros((2, 5, 5, 6), np.int8)
    call = _conv.DepthwiseConv2dCall(x, w, bias, m0, shift, params, out)
    assert call.params == params
    for _ in range(3):
        x[...] = int8_array(rng, x.shape)
        assert call() is None
        np.testing.assert_array_equal(out, oracle.depthwise_conv2d(x, w, bias, m0, shift,
                                                                   params, out_h=5, out_w=5))


def test_call_objects_survive_a_failed_reinitialisation():
    args = conv2d_args()
    args["x"] = np.random.default_rng(4).integers(-128, 128, (2, 5, 5, 4)).astype(np.int8)
    call = _conv.Conv2dCall(**args)
    bad = dict(args["params"], stride_h=0)
    with pytest.raises(ValueError, match="stride_h"):
        call.__init__(**dict(args, params=bad, out=np.ones((2, 3, 3, 6), np.int8)))
    call()  # still the first, valid configuration, writing the first out
    assert call.params == args["params"]
    expected = oracle.conv2d(**{k: v for k, v in args.items() if k != "out"}, out_h=3, out_w=3)
    np.testing.assert_array_equal(args["out"], expected)


def test_large_calls_run_in_parallel_threads():
    # Above the work threshold the kernels release the GIL: another Python thread runs while
    # each call does (gil_probe: exactly 0 steps if a call held the GIL); and Call objects
    # (each owning its scratch buffers) run in 4 threads at once still match the oracle.
    import time
    from concurrent.futures import ThreadPoolExecutor
    from gil_probe import gil_released_by
    rng = np.random.default_rng(5)
    calls, expected = [], []
    for _ in range(4):
        x = int8_array(rng, (2, 9, 9, 16))
        w, wd = int8_array(rng, (12, 3, 3, 8), -127, 127), int8_array(rng, (3, 3, 32), -127, 127)
        bias = random_bias(rng, 12, False)
        m0, shift = requant_params(rng, 12, (-16, -12), None)
        out = np.zeros((2, 9, 9, 12), np.int8)
        params = conv2d_params(1, 1, 1, 1, 1, 1, 2, 3)
        calls.append(_conv.Conv2dCall(x, w, bias, m0, shift, params, out))
        expected.append((out, oracle.conv2d(x, w, bias, m0, shift, params, out_h=9, out_w=9)))
        bias, m0, shift = np.resize(bias, 32), np.resize(m0, 32), np.resize(shift, 32)
        out = np.zeros((2, 9, 9, 32), np.int8)
        params = depthwise_params(1, 1, 1, 1, 1, 1, 2, 3)
        calls.append(_conv.DepthwiseConv2dCall(x, wd, bias, m0, shift, params, out))
        expected.append((out, oracle.depthwise_conv2d(x, wd, bias, m0, shift, params, out_h=9,
                                                      out_w=9)))
    for call in calls[:2]:
        def repeat(call=call):
            end = time.perf_counter() + 0.02
            while time.perf_counter() < end:
                call()
        assert gil_released_by(repeat) > 0, f"{type(call).__name__} held the GIL"
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda call: [call() for _ in range(20)], calls))
    for out, want in expected:
        np.testing.assert_array_equal(out, want)


def test_conv_kernels_accept_read_only_inputs():
    rng = np.random.default_rng(3)
    x = int8_array(rng, (1, 4, 4, 3))
    w = int8_array(rng, (3, 2, 2, 3), -127, 127)
    wd = int8_array(rng, (2, 2, 3), -127, 127)
    bias = np.arange(3, dtype=np.int32)
    m0, shift = requant_params(rng, 3, (-10, -5), None)
    for a in (x, w, wd, bias, m0, shift):
        a.setflags(write=False)
    args = (x, w, bias, m0, shift, conv2d_params(1, 1, 1, 1, 0, 0, 1, 0))
    np.testing.assert_array_equal(run_conv2d(*args, out_h=3, out_w=3),
                                  oracle.conv2d(*args, out_h=3, out_w=3))
    args = (x, wd, bias, m0, shift, depthwise_params(1, 1, 1, 1, 0, 0, 1, 0))
    np.testing.assert_array_equal(run_depthwise(*args, out_h=3, out_w=3),
                                  oracle.depthwise_conv2d(*args, out_h=3, out_w=3))


# ---- the oracle against independent formulations -------------------------------------------

def naive_conv2d_accumulators(x, w, bias, stride_h, stride_w, dilation_h, dilation_w,
                              pad_top, pad_left, groups, pad_value, out_h, out_w):
    """The definition, one Python int at a time (x may hold any integers)."""
    n_batch, h, w_, cin = x.shape
    cout, kernel_h, kernel_w, cin_g = w.shape
    cout_g = cout // groups
    acc = np.zeros((n_batch, out_h, out_w, cout), dtype=object)
    for n in range(n_batch):
        for oh in range(out_h):
            for ow in range(out_w):
                for co in range(cout):
                    total = int(bias[co])
                    for kh in range(kernel_h):
                        for kw in range(kernel_w):
                            for ci in range(cin_g):
                                ih = oh * stride_h - pad_top + kh * dilation_h
                                iw = ow * stride_w - pad_left + kw * dilation_w
                                inside = 0 <= ih < h and 0 <= iw < w_
                                c = (co // cout_g) * cin_g + ci
                                value = x[n, ih, iw, c] if inside else pad_value
                                total += int(value) * int(w[co, kh, kw, ci])
                    acc[n, oh, ow, co] = total
    return acc


tiny = st.integers(1, 4)


@st.composite
def tiny_conv_cases(draw):
    """A small conv2d problem: (rng seed, x shape, w shape, params, out_h, out_w)."""
    groups = draw(st.sampled_from([1, 2]))
    cin, cout = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    kh, kw, sh, sw, dh, dw, pt, pl, pb, pr = (draw(st.integers(1, 3)), draw(st.integers(1, 3)),
                                              draw(strides), draw(strides), draw(dilations),
                                              draw(dilations), draw(pads), draw(pads),
                                              draw(pads), draw(pads))
    h, w_ = draw(tiny), draw(tiny)
    out_h, out_w = output_size(h, kh, sh, dh, pt, pb), output_size(w_, kw, sw, dw, pl, pr)
    return (draw(seeds), (draw(st.integers(1, 2)), h, w_, cin), (cout, kh, kw, cin // groups),
            (sh, sw, dh, dw, pt, pl, groups, draw(zero_points)), out_h, out_w)


@settings(max_examples=150, deadline=None)
@given(tiny_conv_cases())
def test_conv2d_oracle_matches_the_definition(case):
    seed, x_shape, w_shape, params, out_h, out_w = case
    rng = np.random.default_rng(seed)
    x, w = int8_array(rng, x_shape), int8_array(rng, w_shape, -127, 127)
    bias = random_bias(rng, w_shape[0], True)
    acc = oracle.conv2d_accumulators(x, w, bias, conv2d_params(*params), out_h=out_h,
                                     out_w=out_w)
    assert acc.dtype == np.int64 and acc.shape == (x_shape[0], out_h, out_w, w_shape[0])
    np.testing.assert_array_equal(
        acc, naive_conv2d_accumulators(x, w, bias, *params, out_h, out_w).astype(np.int64))


@settings(max_examples=100, deadline=None)
@given(seeds, batch, sizes, sizes, st.integers(1, 20), st.integers(1, 20), strides, strides,
       zero_points, clamp_bounds())
def test_conv2d_oracle_1x1_is_dense_on_pixels(seed, n, h, w_, cin, cout, sh, sw, out_zp, bounds):
    rng = np.random.default_rng(seed)
    x = int8_array(rng, (n, h, w_, cin))
    w = int8_array(rng, (cout, 1, 1, cin), -127, 127)
    bias = random_bias(rng, cout, True)
    m0, shift = requant_params(rng, cout, (-31, 4), None)
    out_h, out_w = output_size(h, 1, sh, 1, 0, 0), output_size(w_, 1, sw, 1, 0, 0)
    conv = oracle.conv2d(x, w, bias, m0, shift,
                         conv2d_params(sh, sw, 1, 1, 0, 0, 1, 0, out_zp, *bounds),
                         out_h=out_h, out_w=out_w)
    pixels = x[:, ::sh, ::sw, :].reshape(-1, cin)
    dense = oracle.dense(pixels, w.reshape(cout, cin), bias, m0, shift, out_zp, *bounds)
    np.testing.assert_array_equal(conv, dense.reshape(n, out_h, out_w, cout))


@settings(max_examples=100, deadline=None)
@given(seeds, batch, sizes, sizes, st.integers(1, 12), st.integers(1, 3), windows(),
       zero_points, zero_points, clamp_bounds())
def test_depthwise_oracle_is_conv2d_with_one_group_per_channel(seed, n, h, w_, c, mult, window,
                                                              pad_value, out_zp, bounds):
    kh, kw, sh, sw, dh, dw, pt, pl, pb, pr = window
    out_h, out_w = output_size(h, kh, sh, dh, pt, pb), output_size(w_, kw, sw, dw, pl, pr)
    rng = np.random.default_rng(seed)
    x = int8_array(rng, (n, h, w_, c))
    w = int8_array(rng, (kh, kw, c * mult), -127, 127)
    bias = random_bias(rng, c * mult, True)
    m0, shift = requant_params(rng, c * mult, (-31, 4), None)
    window_args = (sh, sw, dh, dw, pt, pl)
    depthwise = oracle.depthwise_conv2d(
        x, w, bias, m0, shift,
        depthwise_params(*window_args, mult, pad_value, out_zp, *bounds),
        out_h=out_h, out_w=out_w)
    # Output channel o = c * M + m is a group of one input channel: w_conv[o, kh, kw, 0].
    w_conv = np.ascontiguousarray(w.transpose(2, 0, 1)[..., None])
    conv = oracle.conv2d(x, w_conv, bias, m0, shift,
                         conv2d_params(*window_args, c, pad_value, out_zp, *bounds),
                         out_h=out_h, out_w=out_w)
    np.testing.assert_array_equal(depthwise, conv)


@settings(max_examples=100, deadline=None)
@given(tiny_conv_cases(), st.integers(1, 2))
def test_oracle_padding_with_the_zero_point_is_real_zero_padding(case, mult):
    # The quantizer folds -zp * sum(w) into the bias and the kernel pads with zp; that must
    # equal the contract's acc = bias + sum (x - zp) * w with (x - zp) zero-padded.
    seed, x_shape, w_shape, params, out_h, out_w = case
    *window_args, groups, zp = params
    rng = np.random.default_rng(seed)
    x, w = int8_array(rng, x_shape), int8_array(rng, w_shape, -127, 127)
    bias = random_bias(rng, w_shape[0], False)
    folded = (bias - zp * w.astype(np.int64).sum(axis=(1, 2, 3))).astype(np.int32)
    acc = oracle.conv2d_accumulators(x, w, folded, conv2d_params(*window_args, groups, zp),
                                     out_h=out_h, out_w=out_w)
    real_zero_padded = naive_conv2d_accumulators(x.astype(np.int64) - zp, w, bias, *window_args,
                                                 groups, 0, out_h, out_w)
    np.testing.assert_array_equal(acc, real_zero_padded.astype(np.int64))

    # The same for depthwise: channel o = c * M + m is conv2d's group c.
    c = x_shape[3]
    wd = int8_array(rng, (w_shape[1], w_shape[2], c * mult), -127, 127)
    bias = random_bias(rng, c * mult, False)
    folded = (bias - zp * wd.astype(np.int64).sum(axis=(0, 1))).astype(np.int32)
    acc = oracle.depthwise_conv2d_accumulators(x, wd, folded,
                                               depthwise_params(*window_args, mult, zp),
                                               out_h=out_h, out_w=out_w)
    real_zero_padded = naive_conv2d_accumulators(
        x.astype(np.int64) - zp, wd.transpose(2, 0, 1)[..., None], bias, *window_args, c, 0,
        out_h, out_w)
    np.testing.assert_array_equal(acc, real_zero_padded.astype(np.int64))


# ---- entry checks --------------------------------------------------------------------------

def conv2d_args(groups=1):
    """Valid conv2d arguments: x [2, 5, 5, 4], w [6, 3, 3, 4 // groups], out [2, 3, 3, 6]."""
    return dict(x=np.zeros((2, 5, 5, 4), np.int8), w=np.zeros((6, 3, 3, 4 // groups), np.int8),
                bias=np.zeros(6, np.int32), m0=np.full(6, 2 ** 30, np.int32),
                shift=np.zeros(6, np.int32), params=conv2d_params(1, 1, 1, 1, 0, 0, groups, 0),
                out=np.zeros((2, 3, 3, 6), np.int8))


def depthwise_args():
    """Valid depthwise_conv2d arguments: x [2, 5, 5, 3], M = 2, out [2, 3, 3, 6]."""
    return dict(x=np.zeros((2, 5, 5, 3), np.int8), w=np.zeros((3, 3, 6), np.int8),
                bias=np.zeros(6, np.int32), m0=np.full(6, 2 ** 30, np.int32),
                shift=np.zeros(6, np.int32), params=depthwise_params(1, 1, 1, 1, 0, 0, 2, 0),
                out=np.zeros((2, 3, 3, 6), np.int8))


def with_value(args, name, value):
    """args with `name` set to value: an argument, or a field of its params mapping (a new
    mapping: the original is left alone)."""
    if name in args["params"]:
        return dict(args, params=dict(args["params"], **{name: value}))
    return dict(args, **{name: value})


COMMON_REJECTS = [
    ("bias", np.zeros(5, np.int32), "bias"),
    ("m0", np.zeros(7, np.int32), "m0"),
    ("shift", np.zeros(5, np.int32), "shift"),
    ("stride_h", 0, "stride_h"),
    ("stride_w", -1, "stride_w"),
    ("dilation_h", 0, "dilation_h"),
    ("dilation_w", 0, "dilation_w"),
    ("pad_top", -1, "pad_top"),
    ("pad_left", -2, "pad_left"),
    ("pad_value", 128, "pad_value"),
    ("pad_value", -129, "pad_value"),
    ("out_zp", 128, "out_zp"),
    ("act_min", -129, "act_min"),
    ("act_max", 128, "act_max"),
    ("act_min", 10, "act_min"),                                     # act_min > act_max = 9
    ("m0", np.array([2 ** 30, -5, 0, 2 ** 30, 2 ** 30, 2 ** 30], np.int32), "m0\\[1\\]"),
    ("shift", np.array([0, 0, 31, 0, 0, 0], np.int32), "shift\\[2\\]"),
    ("shift", np.array([0, -32, 0, 0, 0, 0], np.int32), "shift\\[1\\]"),
    ("out", np.zeros((1, 3, 3, 6), np.int8), "out"),                # N mismatch
    ("out", np.zeros((2, 3, 3, 5), np.int8), "out"),                # channel mismatch
    ("x", np.zeros((2, 5, 5, 4), np.int16), "dtype"),               # Cython's buffer check
    ("out", np.zeros((2, 3, 6, 3), np.int8).transpose(0, 1, 3, 2), "contiguous"),
]


@pytest.mark.parametrize("name, value, match", COMMON_REJECTS + [
    ("groups", 0, "groups"),
    ("groups", 3, "groups"),                                        # does not divide Cin = 4
    ("w", np.zeros((6, 3, 3, 3), np.int8), "w has shape"),           # Cin_g mismatch
    ("w", np.zeros((6, 0, 3, 4), np.int8), "w has shape"),           # empty kernel
    ("x", np.zeros((2, 5, 5, 3), np.int8), "groups|w has shape"),
])
def test_conv2d_rejects(name, value, match):
    args = conv2d_args()
    if name == "act_min" and value == 10:
        args = with_value(args, "act_max", 9)
    args = with_value(args, name, value)
    with pytest.raises(ValueError, match=match):
        _conv.conv2d(**args)
    with pytest.raises(ValueError, match=match):
        _conv.Conv2dCall(**args)


def test_conv2d_rejects_groups_not_dividing_cout():
    args = conv2d_args(groups=4)
    args["w"] = np.zeros((6, 3, 3, 1), np.int8)  # Cout = 6 is not a multiple of 4
    with pytest.raises(ValueError, match="groups"):
        _conv.conv2d(**args)


@pytest.mark.parametrize("name, value, match", [r for r in COMMON_REJECTS if r[0] != "x"] + [
    ("x", np.zeros((2, 5, 5, 3), np.int16), "dtype"),
    ("depth_multiplier", 0, "depth_multiplier"),
    ("depth_multiplier", 3, "w has shape"),                         # C * M = 9 != 6
    ("w", np.zeros((3, 3, 5), np.int8), "w has shape"),
    ("w", np.zeros((3, 0, 6), np.int8), "w has shape"),
])
def test_depthwise_conv2d_rejects(name, value, match):
    args = depthwise_args()
    if name == "act_min" and value == 10:
        args = with_value(args, "act_max", 9)
    args = with_value(args, name, value)
    with pytest.raises(ValueError, match=match):
        _conv.depthwise_conv2d(**args)
    with pytest.raises(ValueError, match=match):
        _conv.DepthwiseConv2dCall(**args)


def test_conv_kernels_reject_none():
    for run, args in ((_conv.conv2d, conv2d_args()), (_conv.depthwise_conv2d, depthwise_args())):
        args["x"] = None
        with pytest.raises(TypeError):
            run(**args)


@pytest.mark.parametrize("name, value, match", [
    ("groups", 3, "groups"),
    ("w", np.zeros((6, 3, 3, 3), np.int8), "w has shape"),
    ("bias", np.zeros(5, np.int32), "bias"),
    ("m0", np.zeros(5, np.int32), "m0"),
    ("stride_w", 0, "stride_w"),
    ("dilation_h", 0, "dilation_h"),
    ("pad_left", -1, "pad_left"),
    ("pad_value", 200, "pad_value"),
    ("out_zp", -129, "out_zp"),
    ("act_max", 128, "act_max"),
    ("out_h", -1, "out_h"),
])
def test_conv2d_oracle_rejects(name, value, match):
    args = conv2d_args()
    del args["out"]
    args.update(out_h=3, out_w=3)
    args = with_value(args, name, value)
    with pytest.raises(ValueError, match=match):
        oracle.conv2d(**args)


@pytest.mark.parametrize("name, value, match", [
    ("depth_multiplier", 0, "depth_multiplier"),
    ("w", np.zeros((3, 3, 5), np.int8), "w has shape"),
    ("shift", np.zeros(5, np.int32), "shift"),
    ("stride_h", 0, "stride_h"),
    ("pad_top", -1, "pad_top"),
    ("pad_value", 128, "pad_value"),
    ("out_w", -1, "out_w"),
])
def test_depthwise_oracle_rejects(name, value, match):
    args = depthwise_args()
    del args["out"]
    args.update(out_h=3, out_w=3)
    args = with_value(args, name, value)
    with pytest.raises(ValueError, match=match):
        oracle.depthwise_conv2d(**args)


# ---- the params mapping --------------------------------------------------------------------

def test_params_keys_are_the_struct_fields_in_kernel_and_oracle():
    # The kernel's names come from its struct (params.pxd); the oracle's are its own: one
    # mapping serves both.
    assert _conv.CONV2D_PARAMS == oracle.CONV2D_PARAMS == (
        "stride_h", "stride_w", "dilation_h", "dilation_w", "pad_top", "pad_left", "groups",
        "pad_value", "out_zp", "act_min", "act_max")
    assert _conv.DEPTHWISE_PARAMS == oracle.DEPTHWISE_PARAMS == tuple(
        "depth_multiplier" if k == "groups" else k for k in oracle.CONV2D_PARAMS)


def missing_or_misspelt(params, key):
    """[(bad mapping, what the error says)]: without key, with key misspelt, with an extra
    key; each must be refused, naming the keys."""
    rest = {k: v for k, v in params.items() if k != key}
    typo = key.upper()
    return [(rest, f"no key '{key}' "),
            (dict(rest, **{typo: params[key]}), f"no key '{key}'; unknown key '{typo}' "),
            (dict(params, extra=1), "unknown key 'extra' ")]


@pytest.mark.parametrize("kind", ["conv2d", "depthwise_conv2d"])
@pytest.mark.parametrize("key", ["stride_h", "pad_left", "groups", "pad_value", "act_max"])
def test_conv_params_must_have_exactly_the_struct_keys(kind, key):
    # Cython's conversion of a mapping to the struct ignores unknown keys: the entry check
    # refuses them (a misspelt key must not leave its field at a default), and names a missing
    # key; the oracle does the same.
    args = conv2d_args() if kind == "conv2d" else depthwise_args()
    if kind == "depthwise_conv2d" and key == "groups":
        key = "depth_multiplier"
    kernel, call = ((_conv.conv2d, _conv.Conv2dCall) if kind == "conv2d"
                    else (_conv.depthwise_conv2d, _conv.DepthwiseConv2dCall))
    for bad, match in missing_or_misspelt(args["params"], key):
        for run in (kernel, call):
            with pytest.raises(ValueError, match=f"{kind}: params has {match}"):
                run(**dict(args, params=bad))
        oracle_args = {k: v for k, v in args.items() if k != "out"}
        with pytest.raises(ValueError, match=f"{kind}: params has {match}"):
            getattr(oracle, kind)(**dict(oracle_args, params=bad), out_h=3, out_w=3)
        with pytest.raises(ValueError, match=f"{kind}: params has {match}"):
            getattr(oracle, kind + "_accumulators")(
                **{k: v for k, v in oracle_args.items() if k not in ("m0", "shift", "params")},
                params=bad, out_h=3, out_w=3)
    if kind == "conv2d":
        for bad, match in missing_or_misspelt(args["params"], key):
            with pytest.raises(ValueError, match=match):
                _conv.tap_offsets((5, 5, 4), (3, 3), (3, 3), bad)


def test_conv_params_must_be_a_mapping():
    args = conv2d_args()
    values = tuple(args["params"].values())
    for run in (_conv.conv2d, _conv.Conv2dCall):
        with pytest.raises(TypeError, match="conv2d: params must be a mapping"):
            run(**dict(args, params=values))
    with pytest.raises(TypeError, match="conv2d: params must be a mapping"):
        oracle.conv2d(**{k: v for k, v in args.items() if k not in ("out", "params")},
                      params=values, out_h=3, out_w=3)


def test_tap_offsets_reads_the_window_fields():
    # 3x3 taps over a 4x4x2 image, stride 2, padding 1 at the top/left: output pixel (0, 0)'s
    # first row of taps lies in the padding; the table is the same for conv2d's mapping
    # whatever its other fields say.
    params = conv2d_params(2, 2, 1, 1, 1, 1, 1, 0)
    table = _conv.tap_offsets((4, 4, 2), (2, 2), (3, 3), params)
    assert table.shape == (4, 9, 1)
    assert table[0, :, 0].tolist() == [-1, -1, -1, -1, 0, 2, -1, 8, 10]
    other = dict(params, groups=2, pad_value=5, out_zp=-3, act_min=0, act_max=9)
    np.testing.assert_array_equal(_conv.tap_offsets((4, 4, 2), (2, 2), (3, 3), other), table)
    with pytest.raises(ValueError, match="dilation_w"):
        _conv.tap_offsets((4, 4, 2), (2, 2), (3, 3), dict(params, dilation_w=0))
