"""The conv2d kernel as a packed-weight indirect GEMM (fixnet/_kernels/_conv.pyx with the
micro-kernels of fixnet/_kernels/csrc/qgemm.h): in every kernel build this CPU runs, the
build's SIMD micro-kernel, its scalar twin (same packing, plain C) and fixnet.oracle.conv2d
give the same bits, on geometries chosen to hit the tiles' edges (Cin not a multiple of the
K step, Cout not a multiple of the channel block, pixel counts not a multiple of the pixel
tile, padding taps, dilation), extreme zero points and weights, left shifts and clamps.
Also: the task ranges of one call are independent (any split, any order, several threads),
the kernel never reads past the end of its input, and the packed weights are made once and
checked against the arrays they are used with. The same for int16 activations (the last
section: csrc/qgemm16.h's micro-kernels, conv2d and dense), with the int16 oracle checked
against the definition.

Hypothesis draws the shapes, parameters and a seed; NumPy fills the arrays from the seed.
"""
import ctypes
import importlib
import mmap
import pickle
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fixnet._kernels
from fixnet import oracle
from kernel_builds import build_params
from strategies import int8_array


@pytest.fixture(scope="module", params=build_params(), autouse=True)
def conv(request):
    """The _conv module of each kernel build this CPU runs."""
    return fixnet._kernels.load_build(request.param)._conv


