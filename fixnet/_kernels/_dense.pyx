# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Fully connected layer on int8: int8 x int8 products, int32 accumulators, requantized to int8.

Bit-exact with ``fixnet.oracle.dense``. Private: fixnet.runtime plans the calls (DenseStep,
and ConvStep for pointwise convolutions: a 1x1 conv at stride 1 is dense on the pixels).

Calling pattern (shared by every kernel module): ``DenseCall(...)`` takes exactly the
arguments of ``dense(...)``, checks them once, keeps the arrays and precomputes what does not
depend on x (requantization constants); calling it runs the kernel on what x holds now, with
no checks. ``dense(...)`` is ``DenseCall(...)()``.

The kernel is a GEMM with one tap (csrc/qdense.h: conv2d's micro-kernels of csrc/qgemm.h,
but for the AVX2 build a 4x8 kernel of its own with K in pairs; ``DENSE_ISA``,
``DENSE_TILE``): weights and bias packed once (``pack_dense_weights``, at quantize time) in
blocks of the tile width NR of output channels, the rows of x are the tile's rows (MR of them
per micro-kernel call; a last single row, and batch 1, run the one-row kernel, a GEMV; each
tile's rows go into the kernel's "panel" once for all its blocks), and every tile is
requantized in the micro-kernel's epilogue on its accumulators (csrc/requant.h) and stored
as int8. Tasks (for threads): groups of row tiles
times chunks of channel blocks; a task runs each block over all its row tiles, so a block's
weights stay in L1 while they are used.
"""
cimport cython
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport int8_t, int32_t

import numpy as np

from fixnet._kernels._step cimport KernelCall
from fixnet._kernels.fixedpoint cimport check_length, check_multipliers, check_output_range
from fixnet._kernels.gemm_pack import check_weights, pack_gemm

from fixnet._kernels.requant cimport fx_requant, fx_requant_bytes, fx_requant_init

cdef extern from "qdense.h" nogil:
    const char* QD_ISA
    enum:
        QD_MR
        QD_NR
        QD_KR
        QD_UINT8_INPUT
        QD_W16
        QD_PANEL_MAX
    size_t qd_panel_bytes(size_t taps, size_t cin, size_t rows)
    void qd_panel_build(size_t taps, size_t cin, const int8_t** a, size_t rows, void* panel)
    void qd_tile_q8_panel(size_t taps, size_t cin, const void* panel, const void* block,
                          size_t mr, size_t nc, const fx_requant* q, size_t c0, int8_t* out,
                          size_t out_stride)
    void qd_row_q8_panel(size_t taps, size_t cin, const void* panel, const void* block,
                         size_t nc, const fx_requant* q, size_t c0, int8_t* out)
    void qd_tile_q8(size_t taps, size_t cin, const int8_t** a, const void* block, size_t mr,
                    size_t nc, const fx_requant* q, size_t c0, int8_t* out, size_t out_stride)
    void qd_row_q8(size_t taps, size_t cin, const int8_t** a, const void* block, size_t nc,
                   const fx_requant* q, size_t c0, int8_t* out)
    void qd_row2_q8_panel(size_t taps, size_t cin, const void* panel, const void* block,
                          size_t block_bytes, size_t nc, const fx_requant* q, size_t c0,
                          int8_t* out)
    void qd_row2_q8(size_t taps, size_t cin, const int8_t** a, const void* block,
                    size_t block_bytes, size_t nc, const fx_requant* q, size_t c0, int8_t* out)
    void qd_tile_q8_scalar(size_t taps, size_t cin, const int8_t** a, const void* block,
                           size_t mr, size_t nc, const fx_requant* q, size_t c0, int8_t* out,
                           size_t out_stride)

cdef enum:
    # Release the GIL only when a call does at least this many multiply-adds: below it,
    # releasing and re-taking the GIL costs more than other threads could gain.
    NOGIL_MIN_WORK = 32768
    # A task: up to TASK_ROWS rows (in tiles of QD_MR) times up to TASK_CHANNELS channels (in
    # blocks of QD_NR; TASK_CHANNELS is a multiple of every build's NR).
    TASK_ROWS = 64
    TASK_CHANNELS = 64


# The micro-kernel of this build's dense: its name and tile (rows MR x channels NR, K step KR).
DENSE_ISA = QD_ISA.decode()
DENSE_TILE = (QD_MR, QD_NR, QD_KR)


cdef inline Py_ssize_t ceil_div(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return (a + b - 1) // b


# ---- packed weights ------------------------------------------------------------------------

@cython.auto_pickle(False)
cdef class PackedDenseWeights:
    """Weights w int8 [C, K] and bias int32 [C] of one dense layer in this build's GEMM
    layout (csrc/qgemm.h; fixnet._kernels.gemm_pack): per block of NR output channels, NR
    int32 biases then the weights, K in groups of KR. Made by ``pack_dense_weights(w, bias)``;
    read-only, shared by every Call of the layer."""
    cdef readonly Py_ssize_t channels, depth, blocks, block_bytes
    cdef readonly object data       # the packed int8 array [blocks, block_bytes]
    cdef readonly object source     # the int8 [C, K] array it was packed from (kept alive)
    cdef readonly object source_bias
    cdef const int8_t* w_src         # where the source arrays' data was (identity checks)
    cdef const int32_t* bias_src
    cdef const int8_t* packed

    def __repr__(self):
        return (f"<PackedDenseWeights C={self.channels} K={self.depth} "
                f"({self.blocks} blocks of {QD_NR} channels)>")


def pack_dense_weights(w not None, bias not None):
    """Pack int8 weights w [C, K] (C-contiguous, values in [-127, 127]) and bias int32 [C] for
    dense / DenseCall (``packed=``). Do this once (at quantize time); w and bias must not
    change afterwards (the kernel reads only the packed copy)."""
    cdef const int8_t[:, ::1] w_view = w
    cdef const int32_t[::1] bias_view = bias
    cdef PackedDenseWeights p = PackedDenseWeights.__new__(PackedDenseWeights)
    cdef Py_ssize_t c_len = w_view.shape[0], k_len = w_view.shape[1]
    check_length("dense", "bias", bias_view.shape[0], c_len,
                 "one per output channel, C = w.shape[0]")
    w_array = np.asarray(w_view)
    check_weights("dense", w_array)
    data, blocks, _ = pack_gemm(w_array.reshape(c_len, 1, k_len), bias_view, 1, QD_NR, QD_KR,
                                QD_W16, QD_UINT8_INPUT)
    p.channels, p.depth, p.blocks, p.block_bytes = c_len, k_len, blocks, data.shape[1]
    p.data, p.source, p.source_bias = data, w, bias
    p.w_src = &w_view[0, 0] if c_len and k_len else NULL
    p.bias_src = &bias_view[0] if c_len else NULL
    p.packed = <const int8_t*><size_t>data.ctypes.data
    return p


# ---- the loop ------------------------------------------------------------------------------

ctypedef struct DenseArgs:
    const int8_t* x             # [N, K], or [N * H * W, K] (strided)
    int8_t* out                 # [N, C], or [N * OH * OW, C] (strided)
    const int8_t* packed        # PackedDenseWeights.data
    const fx_requant* q         # requantization constants of the C channels
    Py_ssize_t n_rows, depth, channels, blocks, block_bytes
    Py_ssize_t row_groups, channel_chunks
    bint scalar                 # run the scalar twin of the micro-kernel (tests)
    # strided: row (n, oh, ow) of out reads pixel (n, oh * stride_h, ow * stride_w) of x, an
    # NHWC image of in_h x in_w pixels (a 1x1 conv with strides)
    bint strided
    Py_ssize_t in_h, in_w, out_h, out_w, stride_h, stride_w


ctypedef struct RowCursor:
    # output row r = (n, oh, ow) of a strided call, and the pointer to its inputs
    Py_ssize_t n, oh, ow
    const int8_t* x


cdef inline void cursor_at(const DenseArgs* a, Py_ssize_t r, RowCursor* c) noexcept nogil:
    """c for output row r (divisions: once per task)."""
    cdef Py_ssize_t p
    if not a.strided:
        c.x = a.x + r * a.depth
        return
    c.n = r // (a.out_h * a.out_w)
    p = r - c.n * a.out_h * a.out_w
    c.oh = p // a.out_w
    c.ow = p - c.oh * a.out_w
    c.x = a.x + ((c.n * a.in_h + c.oh * a.stride_h) * a.in_w + c.ow * a.stride_w) * a.depth


cdef inline void cursor_next(const DenseArgs* a, RowCursor* c) noexcept nogil:
    """c for the next output row."""
    if not a.strided:
        c.x += a.depth
        return
    c.ow += 1
    c.x += a.stride_w * a.depth
    if c.ow == a.out_w:                 # next row of output pixels, or next image
        c.ow = 0
        c.oh += 1
        if c.oh == a.out_h:
            c.oh = 0
            c.n += 1
        c.x = a.x + ((c.n * a.in_h + c.oh * a.stride_h) * a.in_w) * a.depth


cdef inline Py_ssize_t dense_n_tasks(const DenseArgs* a) noexcept nogil:
    return a.row_groups * a.channel_chunks


cdef void dense_tasks(const DenseArgs* a, Py_ssize_t first, Py_ssize_t last) noexcept nogil:
    """Tasks [first, last) (see the module docstring): task t covers rows
    [TASK_ROWS g, +TASK_ROWS) and channel blocks [TASK_CHANNELS / NR * h, ...), t = g *
    channel_chunks + h. Per tile of up to MR rows, its panel (qgemm.h) is built once and the
    chunk's blocks run on it; rows whose panel would exceed QD_PANEL_MAX (long K) go through
    the micro-kernel on row pointers. Only stack scratch: ranges may run on several threads
    at once."""
    cdef const int8_t* rows[QD_MR]
    cdef char panel[QD_PANEL_MAX]
    cdef RowCursor cur
    cdef Py_ssize_t t, g, h, b, b0, b1, r0, r1, r, mr, c0, nc
    cdef Py_ssize_t k_len = a.depth, c_len = a.channels
    cdef Py_ssize_t blocks_per_chunk = TASK_CHANNELS // QD_NR
    cdef bint panels = qd_panel_bytes(1, k_len, QD_MR) <= QD_PANEL_MAX and not a.scalar
    cdef const int8_t* blk
    cdef int8_t* out
    for t in range(first, last):
        g = t // a.channel_chunks
        h = t - g * a.channel_chunks
        b0 = h * blocks_per_chunk
        b1 = b0 + blocks_per_chunk if b0 + blocks_per_chunk < a.blocks else a.blocks
        r0 = g * TASK_ROWS
        r1 = r0 + TASK_ROWS if r0 + TASK_ROWS < a.n_rows else a.n_rows
        cursor_at(a, r0, &cur)
        while r0 < r1:
            mr = r1 - r0 if r1 - r0 < QD_MR else QD_MR
            for r in range(mr):
                rows[r] = cur.x
                cursor_next(a, &cur)
            for r in range(mr, QD_MR):  # rows past the last repeat it
                rows[r] = rows[mr - 1]
            if panels:
                qd_panel_build(1, k_len, rows, 1 if mr == 1 else QD_MR, panel)
            b = b0
            while b < b1:
                blk = a.packed + b * a.block_bytes
                c0 = b * QD_NR
                nc = c_len - c0 if c_len - c0 < QD_NR else QD_NR
                out = a.out + r0 * c_len + c0
                if mr == 1 and b + 1 < b1 and not a.scalar:
                    # one row, two blocks at once: one activation load serves both
                    nc = c_len - c0 if c_len - c0 < 2 * QD_NR else 2 * QD_NR
                    if panels:
                        qd_row2_q8_panel(1, k_len, panel, blk, a.block_bytes, nc, a.q, c0, out)
                    else:
                        qd_row2_q8(1, k_len, rows, blk, a.block_bytes, nc, a.q, c0, out)
                    b += 2
                    continue
                if a.scalar:
                    qd_tile_q8_scalar(1, k_len, rows, blk, mr, nc, a.q, c0, out, c_len)
                elif panels and mr == 1:
                    qd_row_q8_panel(1, k_len, panel, blk, nc, a.q, c0, out)
                elif panels:
                    qd_tile_q8_panel(1, k_len, panel, blk, mr, nc, a.q, c0, out, c_len)
                elif mr == 1:
                    qd_row_q8(1, k_len, rows, blk, nc, a.q, c0, out)
                else:
                    qd_tile_q8(1, k_len, rows, blk, mr, nc, a.q, c0, out, c_len)
                b += 1
            r0 += mr


# ---- Python entry points -------------------------------------------------------------------

@cython.auto_pickle(False)
cdef class DenseCall(KernelCall):
    """dense with its arguments checked once: ``DenseCall(...)()`` runs the kernel.

    Reads x on every call and rewrites out in full; w and bias are read once (packed), m0
    and shift once, here. ``packed``: the result of ``pack_dense_weights(w, bias)`` for these
    very arrays (shared by every Call of a layer); by default they are packed here.
    ``scalar=True`` runs the scalar twin of the micro-kernel (same packing; for tests).
    ``pixels=(H, W, OH, OW, stride_h, stride_w)``: x holds NHWC images of H x W pixels and out
    row (n, oh, ow) is computed from pixel (n, oh * stride_h, ow * stride_w): a 1x1 conv with
    strides (out then [N * OH * OW, C]).
    Tasks (``n_tasks``, fixnet/_kernels/_step.pyx): groups of rows times chunks of output
    channels (see dense_tasks), with no shared scratch, so disjoint ranges may run on several
    threads.
    """
    cdef const int8_t[:, ::1] x
    cdef int8_t[:, ::1] out
    cdef readonly PackedDenseWeights packed
    cdef DenseArgs args
    cdef fx_requant q
    cdef void* q_block            # owns q's arrays

    def __init__(self, const int8_t[:, ::1] x not None, const int8_t[:, ::1] w not None,
                 const int32_t[::1] bias not None, const int32_t[::1] m0 not None,
                 const int32_t[::1] shift not None, int out_zp, int act_min, int act_max,
                 int8_t[:, ::1] out not None, PackedDenseWeights packed=None,
                 bint scalar=False, pixels=None):
        cdef Py_ssize_t n_rows = x.shape[0], k_len = x.shape[1], n_channels = w.shape[0]
        cdef Py_ssize_t in_h = 0, in_w = 0, out_h = 0, out_w = 0, stride_h = 1, stride_w = 1
        cdef fx_requant q
        cdef void* q_block
        if w.shape[1] != k_len:
            raise ValueError(f"dense: w has shape ({w.shape[0]}, {w.shape[1]}), expected "
                             f"(C, {k_len}): one row of K = x.shape[1] = {k_len} weights per channel")
        per_channel = "one per output channel, C = w.shape[0]"
        check_length("dense", "bias", bias.shape[0], n_channels, per_channel)
        check_length("dense", "m0", m0.shape[0], n_channels, per_channel)
        check_length("dense", "shift", shift.shape[0], n_channels, per_channel)
        if pixels is not None:
            in_h, in_w, out_h, out_w, stride_h, stride_w = pixels
            if (min(in_h, in_w, out_h, out_w, stride_h, stride_w) < 1
                    or (out_h - 1) * stride_h >= in_h or (out_w - 1) * stride_w >= in_w
                    or n_rows % (in_h * in_w)):
                raise ValueError(f"dense: pixels = {pixels!r} must be (H, W, OH, OW, stride_h, "
                                 f"stride_w) >= 1 with (OH - 1) * stride_h < H, (OW - 1) * "
                                 f"stride_w < W, and x.shape[0] = {n_rows} a multiple of H * W")
            n_rows = n_rows // (in_h * in_w) * out_h * out_w
        if out.shape[0] != n_rows or out.shape[1] != n_channels:
            raise ValueError(f"dense: out has shape ({out.shape[0]}, {out.shape[1]}), "
                             f"expected (N, C) = ({n_rows}, {n_channels})")
        check_output_range("dense", out_zp, act_min, act_max)
        if n_channels:
            check_multipliers("dense", &m0[0], &shift[0], n_channels)
        if packed is None:
            packed = pack_dense_weights(w.base if w.base is not None else np.asarray(w),
                                        bias.base if bias.base is not None else np.asarray(bias))
        elif (packed.channels != n_channels or packed.depth != k_len
              or (n_channels and k_len and packed.w_src != &w[0, 0])
              or (n_channels and packed.bias_src != &bias[0])):
            raise ValueError(f"dense: packed holds the weights of other arrays "
                             f"({packed.channels} x {packed.depth}); pass "
                             f"pack_dense_weights(w, bias) of this w and bias")
        # Last (after every check), so that a failed re-initialisation leaves the object as
        # it was.
        q_block = PyMem_Malloc(fx_requant_bytes(n_channels))
        if q_block == NULL:
            raise MemoryError(f"dense: cannot allocate the requantization constants of "
                              f"{n_channels} channels")
        fx_requant_init(&q, q_block, &m0[0] if n_channels else NULL,
                        &shift[0] if n_channels else NULL, n_channels, out_zp, act_min, act_max)
        PyMem_Free(self.q_block)     # __init__ may run twice on one object
        self.q, self.q_block = q, q_block
        self.x, self.out, self.packed = x, out, packed
        cdef DenseArgs* a = &self.args
        a.x = &x[0, 0] if n_rows and k_len else NULL
        a.out = &out[0, 0] if n_rows and n_channels else NULL
        a.packed = packed.packed
        a.q = &self.q
        a.n_rows = n_rows if n_channels else 0
        a.depth, a.channels = k_len, n_channels
        a.blocks, a.block_bytes = packed.blocks, packed.block_bytes
        a.row_groups = ceil_div(a.n_rows, TASK_ROWS)
        a.channel_chunks = ceil_div(n_channels, TASK_CHANNELS)
        a.scalar = scalar
        a.strided = pixels is not None
        a.in_h, a.in_w, a.out_h, a.out_w = in_h, in_w, out_h, out_w
        a.stride_h, a.stride_w = stride_h, stride_w
        self.n_tasks = dense_n_tasks(a)
        self.splittable = True
        self.work_share = <double>a.n_rows * n_channels * (k_len + 8) / NOGIL_MIN_WORK

    def __dealloc__(self):
        PyMem_Free(self.q_block)
        self.q_block = NULL

    cdef void run_range(self, Py_ssize_t first, Py_ssize_t last) noexcept nogil:
        dense_tasks(&self.args, first, last)


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
