"""The conv2d kernel as a packed-weight indirect GEMM (fixnet/_kernels/_conv.pyx with the
micro-kernels of fixnet/_kernels/csrc/qgemm.h): in every kernel build this CPU runs, the
build's SIMD micro-kernel, its scalar twin (same packing, plain C) and fixnet.oracle.conv2d
give the same bits, on geometries chosen to hit the tiles' edges (Cin not a multiple of the
K step, Cout not a multiple of the channel block, pixel counts not a multiple of the pixel
tile, padding taps, dilation), extreme zero points and weights, left shifts and clamps.
Also: the task ranges of one call are independent (any split, any order, several threads),
the kernel never reads past the end of its input, and the packed weights are made once and
checked against the arrays they are used with.

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


def _guarded_int8(shape):
    """An int8 array whose last byte is the last byte before a page the process may not
    read (Linux): a kernel reading one byte past it crashes the test run."""
    libc = ctypes.CDLL(None, use_errno=True)
    page = mmap.PAGESIZE
    size = int(np.prod(shape))
    n_pages = -(-size // page) + 1
    buf = mmap.mmap(-1, n_pages * page, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    base = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    if libc.mprotect(base + (n_pages - 1) * page, page, 0) != 0:
        pytest.skip("mprotect failed")
    start = (n_pages - 1) * page - size
    a = np.frombuffer(buf, np.int8, count=size, offset=start).reshape(shape)
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