def out_size(size, kernel, stride, dilation, pad_before, pad_after):
    return max(0, (size + pad_before + pad_after - dilation * (kernel - 1) - 1) // stride + 1)


def same_pads(size, kernel, stride, dilation):
    """Keras 'same' padding: (before, after)."""
    out = -(-size // stride)
    total = max(0, (out - 1) * stride + dilation * (kernel - 1) + 1 - size)
    return total // 2, total - total // 2


@st.composite
def conv_cases(draw):
    seed = draw(st.integers(0, 2 ** 32 - 1))
    kh, kw = draw(st.sampled_from([(1, 1), (3, 3), (5, 5), (1, 7), (7, 1), (2, 3)]))
    sh, sw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    dh, dw = draw(st.sampled_from([(1, 1), (1, 1), (2, 2), (1, 3)]))
    h, w = draw(st.integers(1, 11)), draw(st.integers(1, 11))
    groups = draw(st.sampled_from([1, 1, 1, 2]))
    cin = draw(st.sampled_from([1, 3, 4, 7, 8, 16, 33])) * groups
    cout = draw(st.sampled_from([1, 5, 8, 17, 24, 33])) * groups
    if draw(st.booleans()):      # same padding
        (pt, pb), (pl, pr) = same_pads(h, kh, sh, dh), same_pads(w, kw, sw, dw)
    else:                        # valid padding, or some explicit padding
        pt, pb, pl, pr = (draw(st.integers(0, 2)) for _ in range(4)) if draw(st.booleans()) \
            else (0, 0, 0, 0)
    return dict(seed=seed, n=draw(st.sampled_from([1, 1, 3])), h=h, w=w, cin=cin, cout=cout,
                groups=groups, window=(kh, kw, sh, sw, dh, dw, pt, pl, pb, pr),
                pad_value=draw(st.sampled_from([-128, 127, 0, -3])),
                out_zp=draw(st.sampled_from([-128, 127, 5])),
                bounds=draw(st.sampled_from([(-128, 127), (0, 127), (-20, 60)])),
                shifts=draw(st.sampled_from(["right", "left", "mixed"])),
                wide_bias=draw(st.booleans()))


def conv2d_params(*values):
    """conv2d's params mapping from its 11 values in CONV2D_PARAMS order."""
    assert len(values) == len(oracle.CONV2D_PARAMS)
    return dict(zip(oracle.CONV2D_PARAMS, values))


def make_args(c):
    """Arrays and parameters of one case: (args of conv2d without out, out_h, out_w)."""
    rng = np.random.default_rng(c["seed"])
    kh, kw, sh, sw, dh, dw, pt, pl, pb, pr = c["window"]
    oh = out_size(c["h"], kh, sh, dh, pt, pb)
    ow = out_size(c["w"], kw, sw, dw, pl, pr)
    x = int8_array(rng, (c["n"], c["h"], c["w"], c["cin"]))
    w = int8_array(rng, (c["cout"], kh, kw, c["cin"] // c["groups"]), -127, 127)
    bound = 2 ** 31 - 1 if c["wide_bias"] else 2 ** 16
    bias = rng.integers(-bound, bound, c["cout"], endpoint=True).astype(np.int32)
    m0 = rng.integers(2 ** 30, 2 ** 31, c["cout"]).astype(np.int32)
    right = rng.integers(-20, -6, c["cout"], endpoint=True)
    left = rng.integers(0, 6, c["cout"], endpoint=True)
    shift = {"right": right, "left": left,
             "mixed": np.where(rng.random(c["cout"]) < 0.5, left, right)}[c["shifts"]]
    params = conv2d_params(sh, sw, dh, dw, pt, pl, c["groups"], c["pad_value"], c["out_zp"],
                           *c["bounds"])
    return (x, w, bias, m0, shift.astype(np.int32), params), oh, ow


def run(conv, args, oh, ow, **kw):
    out = np.full((args[0].shape[0], oh, ow, args[1].shape[0]), 99, np.int8)
    conv.Conv2dCall(*args, out, **kw)()
    return out


@settings(max_examples=300, deadline=None)
@given(conv_cases())
def test_simd_scalar_twin_and_oracle_agree(conv, case):
    args, oh, ow = make_args(case)
    want = oracle.conv2d(*args, out_h=oh, out_w=ow)
    np.testing.assert_array_equal(run(conv, args, oh, ow, scalar=True), want)
    np.testing.assert_array_equal(run(conv, args, oh, ow), want)


@pytest.mark.parametrize("x_value, w_value", [(-128, -127), (-128, 127), (127, 127)])
def test_extreme_products_in_every_lane(conv, x_value, w_value):
    # Every product at the extreme the contract allows (int16 pair sums in the NEON kernel,
    # uint8 offsets in the VNNI kernel), 5x5 taps of 33 channels, 19 output channels.
    x = np.full((1, 6, 7, 33), x_value, np.int8)
    w = np.full((19, 5, 5, 33), w_value, np.int8)
    bias = np.arange(19, dtype=np.int32) * 1000 - 9000
    m0 = np.full(19, 2 ** 30 + 12345, np.int32)
    shift = np.full(19, -16, np.int32)
    args = (x, w, bias, m0, shift, conv2d_params(1, 1, 1, 1, 2, 2, 1, x_value, 0, -128, 127))
    want = oracle.conv2d(*args, out_h=6, out_w=7)
    for scalar in (True, False):
        np.testing.assert_array_equal(run(conv, args, 6, 7, scalar=scalar), want)


def test_task_ranges_are_independent(conv):
    # Any split of [0, n_tasks) into ranges, run in any order or on several threads at once,
    # writes exactly what one run() writes.
    rng = np.random.default_rng(11)
    x = int8_array(rng, (3, 13, 11, 20))
    w = int8_array(rng, (37, 3, 3, 20), -127, 127)
    bias = rng.integers(-5000, 5000, 37).astype(np.int32)
    m0 = rng.integers(2 ** 30, 2 ** 31, 37).astype(np.int32)
    shift = np.full(37, -12, np.int32)
    args = (x, w, bias, m0, shift, conv2d_params(1, 1, 1, 1, 1, 1, 1, -1, 2, -128, 127))
    want = oracle.conv2d(*args, out_h=13, out_w=11)
    out = np.zeros((3, 13, 11, 37), np.int8)
    call = conv.Conv2dCall(*args, out)
    tiles_per_image = -(-13 * 11 // conv.GEMM_TILE[0])
    assert call.n_tasks == 3 * tiles_per_image
    cuts = sorted(set(rng.integers(0, call.n_tasks, 6).tolist()) | {0, call.n_tasks})
    ranges = list(zip(cuts[:-1], cuts[1:]))
    for order in (ranges, ranges[::-1]):
        out[...] = 0
        for first, last in order:
            call.run_tasks(first, last)
        np.testing.assert_array_equal(out, want)
    out[...] = 0
    singles = [(i, i + 1) for i in range(call.n_tasks)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda r: call.run_tasks(*r), singles))
    np.testing.assert_array_equal(out, want)
    out[...] = 0
    call.run_tasks(0, 0)
    assert not out.any()
    with pytest.raises(ValueError, match="task range"):
        call.run_tasks(0, call.n_tasks + 1)


def _guarded_int8(shape, dtype=np.int8):
    """An int8 (or dtype) array whose last byte is the last byte before a page the process
    may not read (Linux): a kernel reading one byte past it crashes the test run."""
    libc = ctypes.CDLL(None, use_errno=True)
    page = mmap.PAGESIZE
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    n_pages = -(-size // page) + 1
    buf = mmap.mmap(-1, n_pages * page, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    base = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    if libc.mprotect(base + (n_pages - 1) * page, page, 0) != 0:
        pytest.skip("mprotect failed")
    start = (n_pages - 1) * page - size
    a = np.frombuffer(buf, dtype, count=int(np.prod(shape)), offset=start).reshape(shape)
    return a, buf


@pytest.mark.parametrize("kernel, cin, stride", [((3, 3), 3, 2), ((3, 3), 1, 1), ((5, 5), 3, 1),
                                                 ((7, 7), 1, 2), ((2, 3), 3, 1), ((10, 4), 1, 2),
                                                 ((7, 7), 3, 2)])
def test_patch_mode_for_few_input_channels(conv, kernel, cin, stride):
    # A first layer on RGB / grey images: Cin is not a multiple of the K step, so each pixel's
    # window is copied into one zero-padded row and multiplied as a single tap (patch_k);
    # padding taps read pad_value. SIMD, scalar twin and oracle agree; a window of more than 160
    # values takes the per-tap path.
    mr, nr, kr = conv.GEMM_TILE
    rng = np.random.default_rng(cin * 100 + kernel[0])
    kh, kw = kernel
    x = int8_array(rng, (2, 11, 13, cin))
    w = int8_array(rng, (19, kh, kw, cin), -127, 127)
    bias = rng.integers(-2 ** 16, 2 ** 16, 19).astype(np.int32)
    m0 = rng.integers(2 ** 30, 2 ** 31, 19).astype(np.int32)
    shift = rng.integers(-14, 2, 19).astype(np.int32)
    packed = conv.pack_conv_weights(w, bias, 1)
    window = kh * kw * cin
    expect_patch = cin % kr != 0 and -(-window // kr) * kr <= 160
    assert packed.patch_k == (-(-window // kr) * kr if expect_patch else 0)
    pads = ((kh - 1) // 2, (kw - 1) // 2)
    oh = out_size(11, kh, stride, 1, pads[0], kh - 1 - pads[0])
    ow = out_size(13, kw, stride, 1, pads[1], kw - 1 - pads[1])
    args = (x, w, bias, m0, shift,
            conv2d_params(stride, stride, 1, 1, *pads, 1, -7, 3, -100, 127))
    want = oracle.conv2d(*args, out_h=oh, out_w=ow)
    for scalar in (True, False):
        np.testing.assert_array_equal(run(conv, args, oh, ow, scalar=scalar, packed=packed), want)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mprotect guard page: Linux")
@pytest.mark.parametrize("cin", [1, 3, 5, 7, 9, 33])
def test_never_reads_past_the_input(conv, cin):
    # The input ends right before an unreadable page; Cin not a multiple of any build's K
    # step, so the last pixel's last group is a tail the kernel must not over-read.
    x, buf = _guarded_int8((1, 4, 5, cin))
    rng = np.random.default_rng(cin)
    x[...] = int8_array(rng, x.shape)
    w = int8_array(rng, (9, 3, 3, cin), -127, 127)
    bias = np.zeros(9, np.int32)
    m0 = np.full(9, 2 ** 30, np.int32)
    shift = np.full(9, -6, np.int32)
    for pads in ((1, 1), (0, 0)):
        oh, ow = (4, 5) if pads == (1, 1) else (2, 3)
        args = (x, w, bias, m0, shift, conv2d_params(1, 1, 1, 1, *pads, 1, 0, 0, -128, 127))
        want = oracle.conv2d(*args, out_h=oh, out_w=ow)
        for scalar in (True, False):
            np.testing.assert_array_equal(run(conv, args, oh, ow, scalar=scalar), want)
    assert not buf.closed       # (the mapping lives until x and buf are collected)


def test_packed_weights_are_checked_and_reused(conv):
    rng = np.random.default_rng(3)
    x = int8_array(rng, (1, 5, 5, 6))
    w = int8_array(rng, (10, 3, 3, 6), -127, 127)
    bias = rng.integers(-99, 99, 10).astype(np.int32)
    m0 = np.full(10, 2 ** 30, np.int32)
    shift = np.full(10, -8, np.int32)
    args = (x, w, bias, m0, shift, conv2d_params(1, 1, 1, 1, 1, 1, 1, 0, 0, -128, 127))
    packed = conv.pack_conv_weights(w, bias)
    assert packed.source_w is w and packed.source_bias is bias
    assert not packed.data.flags.writeable
    want = oracle.conv2d(*args, out_h=5, out_w=5)
    np.testing.assert_array_equal(run(conv, args, 5, 5, packed=packed), want)
    with pytest.raises(ValueError, match="packed holds the weights of other arrays"):
        run(conv, (x, w.copy()) + args[2:], 5, 5, packed=packed)
    with pytest.raises(ValueError, match="packed holds the weights of other arrays"):
        run(conv, (x, w, bias.copy()) + args[3:], 5, 5, packed=packed)
    with pytest.raises(TypeError):
        pickle.dumps(packed)


def test_weights_of_minus_128_are_refused(conv):
    # The micro-kernels rely on |w| <= 127 (NEON: two products summed in int16); the
    # quantizer never makes -128 (fixnet.quant.qparams.WEIGHT_MAX).
    w = np.zeros((4, 3, 3, 2), np.int8)
    w[2, 1, 0, 1] = -128
    with pytest.raises(ValueError, match=r"w\[2, 1, 0, 1\] = -128"):
        conv.pack_conv_weights(w, np.zeros(4, np.int32))


def test_conv_step_packs_once_and_again_after_the_bias_changes():
    from fixnet.ops.conv import ConvStep
    rng = np.random.default_rng(8)
    w = int8_array(rng, (6, 3, 3, 4), -127, 127)
    step = ConvStep("c", "c", ["x"], ["y"], w, (1, 1), (1, 1), 1,
                    bias=np.zeros(6, np.int32), m0=np.full(6, 2 ** 30, np.int32),
                    shift=np.full(6, -7, np.int32), pad_value=-2, out_zp=1, act_min=-128,
                    act_max=127, pads=((1, 1), (1, 1)), nhwc_in=(5, 5, 4), nhwc_out=(5, 5, 6))
    packed = step.packed_weights()
    assert step.packed_weights() is packed
    x = int8_array(rng, (2, 5, 5, 4))
    bufs = {"x": x, "y": np.zeros((2, 5, 5, 6), np.int8)}
    step.bind(bufs)()
    np.testing.assert_array_equal(bufs["y"], step.oracle([x])[0])
    step.adjust_bias(np.arange(6) * 300)
    assert step.packed_weights() is not packed
    step.bind(bufs)()
    np.testing.assert_array_equal(bufs["y"], step.oracle([x])[0])
    clone = pickle.loads(pickle.dumps(step))
    assert "_packed" not in clone.__dict__ or clone.__dict__["_packed"] is None
    clone.bind(bufs)()
    np.testing.assert_array_equal(bufs["y"], step.oracle([x])[0])


# ---- the edges of each build's micro-kernel (csrc/qgemm_*.h) ----------------------------------

def _edge_case(rng, n, h, w, cin, cout, kernel, groups, shift, bias_bound=2 ** 20):
    """Random arrays of one conv2d (stride 1, 'same' padding), and its output size."""
    kh, kw = kernel
    pads = ((kh - 1) // 2, (kw - 1) // 2)
    x = int8_array(rng, (n, h, w, cin))
    wt = int8_array(rng, (cout, kh, kw, cin // groups), -127, 127)
    bias = rng.integers(-bias_bound, bias_bound, cout, endpoint=True).astype(np.int32)
    m0 = rng.integers(2 ** 30, 2 ** 31, cout).astype(np.int32)
    shift = np.broadcast_to(np.asarray(shift, np.int32), (cout,)).copy()
    oh = out_size(h, kh, 1, 1, pads[0], kh - 1 - pads[0])
    ow = out_size(w, kw, 1, 1, pads[1], kw - 1 - pads[1])
    args = (x, wt, bias, m0, shift,
            conv2d_params(1, 1, 1, 1, *pads, groups, int(rng.integers(-128, 128)),
                          int(rng.integers(-128, 128)), -128, 127))
    return args, oh, ow


def _check_all(conv, args, oh, ow):
    want = oracle.conv2d(*args, out_h=oh, out_w=ow)
    np.testing.assert_array_equal(run(conv, args, oh, ow, scalar=True), want)
    np.testing.assert_array_equal(run(conv, args, oh, ow), want)


@pytest.mark.parametrize("cin_g", range(1, 50))
def test_every_k_tail(conv, cin_g):
    # Every length of the last K step of a tap: Cin % KR for the 16-deep steps (NEON 2x8c16),
    # 1 to 4 groups of 4 after the 16-byte steps (NEON 4x16c4), ... The kernel reads the tail
    # in pieces, never past the row. 3x3 taps with groups = 2 (no patch mode: every tap has
    # its own tail; padding taps read the pad row), and a 1x1 conv (one tap, a GEMM).
    rng = np.random.default_rng(1000 + cin_g)
    for kernel, groups in (((3, 3), 2), ((1, 1), 1)):
        args, oh, ow = _edge_case(rng, 1, 4, 5, cin_g * groups, 19 * groups, kernel, groups,
                                  rng.integers(-12, 3, 19 * groups))
        _check_all(conv, args, oh, ow)


@pytest.mark.parametrize("cout", list(range(1, 18)) + [23, 31, 33, 47, 64])
def test_partial_channel_blocks_and_pixel_tiles(conv, cout):
    # The last block of output channels holds 1 .. NR channels (partial stores of 1 to 15
    # bytes), the last tile of pixels 1 .. MR pixels (rows not stored), with fused epilogues;
    # a tile of one pixel takes the one-row kernels (pairs of blocks, then a last odd one).
    rng = np.random.default_rng(2000 + cout)
    for h, w in ((1, 1), (1, 2), (1, 3), (1, 5), (2, 3), (3, 3)):
        for kernel, cin in (((1, 1), 21), ((3, 3), 34)):
            args, oh, ow = _edge_case(rng, 2, h, w, cin, cout, kernel, 1,
                                      rng.integers(-14, 2, cout))
            _check_all(conv, args, oh, ow)


@pytest.mark.parametrize("left", [1, 3, 6])
def test_left_shifts_saturate_like_the_rule(conv, left):
    # acc << left saturates to int32 for large accumulators (sqshl on NEON, the scalar rule's
    # hi_lim / lo_lim): biases near +-2^31 with left shifts, every output channel of a block.
    rng = np.random.default_rng(left)
    args, oh, ow = _edge_case(rng, 1, 3, 4, 24, 37, (3, 3), 1, left, bias_bound=2 ** 31 - 1)
    bias = args[2]
    bias[::3] = np.int32(2 ** 31 - 1)
    bias[1::3] = np.int32(-2 ** 31)
    _check_all(conv, args, oh, ow)
    args, oh, ow = _edge_case(rng, 1, 3, 4, 24, 37, (3, 3), 1,
                              np.where(np.arange(37) % 2, left, -9), bias_bound=2 ** 31 - 1)
    _check_all(conv, args, oh, ow)


@pytest.mark.parametrize("cin_g, cout_g", [(5, 9), (21, 300), (16, 17)])
def test_more_taps_than_one_chunk(conv, cin_g, cout_g):
    # 7x7 = 49 taps (> TAP_CHUNK): the int32 tile kernel (qg_tile) sums the taps in chunks,
    # starting from the previous chunk's accumulators (init_stride), then the int32 tile is
    # requantized (fx_requant_rows); more than CH_CHUNK channels take two chunks.
    rng = np.random.default_rng(cin_g * 1000 + cout_g)
    args, oh, ow = _edge_case(rng, 1, 4, 3, 2 * cin_g, 2 * cout_g, (7, 7), 2,
                              rng.integers(-14, 3, 2 * cout_g))
    _check_all(conv, args, oh, ow)


@pytest.fixture
def dense(conv):
    """The _dense module of the same build as conv."""
    return importlib.import_module(conv.__name__.rsplit(".", 1)[0] + "._dense")


@pytest.mark.parametrize("k", list(range(1, 49)) + [255, 257])
def test_dense_every_k_and_row_count(dense, k):
    # dense runs the GEMM micro-kernels on one tap: a batch of one row (and the last row of an
    # odd batch on builds with 2-row tiles) on the one-row kernels (qg_row2_q8 on pairs of
    # channel blocks, qg_row_q8 on a last odd one), the others on the fused tile; every K
    # tail, partial channel blocks (1 to 7 blocks of 8 or 16 channels, full and partial
    # pairs), left and right shifts.
    rng = np.random.default_rng(3000 + k)
    for n in (1, 2, 3, 5):
        for c in (1, 9, 16, 17, 32, 40, 48, 100):
            x = int8_array(rng, (n, k))
            w = int8_array(rng, (c, k), -127, 127)
            bias = rng.integers(-2 ** 20, 2 ** 20, c, endpoint=True).astype(np.int32)
            m0 = rng.integers(2 ** 30, 2 ** 31, c).astype(np.int32)
            shift = rng.integers(-14, 4, c, endpoint=True).astype(np.int32)
            args = (x, w, bias, m0, shift, int(rng.integers(-128, 128)), -128, 127)
            out = np.full((n, c), 99, np.int8)
            dense.dense(*args, out)
            np.testing.assert_array_equal(out, oracle.dense(*args), f"n={n} c={c}")



# ---- int16 activations (csrc/qgemm16.h) -------------------------------------------------------

def int16_array(rng, shape, lo=-32768, hi=32767):
    """Uniform int16 in [lo, hi], about 10% of entries forced to lo or hi."""
    a = rng.integers(lo, hi, size=shape, endpoint=True).astype(np.int16)
    extremes = rng.random(shape) < 0.1
    a[extremes] = rng.choice(np.array([lo, hi], np.int16), size=int(extremes.sum()))
    return a


INT16_BOUNDS = [(-32768, 32767), (0, 32767), (-1000, 3000), (5, 5)]


def make_args16(c):
    """make_args for int16 activations: pad_value and out_zp 0, int16 clamp bounds, shifts
    that land the sums of int16 x int8 products near the int16 range."""
    (x, w, bias, m0, shift, params), oh, ow = make_args(c)
    rng = np.random.default_rng(c["seed"] + 1)
    x16 = int16_array(rng, x.shape)
    shift = np.where(shift < 0, shift + 6, shift).astype(np.int32)
    params = dict(params, pad_value=0, out_zp=0)
    params["act_min"], params["act_max"] = INT16_BOUNDS[c["out_zp"] % len(INT16_BOUNDS)]
    return (x16, w, bias, m0, shift, params), oh, ow


def run16(conv, args, oh, ow, **kw):
    out = np.full((args[0].shape[0], oh, ow, args[1].shape[0]), 99, np.int16)
    conv.Conv2dCall(*args, out, **kw)()
    return out


def _check_all16(conv, args, oh, ow):
    want = oracle.conv2d(*args, out_h=oh, out_w=ow)
    assert want.dtype == np.int16
    np.testing.assert_array_equal(run16(conv, args, oh, ow, scalar=True), want)
    np.testing.assert_array_equal(run16(conv, args, oh, ow), want)


def _edge_case16(rng, n, h, w, cin, cout, kernel, groups, shift, bias_bound=2 ** 24):
    """_edge_case with int16 activations (pad_value and out_zp 0)."""
    args, oh, ow = _edge_case(rng, n, h, w, cin, cout, kernel, groups, shift, bias_bound)
    x, wt, bias, m0, shift, params = args
    params = dict(params, pad_value=0, out_zp=0, act_min=-32768, act_max=32767)
    return (int16_array(rng, x.shape), wt, bias, m0, shift, params), oh, ow


@settings(max_examples=200, deadline=None)
@given(conv_cases())
def test_int16_simd_scalar_twin_and_oracle_agree(conv, case):
    args, oh, ow = make_args16(case)
    _check_all16(conv, args, oh, ow)


@pytest.mark.parametrize("x_value, w_value", [(-32768, -127), (-32768, 127), (32767, 127),
                                              (32767, -127)])
def test_int16_extreme_products_in_every_lane(conv, x_value, w_value):
    # Every product at the extreme of int16 x int8 (pmaddwd's pair sums: 2 * 2^15 * 127, far
    # inside int32), 5x5 taps of 33 channels (an odd K: the last pair holds one value), padding
    # taps of 0; 19 output channels. The bias puts the largest sum right at the int32 limit.
    x = np.full((1, 6, 7, 33), x_value, np.int16)
    w = np.full((19, 5, 5, 33), w_value, np.int8)
    acc = oracle.conv2d_accumulators(x, w, np.zeros(19, np.int32),
                                     conv2d_params(1, 1, 1, 1, 2, 2, 1, 0, 0, -32768, 32767),
                                     out_h=6, out_w=7)
    peak = int(np.abs(acc).max())
    bias = (np.arange(19) * 1000 - 9000).astype(np.int32)
    bias[0] = (2 ** 31 - 1 - peak) if acc.max() > 0 else -(2 ** 31) + peak
    m0 = np.full(19, 2 ** 30 + 12345, np.int32)
    shift = np.full(19, -10, np.int32)
    args = (x, w, bias, m0, shift, conv2d_params(1, 1, 1, 1, 2, 2, 1, 0, 0, -32768, 32767))
    _check_all16(conv, args, 6, 7)


@pytest.mark.parametrize("cin_g", list(range(1, 20)) + [31, 33, 47])
def test_int16_every_k_tail(conv, cin_g):
    # Every length of the last K step of a tap (odd Cin: the last pair's second value is 0 on
    # AVX2; Cin % 8 lanes on SSE2 and NEON), 3x3 taps with groups = 2 and a 1x1 conv.
    rng = np.random.default_rng(5000 + cin_g)
    for kernel, groups in (((3, 3), 2), ((1, 1), 1)):
        args, oh, ow = _edge_case16(rng, 1, 4, 5, cin_g * groups, 19 * groups, kernel, groups,
                                    rng.integers(-20, -4, 19 * groups))
        _check_all16(conv, args, oh, ow)


@pytest.mark.parametrize("cout", list(range(1, 18)) + [23, 33, 64])
def test_int16_partial_channel_blocks_and_pixel_tiles(conv, cout):
    # The last block of output channels holds 1 .. NR channels (partial int16 stores), the last
    # tile of pixels 1 .. MR pixels; a tile of one pixel takes the one-row kernel.
    rng = np.random.default_rng(6000 + cout)
    for h, w in ((1, 1), (1, 2), (1, 3), (1, 5), (2, 3), (3, 3)):
        for kernel, cin in (((1, 1), 21), ((3, 3), 34)):
            args, oh, ow = _edge_case16(rng, 2, h, w, cin, cout, kernel, 1,
                                        rng.integers(-22, -6, cout))
            _check_all16(conv, args, oh, ow)


@pytest.mark.parametrize("left", [1, 3, 6])
def test_int16_left_shifts_saturate_like_the_rule(conv, left):
    rng = np.random.default_rng(70 + left)
    args, oh, ow = _edge_case16(rng, 1, 3, 4, 24, 37, (3, 3), 1, left, bias_bound=2 ** 31 - 1)
    bias = args[2]
    bias[::3] = np.int32(2 ** 31 - 1)
    bias[1::3] = np.int32(-2 ** 31)
    _check_all16(conv, args, oh, ow)


@pytest.mark.parametrize("cin_g, cout_g", [(5, 9), (21, 300), (16, 17)])
def test_int16_more_taps_than_one_chunk(conv, cin_g, cout_g):
    # 7x7 = 49 taps (> TAP_CHUNK): q16_tile sums the taps in chunks from the previous chunk's
    # accumulators, then q16_requant_rows requantizes the int32 tile.
    rng = np.random.default_rng(cin_g * 1000 + cout_g + 7)
    args, oh, ow = _edge_case16(rng, 1, 4, 3, 2 * cin_g, 2 * cout_g, (7, 7), 2,
                                rng.integers(-24, -8, 2 * cout_g))
    _check_all16(conv, args, oh, ow)


@pytest.mark.parametrize("kernel, cin, stride", [((3, 3), 3, 2), ((3, 3), 1, 1), ((5, 5), 3, 1),
                                                 ((7, 7), 1, 2), ((2, 3), 3, 1), ((10, 4), 1, 2),
                                                 ((7, 7), 3, 2), ((3, 3), 6, 1)])
def test_int16_patch_mode_for_few_input_channels(conv, kernel, cin, stride):
    # A first layer on int16 images: Cin not a multiple of the int16 kernel's K step, so each
    # pixel's window is copied into one zero-padded int16 row, a single tap (patch_k); padding
    # taps read zeros. A window of more than 160 values takes the per-tap path.
    kr, k_step = conv.GEMM16_TILE[2], conv.GEMM16_K_STEP
    rng = np.random.default_rng(cin * 100 + kernel[0] + 16)
    kh, kw = kernel
    x = int16_array(rng, (2, 11, 13, cin))
    w = int8_array(rng, (19, kh, kw, cin), -127, 127)
    bias = rng.integers(-2 ** 16, 2 ** 16, 19).astype(np.int32)
    m0 = rng.integers(2 ** 30, 2 ** 31, 19).astype(np.int32)
    shift = rng.integers(-20, -4, 19).astype(np.int32)
    packed = conv.pack_conv_weights(w, bias, 1, bits=16)
    padded = -(-kh * kw * cin // kr) * kr
    assert packed.patch_k == (padded if cin % k_step and padded <= 160 else 0)
    pads = ((kh - 1) // 2, (kw - 1) // 2)
    oh = out_size(11, kh, stride, 1, pads[0], kh - 1 - pads[0])
    ow = out_size(13, kw, stride, 1, pads[1], kw - 1 - pads[1])
    args = (x, w, bias, m0, shift,
            conv2d_params(stride, stride, 1, 1, *pads, 1, 0, 0, -30000, 32767))
    want = oracle.conv2d(*args, out_h=oh, out_w=ow)
    for scalar in (True, False):
        np.testing.assert_array_equal(run16(conv, args, oh, ow, scalar=scalar, packed=packed),
                                      want)


def test_int16_task_ranges_are_independent(conv):
    rng = np.random.default_rng(12)
    args, oh, ow = _edge_case16(rng, 3, 13, 11, 20, 37, (3, 3), 1, -16)
    want = oracle.conv2d(*args, out_h=oh, out_w=ow)
    out = np.zeros((3, oh, ow, 37), np.int16)
    call = conv.Conv2dCall(*args, out)
    assert call.n_tasks == 3 * -(-oh * ow // conv.GEMM16_TILE[0])
    singles = [(i, i + 1) for i in range(call.n_tasks)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda r: call.run_tasks(*r), singles[::-1]))
    np.testing.assert_array_equal(out, want)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mprotect guard page: Linux")
@pytest.mark.parametrize("cin", [1, 3, 5, 7, 9, 33])
def test_int16_never_reads_past_the_input(conv, dense, cin):
    # The int16 input ends right before an unreadable page, Cin odd: the last pixel's last
    # pair (AVX2) or partial step of 8 (SSE2, NEON) must not read past it. conv2d and dense.
    x, buf = _guarded_int8((1, 4, 5, cin), np.int16)
    rng = np.random.default_rng(cin)
    x[...] = int16_array(rng, x.shape)
    w = int8_array(rng, (9, 3, 3, cin), -127, 127)
    bias = np.zeros(9, np.int32)
    m0 = np.full(9, 2 ** 30, np.int32)
    shift = np.full(9, -6, np.int32)
    for pads in ((1, 1), (0, 0)):
        oh, ow = (4, 5) if pads == (1, 1) else (2, 3)
        args = (x, w, bias, m0, shift, conv2d_params(1, 1, 1, 1, *pads, 1, 0, 0, -32768, 32767))
        _check_all16(conv, args, oh, ow)
    rows = x.reshape(20, cin)
    for n in (1, 2, 3, 5, 20):
        d_args = (rows[20 - n:], w[:, 0, 0, :].copy(), bias, m0, shift, 0, -32768, 32767)
        out = np.zeros((n, 9), np.int16)
        dense.DenseCall(*d_args, out)()
        np.testing.assert_array_equal(out, oracle.dense(*d_args))
    assert not buf.closed


@pytest.mark.parametrize("k", list(range(1, 42)) + [255, 257, 4097])
def test_int16_dense_every_k_and_row_count(dense, k):
    # dense on int16: the tile (MR rows) and, for a batch of one and a last single row, the
    # one-row kernel; every K tail, partial channel blocks; SIMD, scalar twin and oracle.
    rng = np.random.default_rng(7000 + k)
    for n in (1, 2, 3, 5) if k < 4000 else (1, 5):
        for c in (1, 9, 16, 17, 40, 100) if k < 4000 else (3, 17):
            x = int16_array(rng, (n, k))
            w = int8_array(rng, (c, k), -127, 127)
            bias = rng.integers(-2 ** 24, 2 ** 24, c, endpoint=True).astype(np.int32)
            m0 = rng.integers(2 ** 30, 2 ** 31, c).astype(np.int32)
            shift = rng.integers(-24, 2, c, endpoint=True).astype(np.int32)
            args = (x, w, bias, m0, shift, 0, *INT16_BOUNDS[(k + c) % len(INT16_BOUNDS)])
            want = oracle.dense(*args)
            assert want.dtype == np.int16
            for scalar in (False, True):
                out = np.full((n, c), 99, np.int16)
                dense.DenseCall(*args, out, scalar=scalar)()
                np.testing.assert_array_equal(out, want, f"n={n} c={c} scalar={scalar}")


@pytest.mark.parametrize("n, h, w, sh, sw", [(1, 5, 7, 2, 2), (2, 4, 4, 1, 3), (1, 1, 9, 1, 2)])
def test_int16_dense_on_strided_pixels_is_a_strided_1x1_conv(dense, n, h, w, sh, sw):
    rng = np.random.default_rng(h * w + sh)
    cin, cout = 13, 21
    x = int16_array(rng, (n, h, w, cin))
    wt = int8_array(rng, (cout, 1, 1, cin), -127, 127)
    bias = rng.integers(-2 ** 20, 2 ** 20, cout).astype(np.int32)
    m0 = rng.integers(2 ** 30, 2 ** 31, cout).astype(np.int32)
    shift = np.full(cout, -12, np.int32)
    oh, ow = (h - 1) // sh + 1, (w - 1) // sw + 1
    want = oracle.conv2d(x, wt, bias, m0, shift,
                         conv2d_params(sh, sw, 1, 1, 0, 0, 1, 0, 0, -32768, 32767),
                         out_h=oh, out_w=ow)
    w2 = wt.reshape(cout, cin)
    packed = dense.pack_dense_weights(w2, bias, bits=16)
    out = np.zeros((n * oh * ow, cout), np.int16)
    dense.DenseCall(x.reshape(-1, cin), w2, bias, m0, shift, 0, -32768, 32767, out,
                    packed=packed, pixels=(h, w, oh, ow, sh, sw))()
    np.testing.assert_array_equal(out.reshape(want.shape), want)


def test_int16_packed_weights_are_per_activation_type(conv, dense):
    # A packing is for one activation type: the Call refuses the other's, naming the fix.
    rng = np.random.default_rng(4)
    w = int8_array(rng, (10, 3, 3, 6), -127, 127)
    bias = rng.integers(-99, 99, 10).astype(np.int32)
    m0 = np.full(10, 2 ** 30, np.int32)
    shift = np.full(10, -8, np.int32)
    x16 = int16_array(rng, (1, 5, 5, 6))
    params = conv2d_params(1, 1, 1, 1, 1, 1, 1, 0, 0, -32768, 32767)
    packed16 = conv.pack_conv_weights(w, bias, 1, bits=16)
    assert packed16.bits == 16 and conv.pack_conv_weights(w, bias).bits == 8
    assert "int16" in repr(packed16)
    want = oracle.conv2d(x16, w, bias, m0, shift, params, out_h=5, out_w=5)
    np.testing.assert_array_equal(run16(conv, (x16, w, bias, m0, shift, params), 5, 5,
                                        packed=packed16), want)
    with pytest.raises(ValueError, match="packed for int8 activations.*bits=16"):
        run16(conv, (x16, w, bias, m0, shift, params), 5, 5,
              packed=conv.pack_conv_weights(w, bias))
    with pytest.raises(ValueError, match="packed for int16 activations.*bits=8"):
        run(conv, (int8_array(rng, (1, 5, 5, 6)), w, bias, m0, shift,
                   conv2d_params(1, 1, 1, 1, 1, 1, 1, 0, 0, -128, 127)), 5, 5, packed=packed16)
    with pytest.raises(ValueError, match="bits = 12"):
        conv.pack_conv_weights(w, bias, 1, bits=12)
    w2 = w.reshape(10, -1)
    d16 = dense.pack_dense_weights(w2, bias, bits=16)
    assert d16.bits == 16 and d16.source is w2
    x2 = int16_array(rng, (3, w2.shape[1]))
    out = np.zeros((3, 10), np.int16)
    with pytest.raises(ValueError, match="packed for int8 activations.*bits=16"):
        dense.DenseCall(x2, w2, bias, m0, shift, 0, -32768, 32767, out,
                        packed=dense.pack_dense_weights(w2, bias))
    dense.DenseCall(x2, w2, bias, m0, shift, 0, -32768, 32767, out, packed=d16)()
    np.testing.assert_array_equal(out, oracle.dense(x2, w2, bias, m0, shift, 0, -32768, 32767))
    with pytest.raises(ValueError, match="bits = 4"):
        dense.pack_dense_weights(w2, bias, bits=4)


@pytest.mark.parametrize("change, match", [
    (dict(out=np.zeros((1, 3, 3, 4), np.int8)), "out has dtype int8 but x has dtype int16"),
    (dict(x=np.zeros((1, 3, 3, 2), np.int32)), "x has dtype int32"),
    (dict(pad_value=3), "pad_value = 3: int16 tensors are symmetric"),
    (dict(out_zp=1), "out_zp = 1: int16 tensors are symmetric"),
    (dict(act_min=-32769), "act_min = -32769"),
    (dict(act_max=32768), "act_max = 32768"),
    (dict(act_min=7, act_max=6), "act_min = 7, act_max = 6"),
])
def test_int16_conv2d_and_dense_reject(conv, dense, change, match):
    # One activation type per call; an int16 call has zero points (and padding) 0 and bounds
    # in int16. The oracle refuses the same arguments.
    change = dict(change)
    x = change.pop("x", np.zeros((1, 3, 3, 2), np.int16))
    out = change.pop("out", np.zeros((1, 3, 3, 4), np.int16))
    w, bias = np.zeros((4, 1, 1, 2), np.int8), np.zeros(4, np.int32)
    m0, shift = np.full(4, 2 ** 30, np.int32), np.zeros(4, np.int32)
    params = dict(conv2d_params(1, 1, 1, 1, 0, 0, 1, 0, 0, -32768, 32767), **change)
    with pytest.raises(ValueError, match=match):
        conv.Conv2dCall(x, w, bias, m0, shift, params, out)
    if "pad_value" in change:
        return
    d_args = (x.reshape(9, 2), w.reshape(4, 2), bias, m0, shift, params["out_zp"],
              params["act_min"], params["act_max"], out.reshape(9, 4))
    with pytest.raises(ValueError, match=match):
        dense.DenseCall(*d_args)
    if "out" not in match and "x has dtype" not in match:
        with pytest.raises(ValueError, match=match.split(":")[0]):
            oracle.dense(*d_args[:-1])


@pytest.mark.parametrize("x_shape, w_shape", [((0, 3, 3, 2), (4, 3, 3, 2)),
                                              ((1, 3, 3, 2), (0, 3, 3, 2)),
                                              ((2, 1, 1, 3), (5, 3, 3, 3)),
                                              ((2, 3, 1, 0), (3, 1, 1, 0))])
def test_int16_degenerate_shapes_and_read_only_inputs(conv, dense, x_shape, w_shape):
    # No images, no channels, every tap in the padding, no input channels (K = 0: the bias
    # alone); conv2d and dense; read-only arrays.
    rng = np.random.default_rng(sum(x_shape) + sum(w_shape))
    x = int16_array(rng, x_shape)
    w = int8_array(rng, w_shape, -127, 127)
    cout = w_shape[0]
    bias = rng.integers(-2 ** 20, 2 ** 20, cout).astype(np.int32)
    m0, shift = np.full(cout, 2 ** 30, np.int32), np.full(cout, -3, np.int32)
    for a in (x, w, bias, m0, shift):
        a.setflags(write=False)
    args = (x, w, bias, m0, shift, conv2d_params(1, 1, 1, 1, 1, 1, 1, 0, 0, -32768, 32767))
    _check_all16(conv, args, x_shape[1], x_shape[2])
    rows = x.reshape(int(np.prod(x_shape[:3])), x_shape[3])
    w2 = np.ascontiguousarray(w[:, 0, 0, :])
    d_args = (rows, w2, bias, m0, shift, 0, -32768, 32767)
    out = np.full((rows.shape[0], cout), 99, np.int16)
    dense.dense(*d_args, out)
    np.testing.assert_array_equal(out, oracle.dense(*d_args))


def test_int16_oracle_pad_value_and_types():
    # int16 padding is the zero point 0; an int16 call takes int16 activations only.
    x = np.zeros((1, 3, 3, 2), np.int16)
    w, bias = np.ones((4, 3, 3, 2), np.int8), np.zeros(4, np.int32)
    m0, shift = np.full(4, 2 ** 30, np.int32), np.zeros(4, np.int32)
    with pytest.raises(ValueError, match="pad_value = 2: int16 tensors are symmetric"):
        oracle.conv2d(x, w, bias, m0, shift,
                      conv2d_params(1, 1, 1, 1, 1, 1, 1, 2, 0, -32768, 32767), out_h=3, out_w=3)
    with pytest.raises(TypeError, match="int8 or int16"):
        oracle.dense(np.zeros((1, 2), np.int32), w[:, 0, 0], bias, m0, shift, 0, -128, 127)


def _definition_conv2d16(x, w, bias, m0, shift, stride, pad, out_hw, lo, hi):
    """conv2d on int16 from its definition, one Python int at a time: the exact sum, wrapped
    to int32, requantized with the rule written out (TFLite's two roundings), clamped."""
    n_b, h, w_, cin = x.shape
    cout, kh, kw, _ = w.shape
    out = np.zeros((n_b,) + out_hw + (cout,), np.int64)
    for n in range(n_b):
        for oh in range(out_hw[0]):
            for ow in range(out_hw[1]):
                for co in range(cout):
                    total = int(bias[co])
                    for i in range(kh):
                        for j in range(kw):
                            ih, iw = oh * stride - pad + i, ow * stride - pad + j
                            if 0 <= ih < h and 0 <= iw < w_:
                                total += sum(int(x[n, ih, iw, c]) * int(w[co, i, j, c])
                                             for c in range(cin))
                    total = (total + 2 ** 31) % 2 ** 32 - 2 ** 31
                    s = int(shift[co])
                    v = min(max(total * 2 ** max(s, 0), -2 ** 31), 2 ** 31 - 1)
                    prod = v * int(m0[co])
                    high = (prod + (1 << 30)) >> 31            # m0 >= 0: rounds ties up
                    right = max(-s, 0)
                    if right:
                        mask, q = (1 << right) - 1, high >> right
                        rem, threshold = high & mask, (mask >> 1) + (high < 0)
                        high = q + (rem > threshold)
                    out[n, oh, ow, co] = min(max(high, lo), hi)
    return out.astype(np.int16)


@pytest.mark.parametrize("seed", range(4))
def test_int16_oracle_matches_the_definition(seed):
    # The oracle's int16 conv2d (and dense, its 1x1 case) against the definition above, on
    # full-range int16 inputs, with right and left shifts and a clamp.
    rng = np.random.default_rng(seed)
    x = int16_array(rng, (2, 4, 5, 3))
    w = int8_array(rng, (5, 3, 3, 3), -127, 127)
    bias = rng.integers(-2 ** 30, 2 ** 30, 5).astype(np.int32)
    m0 = rng.integers(2 ** 30, 2 ** 31, 5).astype(np.int32)
    shift = np.array([-20, -9, 0, 2, -31], np.int32)
    stride, pad = 1 + seed % 2, 1
    oh, ow = (4 + 2 * pad - 3) // stride + 1, (5 + 2 * pad - 3) // stride + 1
    params = conv2d_params(stride, stride, 1, 1, pad, pad, 1, 0, 0, -20000, 30000)
    got = oracle.conv2d(x, w, bias, m0, shift, params, out_h=oh, out_w=ow)
    assert got.dtype == np.int16
    np.testing.assert_array_equal(
        got, _definition_conv2d16(x, w, bias, m0, shift, stride, pad, (oh, ow), -20000, 30000))
    x1, w1 = x.reshape(-1, 3), w[:, 1, 1, :].copy()
    want1 = _definition_conv2d16(x1.reshape(1, 1, -1, 3), w1.reshape(5, 1, 1, 3), bias, m0,
                                 shift, 1, 0, (1, x1.shape[0]), -32768, 32767)
    np.testing.assert_array_equal(oracle.dense(x1, w1, bias, m0, shift, 0, -32768, 32767),
                                  want1.reshape(-1, 5))


def test_int16_oracle_hand_checked_dense():
    # x = [1000, -2000, 32767], w = [3, 5, -127]: acc = 3000 - 10000 - 4161409 + bias 7 =
    # -4168402; m0 = 2^30 (x0.5), shift -4: -4168402 / 32 = -130262.5625 -> -130263 (nearest),
    # clamped to -32768; the second channel w = [1, 0, 0], bias 0: 1000 / 32 = 31.25 -> 31.
    x = np.array([[1000, -2000, 32767]], np.int16)
    w = np.array([[3, 5, -127], [1, 0, 0]], np.int8)
    bias = np.array([7, 0], np.int32)
    m0, shift = np.full(2, 2 ** 30, np.int32), np.full(2, -4, np.int32)
    assert oracle.dense_accumulators(x, w, bias).tolist() == [[-4168402, 1000]]
    got = oracle.dense(x, w, bias, m0, shift, 0, -32768, 32767)
    assert got.dtype == np.int16 and got.tolist() == [[-32768, 31]]
