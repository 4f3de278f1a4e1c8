# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Fully connected layer on int8: int8 x int8 products, int32 accumulators, requantized to int8.

Bit-exact with ``fixnet.oracle.dense``. Private: fixnet.runtime plans the calls.

Calling pattern (shared by every kernel module): ``DenseCall(...)`` takes exactly the
arguments of ``dense(...)``, checks them once, keeps the arrays and precomputes what does not
depend on x (packed weights, requantization constants); calling it runs the kernel on what x
holds now, with no checks. ``dense(...)`` is ``DenseCall(...)()``. A Call object owns scratch
buffers: do not run one object from two threads at once.

How the loops are laid out (see DESIGN.md, Kernels):

* Weights are packed once (``pack_dense_weights``, at quantize time) into ``dense_elem_t``,
  the element type gcc's dot-product pattern wants: int16 on x86-64, so that
  ``acc += x[k] * w[k]`` becomes pmaddwd / vpmaddwd / vpdpwssd with no widening in the loop;
  int8 on ARM (smlal, or sdot with +dotprod). Rows are padded with zeros (K to
  DENSE_K_ALIGN, C to 4) so no vector loop runs a scalar or masked tail.
* Rows layout (every build): per pair of input rows and group of four channels, one
  branch-free loop of eight dot products along K (each weight load used for two rows, each
  input load for four channels); gcc sums each one across the vector lanes at the end.
* Lanes layout (builds with 512-bit vectors, DENSE_LANES = 32, when C is close to a multiple
  of 32): there those horizontal sums would cost more than the multiply-adds, so 32 output
  channels sit side by side in the lanes, weights k-major, and per pair of k the exact int16
  products x w[k] + x' w[k + 1] (|.| <= 2 * 128 * 127 < 2^15) are widened into int32 lane
  accumulators (vpmullw, vpaddw, vpmovsxwd, vpaddd); no horizontal sums at all.
* Blocks of rows holding about REQUANT_BLOCK accumulators (with the bias) are requantized by
  one separate branch-free loop (``requantize_block``, constants tiled per row), which gcc
  vectorises from AVX2 up even for 10 channels, and keeps free of mispredicted branches in
  scalar code.
