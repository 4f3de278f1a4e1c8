"""Pooling, binary elementwise and layout kernels (_pool, _merge, _layout) are bit-exact with
fixnet.oracle on random shapes, windows, zero points, multipliers and clamp bounds; the
oracle itself is checked against independent definitions (naive loops, exact fractions, real
arithmetic, np.pad, np.concatenate); every kernel rejects bad arguments with ValueError, and
a params mapping without one of its struct's keys or with an unknown key. The int16 paths
(one activation type per call: x, y and out all int16, zero points 0) are held to the same,
at the end of the file.

Hypothesis draws shapes, parameters and a seed; NumPy fills the arrays from the seed (with the
int8 extremes mixed in), which keeps the examples fast while hypothesis still shrinks shapes.
"""
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fixnet import oracle
import fixnet._kernels
from fixnet._kernels import _merge, _layout, _pool
from kernel_builds import build_params
from strategies import clamp_bounds, int8_array, seeds, zero_points


@pytest.fixture(scope="module", params=build_params(), autouse=True)
def kernel_build(request):
    """Every test here runs once per kernel build this CPU runs (baseline, AVX2, ...): each
    build must give the oracle's bits."""
    global _merge, _pool
    saved = _merge, _pool
    build = fixnet._kernels.load_build(request.param)
    _merge = build._merge
    _pool = build._pool
    yield request.param
    _merge, _pool = saved

SETTINGS = settings(max_examples=150, deadline=None)

batch = st.one_of(st.just(1), st.integers(0, 3))
channels = st.one_of(st.just(1), st.integers(1, 40))
multipliers = st.one_of(st.just(0), st.just(2 ** 30), st.integers(2 ** 30, 2 ** 31 - 1))


def pool_params(*values):
    """The pooling params mapping from its values in POOL_PARAMS order (pool_h, pool_w,
    stride_h, stride_w, pad_top, pad_left)."""
    assert len(values) == len(oracle.POOL_PARAMS)
    return dict(zip(oracle.POOL_PARAMS, values))


def pad_params(*values):
    """pad_nhwc's params mapping from (top, bottom, left, right, value)."""
    assert len(values) == len(oracle.PAD_PARAMS)
    return dict(zip(oracle.PAD_PARAMS, values))


# ---- pooling -------------------------------------------------------------------------------

@st.composite
def pool_axis(draw, length):
    """(pool, stride, pad, n_out) along one axis of `length` with every window non-empty.

    pad < pool keeps the first window in bounds; n_out <= (length - 1 + pad) // stride + 1
    keeps the last one in bounds. Pools longer than the axis make windows that hang over
    both edges; the largest n_out makes the last windows hang over the far edge.
    """
    pool = draw(st.one_of(st.integers(1, 4), st.integers(1, length + 3)))
    stride = draw(st.integers(1, 4))
    pad = draw(st.integers(0, pool - 1))
    most = (length - 1 + pad) // stride + 1
    n_out = draw(st.one_of(st.just(most), st.integers(0, most)))
    return pool, stride, pad, n_out


@st.composite
def pool_geometry(draw, max_hw=12):
    """(H, W, params (pool_params), OH, OW); sometimes global pooling (pool = (H, W),
    stride 1, no padding, 1 x 1 output)."""
    h, w = draw(st.integers(1, max_hw)), draw(st.integers(1, max_hw))
    if draw(st.integers(0, 9)) == 0:
        return h, w, pool_params(h, w, 1, 1, 0, 0), 1, 1
    ph, sh, pt, oh = draw(pool_axis(h))
    pw, sw, pl, ow = draw(pool_axis(w))
    return h, w, pool_params(ph, pw, sh, sw, pt, pl), oh, ow


def run_pool(kernel, x, params, oh, ow):
    out = np.full((x.shape[0], oh, ow, x.shape[3]), 99, x.dtype)
    assert getattr(_pool, kernel)(x, params, out) is None
    return out


@SETTINGS
@given(seeds, batch, channels, pool_geometry())
def test_max_pool2d_matches_oracle(seed, n, c, geometry):
    h, w, params, oh, ow = geometry
    x = int8_array(np.random.default_rng(seed), (n, h, w, c))
    np.testing.assert_array_equal(run_pool("max_pool2d", x, params, oh, ow),
                                  oracle.max_pool2d(x, params, out_h=oh, out_w=ow))


@SETTINGS
@given(seeds, batch, channels, pool_geometry(), st.booleans())
def test_avg_pool2d_matches_oracle(seed, n, c, geometry, narrow):
    h, w, params, oh, ow = geometry
    # Narrow values make exact halves (the rounding ties) common.
    x = int8_array(np.random.default_rng(seed), (n, h, w, c), *((-3, 3) if narrow else ()))
    np.testing.assert_array_equal(run_pool("avg_pool2d", x, params, oh, ow),
                                  oracle.avg_pool2d(x, params, out_h=oh, out_w=ow))


def in_bounds_windows(h, w, params, oh_count, ow_count):
    """Naive: for each output (oh, ow), the list of in-bounds (row, col) of its window."""
    ph, pw, sh, sw, pt, pl = (params[k] for k in ("pool_h", "pool_w", "stride_h", "stride_w",
                                                  "pad_top", "pad_left"))
    return {(oh, ow): [(r, q) for r in range(oh * sh - pt, oh * sh - pt + ph)
                       for q in range(ow * sw - pl, ow * sw - pl + pw)
                       if 0 <= r < h and 0 <= q < w]
            for oh in range(oh_count) for ow in range(ow_count)}


@settings(max_examples=60, deadline=None)
@given(seeds, st.integers(0, 2), st.integers(1, 4), pool_geometry(max_hw=6))
def test_max_pool2d_oracle_is_max_over_in_bounds_elements(seed, n, c, geometry):
    h, w, params, oh, ow = geometry
    x = int8_array(np.random.default_rng(seed), (n, h, w, c))
    expected = np.empty((n, oh, ow, c), np.int8)
    for (i, j), cells in in_bounds_windows(h, w, params, oh, ow).items():
        assert cells  # the geometry strategy only makes windows with an in-bounds element
        for b in range(n):
            for ch in range(c):
                expected[b, i, j, ch] = max(int(x[b, r, q, ch]) for r, q in cells)
    np.testing.assert_array_equal(oracle.max_pool2d(x, params, out_h=oh, out_w=ow), expected)


def round_half_away(f):
    """A Fraction rounded to the nearest integer, ties away from zero."""
    magnitude = math.floor(abs(f) + Fraction(1, 2))
    return magnitude if f >= 0 else -magnitude


@settings(max_examples=60, deadline=None)
@given(seeds, st.integers(0, 2), st.integers(1, 4), pool_geometry(max_hw=6), st.booleans())
def test_avg_pool2d_oracle_is_rounded_exact_mean(seed, n, c, geometry, narrow):
    h, w, params, oh, ow = geometry
    x = int8_array(np.random.default_rng(seed), (n, h, w, c), *((-3, 3) if narrow else ()))
    expected = np.empty((n, oh, ow, c), np.int8)
    for (i, j), cells in in_bounds_windows(h, w, params, oh, ow).items():
        for b in range(n):
            for ch in range(c):
                mean = Fraction(sum(int(x[b, r, q, ch]) for r, q in cells), len(cells))
                expected[b, i, j, ch] = round_half_away(mean)
    np.testing.assert_array_equal(oracle.avg_pool2d(x, params, out_h=oh, out_w=ow), expected)


def test_avg_pool2d_rounds_ties_away_from_zero():
    # 1 x 2 windows of (a, b): means 1.5, -1.5, 0.5, -0.5, 127, -128, 126.5, -127.5
    pairs = [(1, 2), (-1, -2), (-1, 2), (1, -2), (127, 127), (-128, -128), (126, 127), (-127, -128)]
    x = np.array(pairs, np.int8).reshape(1, 1, 2 * len(pairs), 1)
    params = pool_params(1, 2, 1, 2, 0, 0)
    expected = [2, -2, 1, -1, 127, -128, 127, -128]
    out = run_pool("avg_pool2d", x, params, 1, len(pairs))
    assert out.ravel().tolist() == expected
    assert oracle.avg_pool2d(x, params, out_h=1, out_w=len(pairs)).ravel().tolist() == expected


def test_padding_never_wins_and_is_not_counted():
    # All values negative: a zero from padding would win a max and shrink a mean.
    x = np.full((1, 2, 2, 3), -100, np.int8)
    x[0, 0, 0] = -7
    params = pool_params(3, 3, 1, 1, 1, 1)  # 3 x 3 "same" windows over a 2 x 2 input
    assert (run_pool("max_pool2d", x, params, 2, 2) == -7).all()
    avg = run_pool("avg_pool2d", x, params, 2, 2)
    assert (avg == round_half_away(Fraction(-7 - 3 * 100, 4))).all()  # every window: 4 cells