"""
cimport cython
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint32_t

import numpy as np

from fixnet._kernels.step cimport step_entry
from fixnet._kernels.fixedpoint cimport (
    DOT_BLOCK,
    check_length,
    check_multipliers,
    check_output_range,
    requant_constants,
    requantize_block,
    requantize_block_left,
)

cdef extern from *:
    """
    /* The element type of packed dense weights and of the widened input row. */
    #if defined(__aarch64__) || defined(_M_ARM64) || defined(__arm__) || defined(_M_ARM)
    typedef int8_t fixnet_dense_elem_t;
    #else
    typedef int16_t fixnet_dense_elem_t;
    #endif
    /* The loop layout (see the module docstring). 0: dot products along K, four channels
       per pass, whose int32 sums gcc reduces across the vector lanes at the end (pmaddwd,
       vpmaddwd, vpdpwssd, sdot). With 512-bit vectors those horizontal sums cost more than
       the multiply-adds, so there: FIXNET_DENSE_LANES output channels side by side in the
       lanes, k-major packed weights, exact int16 products (|x * w| <= 128 * 127, and the
       sum of two <= 32512 fits int16) widened into int32 lane accumulators (vpmullw,
       vpaddw, vpmovsxwd, vpaddd): no horizontal sums at all. */
    #if defined(__AVX512BW__) && !defined(__aarch64__)
    #define FIXNET_DENSE_LANES 32
    #else
    #define FIXNET_DENSE_LANES 0
    #endif
    /* Rows of the dot-product layout are padded with zeros to a multiple of this many
       elements, one vector of the widest width gcc uses here (32 bytes of int16 with SSE2 /
       AVX2 / NEON, 64 with AVX-512), so the vector loop covers every row and never runs a
       (masked or narrower) tail. */
    #if defined(__AVX512BW__) && !defined(__aarch64__)
    #define FIXNET_DENSE_K_ALIGN 32
    #else
    #define FIXNET_DENSE_K_ALIGN 16
    #endif
    """
    ctypedef signed short dense_elem_t "fixnet_dense_elem_t"
    enum: DENSE_LANES "FIXNET_DENSE_LANES"
    enum: DENSE_K_ALIGN "FIXNET_DENSE_K_ALIGN"

cdef enum:
    # Release the GIL only when a call does at least this many multiply-adds: below it,
    # releasing and re-taking the GIL costs more than other threads could gain.
    NOGIL_MIN_WORK = 32768
    # dense requantizes blocks of whole rows holding about this many accumulators (a long
    # enough loop to vectorise well, a small enough scratch to stay in L1).
    REQUANT_BLOCK = 256
    # The tasks of a call split over threads (DenseCall.run_tasks): blocks of TASK_ROWS rows
    # times TASK_CHANNELS output channels (a multiple of 4 and of DENSE_LANES). A task widens
    # TASK_K inputs of a row at a time into its own stack scratch, so tasks share nothing.
    TASK_ROWS = 8
    TASK_CHANNELS = 32
    TASK_K = 1024


cdef inline Py_ssize_t round_up(Py_ssize_t n, Py_ssize_t multiple) noexcept nogil:
    return (n + multiple - 1) // multiple * multiple


# ---- packed weights ------------------------------------------------------------------------

@cython.auto_pickle(False)
cdef class PackedDenseWeights:
    """Weights of one dense layer in this build's kernel layout, zero beyond K (Kp = K
    rounded up to DENSE_K_ALIGN) and beyond C (Cp): with ``lanes == 0``, ``dense_elem_t
    [Cp, Kp]``, row c the weights of output channel c, Cp = C rounded up to 4; with
    ``lanes == DENSE_LANES`` (only in builds that have that loop, and only when C is not
    much smaller than a multiple of it), ``[Cp / lanes, Kp, lanes]``: per block of channels,
    for each k the weights of the block's channels side by side. Built by
    ``pack_dense_weights(w)``; read-only."""
    cdef readonly Py_ssize_t channels, depth, padded_channels, padded_depth, lanes
    cdef readonly object data       # the packed array (NumPy, int16 on x86-64, int8 on ARM)
    cdef readonly object source     # the int8 [C, K] array it was packed from (kept alive)
    cdef const int8_t* source_data
    cdef const dense_elem_t* packed

    def __repr__(self):
        return (f"<PackedDenseWeights C={self.channels} K={self.depth} "
                f"({self.data.dtype} {list(self.data.shape)})>")


def pack_dense_weights(w not None, layout=None):
    """Pack int8 weights w [C, K] (C-contiguous, values in [-127, 127]) for dense / DenseCall.

    Do this once (at quantize time) and pass the result as ``packed=`` to DenseCall; w must
    not change afterwards (the kernel reads only the packed copy). layout: None (the faster
    for this C on this build), "rows" or "lanes" (only in builds with that loop; for tests
    and measurements)."""
    cdef const int8_t[:, ::1] w_view = w
    cdef PackedDenseWeights p = PackedDenseWeights.__new__(PackedDenseWeights)
    cdef Py_ssize_t c_len = w_view.shape[0], k_len = w_view.shape[1]
    w_array = np.asarray(w_view)
    if c_len and k_len and w_array.min() < -127:
        c, k = np.argwhere(w_array < -127)[0]
        raise ValueError(f"dense: w[{c}, {k}] = -128; weights must lie in [-127, 127] (the "
                         f"symmetric int8 range: two products then fit int16)")
    p.channels, p.depth = c_len, k_len
    if layout is None:
        # Lanes unless padding C to a multiple of DENSE_LANES wastes much: per channel
        # computed the lanes loop is 1.3-1.7x cheaper than the rows loop (more at small K;
        # measured for K = 32..64 on AVX-512), so C = 24 or 48 (32, 64 computed) still go
        # in lanes, C = 10 or 40 (32, 64) in rows.
        # (DENSE_LANES first: builds without a lanes loop must not round up to a multiple of 0)
        p.lanes = (DENSE_LANES if DENSE_LANES and
                   0 < round_up(c_len, DENSE_LANES) * 5 <= round_up(c_len, 4) * 7 else 0)
    elif layout == "rows":
        p.lanes = 0
    elif layout == "lanes" and DENSE_LANES:
        p.lanes = DENSE_LANES
    else:
        raise ValueError(f"pack_dense_weights: layout = {layout!r}: None, 'rows'"
                         + (" or 'lanes'" if DENSE_LANES else " (this build has no lanes loop)"))
    p.padded_channels = round_up(c_len, p.lanes if p.lanes else 4)
    # The lanes loop takes K in pairs; the rows loop runs whole vectors.
    p.padded_depth = round_up(k_len, 2 if p.lanes else DENSE_K_ALIGN)
    dtype = np.int16 if sizeof(dense_elem_t) == 2 else np.int8
    data = np.zeros((max(p.padded_channels, 4), max(p.padded_depth, 2)), dtype)
    data[:c_len, :k_len] = w_array
    if p.lanes:
        data = np.ascontiguousarray(data.reshape(-1, p.lanes, data.shape[1]).transpose(0, 2, 1))
    p.data = data
    p.source = w
    p.source_data = &w_view[0, 0] if c_len > 0 and k_len > 0 else NULL
    p.packed = <const dense_elem_t*><size_t>data.ctypes.data
    return p


# ---- the loop ------------------------------------------------------------------------------

ctypedef struct DenseArgs:
    const int8_t* x             # [N, K]
    int8_t* out                 # [N, C]
    const dense_elem_t* w       # packed [Cp, Kp]
    const int32_t* bias         # [C]
    # Requantization constants (requant_constants) of each channel, tiled block_rows times
    # ([block_rows * C]), so that one requantize_block call covers a whole block of rows.
    const int32_t* m0
    const int32_t* left         # left shift before the multiply, max(shift, 0)
    const int64_t* nudge
    const int64_t* neg_adjust
    const int64_t* total_shift
    dense_elem_t* x_rows        # scratch [block_rows, Kp]: rows widened, zero beyond K
    int32_t* acc                # scratch [block_rows, C]: accumulators of a block of rows
    Py_ssize_t n_rows, depth, padded_depth, channels, padded_channels, block_rows
    int32_t out_zp, act_min, act_max
    bint any_left_shift
    bint lanes                  # the packed layout has channels in lanes (DENSE_LANES)


cdef inline void put4(int32_t* dst, const int32_t* init, Py_ssize_t m, int32_t a0, int32_t a1,
                      int32_t a2, int32_t a3) noexcept nogil:
    """dst[j] = init[j] + a_j modulo 2^32 for j < m <= 4 (init may be dst). Scalar stores:
    gathering the sums in a small array and reading it back as a vector would stall on
    store forwarding."""
    if m > 0:
        dst[0] = <int32_t>(<uint32_t>init[0] + <uint32_t>a0)
    if m > 1:
        dst[1] = <int32_t>(<uint32_t>init[1] + <uint32_t>a1)
    if m > 2:
        dst[2] = <int32_t>(<uint32_t>init[2] + <uint32_t>a2)
    if m > 3:
        dst[3] = <int32_t>(<uint32_t>init[3] + <uint32_t>a3)


cdef inline void dot4x2(const dense_elem_t* x0, const dense_elem_t* x1, const dense_elem_t* w,
                        Py_ssize_t stride, Py_ssize_t n, int32_t* dst0, const int32_t* init0,
                        int32_t* dst1, const int32_t* init1, Py_ssize_t m) noexcept nogil:
    """dst0[j] = init0[j] + sum_k x0[k] w_j[k] and dst1[j] = init1[j] + sum_k x1[k] w_j[k]
    (modulo 2^32) for the four weight rows w_j = w + j * stride, j < m <= 4, k < n <= DOT_BLOCK
    (so each int32 partial sum is below 2^26). Eight independent dot products in one
    branch-free loop (gcc's dot-product pattern: pmaddwd / vpmaddwd / sdot), each weight
    load used for two rows and each input load for four channels."""
    cdef const dense_elem_t* w1 = w + stride
    cdef const dense_elem_t* w2 = w1 + stride
    cdef const dense_elem_t* w3 = w2 + stride
    cdef int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, b0 = 0, b1 = 0, b2 = 0, b3 = 0
    cdef Py_ssize_t k
    for k in range(n):
        a0 += <int32_t>x0[k] * <int32_t>w[k]
        a1 += <int32_t>x0[k] * <int32_t>w1[k]
        a2 += <int32_t>x0[k] * <int32_t>w2[k]
        a3 += <int32_t>x0[k] * <int32_t>w3[k]
        b0 += <int32_t>x1[k] * <int32_t>w[k]
        b1 += <int32_t>x1[k] * <int32_t>w1[k]
        b2 += <int32_t>x1[k] * <int32_t>w2[k]
        b3 += <int32_t>x1[k] * <int32_t>w3[k]
    put4(dst0, init0, m, a0, a1, a2, a3)
    put4(dst1, init1, m, b0, b1, b2, b3)


cdef inline void dot4(const dense_elem_t* x, const dense_elem_t* w, Py_ssize_t stride,
                      Py_ssize_t n, int32_t* dst, const int32_t* init, Py_ssize_t m) noexcept nogil:
    """dot4x2 for one row."""
    cdef const dense_elem_t* w1 = w + stride
    cdef const dense_elem_t* w2 = w1 + stride
    cdef const dense_elem_t* w3 = w2 + stride
    cdef int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0
    cdef Py_ssize_t k
    for k in range(n):
        a0 += <int32_t>x[k] * <int32_t>w[k]
        a1 += <int32_t>x[k] * <int32_t>w1[k]
        a2 += <int32_t>x[k] * <int32_t>w2[k]
        a3 += <int32_t>x[k] * <int32_t>w3[k]
    put4(dst, init, m, a0, a1, a2, a3)


cdef inline void lanes_x2(const dense_elem_t* x0, const dense_elem_t* x1, const dense_elem_t* w,
                          Py_ssize_t k_pairs, int32_t* dst0, const int32_t* init0,
                          int32_t* dst1, const int32_t* init1, Py_ssize_t m) noexcept nogil:
    """For the DENSE_LANES channels of one packed block (w: [Kp, DENSE_LANES]) and two rows:
    dst0[j] = init0[j] + sum_k x0[k] w[k, j], dst1[j] likewise with x1 (modulo 2^32), for
    j < m <= DENSE_LANES, k < 2 k_pairs <= DOT_BLOCK. The inner loop runs over the channels
    (the vector lanes): per pair of k, x * w[k] + x' * w[k + 1] is exact in int16 (weights
    in [-127, 127]) and added to int32 lane accumulators. No horizontal sums."""
    cdef int32_t a[32]
    cdef int32_t b[32]
    cdef Py_ssize_t k2, j
    cdef dense_elem_t p, q, r, t
    cdef const dense_elem_t* w0
    for j in range(DENSE_LANES):
        a[j] = 0
        b[j] = 0
    for k2 in range(k_pairs):
        p = x0[2 * k2]
        q = x0[2 * k2 + 1]
        r = x1[2 * k2]
        t = x1[2 * k2 + 1]
        w0 = w + 2 * k2 * DENSE_LANES
        for j in range(DENSE_LANES):
            a[j] += <int16_t>(p * w0[j] + q * w0[DENSE_LANES + j])
            b[j] += <int16_t>(r * w0[j] + t * w0[DENSE_LANES + j])
    if m == DENSE_LANES:
        for j in range(DENSE_LANES):
            dst0[j] = <int32_t>(<uint32_t>init0[j] + <uint32_t>a[j])
            dst1[j] = <int32_t>(<uint32_t>init1[j] + <uint32_t>b[j])
    else:
        for j in range(m):
            dst0[j] = <int32_t>(<uint32_t>init0[j] + <uint32_t>a[j])
            dst1[j] = <int32_t>(<uint32_t>init1[j] + <uint32_t>b[j])


cdef inline void lanes_x1(const dense_elem_t* x0, const dense_elem_t* w, Py_ssize_t k_pairs,
                          int32_t* dst0, const int32_t* init0, Py_ssize_t m) noexcept nogil:
    """lanes_x2 for one row."""
    cdef int32_t a[32]
    cdef Py_ssize_t k2, j
    cdef dense_elem_t p, q
    cdef const dense_elem_t* w0
    for j in range(DENSE_LANES):
        a[j] = 0
    for k2 in range(k_pairs):
        p = x0[2 * k2]
        q = x0[2 * k2 + 1]
        w0 = w + 2 * k2 * DENSE_LANES
        for j in range(DENSE_LANES):
            a[j] += <int16_t>(p * w0[j] + q * w0[DENSE_LANES + j])
    for j in range(m):
        dst0[j] = <int32_t>(<uint32_t>init0[j] + <uint32_t>a[j])


cdef void dense_lanes_block(const dense_elem_t* x_rows, Py_ssize_t rows, const dense_elem_t* w,
                            const int32_t* bias, Py_ssize_t kp, Py_ssize_t c_len,
                            Py_ssize_t cp, int32_t* acc) noexcept nogil:
    """acc [rows, C] = bias + x_rows [rows, Kp] @ w.T for the DENSE_LANES layout, two rows
    per pass (an odd last row alone: paired with itself, its second sum would be added to
    the first when K takes several DOT_BLOCKs)."""
    cdef Py_ssize_t r, r1, c, m, k0, block_len
    cdef int32_t* dst0
    cdef int32_t* dst1
    r = 0
    while r < rows:
        r1 = r + 1 if r + 1 < rows else r       # r1 == r: the last row of an odd count
        c = 0
        while c < cp:
            m = c_len - c if c_len - c < DENSE_LANES else DENSE_LANES
            dst0 = acc + r * c_len + c
            dst1 = acc + r1 * c_len + c
            k0 = 0
            while True:     # at least once: K = 0 still stores the bias
                block_len = kp - k0 if kp - k0 < DOT_BLOCK else DOT_BLOCK
                if r1 != r:
                    lanes_x2(x_rows + r * kp + k0, x_rows + r1 * kp + k0,
                             w + c * kp + k0 * DENSE_LANES, block_len // 2,
                             dst0, bias + c if k0 == 0 else dst0,
                             dst1, bias + c if k0 == 0 else dst1, m)
                else:
                    lanes_x1(x_rows + r * kp + k0, w + c * kp + k0 * DENSE_LANES,
                             block_len // 2, dst0, bias + c if k0 == 0 else dst0, m)
                k0 += DOT_BLOCK
                if k0 >= kp:
                    break
            c += DENSE_LANES
        r += 2


cdef inline void widen_row(const int8_t* src, dense_elem_t* dst, Py_ssize_t n) noexcept nogil:
    """dst[k] = src[k] for k < n (sign extension: pmovsxbw / punpcklbw + psraw)."""
    cdef Py_ssize_t k
    for k in range(n):
        dst[k] = src[k]


cdef void dense_impl(const DenseArgs* a) noexcept nogil:
    """Blocks of block_rows rows: widen them, then per pair of rows and group of four
    channels one dot4x2 over the packed rows, the int32 accumulators (with the bias) into
    acc [rows, C]; then one requantize_block over the whole block (rows * C values, the
    constants tiled per row), which vectorises even when C is small."""
    # Everything in locals: with -fno-strict-aliasing every store into the scratch could
    # alias *a, and gcc would reload the fields inside the loops.
    cdef const int8_t* x = a.x
    cdef int8_t* out = a.out
    cdef const dense_elem_t* w = a.w
    cdef const int32_t* bias = a.bias
    cdef dense_elem_t* x_rows = a.x_rows
    cdef int32_t* acc = a.acc
    cdef Py_ssize_t n_rows = a.n_rows, k_len = a.depth, kp = a.padded_depth
    cdef Py_ssize_t c_len = a.channels, cp = a.padded_channels, block_rows = a.block_rows
    cdef Py_ssize_t r0, rows, r, c, m, k0, block_len
    cdef int32_t* dst0
    cdef int32_t* dst1
    r0 = 0
    while r0 < n_rows:
        rows = n_rows - r0 if n_rows - r0 < block_rows else block_rows
        for r in range(rows):       # the tails k >= K stay zero
            widen_row(x + (r0 + r) * k_len, x_rows + r * kp, k_len)
        if DENSE_LANES and a.lanes:
            dense_lanes_block(x_rows, rows, w, bias, kp, c_len, cp, acc)
            r = rows
        else:
            r = 0
        while r + 2 <= rows:
            for c in range(0, cp, 4):
                m = c_len - c if c_len - c < 4 else 4
                dst0 = acc + r * c_len + c
                dst1 = dst0 + c_len
                k0 = 0
                while True:     # at least once: K = 0 still stores the bias
                    block_len = kp - k0 if kp - k0 < DOT_BLOCK else DOT_BLOCK
                    dot4x2(x_rows + r * kp + k0, x_rows + (r + 1) * kp + k0, w + c * kp + k0,
                           kp, block_len, dst0, bias + c if k0 == 0 else dst0,
                           dst1, bias + c if k0 == 0 else dst1, m)
                    k0 += DOT_BLOCK
                    if k0 >= kp:
                        break
            r += 2
        if r < rows:
            for c in range(0, cp, 4):
                m = c_len - c if c_len - c < 4 else 4
                dst0 = acc + r * c_len + c
                k0 = 0
                while True:     # at least once: K = 0 still stores the bias
                    block_len = kp - k0 if kp - k0 < DOT_BLOCK else DOT_BLOCK
                    dot4(x_rows + r * kp + k0, w + c * kp + k0, kp, block_len,
                         dst0, bias + c if k0 == 0 else dst0, m)
                    k0 += DOT_BLOCK
                    if k0 >= kp:
                        break
        if a.any_left_shift:
            requantize_block_left(acc, rows * c_len, a.m0, a.left, a.nudge, a.neg_adjust,
                                  a.total_shift, a.out_zp, a.act_min, a.act_max,
                                  out + r0 * c_len)
        else:
            requantize_block(acc, rows * c_len, a.m0, a.nudge, a.neg_adjust, a.total_shift,
                             a.out_zp, a.act_min, a.act_max, out + r0 * c_len)
        r0 += rows


cdef inline Py_ssize_t dense_channel_blocks(const DenseArgs* a) noexcept nogil:
    return (a.channels + TASK_CHANNELS - 1) // TASK_CHANNELS


cdef inline Py_ssize_t dense_n_tasks(const DenseArgs* a) noexcept nogil:
    return (a.n_rows + TASK_ROWS - 1) // TASK_ROWS * dense_channel_blocks(a)


cdef void widen_chunk(const int8_t* src, Py_ssize_t available, dense_elem_t* dst,
                      Py_ssize_t n) noexcept nogil:
    """dst[k] = src[k] for k < min(available, n), 0 for the rest up to n."""
    cdef Py_ssize_t k, m = available if available < n else n
    if m < 0:
        m = 0
    widen_row(src, dst, m)
    for k in range(m, n):
        dst[k] = 0


cdef void dense_tasks(const DenseArgs* a, Py_ssize_t first, Py_ssize_t last) noexcept nogil:
    """Tasks [first, last) of dense_impl's work: task t covers rows [TASK_ROWS rb, +TASK_ROWS)
    and channels [TASK_CHANNELS cb, +TASK_CHANNELS) of out, t = rb * channel blocks + cb.
    The same int32 sums (wrapping additions commute) and the same requantization as
    dense_impl, so any split gives its bits; scratch on the stack only."""
    cdef dense_elem_t xs[2 * TASK_K]
    cdef int32_t acc[2 * TASK_CHANNELS]
    cdef const int8_t* x = a.x
    cdef const dense_elem_t* w = a.w
    cdef Py_ssize_t k_len = a.depth, kp = a.padded_depth, c_len = a.channels
    cdef Py_ssize_t cp = a.padded_channels, n_cblocks = dense_channel_blocks(a)
    cdef Py_ssize_t t, r0, r1, c0, c1, c1p, r, rows, k0, kl, c, m, j
    cdef int32_t* dst0
    cdef int32_t* dst1
    cdef const dense_elem_t* x1 = xs + TASK_K
    for t in range(first, last):
        r0 = t // n_cblocks * TASK_ROWS
        r1 = r0 + TASK_ROWS if r0 + TASK_ROWS < a.n_rows else a.n_rows
        c0 = t % n_cblocks * TASK_CHANNELS
        c1 = c0 + TASK_CHANNELS if c0 + TASK_CHANNELS < c_len else c_len
        c1p = c0 + TASK_CHANNELS if c0 + TASK_CHANNELS < cp else cp
        r = r0
        while r < r1:
            rows = 2 if r + 1 < r1 else 1
            k0 = 0
            while True:     # at least once: K = 0 still stores the bias
                kl = kp - k0 if kp - k0 < TASK_K else TASK_K
                widen_chunk(x + r * k_len + k0, k_len - k0, xs, kl)
                if rows == 2:
                    widen_chunk(x + (r + 1) * k_len + k0, k_len - k0, xs + TASK_K, kl)
                if DENSE_LANES and a.lanes:
                    c = c0
                    while c < c1p:
                        m = c_len - c if c_len - c < DENSE_LANES else DENSE_LANES
                        dst0 = acc + (c - c0)
                        dst1 = dst0 + TASK_CHANNELS
                        if rows == 2:
                            lanes_x2(xs, x1, w + c * kp + k0 * DENSE_LANES, kl // 2,
                                     dst0, a.bias + c if k0 == 0 else dst0,
                                     dst1, a.bias + c if k0 == 0 else dst1, m)
                        else:
                            lanes_x1(xs, w + c * kp + k0 * DENSE_LANES, kl // 2,
                                     dst0, a.bias + c if k0 == 0 else dst0, m)
                        c += DENSE_LANES
                else:
                    for c in range(c0, c1p, 4):
                        m = c_len - c if c_len - c < 4 else 4
                        dst0 = acc + (c - c0)
                        dst1 = dst0 + TASK_CHANNELS
                        if rows == 2:
                            dot4x2(xs, x1, w + c * kp + k0, kp, kl,
                                   dst0, a.bias + c if k0 == 0 else dst0,
                                   dst1, a.bias + c if k0 == 0 else dst1, m)
                        else:
                            dot4(xs, w + c * kp + k0, kp, kl, dst0,
                                 a.bias + c if k0 == 0 else dst0, m)
                k0 += TASK_K
                if k0 >= kp:
                    break
            for j in range(rows):
                if a.any_left_shift:
                    requantize_block_left(acc + j * TASK_CHANNELS, c1 - c0, a.m0 + c0,
                                          a.left + c0, a.nudge + c0, a.neg_adjust + c0,
                                          a.total_shift + c0, a.out_zp, a.act_min, a.act_max,
                                          a.out + (r + j) * c_len + c0)
                else:
                    requantize_block(acc + j * TASK_CHANNELS, c1 - c0, a.m0 + c0,
                                     a.nudge + c0, a.neg_adjust + c0, a.total_shift + c0,
                                     a.out_zp, a.act_min, a.act_max,
                                     a.out + (r + j) * c_len + c0)
            r += rows


# ---- Python entry points -------------------------------------------------------------------

@cython.auto_pickle(False)
cdef class DenseCall:
    """dense with its arguments checked once: ``DenseCall(...)()`` runs the kernel.

    Reads x on every call and rewrites out in full; w, bias, m0 and shift are read once, here
    (packed and precomputed). ``packed``: the result of ``pack_dense_weights(w)`` for this
    very w (saves packing it again); by default w is packed here.
    """
    cdef const int8_t[:, ::1] x
    cdef int8_t[:, ::1] out
    cdef PackedDenseWeights packed
    cdef object params                  # NumPy arrays the pointers in args point into
    cdef DenseArgs args
    cdef bint release_gil

    def __init__(self, const int8_t[:, ::1] x not None, const int8_t[:, ::1] w not None,
                 const int32_t[::1] bias not None, const int32_t[::1] m0 not None,
                 const int32_t[::1] shift not None, int out_zp, int act_min, int act_max,
                 int8_t[:, ::1] out not None, PackedDenseWeights packed=None):
        cdef Py_ssize_t n_rows = x.shape[0], k_len = x.shape[1], n_channels = w.shape[0]
        cdef Py_ssize_t c
        if w.shape[1] != k_len:
            raise ValueError(f"dense: w has shape ({w.shape[0]}, {w.shape[1]}), expected "
                             f"(C, {k_len}): one row of K = x.shape[1] = {k_len} weights per channel")
        check_length("dense", "bias", bias.shape[0], n_channels, "one per output channel, C = w.shape[0]")
        check_length("dense", "m0", m0.shape[0], n_channels, "one per output channel, C = w.shape[0]")
        check_length("dense", "shift", shift.shape[0], n_channels, "one per output channel, C = w.shape[0]")
        if out.shape[0] != n_rows or out.shape[1] != n_channels:
            raise ValueError(f"dense: out has shape ({out.shape[0]}, {out.shape[1]}), "
                             f"expected (N, C) = ({n_rows}, {n_channels})")
        check_output_range("dense", out_zp, act_min, act_max)
        if n_channels:
            check_multipliers("dense", &m0[0], &shift[0], n_channels)
        if packed is None:
            packed = pack_dense_weights(w.base if w.base is not None else np.asarray(w))
        elif (packed.channels != n_channels or packed.depth != k_len
              or (n_channels and k_len and packed.source_data != &w[0, 0])):
            raise ValueError(f"dense: packed holds the weights of another array "
                             f"({packed.channels} x {packed.depth}); pass "
                             f"pack_dense_weights(w) of this w")
        self.x, self.out, self.packed = x, out, packed

        cdef Py_ssize_t cp = packed.padded_channels, kp = packed.padded_depth
        # Rows per block: enough that a block holds about REQUANT_BLOCK accumulators.
        cdef Py_ssize_t block_rows = max(1, min(n_rows, round_up(REQUANT_BLOCK, max(n_channels, 1))
                                                // max(n_channels, 1)))
        cdef Py_ssize_t size = max(block_rows * n_channels, 1)
        bias_c = np.zeros(max(n_channels, 1), np.int32)
        bias_c[:n_channels] = np.asarray(bias)
        m0_t = np.zeros(size, np.int32)
        left_t = np.zeros(size, np.int32)
        consts = np.zeros((3, size), np.int64)
        cdef int32_t[::1] m0_v = m0_t, left_v = left_t
        cdef int64_t[:, ::1] consts_v = consts
        for c in range(n_channels):
            m0_v[c] = m0[c]
            requant_constants(shift[c], &consts_v[0, c], &consts_v[1, c], &consts_v[2, c],
                              &left_v[c])
        for arr in (m0_t, left_t, consts[0], consts[1], consts[2]):
            arr[n_channels:block_rows * n_channels] = np.tile(arr[:n_channels], block_rows - 1)
        x_rows = np.zeros((block_rows, max(kp, 1)), packed.data.dtype)
        acc = np.zeros(size, np.int32)
        self.params = (bias_c, m0_t, left_t, consts, x_rows, acc)

        cdef DenseArgs* a = &self.args
        a.x = &x[0, 0] if n_rows and k_len else NULL
        a.out = &out[0, 0] if n_rows and n_channels else NULL
        a.w = packed.packed
        a.bias = <const int32_t*><size_t>bias_c.ctypes.data
        a.m0 = &m0_v[0]
        a.left = &left_v[0]
        a.nudge = &consts_v[0, 0]
        a.neg_adjust = &consts_v[1, 0]
        a.total_shift = &consts_v[2, 0]
        a.x_rows = <dense_elem_t*><size_t>x_rows.ctypes.data
        a.acc = <int32_t*><size_t>acc.ctypes.data
        a.n_rows = n_rows if n_channels else 0
        a.depth = k_len
        a.padded_depth = kp
        a.channels = n_channels
        a.padded_channels = cp
        a.lanes = packed.lanes != 0
        a.block_rows = block_rows
        a.out_zp = out_zp
        a.act_min = act_min
        a.act_max = act_max
        a.any_left_shift = bool(np.any(np.asarray(shift) > 0))
        self.release_gil = n_rows * cp * kp >= NOGIL_MIN_WORK

    def __call__(self):
        if self.release_gil:
            with nogil:
                self.run()
        else:
            self.run()

    cdef void run(self) noexcept nogil:
        dense_impl(&self.args)

    @property
    def n_tasks(self):
        """Tasks of run_tasks: blocks of rows times blocks of output channels."""
        return dense_n_tasks(&self.args)

    cdef void run_tasks(self, Py_ssize_t first, Py_ssize_t last) noexcept nogil:
        """Tasks [first, last) of n_tasks (see dense_tasks): no shared scratch."""
        dense_tasks(&self.args, first, last)

    def run_task_range(self, Py_ssize_t first, Py_ssize_t last):
        """Run tasks [first, last) from Python (for tests)."""
        if not 0 <= first <= last <= dense_n_tasks(&self.args):
            raise ValueError(f"dense: task range [{first}, {last}) outside [0, {self.n_tasks}]")
        dense_tasks(&self.args, first, last)

    def step_entry(self):
        """For fixnet._kernels._pass: see step.pxd."""
        return step_entry(_run_dense, _run_dense_tasks, dense_n_tasks(&self.args),
                          <double>self.args.n_rows * self.args.padded_channels
                          * self.args.padded_depth / NOGIL_MIN_WORK)


cdef void _run_dense(void* call) noexcept nogil:
    (<DenseCall>call).run()


cdef void _run_dense_tasks(void* call, Py_ssize_t first, Py_ssize_t last) noexcept nogil:
    (<DenseCall>call).run_tasks(first, last)


def dense(const int8_t[:, ::1] x not None, const int8_t[:, ::1] w not None,
          const int32_t[::1] bias not None, const int32_t[::1] m0 not None,
          const int32_t[::1] shift not None, int out_zp, int act_min, int act_max,
          int8_t[:, ::1] out not None):
    """out[n, c] = clamp(out_zp + MBQM(bias[c] + sum_k x[n, k] * w[c, k], m0[c], shift[c]),
    act_min, act_max), MBQM = multiply_by_quantized_multiplier.

    x: int8 [N, K] activations (the input zero point is folded into bias by the quantizer).
    w: int8 [C, K] weights, one contiguous row per output channel, values in [-127, 127].
    bias, m0, shift: int32 [C]; m0 in [2^30, 2^31) or 0, shift in [-31, 30].
    out_zp, act_min, act_max: int8 output zero point and clamp bounds (fused activation).
    out: int8 [N, C], written in full. The int32 accumulator wraps modulo 2^32 if the
    quantizer's overflow proof does not hold (oracle.dense_accumulators detects that).
    """
    DenseCall(x, w, bias, m0, shift, out_zp, act_min, act_max, out)()