@settings(max_examples=40, deadline=None)
@given(seeds, batch, channels, st.integers(1, 12), st.integers(1, 12))
def test_global_pooling(seed, n, c, h, w):
    x = int8_array(np.random.default_rng(seed), (n, h, w, c))
    params = pool_params(h, w, 1, 1, 0, 0)
    np.testing.assert_array_equal(run_pool("max_pool2d", x, params, 1, 1)[:, 0, 0],
                                  x.max(axis=(1, 2), initial=-128))
    s = x.astype(np.int64).sum(axis=(1, 2))
    k = h * w
    np.testing.assert_array_equal(run_pool("avg_pool2d", x, params, 1, 1)[:, 0, 0],
                                  np.sign(s) * ((np.abs(s) + k // 2) // k))


@pytest.mark.parametrize("kernel, call_class", [("max_pool2d", _pool.MaxPool2dCall),
                                                ("avg_pool2d", _pool.AvgPool2dCall)])
def test_pool_call_object_rereads_its_input(kernel, call_class):
    rng = np.random.default_rng(1)
    x = int8_array(rng, (2, 9, 7, 19))
    x.setflags(write=False)  # kernels take read-only inputs
    params = pool_params(3, 2, 2, 2, 1, 0)
    out = np.empty((2, 5, 3, 19), np.int8)
    call = call_class(x, params, out)
    assert call.params == params    # the struct it filled, given back as a dict
    for _ in range(3):
        x.setflags(write=True)
        x[...] = int8_array(rng, x.shape)
        x.setflags(write=False)
        assert call() is None
        np.testing.assert_array_equal(out, getattr(oracle, kernel)(x, params, out_h=5, out_w=3))


def test_pool_large_enough_to_release_the_gil():
    # Another Python thread runs while the call does (gil_probe: exactly 0 steps if the call
    # held the GIL), and the results match the oracle.
    import time
    from gil_probe import gil_released_by
    rng = np.random.default_rng(2)
    x = int8_array(rng, (3, 30, 30, 40))
    params = pool_params(3, 3, 1, 1, 1, 1)
    calls = {"max_pool2d": _pool.MaxPool2dCall, "avg_pool2d": _pool.AvgPool2dCall}
    for kernel, make in calls.items():
        np.testing.assert_array_equal(run_pool(kernel, x, params, 30, 30),
                                      getattr(oracle, kernel)(x, params, out_h=30, out_w=30))
        out = np.zeros((3, 30, 30, 40), np.int8)
        call = make(x, params, out)

        def repeat():
            end = time.perf_counter() + 0.02
            while time.perf_counter() < end:
                call()
        assert gil_released_by(repeat) > 0, f"{kernel} held the GIL"
        np.testing.assert_array_equal(out, getattr(oracle, kernel)(x, params, out_h=30, out_w=30))


def pool_args(**changes):
    """Valid pooling arguments (x, params, out) with `changes` to the arrays or to fields of
    params."""
    params = pool_params(2, 3, 2, 3, 1, 0)
    params.update((k, v) for k, v in changes.items() if k in params)
    return dict(x=changes.get("x", np.zeros((2, 5, 6, 3), np.int8)), params=params,
                out=changes.get("out", np.zeros((2, 3, 2, 3), np.int8)))


@pytest.mark.parametrize("kernel", ["max_pool2d", "avg_pool2d"])
@pytest.mark.parametrize("changes, match", [
    (dict(pool_h=0), "pool_h"),
    (dict(pool_w=-1), "pool_w"),
    (dict(stride_h=0), "stride_h"),
    (dict(stride_w=0), "stride_w"),
    (dict(pad_top=-1), "pad_top"),
    (dict(pad_left=-2), "pad_left"),
    (dict(pad_top=2), "pad_top"),                          # first window: rows [-2, 0)
    (dict(pad_left=3), "pad_left"),                        # first window: cols [-3, 0)
    (dict(out=np.zeros((2, 4, 2, 3), np.int8)), "out has height 4"),  # last window at row 5
    (dict(out=np.zeros((2, 3, 3, 3), np.int8)), "out has width 3"),   # last window at col 6
    (dict(out=np.zeros((1, 3, 2, 3), np.int8)), "out has shape"),     # N
    (dict(out=np.zeros((2, 3, 2, 4), np.int8)), "out has shape"),     # C
    (dict(x=np.zeros((2, 0, 6, 3), np.int8)), "height 0"),
    (dict(x=np.zeros((2, 5, 6, 3), np.int16)), "dtype"),              # Cython's buffer check
    (dict(x=np.zeros((2, 5, 3, 6), np.int8).transpose(0, 1, 3, 2)), "contiguous"),
])
def test_pool_rejects(kernel, changes, match):
    with pytest.raises(ValueError, match=match):
        getattr(_pool, kernel)(**pool_args(**changes))


@pytest.mark.parametrize("kernel", ["max_pool2d", "avg_pool2d"])
@pytest.mark.parametrize("changes", [
    dict(out=np.zeros((2, 0, 2, 3), np.int8)),                  # zero output rows: no window
    dict(out=np.zeros((2, 3, 0, 3), np.int8)),                  # zero output columns
    dict(x=np.zeros((0, 5, 6, 3), np.int8), out=np.zeros((0, 3, 2, 3), np.int8)),  # no image
], ids=["no-rows", "no-cols", "no-images"])
def test_pool_accepts_empty_outputs_and_batches(kernel, changes):
    """An empty output or batch is accepted (nothing to do), like the oracle, which gives an
    empty result of the same shape; the input is left alone."""
    args = pool_args(**changes)
    args["x"] = np.random.default_rng(0).integers(-128, 128, args["x"].shape).astype(np.int8)
    x_before = args["x"].copy()
    assert getattr(_pool, kernel)(**args) is None
    out = args.pop("out")
    want = getattr(oracle, kernel)(*args.values(), out_h=out.shape[1], out_w=out.shape[2])
    assert want.shape == out.shape and want.size == 0
    np.testing.assert_array_equal(args["x"], x_before)


def test_pool_oracle_rejects_empty_windows():
    x = np.zeros((1, 5, 6, 3), np.int8)
    with pytest.raises(ValueError, match="pad_top"):
        oracle.max_pool2d(x, pool_params(2, 3, 2, 3, 2, 0), out_h=3, out_w=2)
    with pytest.raises(ValueError, match="out_h"):
        oracle.avg_pool2d(x, pool_params(2, 3, 2, 3, 1, 0), out_h=4, out_w=2)


def test_avg_pool2d_rejects_windows_whose_sum_could_wrap():
    # n = pool_h * pool_w: n * 128 + n // 2 (the sum and its rounding term) must fit int32
    x, out = np.zeros((1, 4, 4, 1), np.int8), np.zeros((1, 1, 1, 1), np.int8)
    _pool.avg_pool2d(x, pool_params(255, 65537, 1, 1, 0, 0), out)  # n = 16711935: 2^31 - 1
    for too_big in (pool_params(256, 65537, 1, 1, 0, 0), pool_params(4096, 4095, 1, 1, 0, 0)):
        with pytest.raises(ValueError, match="pool_h \\* pool_w"):
            _pool.avg_pool2d(x, too_big, out)
        with pytest.raises(ValueError, match="pool_h \\* pool_w"):
            oracle.avg_pool2d(x, too_big, out_h=1, out_w=1)
    _pool.max_pool2d(x, pool_params(4096, 4096, 1, 1, 0, 0), out)  # max pooling sums nothing


# ---- binary elementwise --------------------------------------------------------------------

# 70000: above the 65536 elements from which add and mul switch to a table of all results.
sizes = st.one_of(st.just(0), st.just(1), st.integers(0, 300), st.just(5000), st.just(70000))


@st.composite
def add_params(draw):
    """add's params mapping: realistic (TFLite's recipe from real scales) or arbitrary valid
    ones (saturating left shifts, wrapping sums)."""
    x_zp, y_zp, out_zp = draw(zero_points), draw(zero_points), draw(zero_points)
    if draw(st.booleans()):
        left_shift = 20
        x_scale, y_scale = draw(st.floats(1e-3, 1.0)), draw(st.floats(1e-3, 1.0))
        out_scale = draw(st.floats(0.25, 4.0)) * max(x_scale, y_scale)
        twice_max = 2 * max(x_scale, y_scale)
        x_m0, x_shift = oracle.quantize_multiplier(x_scale / twice_max)
        y_m0, y_shift = oracle.quantize_multiplier(y_scale / twice_max)
        out_m0, out_shift = oracle.quantize_multiplier(twice_max / (2 ** left_shift * out_scale))
    else:
        left_shift = draw(st.integers(0, 24))
        if left_shift == 24:  # (x - zp) * 2^24 fits int32 only for zp = 0
            x_zp = y_zp = 0
        x_m0, y_m0, out_m0 = draw(multipliers), draw(multipliers), draw(multipliers)
        x_shift, y_shift, out_shift = (draw(st.integers(-31, 30)) for _ in range(3))
    return binary_params("add", x_zp, x_m0, x_shift, y_zp, y_m0, y_shift, left_shift, out_m0,
                         out_shift, out_zp, *draw(clamp_bounds()), draw(st.sampled_from([0, 1])))


def binary_params(kernel, *values):
    """The params mapping of add, mul or maximum from its values in the order of
    ADD_PARAMS, MUL_PARAMS or MAXIMUM_PARAMS."""
    names = getattr(oracle, kernel.upper() + "_PARAMS")
    assert len(values) == len(names)
    return dict(zip(names, values))


def run_binary(kernel, x, y, params):
    out = np.full(x.shape, 99, x.dtype)
    assert getattr(_merge, kernel)(x, y, params, out) is None
    return out


@SETTINGS
@given(seeds, sizes, add_params())
def test_add_matches_oracle(seed, size, params):
    rng = np.random.default_rng(seed)
    x, y = int8_array(rng, size), int8_array(rng, size)
    np.testing.assert_array_equal(run_binary("add", x, y, params), oracle.add(x, y, params))


def every_pair():
    """x, y of length 65536 holding every (x, y) pair of int8 values once."""
    values = np.arange(-128, 128).astype(np.int8)
    return np.repeat(values, 256), np.tile(values, 256)


@settings(max_examples=25, deadline=None)
@given(add_params())
def test_add_on_every_pair_both_paths(params):
    # 65536 elements: the kernel uses its table of all 256 x 256 results; in chunks of 256
    # it computes them directly. Both agree with the oracle on every input pair.
    x, y = every_pair()
    assert _merge.AddCall(x, y, params, np.empty_like(x)).uses_pair_table
    assert not _merge.AddCall(x[:256], y[:256], params, np.empty(256, np.int8)).uses_pair_table
    expected = oracle.add(x, y, params)
    np.testing.assert_array_equal(run_binary("add", x, y, params), expected)
    chunks = [run_binary("add", x[i:i + 256], y[i:i + 256], params) for i in range(0, 65536, 256)]
    np.testing.assert_array_equal(np.concatenate(chunks), expected)


def test_add_intermediate_wraps_like_the_oracle():
    # sx and sy saturate near +-2^31 (shift 30 and the largest m0), so sx + sy leaves int32
    # and wraps modulo 2^32 in both the kernel and the oracle; add_accumulators shows it.
    x = np.array([127, -128, 127, -128, 0], np.int8)
    y = np.array([127, -128, -128, 127, 0], np.int8)
    params = binary_params("add", 0, 2 ** 31 - 1, 30, 0, 2 ** 31 - 1, 30, 0, 2 ** 30, -20, 0,
                           -128, 127, 0)
    r = oracle.add_accumulators(x, y, params)
    assert r.max() > 2 ** 31 - 1 and r.min() < -(2 ** 31)
    np.testing.assert_array_equal(run_binary("add", x, y, params), oracle.add(x, y, params))


@SETTINGS
@given(seeds, st.integers(1, 300), zero_points, zero_points, zero_points,
       st.floats(1e-3, 1.0), st.floats(1e-3, 1.0), st.floats(0.25, 4.0), st.booleans(),
       st.booleans())
def test_add_oracle_approximates_the_real_sum(seed, size, x_zp, y_zp, out_zp, x_scale, y_scale,
                                              out_ratio, same_scale, subtract):
    # TFLite's recipe: both inputs to a scale 2^-20 * 2 max(scale), sum, rescale to the output.
    if same_scale:
        y_scale = x_scale
    out_scale = out_ratio * max(x_scale, y_scale)
    twice_max = 2 * max(x_scale, y_scale)
    x_m0, x_shift = oracle.quantize_multiplier(x_scale / twice_max)
    y_m0, y_shift = oracle.quantize_multiplier(y_scale / twice_max)
    out_m0, out_shift = oracle.quantize_multiplier(twice_max / (2 ** 20 * out_scale))
    if same_scale:
        assert (x_m0, x_shift) == (y_m0, y_shift) == (2 ** 30, 0)
    rng = np.random.default_rng(seed)
    x, y = int8_array(rng, size), int8_array(rng, size)
    out = oracle.add(x, y, binary_params("add", x_zp, x_m0, x_shift, y_zp, y_m0, y_shift, 20,
                                         out_m0, out_shift, out_zp, -128, 127, int(subtract)))
    real_x = x_scale * (x.astype(np.float64) - x_zp)
    real_y = y_scale * (y.astype(np.float64) - y_zp)
    real = real_x - real_y if subtract else real_x + real_y
    expected = np.clip(out_zp + real / out_scale, -128, 127)  # the exact result, in LSBs
    error = np.abs(out - expected)
    assert error.max() <= 1.0
    assert error.max() <= 0.5 + 1e-3  # in fact: rounding to nearest, plus 2^-20-size errors


@SETTINGS
@given(seeds, sizes, zero_points, zero_points, multipliers,
       st.one_of(st.integers(-31, 30), st.integers(-16, -6)), zero_points, clamp_bounds())
def test_mul_matches_oracle(seed, size, x_zp, y_zp, m0, shift, out_zp, bounds):
    rng = np.random.default_rng(seed)
    x, y = int8_array(rng, size), int8_array(rng, size)
    params = binary_params("mul", x_zp, y_zp, m0, shift, out_zp, *bounds)
    np.testing.assert_array_equal(run_binary("mul", x, y, params), oracle.mul(x, y, params))


@settings(max_examples=25, deadline=None)
@given(zero_points, zero_points, multipliers,
       st.one_of(st.integers(-31, 30), st.integers(-16, -6)), zero_points, clamp_bounds())
def test_mul_on_every_pair_both_paths(x_zp, y_zp, m0, shift, out_zp, bounds):
    x, y = every_pair()
    params = binary_params("mul", x_zp, y_zp, m0, shift, out_zp, *bounds)
    assert _merge.MulCall(x, y, params, np.empty_like(x)).uses_pair_table
    expected = oracle.mul(x, y, params)
    np.testing.assert_array_equal(run_binary("mul", x, y, params), expected)
    chunks = [run_binary("mul", x[i:i + 256], y[i:i + 256], params) for i in range(0, 65536, 256)]
    np.testing.assert_array_equal(np.concatenate(chunks), expected)


@SETTINGS
@given(seeds, st.integers(1, 300), zero_points, zero_points, zero_points,
       st.floats(1e-3, 1.0), st.floats(1e-3, 1.0), st.floats(0.01, 1.0))
def test_mul_oracle_approximates_the_real_product(seed, size, x_zp, y_zp, out_zp, x_scale,
                                                  y_scale, out_ratio):
    out_scale = out_ratio * x_scale * y_scale * 128
    m0, shift = oracle.quantize_multiplier(x_scale * y_scale / out_scale)
    rng = np.random.default_rng(seed)
    x, y = int8_array(rng, size), int8_array(rng, size)
    out = oracle.mul(x, y, binary_params("mul", x_zp, y_zp, m0, shift, out_zp, -128, 127))
    real = x_scale * (x.astype(np.float64) - x_zp) * y_scale * (y.astype(np.float64) - y_zp)
    error = np.abs(out - np.clip(out_zp + real / out_scale, -128, 127))
    assert error.max() <= 1.0
    # Two roundings (TFLite's): the doubling high multiply rounds to a unit of 2^-right of
    # the result, then the right shift rounds to nearest; e.g. 79 / 32 = 2.47 becomes
    # 39.5 -> 40 (m0 = 2^30), then 40 / 16 = 2.5 -> 3.
    right = max(-shift, 0)
    assert error.max() <= 0.5 + 2.0 ** -(right + 1) + 1e-6


@st.composite
def maximum_params(draw):
    """maximum's params mapping: from real scales (factors 1/4 .. 4), or arbitrary."""
    x_zp, y_zp, out_zp = draw(zero_points), draw(zero_points), draw(zero_points)
    if draw(st.booleans()):
        x_m0, x_shift = oracle.quantize_multiplier(draw(st.floats(0.25, 4.0)))
        y_m0, y_shift = oracle.quantize_multiplier(draw(st.floats(0.25, 4.0)))
    else:
        x_m0, y_m0 = draw(multipliers), draw(multipliers)
        x_shift, y_shift = draw(st.integers(-31, 30)), draw(st.integers(-31, 30))
    return binary_params("maximum", x_zp, x_m0, x_shift, y_zp, y_m0, y_shift, out_zp,
                         *draw(clamp_bounds()), draw(st.sampled_from([0, 1])))


@SETTINGS
@given(seeds, sizes, maximum_params())
def test_maximum_matches_oracle(seed, size, params):
    rng = np.random.default_rng(seed)
    x, y = int8_array(rng, size), int8_array(rng, size)
    np.testing.assert_array_equal(run_binary("maximum", x, y, params),
                                  oracle.maximum(x, y, params))


@pytest.mark.parametrize("take_min", [0, 1])
def test_maximum_in_one_quantization_is_numpy_max(take_min):
    # Factor 1 (m0 = 2^30, shift 1) and one zero point everywhere: plain max / min, clamped.
    x = np.repeat(np.arange(-128, 128), 256).astype(np.int8)
    y = np.tile(np.arange(-128, 128), 256).astype(np.int8)
    params = binary_params("maximum", 9, 2 ** 30, 1, 9, 2 ** 30, 1, 9, -20, 100, take_min)
    expected = np.clip((np.minimum if take_min else np.maximum)(x, y), -20, 100)
    np.testing.assert_array_equal(oracle.maximum(x, y, params), expected)
    np.testing.assert_array_equal(run_binary("maximum", x, y, params), expected)


@pytest.mark.parametrize("size", [700, 70000])  # 70000: add and mul use their pair tables
def test_binary_call_objects_reread_their_inputs(size):
    rng = np.random.default_rng(3)
    x, y, out = int8_array(rng, size), int8_array(rng, size), np.empty(size, np.int8)
    add_p = binary_params("add", 3, 2 ** 30 + 7, -1, -5, 2 ** 30 + 9, -2, 20, 1500000000, -18,
                          4, -128, 127, 1)
    mul_p = binary_params("mul", 3, -7, 1500000000, -8, 4, -100, 127)
    max_p = binary_params("maximum", 3, 2 ** 30 + 5, 1, -7, 2 ** 30 + 99, -2, 4, -100, 100, 0)
    calls = [(_merge.AddCall(x, y, add_p, out), oracle.add, add_p),
             (_merge.MulCall(x, y, mul_p, out), oracle.mul, mul_p),
             (_merge.MaximumCall(x, y, max_p, out), oracle.maximum, max_p)]
    for call, _, params in calls:
        assert call.params == params    # the struct it filled, given back as a dict
    for _ in range(2):
        x[:], y[:] = int8_array(rng, size), int8_array(rng, size)
        for call, reference, params in calls:
            assert call() is None
            np.testing.assert_array_equal(out, reference(x, y, params))


def i8(*shape):
    return np.zeros(shape, np.int8)


ADD = binary_params("add", 0, 2 ** 30, 0, 0, 2 ** 30, 0, 20, 2 ** 30, -20, 0, -128, 127, 0)
MUL = binary_params("mul", 0, 0, 2 ** 30, -8, 0, -128, 127)
MAX = binary_params("maximum", 0, 2 ** 30, 1, 0, 2 ** 30, 1, 0, -128, 127, 0)


def with_param(params, name, value):
    """A copy of the mapping params with field `name` set to value."""
    assert name in params
    return dict(params, **{name: value})


@pytest.mark.parametrize("kernel, params, name, value, match", [
    ("add", ADD, "x_zp", 128, "x_zp"),
    ("add", ADD, "x_m0", -(2 ** 29), "x_m0"),
    ("add", ADD, "x_shift", 31, "x_shift"),
    ("add", ADD, "y_zp", -129, "y_zp"),
    ("add", ADD, "y_m0", -5, "y_m0"),
    ("add", ADD, "y_shift", -32, "y_shift"),
    ("add", ADD, "left_shift", 25, "left_shift"),
    ("add", ADD, "left_shift", -1, "left_shift"),
    ("add", with_param(ADD, "x_zp", 1), "left_shift", 24, "left_shift = 24 with x_zp = 1"),
    ("add", with_param(ADD, "y_zp", -1), "left_shift", 24, "left_shift = 24 with y_zp = -1"),
    ("add", ADD, "out_m0", -12345, "out_m0"),
    ("add", ADD, "out_shift", 31, "out_shift"),
    ("add", ADD, "out_zp", 128, "out_zp"),
    ("add", with_param(ADD, "act_max", 5), "act_min", 10, "act_min"),    # act_min > act_max
    ("add", ADD, "act_max", 128, "act_max"),
    ("add", ADD, "subtract", 2, "subtract"),
    ("mul", MUL, "x_zp", 200, "x_zp"),
    ("mul", MUL, "y_zp", -200, "y_zp"),
    ("mul", MUL, "m0", -7, "m0"),
    ("mul", MUL, "shift", 31, "shift"),
    ("mul", MUL, "out_zp", -129, "out_zp"),
    ("mul", MUL, "act_min", -129, "act_min"),
    ("maximum", MAX, "x_zp", 128, "x_zp"),
    ("maximum", MAX, "x_m0", -1, "x_m0"),
    ("maximum", MAX, "x_shift", -40, "x_shift"),
    ("maximum", MAX, "y_zp", 300, "y_zp"),
    ("maximum", MAX, "y_m0", -(2 ** 30) + 1, "y_m0"),
    ("maximum", MAX, "y_shift", 31, "y_shift"),
    ("maximum", MAX, "out_zp", 128, "out_zp"),
    ("maximum", MAX, "act_max", -200, "act_max"),
    ("maximum", MAX, "take_min", -1, "take_min"),
])
def test_binary_rejects_parameters(kernel, params, name, value, match):
    bad = with_param(params, name, value)
    with pytest.raises(ValueError, match=match):
        getattr(_merge, kernel)(i8(4), i8(4), bad, i8(4))
    with pytest.raises(ValueError, match=match):
        getattr(_merge, kernel.capitalize() + "Call")(i8(4), i8(4), bad, i8(4))


@pytest.mark.parametrize("kernel, params", [("add", ADD), ("mul", MUL), ("maximum", MAX)])
def test_binary_rejects_arrays(kernel, params):
    f = getattr(_merge, kernel)
    with pytest.raises(ValueError, match="y has length 3"):
        f(i8(4), i8(3), params, i8(4))
    with pytest.raises(ValueError, match="out has length 5"):
        f(i8(4), i8(4), params, i8(5))
    with pytest.raises(ValueError, match="dtype"):
        f(np.zeros(4, np.uint8), i8(4), params, i8(4))
    with pytest.raises(ValueError, match="contiguous"):
        f(i8(8)[::2], i8(4), params, i8(4))
    with pytest.raises(TypeError):
        f(None, i8(4), params, i8(4))


def test_binary_oracle_rejects_what_the_kernels_reject():
    with pytest.raises(ValueError, match="left_shift"):
        oracle.add(i8(4), i8(4), with_param(with_param(ADD, "x_zp", 1), "left_shift", 24))
    with pytest.raises(ValueError, match="subtract"):
        oracle.add(i8(4), i8(4), with_param(ADD, "subtract", 2))
    with pytest.raises(ValueError, match="take_min"):
        oracle.maximum(i8(4), i8(4), with_param(MAX, "take_min", 3))
    with pytest.raises(ValueError, match="shape"):
        oracle.mul(i8(4), i8(5), MUL)


# ---- requantize_into (Concatenate), pad_nhwc -----------------------------------------------

@st.composite
def requantize_params(draw):
    """(in_zp, m0, shift, out_zp): a plain copy (m0 = 0, one zero point) or a rescale."""
    in_zp = draw(zero_points)
    if draw(st.integers(0, 3)) == 0:
        return in_zp, 0, draw(st.integers(-31, 30)), in_zp
    m0 = draw(st.integers(2 ** 30, 2 ** 31 - 1))
    shift = draw(st.one_of(st.integers(-31, 30), st.integers(-2, 2)))
    return in_zp, m0, shift, draw(zero_points)


@SETTINGS
@given(seeds, st.integers(0, 5), st.integers(0, 40), st.integers(0, 20), requantize_params(),
       st.data())
def test_requantize_into_matches_oracle(seed, outer, n, extra, params, data):
    rng = np.random.default_rng(seed)
    x = int8_array(rng, (outer, n))
    offset = data.draw(st.integers(0, extra))
    before = int8_array(rng, (outer, n + extra))
    out = before.copy()
    assert _layout.requantize_into(x, *params, out, offset) is None
    np.testing.assert_array_equal(out[:, offset:offset + n], oracle.requantize_into(x, *params))
    # Nothing outside the block is touched.
    np.testing.assert_array_equal(out[:, :offset], before[:, :offset])
    np.testing.assert_array_equal(out[:, offset + n:], before[:, offset + n:])


def test_requantize_into_with_m0_zero_is_a_copy():
    rng = np.random.default_rng(4)
    x = int8_array(rng, (3, 17))
    np.testing.assert_array_equal(oracle.requantize_into(x, 5, 0, 0, 5), x)
    out = np.zeros((3, 30), np.int8)
    _layout.requantize_into(x, 5, 0, 0, 5, out, 13)
    np.testing.assert_array_equal(out[:, 13:], x)


@settings(max_examples=60, deadline=None)
@given(seeds, st.integers(0, 2), st.integers(1, 6), st.integers(1, 6), st.integers(1, 8),
       st.integers(1, 3), st.integers(0, 3), st.booleans(), zero_points)
def test_concatenate_along_any_axis(seed, n, h, w, c, n_inputs, axis, same_quantization, out_zp):
    # How the runtime uses requantize_into: view each input as [outer, axis_len * inner] and
    # write it at the running offset.
    rng = np.random.default_rng(seed)
    shapes = []
    for _ in range(n_inputs):
        shape = [n, h, w, c]
        shape[axis] = int(rng.integers(0, 5))
        shapes.append(shape)
    xs = [int8_array(rng, s) for s in shapes]
    if same_quantization:
        params = [(out_zp, 0, 0) for _ in xs]
    else:
        params = [(int(rng.integers(-128, 128)), *oracle.quantize_multiplier(rng.uniform(0.3, 3)))
                  for _ in xs]
    out_shape = list(shapes[0])
    out_shape[axis] = sum(s[axis] for s in shapes)
    out = np.full(out_shape, 99, np.int8)
    outer = int(np.prod(out_shape[:axis]))
    out2d = out.reshape(outer, int(np.prod(out_shape[axis:])))
    blocks, offset = [], 0
    for x, (in_zp, m0, shift) in zip(xs, params):
        x2d = x.reshape(outer, int(np.prod(x.shape[axis:])))
        _layout.requantize_into(x2d, in_zp, m0, shift, out_zp, out2d, offset)
        blocks.append((x2d, in_zp, m0, shift))
        offset += x2d.shape[1]
    assert offset == out2d.shape[1]
    np.testing.assert_array_equal(out2d, oracle.concatenate(blocks, out_zp))
    if same_quantization:
        np.testing.assert_array_equal(out, np.concatenate(xs, axis=axis))


def test_requantize_into_call_object():
    rng = np.random.default_rng(5)
    x, out = int8_array(rng, (4, 300)), np.zeros((4, 310), np.int8)
    call = _layout.RequantizeIntoCall(x, -3, 1234567890, 1, 7, out, 10)
    for _ in range(2):
        x[...] = int8_array(rng, x.shape)
        assert call() is None
        np.testing.assert_array_equal(out[:, 10:], oracle.requantize_into(x, -3, 1234567890, 1, 7))


@pytest.mark.parametrize("args, match", [
    ((i8(2, 3), 0, 2 ** 30, 0, 0, i8(3, 5), 0), "out has shape"),
    ((i8(2, 3), 0, 2 ** 30, 0, 0, i8(2, 5), 3), "offset = 3"),
    ((i8(2, 3), 0, 2 ** 30, 0, 0, i8(2, 5), -1), "offset = -1"),
    ((i8(2, 3), 0, 2 ** 30, 0, 0, i8(2, 5), 2 ** 63 - 2), "offset = 9223372036854775806"),
    ((i8(2, 3), 128, 2 ** 30, 0, 0, i8(2, 5), 0), "in_zp"),
    ((i8(2, 3), 0, 2 ** 30, 0, -129, i8(2, 5), 0), "out_zp"),
    ((i8(2, 3), 0, -5, 0, 0, i8(2, 5), 0), "m0 = -5"),
    ((i8(2, 3), 0, 2 ** 30, 31, 0, i8(2, 5), 0), "shift = 31"),
    ((i8(2, 3), 1, 0, 0, 2, i8(2, 5), 0), "m0 = 0"),     # a copy needs one zero point
    ((np.zeros((3, 2), np.int8).T, 0, 0, 0, 0, i8(2, 5), 0), "contiguous"),
])
def test_requantize_into_rejects(args, match):
    with pytest.raises(ValueError, match=match):
        _layout.requantize_into(*args)


@SETTINGS
@given(seeds, batch, st.integers(0, 12), st.integers(0, 12), channels,
       st.tuples(*[st.integers(0, 4)] * 4), zero_points)
def test_pad_nhwc_matches_oracle_and_np_pad(seed, n, h, w, c, pads, value):
    top, bottom, left, right = pads
    x = int8_array(np.random.default_rng(seed), (n, h, w, c))
    out = np.full((n, h + top + bottom, w + left + right, c), 99, np.int8)
    params = pad_params(top, bottom, left, right, value)
    assert _layout.pad_nhwc(x, params, out) is None
    expected = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=value)
    np.testing.assert_array_equal(oracle.pad_nhwc(x, params), expected)
    np.testing.assert_array_equal(out, expected)


def test_pad_nhwc_call_object():
    rng = np.random.default_rng(6)
    x, out = int8_array(rng, (2, 40, 40, 24)), np.zeros((2, 43, 42, 24), np.int8)
    params = pad_params(1, 2, 0, 2, -128)
    call = _layout.PadNhwcCall(x, params, out)
    assert call.params == params    # the struct it filled, given back as a dict
    for _ in range(2):
        x[...] = int8_array(rng, x.shape)
        assert call() is None
        np.testing.assert_array_equal(out, oracle.pad_nhwc(x, params))


@pytest.mark.parametrize("pads, value, out_shape, match", [
    ((-1, 0, 0, 0), 0, (1, 2, 3, 4), "top"),
    ((0, -1, 0, 0), 0, (1, 2, 3, 4), "bottom"),
    ((0, 0, -1, 0), 0, (1, 2, 3, 4), "left"),
    ((0, 0, 0, -1), 0, (1, 2, 3, 4), "right"),
    ((0, 0, 0, 0), 128, (1, 3, 3, 4), "value"),
    ((1, 1, 0, 0), 0, (1, 3, 3, 4), "out has shape"),
    ((0, 0, 1, 0), 0, (1, 3, 3, 4), "out has shape"),
    ((0, 0, 0, 0), 0, (2, 3, 3, 4), "out has shape"),
    ((0, 0, 0, 0), 0, (1, 3, 3, 5), "out has shape"),
])
def test_pad_nhwc_rejects(pads, value, out_shape, match):
    params = pad_params(*pads, value)
    with pytest.raises(ValueError, match=match):
        _layout.pad_nhwc(i8(1, 3, 3, 4), params, np.zeros(out_shape, np.int8))
    if match != "out has shape":
        with pytest.raises(ValueError, match=match):
            oracle.pad_nhwc(i8(1, 3, 3, 4), params)


# ---- the params mappings -------------------------------------------------------------------

def test_params_keys_are_the_struct_fields_in_kernel_and_oracle():
    # The kernels' names come from their structs (params.pxd); the oracle's are its own: one
    # mapping serves both.
    assert _pool.POOL_PARAMS == oracle.POOL_PARAMS == (
        "pool_h", "pool_w", "stride_h", "stride_w", "pad_top", "pad_left")
    assert _layout.PAD_PARAMS == oracle.PAD_PARAMS == ("top", "bottom", "left", "right", "value")
    assert _merge.ADD_PARAMS == oracle.ADD_PARAMS == (
        "x_zp", "x_m0", "x_shift", "y_zp", "y_m0", "y_shift", "left_shift", "out_m0",
        "out_shift", "out_zp", "act_min", "act_max", "subtract")
    assert _merge.MUL_PARAMS == oracle.MUL_PARAMS == (
        "x_zp", "y_zp", "m0", "shift", "out_zp", "act_min", "act_max")
    assert _merge.MAXIMUM_PARAMS == oracle.MAXIMUM_PARAMS == (
        "x_zp", "x_m0", "x_shift", "y_zp", "y_m0", "y_shift", "out_zp", "act_min", "act_max",
        "take_min")


def entry_points(kind):
    """(valid params, [run(params)]): the kernel function, its Call class and the oracle of
    one kernel, each on valid arrays."""
    if kind in ("max_pool2d", "avg_pool2d"):
        x, out, call = i8(2, 5, 6, 3), i8(2, 3, 2, 3), kind.replace("_pool2d", "").capitalize()
        return pool_params(2, 3, 2, 3, 1, 0), [
            lambda p: getattr(_pool, kind)(x, p, out),
            lambda p: getattr(_pool, call + "Pool2dCall")(x, p, out),
            lambda p: getattr(oracle, kind)(x, p, out_h=3, out_w=2)]
    if kind == "pad_nhwc":
        x, out = i8(1, 3, 3, 4), i8(1, 4, 6, 4)
        return pad_params(1, 0, 2, 1, -3), [lambda p: _layout.pad_nhwc(x, p, out),
                                            lambda p: _layout.PadNhwcCall(x, p, out),
                                            lambda p: oracle.pad_nhwc(x, p)]
    params = {"add": ADD, "mul": MUL, "maximum": MAX}[kind]
    runs = [lambda p: getattr(_merge, kind)(i8(4), i8(4), p, i8(4)),
            lambda p: getattr(_merge, kind.capitalize() + "Call")(i8(4), i8(4), p, i8(4)),
            lambda p: getattr(oracle, kind)(i8(4), i8(4), p)]
    if kind == "add":
        runs.append(lambda p: oracle.add_accumulators(i8(4), i8(4), p))
    return params, runs


@pytest.mark.parametrize("kind", ["max_pool2d", "avg_pool2d", "pad_nhwc", "add", "mul",
                                  "maximum"])
def test_params_must_have_exactly_the_struct_keys(kind):
    # Cython's conversion of a mapping to the struct ignores unknown keys: the entry check
    # refuses them (a misspelt key must not leave its field at a default) and names a missing
    # key, for every key; the oracle does the same. A sequence of the values is refused.
    from test_kernels_conv import missing_or_misspelt
    params, runs = entry_points(kind)
    for run in runs:
        run(dict(params))                   # the valid mapping is taken
        for key in params:
            for bad, match in missing_or_misspelt(params, key):
                with pytest.raises(ValueError, match=f"{kind}: params has {match}"):
                    run(bad)
        with pytest.raises(TypeError, match=f"{kind}: params must be a mapping"):
            run(tuple(params.values()))


# ---- int16 activations ---------------------------------------------------------------------
# The same kernels on int16 tensors (symmetric: zero points 0): bit-exact with the oracle on
# every build, the oracle against hand-worked values and real arithmetic, the int16 limits
# (window sums, left shifts, clamp bounds, zero points) checked at entry.

int16_clamp_bounds = st.one_of(
    st.just((-32768, 32767)),
    st.tuples(st.integers(-32768, 32767), st.just(32767)),
    st.tuples(st.integers(-32768, 32767), st.integers(-32768, 32767)).map(sorted).map(tuple),
)


def int16_array(rng, shape, lo=-32768, hi=32767):
    """int8_array for int16: uniform in [lo, hi], about 10% of entries forced to lo or hi."""
    a = rng.integers(lo, hi, size=shape, endpoint=True).astype(np.int16)
    extremes = rng.random(shape) < 0.1
    a[extremes] = rng.choice(np.array([lo, hi], np.int16), size=int(extremes.sum()))
    return a


@SETTINGS
@given(seeds, batch, channels, pool_geometry())
def test_max_pool2d_int16_matches_oracle(seed, n, c, geometry):
    # channels 1..40: whole vectors of 8 int16 lanes and the scalar tails
    h, w, params, oh, ow = geometry
    x = int16_array(np.random.default_rng(seed), (n, h, w, c))
    out = run_pool("max_pool2d", x, params, oh, ow)
    assert out.dtype == np.int16
    np.testing.assert_array_equal(out, oracle.max_pool2d(x, params, out_h=oh, out_w=ow))


@SETTINGS
@given(seeds, batch, channels, pool_geometry(), st.booleans())
def test_avg_pool2d_int16_matches_oracle(seed, n, c, geometry, narrow):
    h, w, params, oh, ow = geometry
    x = int16_array(np.random.default_rng(seed), (n, h, w, c), *((-3, 3) if narrow else ()))
    out = run_pool("avg_pool2d", x, params, oh, ow)
    assert out.dtype == np.int16
    np.testing.assert_array_equal(out, oracle.avg_pool2d(x, params, out_h=oh, out_w=ow))


@settings(max_examples=40, deadline=None)
@given(seeds, st.integers(0, 2), st.integers(1, 4), pool_geometry(max_hw=6))
def test_pool_int16_oracle_is_the_exact_max_and_rounded_mean(seed, n, c, geometry):
    h, w, params, oh, ow = geometry
    x = int16_array(np.random.default_rng(seed), (n, h, w, c))
    most = np.empty((n, oh, ow, c), np.int16)
    mean = np.empty((n, oh, ow, c), np.int16)
    for (i, j), cells in in_bounds_windows(h, w, params, oh, ow).items():
        for b in range(n):
            for ch in range(c):
                values = [int(x[b, r, q, ch]) for r, q in cells]
                most[b, i, j, ch] = max(values)
                mean[b, i, j, ch] = round_half_away(Fraction(sum(values), len(values)))
    np.testing.assert_array_equal(oracle.max_pool2d(x, params, out_h=oh, out_w=ow), most)
    np.testing.assert_array_equal(oracle.avg_pool2d(x, params, out_h=oh, out_w=ow), mean)


def test_avg_pool2d_int16_rounds_ties_away_from_zero():
    pairs = [(32767, 32766), (-32768, -32767), (1, 2), (-1, -2), (32767, 32767), (-32768, -32768)]
    x = np.array(pairs, np.int16).reshape(1, 1, 2 * len(pairs), 1)
    params = pool_params(1, 2, 1, 2, 0, 0)
    expected = [32767, -32768, 2, -2, 32767, -32768]
    assert run_pool("avg_pool2d", x, params, 1, len(pairs)).ravel().tolist() == expected
    assert oracle.avg_pool2d(x, params, out_h=1, out_w=len(pairs)).ravel().tolist() == expected


def test_avg_pool2d_int16_window_limit():
    # int32 window sums of int16 values: pool_h * pool_w * 32768 < 2^31, i.e. at most 65535
    # elements. The largest window, full of either extreme, sums to within 2^15 of int32's
    # ends, the rounding term included, and averages exactly.
    assert oracle.window_sum_limit(np.int16) == 65535 == 255 * 257
    assert oracle.window_sum_limit(np.int8) == 16711935 == 255 * 65537
    params = pool_params(255, 257, 1, 1, 0, 0)
    for value in (-32768, 32767, -32767):
        x = np.full((1, 255, 257, 2), value, np.int16)
        x[0, 0, 0, 1] = value - 1 if value > -32768 else value + 1   # mean value -/+ 1/65535
        out = run_pool("avg_pool2d", x, params, 1, 1)
        np.testing.assert_array_equal(out.ravel(), [value, value])
        np.testing.assert_array_equal(oracle.avg_pool2d(x, params, out_h=1, out_w=1), out)
    x, out = np.zeros((1, 4, 4, 1), np.int16), np.zeros((1, 1, 1, 1), np.int16)
    for too_big in (pool_params(256, 256, 1, 1, 0, 0), pool_params(65536, 1, 1, 1, 0, 0)):
        with pytest.raises(ValueError, match="int16 values and its rounding term need "
                                             "pool_h \\* pool_w \\* 32768"):
            _pool.avg_pool2d(x, too_big, out)
        with pytest.raises(ValueError, match="pool_h \\* pool_w"):
            oracle.avg_pool2d(x, too_big, out_h=1, out_w=1)
    _pool.max_pool2d(x, pool_params(256, 256, 1, 1, 0, 0), out)  # max pooling sums nothing


def test_avg_pool2d_int8_largest_window_rounds_without_wrapping():
    # 255 * 65537 int8 elements of -128, the largest window the entry check takes: the sum
    # and its rounding term reach -(2^31 - 1) exactly; the mean is -128.
    x = np.full((1, 255, 65537, 1), -128, np.int8)
    out = run_pool("avg_pool2d", x, pool_params(255, 65537, 1, 1, 0, 0), 1, 1)
    assert out.ravel().tolist() == [-128]


@pytest.mark.parametrize("kernel", ["max_pool2d", "avg_pool2d"])
def test_pool_int16_call_object_rereads_its_input(kernel):
    rng = np.random.default_rng(11)
    x = int16_array(rng, (2, 9, 7, 19))
    params = pool_params(3, 2, 2, 2, 1, 0)
    out = np.empty((2, 5, 3, 19), np.int16)
    call = getattr(_pool, kernel.replace("_pool2d", "").capitalize() + "Pool2dCall")(x, params, out)
    assert call.bits == 16 and call.params == params
    for _ in range(2):
        x[...] = int16_array(rng, x.shape)
        assert call() is None
        np.testing.assert_array_equal(out, getattr(oracle, kernel)(x, params, out_h=5, out_w=3))


@pytest.mark.parametrize("kernel", ["max_pool2d", "avg_pool2d"])
def test_pool_rejects_mixed_activation_types(kernel):
    x, out = np.zeros((2, 5, 6, 3), np.int16), np.zeros((2, 3, 2, 3), np.int8)
    params = pool_params(2, 3, 2, 3, 1, 0)
    with pytest.raises(ValueError, match="out has dtype int8, but x has dtype int16"):
        getattr(_pool, kernel)(x, params, out)
    with pytest.raises(ValueError, match="dtype"):       # Cython's buffer check
        getattr(_pool, kernel)(x.astype(np.int32), params, out.astype(np.int32))
    with pytest.raises(TypeError, match="x must be an int8 or int16 array, not None"):
        getattr(_pool, kernel)(None, params, out)


@st.composite
def add_params16(draw):
    """add's params mapping for int16 (zero points 0): TFLite's recipe (left_shift 15) from
    real scales, or arbitrary valid ones (left_shift up to 16, saturating multipliers)."""
    if draw(st.booleans()):
        left_shift = 15
        x_scale, y_scale = draw(st.floats(1e-5, 1.0)), draw(st.floats(1e-5, 1.0))
        out_scale = draw(st.floats(0.25, 4.0)) * max(x_scale, y_scale)
        twice_max = 2 * max(x_scale, y_scale)
        x_m0, x_shift = oracle.quantize_multiplier(x_scale / twice_max)
        y_m0, y_shift = oracle.quantize_multiplier(y_scale / twice_max)
        out_m0, out_shift = oracle.quantize_multiplier(twice_max / (2 ** left_shift * out_scale))
    else:
        left_shift = draw(st.integers(0, 16))
        x_m0, y_m0, out_m0 = draw(multipliers), draw(multipliers), draw(multipliers)
        x_shift, y_shift, out_shift = (draw(st.integers(-31, 30)) for _ in range(3))
    return binary_params("add", 0, x_m0, x_shift, 0, y_m0, y_shift, left_shift, out_m0,
                         out_shift, 0, *draw(int16_clamp_bounds), draw(st.sampled_from([0, 1])))


@st.composite
def mul_params16(draw):
    """mul's params mapping for int16: a factor from real scales (the product of two int16
    codes is up to 2^30: shifts near -15), or any valid multiplier."""
    if draw(st.booleans()):
        m0, shift = oracle.quantize_multiplier(draw(st.floats(2.0 ** -17, 2.0 ** -13)))
    else:
        m0, shift = draw(multipliers), draw(st.integers(-31, 30))
    return binary_params("mul", 0, 0, m0, shift, 0, *draw(int16_clamp_bounds))


@st.composite
def maximum_params16(draw):
    """maximum's params mapping for int16: factors 1/4 .. 4 from real scales, or arbitrary."""
    if draw(st.booleans()):
        x_m0, x_shift = oracle.quantize_multiplier(draw(st.floats(0.25, 4.0)))
        y_m0, y_shift = oracle.quantize_multiplier(draw(st.floats(0.25, 4.0)))
    else:
        x_m0, y_m0 = draw(multipliers), draw(multipliers)
        x_shift, y_shift = draw(st.integers(-31, 30)), draw(st.integers(-31, 30))
    return binary_params("maximum", 0, x_m0, x_shift, 0, y_m0, y_shift, 0,
                         *draw(int16_clamp_bounds), draw(st.sampled_from([0, 1])))


BINARY16_PARAMS = {"add": add_params16(), "mul": mul_params16(), "maximum": maximum_params16()}


@pytest.mark.parametrize("kernel", ["add", "mul", "maximum"])
@SETTINGS
@given(seeds, sizes, st.data())
def test_binary_int16_matches_oracle(kernel, seed, size, data):
    # sizes: 0, 1, up to 300 (vectors of 8 and the scalar tail), 5000, 70000 (no pair table
    # for int16: the same loop at every size)
    params = data.draw(BINARY16_PARAMS[kernel])
    rng = np.random.default_rng(seed)
    x, y = int16_array(rng, size), int16_array(rng, size)
    out = run_binary(kernel, x, y, params)
    assert out.dtype == np.int16
    np.testing.assert_array_equal(out, getattr(oracle, kernel)(x, y, params))


def test_binary_int16_tails_match_the_vector_loop():
    # Every int16 pair value class through both the 8-wide loop and the scalar tail: the
    # same elements, once at the start of a long array and once in a 7-element tail.
    rng = np.random.default_rng(12)
    x, y = int16_array(rng, 4096), int16_array(rng, 4096)
    for kernel, params in (("add", binary_params("add", 0, 2 ** 30 + 7, -1, 0, 2 ** 30 + 9, -2, 15,
                                                 1500000000, -14, 0, -32768, 32767, 1)),
                           ("mul", binary_params("mul", 0, 0, 1500000000, -16, 0, -30000, 32767)),
                           ("maximum", binary_params("maximum", 0, 2 ** 30 + 5, 1, 0, 2 ** 30 + 99,
                                                     -2, 0, -32768, 32000, 1))):
        whole = run_binary(kernel, x, y, params)
        tails = [run_binary(kernel, x[i:i + 7], y[i:i + 7], params) for i in range(0, 4096, 7)]
        np.testing.assert_array_equal(np.concatenate(tails), whole)
        np.testing.assert_array_equal(whole, getattr(oracle, kernel)(x, y, params))


def test_add_int16_oracle_by_hand():
    # One scale for x, y and out, TFLite's int16 recipe: x and y to 2^15 / 2 steps, summed,
    # back by 2^-14: exactly x + y (subtract: x - y), clamped to int16.
    x = np.array([32767, -32768, 1000, -5, 32767, -32768], np.int16)
    y = np.array([1, -1, -3000, 5, -32768, 32767], np.int16)
    m0, shift = oracle.quantize_multiplier(0.5)
    out_m0, out_shift = oracle.quantize_multiplier(2.0 ** -14)
    params = binary_params("add", 0, m0, shift, 0, m0, shift, 15, out_m0, out_shift, 0, -32768,
                           32767, 0)
    expected = np.clip(x.astype(np.int64) + y, -32768, 32767)
    np.testing.assert_array_equal(oracle.add(x, y, params), expected)
    np.testing.assert_array_equal(run_binary("add", x, y, params), expected)
    params["subtract"] = 1
    expected = np.clip(x.astype(np.int64) - y, -32768, 32767)
    np.testing.assert_array_equal(oracle.add(x, y, params), expected)
    np.testing.assert_array_equal(run_binary("add", x, y, params), expected)
    # the intermediate: |x| * 2^15 / 2 <= 2^29, the sum within 2^30
    r = oracle.add_accumulators(x, y, params)
    assert np.abs(r).max() <= 2 ** 30


def test_mul_int16_oracle_by_hand():
    # factor 2^-15: x * y / 32768, TFLite's two roundings (the doubling high multiply rounds
    # ties up, the right shift ties away from zero): 3 * 16384 = 1.5 -> 2, -1.5 -> -2.
    x = np.array([32767, -32768, 3, -3, 100, -32768], np.int16)
    y = np.array([32767, -32768, 16384, 16384, -200, 1], np.int16)
    params = binary_params("mul", 0, 0, 2 ** 30, -14, 0, -32768, 32767)
    expected = [32766, 32767, 2, -2, -1, -1]
    assert oracle.mul(x, y, params).tolist() == expected
    assert run_binary("mul", x, y, params).tolist() == expected


@SETTINGS
@given(seeds, st.integers(1, 300), st.floats(1e-4, 1.0), st.floats(1e-4, 1.0),
       st.floats(0.25, 4.0), st.booleans(), st.booleans())
def test_add_int16_oracle_approximates_the_real_sum(seed, size, x_scale, y_scale, out_ratio,
                                                    same_scale, subtract):
    if same_scale:
        y_scale = x_scale
    out_scale = out_ratio * max(x_scale, y_scale)
    twice_max = 2 * max(x_scale, y_scale)
    x_m0, x_shift = oracle.quantize_multiplier(x_scale / twice_max)
    y_m0, y_shift = oracle.quantize_multiplier(y_scale / twice_max)
    out_m0, out_shift = oracle.quantize_multiplier(twice_max / (2 ** 15 * out_scale))
    rng = np.random.default_rng(seed)
    x, y = int16_array(rng, size), int16_array(rng, size)
    out = oracle.add(x, y, binary_params("add", 0, x_m0, x_shift, 0, y_m0, y_shift, 15, out_m0,
                                         out_shift, 0, -32768, 32767, int(subtract)))
    real = x_scale * x.astype(np.float64) + (-1 if subtract else 1) * y_scale * y.astype(np.float64)
    error = np.abs(out - np.clip(real / out_scale, -32768, 32767))
    # rounding to nearest, plus the 2^-15-step roundings of both inputs (in output steps,
    # at most 2 * 2^-15 / out_ratio' with out_scale >= max scale / 4): below 0.5 + 2^-10
    assert error.max() <= 0.5 + 2.0 ** -10


@SETTINGS
@given(seeds, st.integers(1, 300), st.floats(1e-4, 1.0), st.floats(1e-4, 1.0),
       st.floats(0.01, 1.0))
def test_mul_int16_oracle_approximates_the_real_product(seed, size, x_scale, y_scale, out_ratio):
    out_scale = out_ratio * x_scale * y_scale * 32768
    m0, shift = oracle.quantize_multiplier(x_scale * y_scale / out_scale)
    rng = np.random.default_rng(seed)
    x, y = int16_array(rng, size), int16_array(rng, size)
    out = oracle.mul(x, y, binary_params("mul", 0, 0, m0, shift, 0, -32768, 32767))
    real = x_scale * x.astype(np.float64) * y_scale * y.astype(np.float64)
    error = np.abs(out - np.clip(real / out_scale, -32768, 32767))
    right = max(-shift, 0)
    assert error.max() <= 0.5 + 2.0 ** -(right + 1) + 1e-6


@pytest.mark.parametrize("take_min", [0, 1])
def test_maximum_int16_in_one_quantization_is_numpy_max(take_min):
    rng = np.random.default_rng(13)
    x, y = int16_array(rng, 5000), int16_array(rng, 5000)
    params = binary_params("maximum", 0, 2 ** 30, 1, 0, 2 ** 30, 1, 0, -20000, 30000, take_min)
    expected = np.clip((np.minimum if take_min else np.maximum)(x, y), -20000, 30000)
    np.testing.assert_array_equal(oracle.maximum(x, y, params), expected)
    np.testing.assert_array_equal(run_binary("maximum", x, y, params), expected)


def test_add_int16_intermediate_wraps_like_the_oracle():
    # left_shift 16 and the largest multipliers with shift 30: sx, sy saturate at +-2^31 and
    # their sum wraps modulo 2^32 in the kernel's vector and scalar loops and in the oracle.
    x = np.array([32767, -32768, 32767, -32768, 0, 1, -1, 5] * 2, np.int16)
    y = np.array([32767, -32768, -32768, 32767, 0, -1, 1, 9] * 2, np.int16)
    params = binary_params("add", 0, 2 ** 31 - 1, 30, 0, 2 ** 31 - 1, 30, 16, 2 ** 30, -20, 0,
                           -32768, 32767, 0)
    r = oracle.add_accumulators(x, y, params)
    assert r.max() > 2 ** 31 - 1 and r.min() < -(2 ** 31)
    np.testing.assert_array_equal(run_binary("add", x, y, params), oracle.add(x, y, params))
    np.testing.assert_array_equal(run_binary("add", x[:7], y[:7], params),
                                  oracle.add(x[:7], y[:7], params))


def test_binary_int16_call_objects_reread_their_inputs_and_use_no_pair_table():
    rng = np.random.default_rng(14)
    size = 70000
    x, y, out = int16_array(rng, size), int16_array(rng, size), np.empty(size, np.int16)
    add_p = binary_params("add", 0, 2 ** 30 + 7, -1, 0, 2 ** 30 + 9, -2, 15, 1500000000, -14,
                          0, -32768, 32767, 1)
    mul_p = binary_params("mul", 0, 0, 1500000000, -16, 0, -30000, 32767)
    max_p = binary_params("maximum", 0, 2 ** 30 + 5, 1, 0, 2 ** 30 + 99, -2, 0, -30000, 30000, 0)
    calls = [(_merge.AddCall(x, y, add_p, out), oracle.add, add_p),
             (_merge.MulCall(x, y, mul_p, out), oracle.mul, mul_p),
             (_merge.MaximumCall(x, y, max_p, out), oracle.maximum, max_p)]
    assert not calls[0][0].uses_pair_table and not calls[1][0].uses_pair_table
    for call, _, params in calls:
        assert call.bits == 16 and call.params == params
    for _ in range(2):
        x[:], y[:] = int16_array(rng, size), int16_array(rng, size)
        for call, reference, params in calls:
            assert call() is None
            np.testing.assert_array_equal(out, reference(x, y, params))


def i16(*shape):
    return np.zeros(shape, np.int16)


ADD16 = binary_params("add", 0, 2 ** 30, 0, 0, 2 ** 30, 0, 15, 2 ** 30, -14, 0, -32768, 32767, 0)
MUL16 = binary_params("mul", 0, 0, 2 ** 30, -14, 0, -32768, 32767)
MAX16 = binary_params("maximum", 0, 2 ** 30, 1, 0, 2 ** 30, 1, 0, -32768, 32767, 0)


@pytest.mark.parametrize("kernel, params, name, value, match", [
    ("add", ADD16, "x_zp", 1, "x_zp = 1: int16 tensors are symmetric"),
    ("add", ADD16, "y_zp", -1, "y_zp = -1: int16 tensors are symmetric"),
    ("add", ADD16, "out_zp", 3, "out_zp = 3: int16 tensors are symmetric"),
    ("add", ADD16, "left_shift", 17, "left_shift = 17 with x_zp = 0"),
    ("add", ADD16, "act_min", -32769, "act_min"),
    ("add", ADD16, "act_max", 32768, "act_max"),
    ("mul", MUL16, "x_zp", 5, "x_zp = 5: int16 tensors are symmetric"),
    ("mul", MUL16, "out_zp", -2, "out_zp = -2: int16 tensors are symmetric"),
    ("mul", MUL16, "act_min", -40000, "act_min"),
    ("maximum", MAX16, "y_zp", 7, "y_zp = 7: int16 tensors are symmetric"),
    ("maximum", MAX16, "act_max", 40000, "act_max"),
])
def test_binary_int16_rejects_parameters(kernel, params, name, value, match):
    bad = with_param(params, name, value)
    with pytest.raises(ValueError, match=match):
        getattr(_merge, kernel)(i16(4), i16(4), bad, i16(4))
    with pytest.raises(ValueError, match=match):
        getattr(oracle, kernel)(i16(4), i16(4), bad)
    getattr(_merge, kernel)(i16(4), i16(4), params, i16(4))      # the valid mapping is taken
    if name == "left_shift":    # a limit of int16's range: int8 values take 17 (zp 0)
        int8_bounds = dict(bad, act_min=-128, act_max=127)
        getattr(_merge, kernel)(i8(4), i8(4), int8_bounds, i8(4))
        oracle.add(i8(4), i8(4), int8_bounds)


@pytest.mark.parametrize("kernel, params", [("add", ADD16), ("mul", MUL16), ("maximum", MAX16)])
def test_binary_rejects_mixed_activation_types(kernel, params):
    f = getattr(_merge, kernel)
    with pytest.raises(ValueError, match="y has dtype int8, but x has dtype int16 "
                                         "\\(one activation type per call"):
        f(i16(4), i8(4), params, i16(4))
    with pytest.raises(ValueError, match="out has dtype int16, but x has dtype int8"):
        f(i8(4), i8(4), with_param(params, "act_min", -128), i16(4))
    with pytest.raises(ValueError, match="y has length 3"):
        f(i16(4), i16(3), params, i16(4))
    with pytest.raises(TypeError, match="one activation type per call"):
        getattr(oracle, kernel)(i16(4), i8(4), params)


@pytest.mark.parametrize("outer, n, offset, extra", [(0, 5, 0, 0), (3, 0, 2, 4), (4, 300, 7, 10),
                                                     (1, 9, 0, 0), (2, 17, 3, 3)])
@pytest.mark.parametrize("rescale", [None, (2 ** 30, 0), (1234567890, 1), (2 ** 30 + 5, -20),
                                     (2 ** 31 - 1, 30)])
def test_requantize_into_int16_matches_oracle(outer, n, offset, extra, rescale):
    rng = np.random.default_rng(outer * 1000 + n)
    x = int16_array(rng, (outer, n))
    m0, shift = rescale or (0, 0)
    before = int16_array(rng, (outer, n + offset + extra))
    out = before.copy()
    assert _layout.requantize_into(x, 0, m0, shift, 0, out, offset) is None
    expected = oracle.requantize_into(x, 0, m0, shift, 0)
    assert expected.dtype == np.int16
    np.testing.assert_array_equal(out[:, offset:offset + n], expected)
    np.testing.assert_array_equal(out[:, :offset], before[:, :offset])
    np.testing.assert_array_equal(out[:, offset + n:], before[:, offset + n:])
    if m0 == 0:
        np.testing.assert_array_equal(expected, x)


def test_requantize_into_int16_by_hand():
    # factor 1/2 (m0 = 2^30, shift 0): the doubling high multiply rounds ties up (1.5 -> 2,
    # -1.5 -> -1); factor 2 (shift 2) saturates nothing in int32 but clamps to int16.
    x = np.array([[32767, -32768, 3, -3, 0]], np.int16)
    assert oracle.requantize_into(x, 0, 2 ** 30, 0, 0).tolist() == [[16384, -16384, 2, -1, 0]]
    assert oracle.requantize_into(x, 0, 2 ** 30, 2, 0).tolist() == [[32767, -32768, 6, -6, 0]]
    for m0, shift in ((2 ** 30, 0), (2 ** 30, 2)):
        out = np.zeros((1, 5), np.int16)
        _layout.requantize_into(x, 0, m0, shift, 0, out, 0)
        np.testing.assert_array_equal(out, oracle.requantize_into(x, 0, m0, shift, 0))


@settings(max_examples=40, deadline=None)
@given(seeds, st.integers(0, 2), st.integers(1, 5), st.integers(1, 5), st.integers(1, 6),
       st.integers(1, 3), st.integers(0, 3), st.booleans())
def test_concatenate_int16_along_any_axis(seed, n, h, w, c, n_inputs, axis, same_quantization):
    rng = np.random.default_rng(seed)
    shapes = []
    for _ in range(n_inputs):
        shape = [n, h, w, c]
        shape[axis] = int(rng.integers(0, 5))
        shapes.append(shape)
    xs = [int16_array(rng, s) for s in shapes]
    params = [(0, 0, 0) if same_quantization else
              (0, *oracle.quantize_multiplier(rng.uniform(0.3, 3))) for _ in xs]
    out_shape = list(shapes[0])
    out_shape[axis] = sum(s[axis] for s in shapes)
    out = np.full(out_shape, 99, np.int16)
    outer = int(np.prod(out_shape[:axis]))
    out2d = out.reshape(outer, int(np.prod(out_shape[axis:])))
    blocks, offset = [], 0
    for x, (in_zp, m0, shift) in zip(xs, params):
        x2d = x.reshape(outer, int(np.prod(x.shape[axis:])))
        _layout.requantize_into(x2d, in_zp, m0, shift, 0, out2d, offset)
        blocks.append((x2d, in_zp, m0, shift))
        offset += x2d.shape[1]
    np.testing.assert_array_equal(out2d, oracle.concatenate(blocks, 0))
    if same_quantization:
        np.testing.assert_array_equal(out, np.concatenate(xs, axis=axis))


@pytest.mark.parametrize("args, match", [
    ((i16(2, 3), 1, 2 ** 30, 0, 0, i16(2, 5), 0), "in_zp = 1: int16 tensors are symmetric"),
    ((i16(2, 3), 0, 2 ** 30, 0, -1, i16(2, 5), 0), "out_zp = -1: int16 tensors are symmetric"),
    ((i16(2, 3), 0, 2 ** 30, 0, 0, i8(2, 5), 0), "out has dtype int8, but x has dtype int16"),
    ((i16(2, 3), 0, 2 ** 30, 0, 0, i16(3, 5), 0), "out has shape"),
    ((i16(2, 3), 0, 2 ** 30, 0, 0, i16(2, 5), 3), "offset = 3"),
])
def test_requantize_into_int16_rejects(args, match):
    with pytest.raises(ValueError, match=match):
        _layout.requantize_into(*args)


@SETTINGS
@given(seeds, batch, st.integers(0, 12), st.integers(0, 12), channels,
       st.tuples(*[st.integers(0, 4)] * 4), st.one_of(st.just(0), st.integers(-32768, 32767)))
def test_pad_nhwc_int16_matches_oracle_and_np_pad(seed, n, h, w, c, pads, value):
    # the op pads with the zero point, 0; the kernel takes any int16 code
    top, bottom, left, right = pads
    x = int16_array(np.random.default_rng(seed), (n, h, w, c))
    out = np.full((n, h + top + bottom, w + left + right, c), 99, np.int16)
    params = pad_params(top, bottom, left, right, value)
    assert _layout.pad_nhwc(x, params, out) is None
    expected = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=value)
    np.testing.assert_array_equal(oracle.pad_nhwc(x, params), expected)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("value, out, match", [
    (32768, i16(1, 3, 3, 4), "value = 32768 is outside the int16 range"),
    (-32769, i16(1, 3, 3, 4), "value = -32769 is outside the int16 range"),
    (0, i8(1, 3, 3, 4), "out has dtype int8, but x has dtype int16"),
    (0, i16(1, 4, 3, 4), "out has shape"),
])
def test_pad_nhwc_int16_rejects(value, out, match):
    params = pad_params(0, 0, 0, 0, value)
    with pytest.raises(ValueError, match=match):
        _layout.pad_nhwc(i16(1, 3, 3, 4), params, out)
    if "range" in match:
        with pytest.raises(ValueError, match=match):
            oracle.pad_nhwc(i16(1, 3, 3, 4), params)
    _layout.pad_nhwc(i8(1, 3, 3, 4), pad_params(0, 0, 0, 0, 127), i8(1, 3, 3, 4))
